"""The ``s1-serve`` command line: vLLM's own parser plus one group of s1 settings.

``s1-serve [MODEL] [any vllm serve argument] [s1 settings]`` is parsed by vLLM's
``FlexibleArgumentParser`` with ``make_arg_parser`` (every engine and frontend argument,
``--config serve.yaml``, ``-O``/JSON config arguments, its validation), and the
s1 settings of :class:`server.settings.Settings` are one extra argument group. What
differs from ``vllm serve`` is only s1's defaults:

* the model defaults to the embedded demo model (no download), and the server binds
  to 127.0.0.1 unless ``--host`` says otherwise;
* every vLLM argument can also come from an ``S1_<DEST>`` environment variable
  (``S1_MAX_MODEL_LEN=32768``), as the s1 settings always could; a flag wins;
* the older s1-serve spellings keep working: ``--api-keys a,b`` (= ``--api-key a b``)
  and ``--cors-origins a,b`` (= ``--allowed-origins '["a","b"]'``).

API keys are vLLM's: ``--api-key``, else ``VLLM_API_KEY``; ``--api-keys``,
``S1_API_KEYS`` and ``--api-key-file`` add to them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import ValidationError

from server.settings import DEMO_MODEL, Settings

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
# The vLLM release the s1 layer is written and tested against (tests/test_vllm_contract.py
# lists what it relies on).
TESTED_VLLM = "0.32.0"


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
            defaults[dest] = _convert(action, raw)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"invalid {ENV_PREFIX}{dest.upper()}={raw!r}: {exc}") from None
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


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    """vLLM's namespace (engine and frontend arguments) and the s1 settings."""
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    parser = make_parser()
    args = parser.parse_args(argv)
    if getattr(args, "model_tag", None):
        args.model = args.model_tag  # as `vllm serve MODEL`
    try:
        validate_parsed_serve_args(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    s1 = {name: getattr(args, name) for name in Settings.model_fields
          if name not in VLLM_OWNED and hasattr(args, name)}
    for name in s1:
        delattr(args, name)  # vLLM's namespace keeps vLLM's arguments only
    owned = {name: getattr(args, name, None) for name in VLLM_OWNED}
    names = owned.pop("served_model_name")
    owned["served_model_name"] = names[0] if names else None
    owned = {k: v for k, v in owned.items() if v is not None}
    try:
        settings = Settings(**owned, **s1)
    except ValidationError as exc:
        lines = [f"  --{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                 for e in exc.errors()]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None
    check_vllm_version(settings.allow_untested_vllm)
    _merge_keys_and_origins(args, settings)
    if not args.served_model_name:
        args.served_model_name = [settings.model_name]
    settings.use_vllm_args(args)
    return args, settings


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


def check_vllm_version(allowed: bool, installed: str | None = None) -> None:
    """Refuse to start on another vLLM unless ``--allow-untested-vllm`` says so."""
    if installed is None:
        import vllm

        installed = vllm.__version__
    if installed.split("+")[0] == TESTED_VLLM:
        return
    if not allowed:
        raise SystemExit(f"s1-serve is built and tested against vLLM {TESTED_VLLM}, but vLLM "
                         f"{installed} is installed; install vllm=={TESTED_VLLM}, or start "
                         "with --allow-untested-vllm to try it anyway")
    import logging

    logging.getLogger(__name__).warning("running on untested vLLM %s (tested: %s)",
                                        installed, TESTED_VLLM)


def _merge_keys_and_origins(args: argparse.Namespace, settings: Settings) -> None:
    """One list of API keys and of CORS origins, whichever spelling gave them."""
    keys = list(args.api_key or [])
    if not keys and os.environ.get("VLLM_API_KEY"):
        keys = [os.environ["VLLM_API_KEY"]]
    keys += [k for k in settings.all_api_keys() if k not in keys]
    args.api_key = keys or None
    settings.api_keys = keys
    settings.api_key_file = None  # read once, above
    origins = list(args.allowed_origins or []) + [
        o for o in settings.cors_origins if o not in (args.allowed_origins or [])]
    args.allowed_origins = origins
    settings.cors_origins = origins
