"""The pipeline configuration (one YAML file), checked completely before any work starts.

Why strict: a run over tens of thousands of questions pays for model calls, so a typo in a
key, a teacher pointing at an endpoint that does not exist or a prompt without
``{question}`` must fail at once with the exact place to fix, not an hour in. The sections
are pydantic models with ``extra="forbid"`` (unknown keys are errors) and strict scalar
types (``"5"`` is not a number); :func:`load_config` turns pydantic's errors into one
:class:`ConfigError` naming each key (``traces.teachers[0].endpoint: ...``). ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment in every string (an unset API key is
reported when its endpoint is checked, so stages that need no model still run). Relative
paths are relative to the config file.

See ``datasets_build/configs/example.yaml`` for every key with a comment.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datasets_build import prompts
from datasets_build.schema import NAME_RE

STAGES = ("collect", "traces", "quality", "difficulty", "domains", "select", "export")
QUALITY_CHECKS = ("ascii_art", "missing_image", "broken_numbering", "s1_markers")
DOMAIN_DRAWS = ("benchmark", "uniform", "weighted")
S1_BASE_TEMPERATURE = 0.05  # s1's data/bulk_inference.py settings for the base models
S1_BASE_MAX_TOKENS = 32768
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _path(value: Any, info: ValidationInfo) -> Path:
    """A path from the YAML, relative to the config file's folder."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a path (a string), got {value!r}")
    base = (info.context or {}).get("base")
    return _resolve(base, value) if base is not None else Path(value)


def _string_keys(value: Any) -> Any:
    """YAML reads ``{11: 2.0}`` with an int key; MSC codes and column names are strings."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _strings(value: Any) -> Any:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


# Strict scalars (no "5" for 5, no true for 1); numbers are never negative.
Count = Annotated[int, Field(ge=0, strict=True)]
Number = Annotated[float, Field(ge=0, strict=True)]
Positive = Annotated[float, Field(gt=0, strict=True)]
ConfigPath = Annotated[Path, BeforeValidator(_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Section):
    """An OpenAI-compatible server and how to call it."""

    name: StrictStr
    base_url: StrictStr
    api_key: StrictStr | None = None
    model: StrictStr | None = None
    timeout: Number = 600.0
    max_retries: Count = 3
    concurrency: Count | None = None
    missing_env: tuple[str, ...] = ()  # unset ${VAR}s, reported when the endpoint is used

    @field_validator("api_key")
    @classmethod
    def _key(cls, key: str | None) -> str | None:
        return key or None  # "${KEY:-}" unset: no key

    @model_validator(mode="after")
    def _check(self) -> Endpoint:
        if not self.base_url:
            raise ValueError(f"base_url is empty (unset variable {list(self.missing_env)})")
        return self


class Generation(_Section):
    """One kind of request: where it goes, the prompt and the sampling parameters."""

    endpoint: StrictStr
    prompt: StrictStr = "{question}"
    system: StrictStr | None = None
    max_tokens: Count | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    thinking_min: Count | None = None
    thinking_max: Count | None = None
    seed: Count | None = None
    seed_per_question: StrictBool = False
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _has_question(cls, prompt: str) -> str:
        if "{question}" not in prompt:
            raise ValueError("must contain {question}")
        return prompt


GENERATION_KEYS = frozenset(Generation.model_fields)


def _with_generation(data: Any, default_prompt: str, required: bool = True) -> Any:
    """The generation keys of a YAML mapping, gathered under ``gen`` (the YAML writes them
    beside the section's own keys)."""
    if not isinstance(data, dict) or "gen" in data:
        return data
    rest = {k: v for k, v in data.items() if k not in GENERATION_KEYS}
    gen = {k: v for k, v in data.items() if k in GENERATION_KEYS}
    if gen or required:
        rest["gen"] = {"prompt": default_prompt, **gen}
    return rest


class _Named(_Section):
    name: StrictStr

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} must be lowercase letters, digits and _ (it prefixes "
                             "column names)")
        return name


class Source(_Section):
    path: ConfigPath
    format: StrictStr | None = None
    split: StrictStr = "train"
    source_type: StrictStr | None = None
    source_type_field: StrictStr | None = None
    fields: Annotated[dict[str, str], BeforeValidator(_strings)] = Field(default_factory=dict)
    cot_type: StrictStr = "math"
    limit: Count | None = None

    @model_validator(mode="after")
    def _typed(self) -> Source:
        if self.source_type is None and self.source_type_field is None:
            raise ValueError("give source_type or source_type_field")
        return self


class EvalSet(_Section):
    name: StrictStr
    path: ConfigPath
    question_field: StrictStr = "question"
    format: StrictStr | None = None
    split: StrictStr = "test"


class Collect(_Section):
    sources: list[Source] = Field(min_length=1)
    eval_sets: list[EvalSet] = Field(default_factory=list)
    ngram: Annotated[int, Field(ge=1, strict=True)] = 8
    dedup: Literal["exact", "ngram"] = "ngram"  # ngram: also near duplicates across sources


class Teacher(_Named):
    gen: Generation
    delimiters: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _gen(cls, data: Any) -> Any:
        return _with_generation(data, prompts.TEACHER)


class Traces(_Section):
    teachers: list[Teacher] = Field(min_length=1)


class Quality(_Section):
    drop_truncated: StrictBool = True
    checks: tuple[str, ...] = QUALITY_CHECKS
    # s1: rows without a reference answer are dropped
    drop_missing_answer: StrictBool = True
    # s1: questions with an [asy] figure are dropped, except AIME's (globs on source_type)
    drop_asy: StrictBool = True
    asy_keep_sources: tuple[str, ...] = ("*aime*", "*AIME*")

    @field_validator("checks")
    @classmethod
    def _known(cls, checks: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in checks if c not in QUALITY_CHECKS]
        if bad:
            raise ValueError(f"unknown {bad}; known: {list(QUALITY_CHECKS)}")
        return checks


class BaseModelSpec(_Named):
    """A base model of the difficulty stage: called (``gen``) or its attempts read from a
    table with question and attempt columns (``attempts``)."""

    gen: Generation | None = None
    attempts: ConfigPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _gen(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("attempts") is not None:
            return data
        data = _with_generation(data, prompts.BASE_MODEL)
        if isinstance(data, dict) and isinstance(data.get("gen"), dict):
            # s1's bulk inference: temperature 0.05, 32,768 new tokens
            gen = {"temperature": S1_BASE_TEMPERATURE, "max_tokens": S1_BASE_MAX_TOKENS,
                   **{k: v for k, v in data["gen"].items() if v is not None}}
            data = {**data, "gen": gen}
        return data


class Judge(_Section):
    gen: Generation
    retries: Count = 2
    grade_all: StrictBool = False  # s1: the judge grades every attempt (no machine check first)

    @model_validator(mode="before")
    @classmethod
    def _gen(cls, data: Any) -> Any:
        return _with_generation(data, prompts.JUDGE)

    @model_validator(mode="after")
    def _placeholders(self) -> Judge:
        for placeholder in ("{reference}", "{attempt}"):
            if placeholder not in self.gen.prompt:
                raise ValueError(f"prompt: must contain {placeholder}")
        return self


class Difficulty(_Section):
    tokenizer: StrictStr
    base_models: list[BaseModelSpec] = Field(min_length=1)
    judge: Judge | None = None
    grade_teachers: StrictBool = True
    ungraded: Literal["drop", "keep"] = "drop"  # a question no attempt could be graded on

    @field_validator("tokenizer")
    @classmethod
    def _local(cls, tokenizer: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base")
        local = _resolve(base, tokenizer) if base is not None else Path(tokenizer)
        return str(local) if local.exists() else tokenizer  # a directory, else a hub id


class Domains(_Section):
    gen: Generation | None = None
    retries: Count = 2
    label_field: StrictStr | None = None
    drop_unknown: StrictBool = True  # s1 drops questions whose classification failed

    @model_validator(mode="before")
    @classmethod
    def _gen(cls, data: Any) -> Any:
        required = isinstance(data, dict) and "endpoint" in data
        return _with_generation(data, prompts.DOMAIN, required=required)

    @model_validator(mode="after")
    def _source(self) -> Domains:
        if self.gen is None and self.label_field is None:
            raise ValueError("give an endpoint (LLM classifier) or a label_field")
        return self


class PreselectRule(_Section):
    source_type: StrictStr | None = None
    domain: StrictStr | None = None
    min_trace_tokens: Count | None = None


class BenchmarkSource(_Section):
    """A benchmark-like source (a glob on source_type) and its share of the weight."""

    source_type: StrictStr
    share: Positive = 1.0


class Select(_Section):
    size: Count = 1000
    seed: Count = 0
    unknown: Literal["keep", "drop"] = "keep"
    preselect: list[PreselectRule] = Field(default_factory=list)
    # s1: a pre-selected question must have a teacher answer graded correct
    preselect_requires_correct: StrictBool = True
    # how each draw picks a domain (datasets_build/selection.py): benchmark (s1), uniform,
    # or weighted by domain_weights (MSC code -> weight, unlisted 1)
    domain_draw: Literal["benchmark", "uniform", "weighted"] = "benchmark"
    domain_weights: Annotated[dict[str, Positive], BeforeValidator(_string_keys)] = Field(
        default_factory=dict)
    # benchmark: draws are uniform until this share of `size` is selected (s1: 700 of 1000)
    uniform_share: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.7
    # benchmark: a domain weighs by its share among the questions of each benchmark-like
    # source (s1: AIME 2/3, GPQA 1/3)
    benchmark_sources: tuple[BenchmarkSource, ...] = (
        BenchmarkSource(source_type="*AIME*", share=2 / 3),
        BenchmarkSource(source_type="*gpqa*", share=1 / 3))

    @model_validator(mode="after")
    def _weights(self) -> Select:
        if self.domain_draw == "weighted" and not self.domain_weights:
            raise ValueError("domain_draw weighted needs domain_weights (MSC code -> weight; "
                             "unlisted domains weigh 1)")
        return self


class Export(_Section):
    layout: Literal["auto", "s1k", "s1k-1.1"] = "auto"


class Config(_Section):
    path: Path
    workdir: ConfigPath
    cache: Path
    concurrency: Annotated[int, Field(ge=1, strict=True)] = 16
    progress: StrictBool = True
    abort_after_failures: Count = 20
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    collect: Collect | None = None
    traces: Traces | None = None
    quality: Quality = Field(default_factory=Quality)
    difficulty: Difficulty | None = None
    domains: Domains | None = None
    select: Select = Field(default_factory=Select)
    export: Export = Field(default_factory=Export)

    @model_validator(mode="before")
    @classmethod
    def _derived(cls, data: Any, info: ValidationInfo) -> Any:
        """The file's own path, the default workdir, the cache inside it, endpoint names;
        a section given as null is absent (its defaults apply)."""
        if not isinstance(data, dict):
            return data
        path: Path = (info.context or {})["path"]
        data = {k: v for k, v in data.items() if v is not None}
        if "path" in data:
            raise ValueError("unknown key path")
        out = {**data, "path": path}
        workdir = data.get("workdir", "runs/" + path.stem)
        if isinstance(workdir, str):
            out["workdir"] = workdir = _resolve(path.parent, workdir)
            cache = data.get("cache", "cache.sqlite")
            out["cache"] = _resolve(workdir, cache) if isinstance(cache, str) else cache
        endpoints = data.get("endpoints")
        if isinstance(endpoints, dict):
            out["endpoints"] = {name: {**e, "name": name} if isinstance(e, dict) else e
                                for name, e in endpoints.items()}
        return out

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Every generation's endpoint exists; teachers and base models have distinct names."""
        defined = ", ".join(self.endpoints) or "none"
        for where, gen in self._generations():
            if gen.endpoint not in self.endpoints:
                raise ValueError(f"{where}.endpoint: unknown endpoint {gen.endpoint!r}; "
                                 f"defined: {defined}")
        names: set[str] = set()
        teachers = self.traces.teachers if self.traces else []
        bases = self.difficulty.base_models if self.difficulty else []
        for where, named in [*((f"traces.teachers[{i}]", t) for i, t in enumerate(teachers)),
                             *((f"difficulty.base_models[{i}]", b)
                               for i, b in enumerate(bases))]:
            if named.name in names:
                raise ValueError(f"{where}.name: {named.name!r} is used twice (teachers and "
                                 "base models need distinct names)")
            names.add(named.name)
        return self

    def _generations(self) -> list[tuple[str, Generation]]:
        gens: list[tuple[str, Generation | None]] = []
        if self.traces:
            gens += [(f"traces.teachers[{i}]", t.gen) for i, t in enumerate(self.traces.teachers)]
        if self.difficulty:
            gens += [(f"difficulty.base_models[{i}]", b.gen)
                     for i, b in enumerate(self.difficulty.base_models)]
            if self.difficulty.judge:
                gens.append(("difficulty.judge", self.difficulty.judge.gen))
        if self.domains:
            gens.append(("domains", self.domains.gen))
        return [(where, gen) for where, gen in gens if gen is not None]

    def section(self, stage: str) -> Any:
        value = getattr(self, stage)
        if value is None:
            raise ConfigError(f"{self.path}: the {stage!r} stage needs a '{stage}:' section")
        return value

    def endpoints_for(self, stages: list[str]) -> list[Endpoint]:
        """The endpoints the given stages call, in order of first use."""
        wanted = {"traces": "traces.", "difficulty": "difficulty.", "domains": "domains"}
        prefixes = tuple(wanted[s] for s in stages if s in wanted)
        names = [gen.endpoint for where, gen in self._generations()
                 if prefixes and where.startswith(prefixes)]
        return [self.endpoints[n] for n in dict.fromkeys(names)]


# ------------------------------------------------------------------ reading
def _expand(value: Any, missing: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; note unset variables."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            missing.append(m.group(1))
            return ""
        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, missing) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, missing) for k, v in value.items()}
    return value


def _where(loc: tuple[int | str, ...]) -> str:
    """``("traces", "teachers", 0, "gen", "prompt")`` -> ``traces.teachers[0].prompt``
    (``gen`` is where the generation keys are gathered, not a key of the YAML)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "gen" and not str(part).startswith(("function-", "tagged-union")):
            out += f".{part}" if out else str(part)
    return out


_EXPECTED = {"int": "int", "float": "float", "string": "str", "bool": "bool", "dict": "dict",
             "list": "list", "tuple": "list", "model": "mapping", "model_attributes": "mapping"}


def _message(error: Any) -> str:
    kind, where = error["type"], _where(error["loc"])
    prefix = f"{where}: " if where else ""
    value = error.get("input")
    base = kind.split("_")[0] if kind.endswith(("_type", "_parsing")) else None
    if kind == "missing":
        return f"{prefix}required"
    if kind in ("value_error", "assertion_error"):
        text = str(error["ctx"]["error"])
        return text if not where or text.startswith(where) else prefix + text
    if base in _EXPECTED or kind in ("model_type", "model_attributes_type"):
        key = base if base in _EXPECTED else kind.removesuffix("_type")
        return f"{prefix}expected {_EXPECTED[key]}, got {value!r}"
    if kind in _BOUNDS:
        return f"{prefix}must be {_BOUNDS[kind]} {next(iter(error['ctx'].values()))}, " \
               f"got {value!r}"
    if kind == "too_short":
        return f"{prefix}at least one is needed"
    if kind == "literal_error":
        return f"{prefix}expected {error['ctx']['expected']}, got {value!r}"
    return f"{prefix}{error['msg']} (got {value!r})"


_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
           "less_than": "<"}


def _section_type(annotation: Any) -> type[_Section] | None:
    """The section model in ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    args = typing.get_args(annotation)
    for t in (annotation, *args, *(a for arg in args for a in typing.get_args(arg))):
        if isinstance(t, type) and issubclass(t, _Section):
            return t
    return None


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the YAML may use at ``loc`` (a section's fields, generation keys beside)."""
    model: type[_Section] | None = Config
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _section_type(model.model_fields[part].annotation)
        elif not isinstance(part, int) and model is not Endpoint:  # endpoint names: dict keys
            model = None
    if model is None:
        return []
    keys = set(model.model_fields) - {"path", "missing_env"}
    if "gen" in keys:
        keys = keys - {"gen"} | GENERATION_KEYS
    return sorted(keys - ({"name"} if model is Endpoint else set()))


def _errors(exc: ValidationError, name: str) -> str:
    errors = exc.errors(include_url=False)
    unknown: dict[tuple[str, tuple[int | str, ...]], list[str]] = {}
    lines: list[str] = []
    for error in errors:
        if error["type"] == "extra_forbidden":
            loc = error["loc"][:-1]
            unknown.setdefault((_where(loc), loc), []).append(str(error["loc"][-1]))
        else:
            lines.append(_message(error))
    for (where, loc), keys in unknown.items():
        prefix = f"{where}: " if where else ""
        known = _known_keys(loc)
        lines.insert(0, f"{prefix}unknown key(s) {', '.join(sorted(keys))}"
                     + (f"; known: {', '.join(known)}" if known else ""))
    return f"{name}: " + "; ".join(dict.fromkeys(lines))


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Build a :class:`Config` from the decoded YAML of ``path``."""
    try:
        return Config.model_validate(data, context={"path": path, "base": path.parent})
    except ValidationError as exc:
        raise ConfigError(_errors(exc, path.name)) from None


def load_config(path: str | Path) -> Config:
    """Read and check a pipeline YAML file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    missing: list[str] = []
    # endpoints expand their own variables (an unset key is reported at preflight)
    data = {k: (v if k == "endpoints" else _expand(v, missing)) for k, v in data.items()}
    if missing:
        raise ConfigError(f"{path}: environment variable(s) not set: {', '.join(missing)}")
    endpoints = data.get("endpoints")
    if isinstance(endpoints, dict):
        data["endpoints"] = {name: _endpoint_env(e) for name, e in endpoints.items()}
    return parse_config(data, path)


def _endpoint_env(endpoint: Any) -> Any:
    if not isinstance(endpoint, dict):
        return endpoint
    missing: list[str] = []
    expanded = _expand(endpoint, missing)
    return {**expanded, "missing_env": tuple(missing)} if missing else expanded
