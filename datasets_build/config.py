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

The sections themselves are in :mod:`datasets_build.config_sections` (re-exported here).
See ``datasets_build/configs/example.yaml`` for every key with a comment.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, StrictBool, ValidationError, ValidationInfo, model_validator

from datasets_build.config_sections import (  # noqa: F401  (re-exported)
    GENERATION_KEYS,
    QUALITY_CHECKS,
    S1_BASE_MAX_TOKENS,
    S1_BASE_TEMPERATURE,
    STAGES,
    BaseModelSpec,
    BenchmarkSource,
    Collect,
    ConfigError,
    ConfigPath,
    Count,
    Difficulty,
    Domains,
    Endpoint,
    EvalSet,
    Export,
    Generation,
    Judge,
    PreselectRule,
    Quality,
    Select,
    Source,
    Teacher,
    Traces,
    _resolve,
    _Section,
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
