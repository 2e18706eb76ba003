"""bot.metrics.LeanHistogram: the same samples and exposition as prometheus_client's Histogram, for a
fraction of the memory per child (issue 26)."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from bot.metrics import DB_QUERY_SECONDS, LeanHistogram

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.01, 0.1, 1, 10)
AMOUNTS = (0.0005, 0.001, 0.002, 0.05, 0.05, 0.7, 3.0, 42.0, -1.0, float("inf"), float("nan"))


def pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, LeanHistogram]:
    plain_reg, lean_reg = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("h_seconds", "help", ["env", "op"], buckets=BUCKETS, registry=plain_reg)
    lean = LeanHistogram("h_seconds", "help", ["env", "op"], buckets=BUCKETS, registry=lean_reg)
    return plain_reg, plain, lean_reg, lean


def without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_same_exposition_as_histogram() -> None:
    plain_reg, plain, lean_reg, lean = pair()
    for i, amount in enumerate(AMOUNTS):
        for h in (plain, lean):
            h.labels(f"e{i % 3}", "watch").observe(amount)
    assert without_created(generate_latest(lean_reg)) == without_created(generate_latest(plain_reg))
    assert lean_reg.get_sample_value("h_seconds_count", {"env": "e0", "op": "watch"}) == 4
    assert lean_reg.get_sample_value("h_seconds_bucket", {"env": "e1", "op": "watch", "le": "0.01"}) == 1


def test_exemplars_as_histogram() -> None:
    plain_reg, plain, lean_reg, lean = pair()
    for h in (plain, lean):
        h.labels("e", "op").observe(0.05, {"trace_id": "abc"})
        h.labels("e", "op").observe(5.0)
    lean_text = [line.split(" # ")[1].rsplit(" ", 1)[0] for line in without_created(generate_openmetrics(lean_reg))
                 if " # " in line]
    plain_text = [line.split(" # ")[1].rsplit(" ", 1)[0]
                  for line in without_created(generate_openmetrics(plain_reg)) if " # " in line]
    assert lean_text == plain_text == ['{trace_id="abc"} 0.05']


def test_parent_refuses_observe_and_children_share_bounds() -> None:
    _, _, _, lean = pair()
    with pytest.raises(ValueError):
        lean.observe(1.0)  # a labelled parent is not observable, as with Histogram
    a, b = lean.labels("a", "x"), lean.labels("b", "x")
    assert a._upper_bounds is b._upper_bounds
    assert isinstance(DB_QUERY_SECONDS, LeanHistogram)


def test_concurrent_observations_all_counted() -> None:
    _, _, lean_reg, lean = pair()
    child = lean.labels("e", "op")

    def hammer() -> None:
        for _ in range(5000):
            child.observe(0.05)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lean_reg.get_sample_value("h_seconds_count", {"env": "e", "op": "op"}) == 20000
    assert lean_reg.get_sample_value("h_seconds_sum", {"env": "e", "op": "op"}) == pytest.approx(1000.0)
