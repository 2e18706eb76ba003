"""One benchmark module run alone (``python -m bench.<name>``): its rows printed as the table rows
``make bench`` prints, with the same ``record`` / ``ms`` the whole bench passes to every ``run``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def record(name: str, value: str, baseline: str = "", ratio: str = "", goal: str = "", ok: bool | None = None) -> None:
    print(f"| {name} | {value} | {baseline} | {ratio} | {goal} | {'' if ok is None else ('PASS' if ok else 'MISS')} |",
          flush=True)


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if abs(x) < 10 else f"{x:.1f} s"


def run_alone(run: Callable[..., Any]) -> None:
    """``run(record, ms)`` of one benchmark module, printing its rows as they come."""
    run(record, ms)
