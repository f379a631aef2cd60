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

from pydantic import ValidationError

from server.settings import VLLM_OWNED, Settings, make_parser

# The vLLM release the s1 layer is written and tested against (tests/test_vllm_contract.py
# lists what it relies on).
TESTED_VLLM = "0.32.0"


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
    settings = settings_for(args, s1)
    check_vllm_version(settings.allow_untested_vllm)
    _merge_keys_and_origins(args, settings)
    if not args.served_model_name:
        args.served_model_name = [settings.model_name]
    settings.use_vllm_args(args)
    return args, settings


def settings_for(args: argparse.Namespace, s1: dict | None = None) -> Settings:
    """The s1 settings beside vLLM's parsed arguments: the fields vLLM owns mirrored from
    ``args``, the s1 group from ``s1`` (flags) and ``S1_*`` variables. Used by ``s1-serve``
    and by the endpoint plugin on stock ``vllm serve`` (no s1 flags there)."""
    owned = {name: getattr(args, name, None) for name in VLLM_OWNED}
    names = owned.pop("served_model_name")
    owned["served_model_name"] = names[0] if names else None
    owned = {k: v for k, v in owned.items() if v is not None}
    try:
        settings = Settings(**owned, **(s1 or {}))
    except ValidationError as exc:
        lines = [f"  --{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                 for e in exc.errors()]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None
    settings.use_vllm_args(args)
    return settings


def load_settings(argv: list[str] | None = None) -> Settings:
    """The s1 settings of a command line as ``s1-serve`` parses it; exits with a readable
    error."""
    return parse(argv)[1]


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
