"""The sections of the pipeline configuration: one strict pydantic model per YAML section.

What: ``Endpoint``, ``Generation`` and each stage's section (``Collect`` ... ``Export``),
with their defaults (the s1 settings) and their own checks. Why a module of its own: the
sections are what a reader looks up key by key; the root ``Config``, the file reading and
the error messages live in :mod:`datasets_build.config`, which re-exports everything here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datasets_build import prompts
from datasets_build.schema import NAME_RE

STAGES = ("collect", "traces", "quality", "difficulty", "domains", "select", "export")
QUALITY_CHECKS = ("ascii_art", "missing_image", "broken_numbering", "s1_markers")
S1_BASE_TEMPERATURE = 0.05  # s1's data/bulk_inference.py settings for the base models
S1_BASE_MAX_TOKENS = 32768


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
    """Conditions that all hold for a pre-selected question. ``source_type`` is a glob
    matched case-insensitively (``*aime*`` finds s1's ``qq8933/AIME_1983_2024``);
    ``trace_tokens_over`` is strict (s1: MATH traces longer than 5,600 tokens),
    ``min_trace_tokens`` inclusive."""

    source_type: StrictStr | None = None
    domain: StrictStr | None = None
    min_trace_tokens: Count | None = None
    trace_tokens_over: Count | None = None


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
    # whose grade counts: any teacher's, or the first teacher's only (s1: Gemini's)
    preselect_correct_teacher: Literal["any", "first"] = "any"
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
