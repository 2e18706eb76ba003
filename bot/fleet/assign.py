"""Who should check which environment: rendezvous (highest random weight) hashing over live replicas.

Pure: no clock, no database. Every replica computes the same answer from the same set of live
replicas, so each environment has exactly one wanted owner; when a replica joins or leaves only the
environments whose wanted owner changes move (about ``1 / replicas`` of them), and the others stay.

:func:`plan` turns what a replica wants and what the lease table says into what it does at one tick:
renew what it holds and wants, take what it wants that is free or expired, release what it holds and
no longer wants, and leave alone what another live holder still has (it releases it at its own tick).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def weight(env: str, replica: str) -> int:
    """The replica's weight for an environment: a stable 64-bit hash of both names."""
    digest = hashlib.blake2b(f"{env}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(env: str, replicas: Iterable[str]) -> str | None:
    """The live replica that should check ``env`` (None when there is none). Ties (never seen with a
    64-bit hash) go to the smaller replica id, so every replica agrees."""
    best: tuple[int, str] | None = None
    for r in replicas:
        key = (weight(env, r), r)
        if best is None or key[0] > best[0] or (key[0] == best[0] and key[1] < best[1]):
            best = key
    return best[1] if best is not None else None


def assignment(envs: Iterable[str], replicas: Iterable[str]) -> dict[str, set[str]]:
    """Every live replica's share: replica id -> the environments it should check."""
    live = sorted(set(replicas))
    out: dict[str, set[str]] = {r: set() for r in live}
    for env in envs:
        o = owner(env, live)
        if o is not None:
            out[o].add(env)
    return out


@dataclass(frozen=True)
class Lease:
    """One row of the lease table as a tick reads it."""

    holder: str
    generation: int
    expires_at: float


@dataclass(frozen=True)
class Plan:
    renew: frozenset[str]  # held by me and wanted: extend
    take: frozenset[str]  # wanted, and free or expired: take (a new generation)
    release: frozenset[str]  # held by me and not wanted any more: hand over
    waiting: frozenset[str]  # wanted, but another holder's lease still runs: it releases it at its tick


def plan(me: str, envs: Iterable[str], live: Iterable[str], leases: Mapping[str, Lease], now: float) -> Plan:
    """What replica ``me`` does at one tick. ``live`` are the replicas whose heartbeat is fresh (``me``
    is always counted in), ``leases`` the lease table by environment, ``now`` the store's time base."""
    members = set(live) | {me}
    wanted = {e for e in envs if owner(e, members) == me}
    renew, take, waiting = set(), set(), set()
    for env in wanted:
        lease = leases.get(env)
        if lease is None or lease.expires_at < now:
            take.add(env)
        elif lease.holder == me:
            renew.add(env)
        else:
            waiting.add(env)
    release = {e for e, lease in leases.items() if lease.holder == me and e not in wanted}
    return Plan(frozenset(renew), frozenset(take), frozenset(release), frozenset(waiting))
