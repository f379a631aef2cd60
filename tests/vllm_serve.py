"""``vllm serve``'s own parse of a command line, for the tests that compare s1-serve's
command line with it (test_cli_corpus, test_cli_overrides, test_cli_batch_defaults):
the namespace vLLM runs with, that namespace with s1-serve's documented defaults applied,
and the fields two namespaces differ in."""

from __future__ import annotations

import argparse
from typing import Any

MISSING = "<absent>"


def vllm_serve_args(argv: list[str]) -> argparse.Namespace:
    """The namespace ``vllm serve ARGV`` runs with (vllm/entrypoints/cli/serve.py)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    validate_parsed_serve_args(args)
    return args


def s1_expected(vllm_args: argparse.Namespace, env_api_key: str | None) -> dict[str, Any]:
    """``vllm serve``'s namespace with s1-serve's documented defaults applied: ``host``
    127.0.0.1, ``served_model_name`` ``[model]``, ``api_key`` the merged list."""
    expected = dict(vars(vllm_args))
    if expected["host"] is None:
        expected["host"] = "127.0.0.1"
    if not expected["served_model_name"]:
        expected["served_model_name"] = [vllm_args.model]
    # vLLM's server takes --api-key, else VLLM_API_KEY (serve/middleware/register.py).
    keys = list(expected["api_key"] or []) or ([env_api_key] if env_api_key else [])
    expected["api_key"] = keys or None
    return expected


def field_diffs(got: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (got, expected)} for every field the two differ in (absent: MISSING)."""
    return {k: (got.get(k, MISSING), expected.get(k, MISSING))
            for k in sorted(set(got) | set(expected))
            if got.get(k, MISSING) != expected.get(k, MISSING)}
