"""The module graph of bot/: layers that hold without deferred imports, and no import cycle.

Every import of a ``bot.*`` module counts, wherever it is written: at module level, inside a function and
under ``if TYPE_CHECKING:`` (a deferred import hides an edge, it does not remove it). Importing
``bot.a.b`` also runs ``bot/a/__init__.py``, so that edge counts too.

The layers, lowest first (a module may import its own layer and the layers below, never above):

* ``base``: config, durations, secrets, logs, metrics, phrase (no Slack, no database);
* ``models``: the typed records and pure parsing every layer shares (requests and their ids, sessions,
  pooler rows, SQL loading, redaction, commands);
* ``data``: ``postgres/`` (monitored servers) and ``state/`` (the bot's own database);
* ``domain``: ``approval/``, ``bulk/``, ``watch/``, ``lagwatch/``, the alert shell (``alerts.py``) and the
  fleet's shares (``fleet/shards.py``; its pure assignment rules are models);
* ``render``: ``render/`` (Block Kit, escaping);
* ``edge``: ``slack/`` (handlers take a typed ``bot.slack.context.Context``, never the runtime);
* ``top``: the composition root and the programs: runtime, wiring, the Bolt app, CLI, check, shell,
  audit export.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("bot.config", "bot.durations", "bot.secrets", "bot.logs", "bot.metrics", "bot.phrase")),
    ("models", ("bot.approval.models", "bot.approval.ids", "bot.postgres.models", "bot.postgres.pooler_models",
                "bot.postgres.redact", "bot.postgres.sql", "bot.lagwatch.model", "bot.watch.model",
                "bot.watch.incident_models", "bot.commands",
                "bot.session_rules", "bot.channel_defaults",
                # the fleet's pure assignment rules (rendezvous hashing), read by its state gateway
                "bot.fleet", "bot.fleet.assign")),
    ("data", ("bot.postgres", "bot.state")),
    ("domain", ("bot.approval", "bot.bulk", "bot.watch", "bot.lagwatch", "bot.visibility", "bot.alerts",
                "bot.fleet.shards")),
    ("render", ("bot.render",)),
    ("edge", ("bot.slack",)),
    ("top", ("bot.runtime", "bot.wiring", "bot.slack.app", "bot.cli", "bot.cli_common", "bot.check", "bot.check_report",
             "bot.check_servers", "bot.check_services", "bot.shell",
             "bot.audit_export", "bot.__main__", "bot")),
]

# The modules other work is rewriting right now (issue 22 §1-4: one alert engine, per-environment leases,
# store-down behaviour). Their known exceptions are listed here, each with why; empty this list as they land.
ALLOWED_UPWARD: set[tuple[str, str]] = set()
ALLOWED_DEFERRED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def exists(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix naming ``module``."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def imports(path: Path) -> dict[str, str]:
    """Every bot module ``path`` imports -> how: "module", "function" or "TYPE_CHECKING"."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}

    def add(name: str, how: str) -> None:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # the packages on the way run their __init__ too
            prefix = ".".join(parts[:i])
            if exists(prefix) and out.get(prefix, "module") == "module":
                out[prefix] = how if prefix not in out or how != "module" else out[prefix]

    def visit(node: ast.AST, how: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = how
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for c in child.body:
                    visit_one(c, "TYPE_CHECKING" if how == "module" else how)
                for c in child.orelse:
                    visit_one(c, how)
                continue
            visit_one(child, inner)

    def visit_one(child: ast.AST, how: str) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.name.startswith("bot."):
                    add(alias.name, how)
        elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("bot"):
            add(child.module, how)
            for alias in child.names:
                if exists(f"{child.module}.{alias.name}"):
                    add(f"{child.module}.{alias.name}", how)
        else:
            visit(child, "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else how)

    visit(tree, "module")
    return out


def all_imports() -> dict[str, dict[str, str]]:
    return {module_name(p): {m: how for m, how in imports(p).items() if m != module_name(p)}
            for p in BOT.rglob("*.py")}


def deferred_anywhere() -> list[str]:
    """Every import (of anything, not only bot.*) inside a function or under TYPE_CHECKING."""
    found: list[str] = []
    for path in BOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body: list[ast.stmt] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                body = node.body
            for stmt in ast.walk(ast.Module(body=body, type_ignores=[])):
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    found.append(f"{module_name(path)}:{stmt.lineno}")
    return sorted(set(found))


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


def is_empty_package(name: str, g: dict[str, dict[str, str]]) -> bool:
    """A package whose ``__init__`` imports no bot module: running it is no dependency on its layer."""
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").exists() and not g.get(name)


def test_every_import_goes_down_the_layers():
    wrong = []
    g = all_imports()
    for module, imported in sorted(g.items()):
        for target in sorted(imported):
            if module.startswith(target + ".") or is_empty_package(target, g):
                continue  # a module's own packages; a package that only holds modules
            if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED_UPWARD:
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]}), {imported[target]}")
    assert not wrong, "\n".join(wrong)


def test_no_deferred_import_of_the_bot():
    """No bot module is imported inside a function or under TYPE_CHECKING (the layers hold without them)."""
    deferred = sorted(f"{module} -> {target} ({how})" for module, imported in all_imports().items()
                      for target, how in imported.items()
                      if how != "module" and (module, target) not in ALLOWED_DEFERRED)
    assert not deferred, "\n".join(deferred)


def test_no_import_inside_a_function_or_under_type_checking_at_all():
    """Not even of a library (outside the allowlisted modules): an import is a module's dependency, said
    at its top."""
    allowed = {m for m, _ in ALLOWED_DEFERRED}
    found = [f for f in deferred_anywhere() if f.split(":")[0] not in allowed]
    assert not found, found


def test_no_import_cycle_in_bot():
    g = {m: set(imported) for m, imported in all_imports().items()}
    cycle = find_cycle(g)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_allowlists_hold_only_what_is_still_there():
    """An exception that no longer happens is removed from the lists (they only shrink)."""
    g = all_imports()
    for module, target in ALLOWED_UPWARD | ALLOWED_DEFERRED:
        assert target in g.get(module, {}), f"{module} -> {target} is allowed but no longer imported"


def test_the_detectors_find_what_they_look_for(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("bot.slack.kill_handlers") > layer_of("bot.render.approval") > layer_of("bot.approval.workflow")
    assert layer_of("bot.slack.app") == layer_of("bot.runtime")  # the most specific prefix wins
    assert layer_of("bot.approval.models") < layer_of("bot.state.store")
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from bot.config import Config\n"
        "if TYPE_CHECKING:\n    from bot.slack.edge import Router\n"
        "def f():\n    from bot.runtime import Runtime\n    return Runtime\n",
        encoding="utf-8",
    )
    found = imports(sample)
    assert found["bot.config"] == "module"
    assert found["bot.slack.edge"] == "TYPE_CHECKING" and found["bot.runtime"] == "function"
