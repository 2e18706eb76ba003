"""The module graph of bot/ has no import cycle (handlers never import the app that registers them).

Only imports that run when a module is loaded count: module level, outside ``if TYPE_CHECKING:``.
Importing ``bot.a.b`` also runs ``bot/a/__init__.py``, so that edge counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def exists(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def load_time_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # the packages on the way run their __init__ too
            prefix = ".".join(parts[:i])
            if exists(prefix):
                out.add(prefix)

    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bot."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot"):
            add(node.module)
            for alias in node.names:
                if exists(f"{node.module}.{alias.name}"):
                    add(f"{node.module}.{alias.name}")
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for path in BOT.rglob("*.py"):
        name = module_name(path)
        g[name] = {m for m in load_time_imports(path) if m != name}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            # a package's own __init__ importing its submodules is how packages work, not a cycle
            if n.startswith(m + "."):
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_in_bot():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_detector_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
