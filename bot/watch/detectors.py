"""The watch's detectors beyond the shared host read (``watch_host.sql``): each is one file, a source of
conditions that the watch's one set of rules (:func:`bot.watch.rules.decide`) opens, edits, reminds and
resolves like every other kind. A detector reads what it needs itself (its own statement, bounded by the
environment's timeouts) and decides purely from that read; the watch runs it in the host's check, under
the alerts' one lease and per-host lock. A read that fails leaves that kind's incidents as they are.

Adding one: a module with a :class:`Detector`, its SQL in ``bot/postgres/queries/``, its config key
under ``watch``, its kind in :mod:`bot.watch.model`, its drawing in :mod:`bot.render.watch`, and one
entry in :data:`DETECTORS`.
"""

from __future__ import annotations

from typing import Protocol

from bot.config import Environment, Watch
from bot.postgres.pools import Databases
from bot.watch import wraparound
from bot.watch.rules import Condition


class Detector(Protocol):
    @property
    def kind(self) -> str: ...

    def configured(self, watch: Watch) -> bool:
        """Whether ``watch`` turns this kind on."""
        ...

    def reads(self, watch: Watch, host: str) -> bool:
        """Whether a check of ``host`` runs this detector."""
        ...

    def detect(self, dbs: Databases, env: str, host: str, environment: Environment, watch: Watch) -> list[Condition]:
        """The conditions over threshold now; raises :class:`bot.postgres.pools.DatabaseUnavailable`."""
        ...


DETECTORS: tuple[Detector, ...] = (wraparound.DETECTOR,)
