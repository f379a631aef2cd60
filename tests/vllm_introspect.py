"""Introspection the vLLM contract tests share (test_vllm_contract, test_vllm_contract_http,
test_vllm_contract_request): parameter names and kinds of a callable, and an object named
by its dotted path."""

from __future__ import annotations

import importlib
import inspect
from typing import Any


def param_names(func: Any) -> list[str]:
    """Parameter names of ``func``, without ``self``/``cls``."""
    return [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]


def param_kinds(func: Any) -> dict[str, inspect._ParameterKind]:
    return {n: p.kind for n, p in inspect.signature(func).parameters.items()}


def resolve(path: str) -> Any:
    """``package.module.name`` imported: the module's attribute ``name``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)
