"""The layering of DESIGN.md, checked on the source: import arrows point down.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a circle that
only type checkers follow is still a circle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "middleware")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement of a module, wherever it stands."""
    modules = sources()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules else base), node.lineno


@cache
def graph() -> dict[str, list[tuple[str, int]]]:
    """Module -> the project modules it imports (with the line of each import)."""
    return {
        mod: [(name, line) for name, line in imported(mod, path) if name.split(".")[0] in PACKAGES]
        for mod, path in sources().items()
    }


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offending(modules: str, forbidden: tuple[str, ...]) -> list[str]:
    """``module:line -> target`` for each import from ``modules`` into a forbidden prefix."""
    return [
        f"{mod}:{line} -> {name}"
        for mod, edges in graph().items()
        if within(mod, modules)
        for name, line in edges
        if any(within(name, f) for f in forbidden)
    ]


def reaches(start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for name, _ in graph().get(todo.pop(), []):
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return False


def test_graph_sees_the_imports() -> None:
    """The walk finds real edges, top-level and under TYPE_CHECKING, so the checks below can fail."""
    gateway = {name for name, _ in graph()["proxy.gateway"]}
    assert {"proxy.router.router", "proxy.services", "proxy.providers.registry"} <= gateway
    assert "proxy.context" in {name for name, _ in graph()["proxy.router.router"]}  # a TYPE_CHECKING import
    assert "proxy.providers.mock" in {name for name, _ in graph()["proxy.dispatch"]}  # from proxy.providers import mock


def test_providers_import_no_router_gateway_or_services() -> None:
    assert offending("proxy.providers", ("proxy.router", "proxy.gateway", "proxy.services")) == []


def test_router_imports_no_providers() -> None:
    assert offending("proxy.router", ("proxy.providers",)) == []


def test_deployment_is_core_data() -> None:
    assert "proxy.deployment" in graph()
    assert offending("proxy.deployment", ("proxy.providers", "proxy.router")) == []


def test_router_and_services_form_no_circle() -> None:
    assert not (reaches("proxy.router.router", "proxy.services") and reaches("proxy.services", "proxy.router.router"))
