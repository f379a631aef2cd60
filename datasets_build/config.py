"""The pipeline configuration (one YAML file), checked completely before any work starts.

Why strict: a run over tens of thousands of questions pays for model calls, so a typo in a
key, a teacher pointing at an endpoint that does not exist or a prompt without
``{question}`` must fail at once with the exact place to fix, not an hour in. Unknown keys
are errors. ``${VAR}`` and ``${VAR:-default}`` are replaced from the environment in every
string (an unset API key is reported when its endpoint is checked, so stages that need no
model still run). Relative paths are relative to the config file.

See ``datasets_build/configs/example.yaml`` for every key with a comment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server and how to call it."""

    name: str
    base_url: str
    api_key: str | None = None
    model: str | None = None
    timeout: float = 600.0
    max_retries: int = 3
    concurrency: int | None = None
    missing_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    """One kind of request: where it goes, the prompt and the sampling parameters."""

    endpoint: str
    prompt: str = "{question}"
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    thinking_min: int | None = None
    thinking_max: int | None = None
    seed: int | None = None
    seed_per_question: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    path: Path
    format: str | None = None
    split: str = "train"
    source_type: str | None = None
    source_type_field: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    cot_type: str = "math"
    limit: int | None = None


@dataclass(frozen=True)
class EvalSet:
    name: str
    path: Path
    question_field: str = "question"
    format: str | None = None
    split: str = "test"


@dataclass(frozen=True)
class Collect:
    sources: list[Source]
    eval_sets: list[EvalSet] = field(default_factory=list)
    ngram: int = 8
    dedup: str = "ngram"  # exact, or ngram: also near duplicates across sources (s1)


@dataclass(frozen=True)
class Teacher:
    name: str
    gen: Generation
    delimiters: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Traces:
    teachers: list[Teacher]


@dataclass(frozen=True)
class Quality:
    drop_truncated: bool = True
    checks: tuple[str, ...] = QUALITY_CHECKS
    # s1: rows without a reference answer are dropped
    drop_missing_answer: bool = True
    # s1: questions with an [asy] figure are dropped, except AIME's (globs on source_type)
    drop_asy: bool = True
    asy_keep_sources: tuple[str, ...] = ("*aime*", "*AIME*")


@dataclass(frozen=True)
class BaseModel:
    name: str
    gen: Generation | None = None
    attempts: Path | None = None  # precomputed attempts: a table with question, attempt


@dataclass(frozen=True)
class Judge:
    gen: Generation
    retries: int = 2
    grade_all: bool = False  # s1: the judge grades every attempt (no machine check first)


@dataclass(frozen=True)
class Difficulty:
    tokenizer: str
    base_models: list[BaseModel]
    judge: Judge | None = None
    grade_teachers: bool = True
    ungraded: str = "drop"  # a question no attempt could be graded on: drop (s1) or keep


@dataclass(frozen=True)
class Domains:
    gen: Generation | None = None
    retries: int = 2
    label_field: str | None = None
    drop_unknown: bool = True  # s1 drops questions whose classification failed


@dataclass(frozen=True)
class PreselectRule:
    source_type: str | None = None
    domain: str | None = None
    min_trace_tokens: int | None = None


@dataclass(frozen=True)
class Select:
    size: int = 1000
    seed: int = 0
    unknown: str = "keep"
    preselect: list[PreselectRule] = field(default_factory=list)
    # s1: a pre-selected question must have a teacher answer graded correct
    preselect_requires_correct: bool = True
    # how each draw picks a domain (datasets_build/selection.py): benchmark (s1), uniform,
    # or weighted by domain_weights (MSC code -> weight, unlisted 1)
    domain_draw: str = "benchmark"
    domain_weights: dict[str, float] = field(default_factory=dict)
    # benchmark: draws are uniform until this share of `size` is selected (s1: 700 of 1000)
    uniform_share: float = 0.7
    # benchmark: (source_type glob, share of the weight); a domain weighs by its share
    # among the questions of each benchmark-like source (s1: AIME 2/3, GPQA 1/3)
    benchmark_sources: tuple[tuple[str, float], ...] = (("*AIME*", 2 / 3), ("*gpqa*", 1 / 3))


@dataclass(frozen=True)
class Export:
    layout: str = "auto"


@dataclass(frozen=True)
class Config:
    path: Path
    workdir: Path
    cache: Path
    concurrency: int = 16
    progress: bool = True
    abort_after_failures: int = 20
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    collect: Collect | None = None
    traces: Traces | None = None
    quality: Quality = field(default_factory=Quality)
    difficulty: Difficulty | None = None
    domains: Domains | None = None
    select: Select = field(default_factory=Select)
    export: Export = field(default_factory=Export)

    def section(self, stage: str) -> Any:
        value = getattr(self, stage)
        if value is None:
            raise ConfigError(f"{self.path}: the {stage!r} stage needs a '{stage}:' section")
        return value

    def endpoints_for(self, stages: list[str]) -> list[Endpoint]:
        """The endpoints the given stages call, in order of first use."""
        gens: list[Generation] = []
        if "traces" in stages and self.traces:
            gens += [t.gen for t in self.traces.teachers]
        if "difficulty" in stages and self.difficulty:
            gens += [b.gen for b in self.difficulty.base_models if b.gen]
            gens += [self.difficulty.judge.gen] if self.difficulty.judge else []
        if "domains" in stages and self.domains and self.domains.gen:
            gens.append(self.domains.gen)
        names = list(dict.fromkeys(g.endpoint for g in gens))
        return [self.endpoints[n] for n in names]


# ------------------------------------------------------------------ reading
class _Section:
    """A mapping being read; remembers the keys taken so leftovers can be reported."""

    def __init__(self, data: Any, where: str, base: Path) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data, self.where, self.base, self.seen = data, where, base, set()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(f"{self.where}.{key}: required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where}.{key}: expected {names}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{self.where}.{key}: must be >= 0, got {value}")
        return value

    def path(self, key: str, required: bool = False) -> Path | None:
        value = self.get(key, str, required=required)
        return None if value is None else _resolve(self.base, value)

    def sub(self, key: str) -> _Section:
        self.seen.add(key)
        return _Section(self.data.get(key), f"{self.where}.{key}", self.base)

    def items(self, key: str) -> list[_Section]:
        self.seen.add(key)
        value = self.data.get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"{self.where}.{key}: expected a list")
        return [_Section(v, f"{self.where}.{key}[{i}]", self.base) for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.where}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(self.seen))}")


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


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


def _name(s: _Section, taken: set[str]) -> str:
    name = s.get("name", str, required=True)
    if not NAME_RE.match(name):
        raise ConfigError(f"{s.where}.name: {name!r} must be lowercase letters, digits and _ "
                          "(it prefixes column names)")
    if name in taken:
        raise ConfigError(f"{s.where}.name: {name!r} is used twice (teachers and base models "
                          "need distinct names)")
    taken.add(name)
    return name


def _generation(s: _Section, endpoints: dict[str, Endpoint], needs: tuple[str, ...] = (),
                default_prompt: str = prompts.TEACHER) -> Generation:
    endpoint = s.get("endpoint", str, required=True)
    if endpoint not in endpoints:
        raise ConfigError(f"{s.where}.endpoint: unknown endpoint {endpoint!r}; defined: "
                          f"{', '.join(endpoints) or 'none'}")
    gen = Generation(
        endpoint=endpoint, prompt=s.get("prompt", str, default_prompt),
        system=s.get("system", str), max_tokens=s.get("max_tokens", int),
        temperature=s.get("temperature", float), top_p=s.get("top_p", float),
        thinking_min=s.get("thinking_min", int), thinking_max=s.get("thinking_max", int),
        seed=s.get("seed", int),
        seed_per_question=s.get("seed_per_question", bool, False),
        extra_body=s.get("extra_body", dict, {}))
    for placeholder in ("{question}", *needs):
        if placeholder not in gen.prompt:
            raise ConfigError(f"{s.where}.prompt: must contain {placeholder}")
    return gen


def _endpoints(s: _Section) -> dict[str, Endpoint]:
    out = {}
    for name in list(s.data):
        e = s.sub(name)
        missing: list[str] = []
        e.data = _expand(e.data, missing)
        base_url = e.get("base_url", str, required=True)
        if not base_url:
            raise ConfigError(f"{e.where}.base_url: empty (unset variable {missing})")
        out[name] = Endpoint(name=name, base_url=base_url, api_key=e.get("api_key", str) or None,
                             model=e.get("model", str), timeout=e.get("timeout", float, 600.0),
                             max_retries=e.get("max_retries", int, 3),
                             concurrency=e.get("concurrency", int),
                             missing_env=tuple(missing))
        e.done()
    return out


def _collect(s: _Section) -> Collect:
    sources = []
    for src in s.items("sources"):
        fields = src.get("fields", dict, {})
        sources.append(Source(
            path=src.path("path", required=True), format=src.get("format", str),
            split=src.get("split", str, "train"), source_type=src.get("source_type", str),
            source_type_field=src.get("source_type_field", str),
            fields={str(k): str(v) for k, v in fields.items()},
            cot_type=src.get("cot_type", str, "math"), limit=src.get("limit", int)))
        if sources[-1].source_type is None and sources[-1].source_type_field is None:
            raise ConfigError(f"{src.where}: give source_type or source_type_field")
        src.done()
    if not sources:
        raise ConfigError(f"{s.where}.sources: at least one source is needed")
    evals = []
    for ev in s.items("eval_sets"):
        evals.append(EvalSet(name=ev.get("name", str, required=True),
                             path=ev.path("path", required=True),
                             question_field=ev.get("question_field", str, "question"),
                             format=ev.get("format", str), split=ev.get("split", str, "test")))
        ev.done()
    ngram = s.get("ngram", int, 8)
    if ngram < 1:
        raise ConfigError(f"{s.where}.ngram: must be >= 1")
    dedup = s.get("dedup", str, "ngram")
    if dedup not in ("exact", "ngram"):
        raise ConfigError(f"{s.where}.dedup: expected exact or ngram, got {dedup!r}")
    return Collect(sources, evals, ngram, dedup)


def _traces(s: _Section, endpoints: dict[str, Endpoint], names: set[str]) -> Traces:
    teachers = []
    for t in s.items("teachers"):
        name = _name(t, names)
        delims = t.get("delimiters", list, [])
        if not all(isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
                   for d in delims):
            raise ConfigError(f"{t.where}.delimiters: expected a list of [start, end] pairs")
        gen = _generation(t, endpoints)
        t.done()
        teachers.append(Teacher(name, gen, [(a, b) for a, b in delims]))
    if not teachers:
        raise ConfigError(f"{s.where}.teachers: at least one teacher is needed")
    return Traces(teachers)


def _difficulty(s: _Section, endpoints: dict[str, Endpoint], names: set[str]) -> Difficulty:
    models = []
    for b in s.items("base_models"):
        name = _name(b, names)
        attempts = b.path("attempts")
        gen = None if attempts else _generation(b, endpoints, default_prompt=prompts.BASE_MODEL)
        if gen is not None:  # s1's bulk inference: temperature 0.05, 32,768 new tokens
            gen = dataclasses.replace(
                gen, temperature=S1_BASE_TEMPERATURE if gen.temperature is None
                else gen.temperature,
                max_tokens=S1_BASE_MAX_TOKENS if gen.max_tokens is None else gen.max_tokens)
        b.done()
        models.append(BaseModel(name, gen, attempts))
    if not models:
        raise ConfigError(f"{s.where}.base_models: at least one base model is needed")
    judge = None
    if s.data.get("judge"):
        j = s.sub("judge")
        judge = Judge(_generation(j, endpoints, ("{reference}", "{attempt}"), prompts.JUDGE),
                      j.get("retries", int, 2), j.get("grade_all", bool, False))
        j.done()
    else:
        s.seen.add("judge")
    tokenizer = s.get("tokenizer", str, required=True)
    local = _resolve(s.base, tokenizer)  # a path relative to the config, else a hub id
    ungraded = s.get("ungraded", str, "drop")
    if ungraded not in ("drop", "keep"):
        raise ConfigError(f"{s.where}.ungraded: expected drop or keep, got {ungraded!r}")
    return Difficulty(tokenizer=str(local) if local.exists() else tokenizer, base_models=models,
                      judge=judge, grade_teachers=s.get("grade_teachers", bool, True),
                      ungraded=ungraded)


def _domains(s: _Section, endpoints: dict[str, Endpoint]) -> Domains:
    gen = (_generation(s, endpoints, default_prompt=prompts.DOMAIN) if "endpoint" in s.data
           else None)
    label_field = s.get("label_field", str)
    if gen is None and label_field is None:
        raise ConfigError(f"{s.where}: give an endpoint (LLM classifier) or a label_field")
    return Domains(gen=gen, retries=s.get("retries", int, 2), label_field=label_field,
                   drop_unknown=s.get("drop_unknown", bool, True))


def _select(s: _Section) -> Select:
    rules = []
    for r in s.items("preselect"):
        rules.append(PreselectRule(source_type=r.get("source_type", str),
                                   domain=r.get("domain", str),
                                   min_trace_tokens=r.get("min_trace_tokens", int)))
        r.done()
    unknown = s.get("unknown", str, "keep")
    if unknown not in ("keep", "drop"):
        raise ConfigError(f"{s.where}.unknown: expected keep or drop, got {unknown!r}")
    draw = s.get("domain_draw", str, "benchmark")
    if draw not in DOMAIN_DRAWS:
        raise ConfigError(f"{s.where}.domain_draw: expected one of {list(DOMAIN_DRAWS)}, "
                          f"got {draw!r}")
    weights = {str(k): v for k, v in s.get("domain_weights", dict, {}).items()}
    bad = {k: v for k, v in weights.items()
           if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0}
    if bad:
        raise ConfigError(f"{s.where}.domain_weights: weights must be positive numbers, "
                          f"got {bad}")
    if draw == "weighted" and not weights:
        raise ConfigError(f"{s.where}: domain_draw weighted needs domain_weights "
                          "(MSC code -> weight; unlisted domains weigh 1)")
    share = s.get("uniform_share", float, 0.7)
    if not 0 <= share <= 1:
        raise ConfigError(f"{s.where}.uniform_share: must be in [0, 1], got {share}")
    bench = []
    for b in s.items("benchmark_sources"):
        glob, w = b.get("source_type", str, required=True), b.get("share", float, 1.0)
        if w <= 0:
            raise ConfigError(f"{b.where}.share: must be positive, got {w}")
        bench.append((glob, w))
        b.done()
    return Select(size=s.get("size", int, 1000), seed=s.get("seed", int, 0), unknown=unknown,
                  preselect=rules,
                  preselect_requires_correct=s.get("preselect_requires_correct", bool, True),
                  domain_draw=draw, domain_weights={k: float(v) for k, v in weights.items()},
                  uniform_share=share,
                  benchmark_sources=tuple(bench) if bench else Select.benchmark_sources)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Build a :class:`Config` from the decoded YAML of ``path``."""
    top = _Section(data, path.name, path.parent)
    names: set[str] = set()
    endpoints = _endpoints(top.sub("endpoints"))
    workdir = top.path("workdir") or _resolve(path.parent, "runs/" + path.stem)
    cache_value = top.get("cache", str)
    cache = _resolve(workdir, cache_value) if cache_value else workdir / "cache.sqlite"

    def opt(key: str, build: Any) -> Any:
        if data.get(key) is None:
            top.seen.add(key)
            return None
        sub = top.sub(key)
        value = build(sub)
        sub.done()
        return value

    q = opt("quality", lambda s: Quality(
        s.get("drop_truncated", bool, True), tuple(s.get("checks", list, list(QUALITY_CHECKS))),
        s.get("drop_missing_answer", bool, True), s.get("drop_asy", bool, True),
        tuple(s.get("asy_keep_sources", list, ["*aime*", "*AIME*"]))))
    if q is not None:
        bad = [c for c in q.checks if c not in QUALITY_CHECKS]
        if bad:
            raise ConfigError(f"quality.checks: unknown {bad}; known: {list(QUALITY_CHECKS)}")
    cfg = Config(
        path=path, workdir=workdir, cache=cache,
        concurrency=max(1, top.get("concurrency", int, 16)),
        progress=top.get("progress", bool, True),
        abort_after_failures=top.get("abort_after_failures", int, 20),
        endpoints=endpoints,
        collect=opt("collect", _collect),
        traces=opt("traces", lambda s: _traces(s, endpoints, names)),
        quality=q or Quality(),
        difficulty=opt("difficulty", lambda s: _difficulty(s, endpoints, names)),
        domains=opt("domains", lambda s: _domains(s, endpoints)),
        select=opt("select", _select) or Select(),
        export=opt("export", lambda s: Export(s.get("layout", str, "auto"))) or Export(),
    )
    if cfg.export.layout not in ("auto", "s1k", "s1k-1.1"):
        raise ConfigError(f"export.layout: expected auto, s1k or s1k-1.1, got "
                          f"{cfg.export.layout!r}")
    top.done()
    return cfg


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
    return parse_config(data, path)
