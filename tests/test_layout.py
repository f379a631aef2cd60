"""The layers of server/ point one way, and no module imports itself back.

``server/budget`` is the pure core (no vLLM, FastAPI or torch, nothing from the other
layers): it must stay testable in microseconds and usable by the client and the
evaluation. ``server/engine`` runs inside vLLM's engine processes and must not pull the
HTTP layer in. ``server/api`` sits on top. Read from the source with ``ast``, lazy
imports inside functions included, so a shortcut taken in a function body fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "server"
# Layer -> imports it must not make (module prefixes).
FORBIDDEN = {
    "budget": ("vllm", "torch", "fastapi", "starlette", "server.engine", "server.api",
               "server.playground", "server.settings"),
    "engine": ("fastapi", "starlette", "server.api", "server.playground"),
}


def _module(path: Path) -> str:
    parts = path.relative_to(SERVER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            # "from server.api import metrics" imports the module server.api.metrics
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


MODULES = {_module(p): _imports(p) for p in sorted(SERVER.rglob("*.py"))}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    bad = {mod: sorted(i for i in imports if i.startswith(FORBIDDEN[layer]))
           for mod, imports in MODULES.items()
           if mod == f"server.{layer}" or mod.startswith(f"server.{layer}.")}
    assert not {m: b for m, b in bad.items() if b}, f"server/{layer} reaches up: {bad}"


def test_the_layers_hold_modules() -> None:
    """The test above can fail only if the layers hold modules."""
    for layer in ("budget", "engine", "api"):
        assert sum(m.startswith(f"server.{layer}.") for m in MODULES) >= 3, layer


def test_no_import_cycles() -> None:
    graph = {mod: {i for i in imports if i in MODULES and i != mod}
             for mod, imports in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, f"import cycles: {cycles}"
