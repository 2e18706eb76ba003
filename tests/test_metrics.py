"""GET /metrics: Prometheus text format, and the values move when Slack requests are served."""

from __future__ import annotations

import importlib.util
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.bot import BotUnderTest, env_config


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:  # local test URL
        assert resp.status == 200
        ctype = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return ctype, samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_value(url: str, name: str, at_least: float, timeout: float = 10, **labels) -> float:
    deadline = time.monotonic() + timeout
    while True:
        got = value(scrape(url)[1], name, **labels)
        if got >= at_least or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.fixture
def bot(pg, fake_slack):
    config = {
        "environments": {
            "mprod": env_config(pg),
            "mlocked": env_config(pg, access={"channels": ["CLOCKED"]}),
            "mdown": {"dsn": "host=127.0.0.1 port=9 dbname=postgres user=nobody", "timeouts": {"connect": "1s"}},
        }
    }
    with BotUnderTest(config, fake_slack) as b:
        yield b


def test_metrics_endpoint_speaks_prometheus_text(bot):
    ctype, samples = scrape(bot.url)
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    names = {name for name, _ in samples}
    assert "pgsessions_build_info" in names
    # the metric families exist before anything happened
    with urllib.request.urlopen(bot.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in ("pgsessions_commands_total", "pgsessions_ack_seconds", "pgsessions_db_query_seconds"):
        assert f"# TYPE {family}" in text


def test_a_listing_moves_commands_ack_and_db_latency(bot):
    _, before = scrape(bot.url)
    bot.listing("mprod")
    ok = wait_value(
        bot.url, "pgsessions_commands_total", value(before, "pgsessions_commands_total",
                                                    command="list_sessions", outcome="ok") + 1,
        command="list_sessions", outcome="ok",
    )
    _, after = scrape(bot.url)
    assert ok == value(before, "pgsessions_commands_total", command="list_sessions", outcome="ok") + 1
    for name, labels in (
        ("pgsessions_ack_seconds_count", {"kind": "command"}),
        ("pgsessions_db_query_seconds_count", {"env": "mprod", "host": "primary", "op": "list_sessions"}),
        ("pgsessions_slack_requests_total", {"kind": "command", "status": "200"}),
    ):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, name
    # the ack was fast and landed in a bucket under Slack's 3 s limit
    assert value(after, "pgsessions_ack_seconds_bucket", kind="command", le="3.0") == value(
        after, "pgsessions_ack_seconds_count", kind="command"
    )
    assert value(after, "pgsessions_db_query_seconds_sum", env="mprod", host="primary", op="list_sessions") > value(
        before, "pgsessions_db_query_seconds_sum", env="mprod", host="primary", op="list_sessions"
    )


def test_outcomes_bad_input_refused_unavailable(bot):
    _, before = scrape(bot.url)

    status, _, _ = bot.command("no-such-env", channel_id="C1")
    assert status == 200
    status, _, _ = bot.command("help", channel_id="C1")
    assert status == 200
    status, _, _ = bot.command("mlocked", channel_id="C1")  # only allowed in CLOCKED
    assert status == 200
    status, _, _ = bot.command("mdown", channel_id="C1")
    assert status == 200

    def moved(command, outcome):
        return wait_value(
            bot.url, "pgsessions_commands_total",
            value(before, "pgsessions_commands_total", command=command, outcome=outcome) + 1,
            command=command, outcome=outcome,
        ) - value(before, "pgsessions_commands_total", command=command, outcome=outcome)

    assert moved("invalid", "bad_input") == 1
    assert moved("help", "ok") == 1
    assert moved("list_sessions", "refused") == 1
    assert moved("list_sessions", "unavailable") == 1
    _, after = scrape(bot.url)
    assert value(after, "pgsessions_db_unavailable_total", env="mdown", host="primary") == value(
        before, "pgsessions_db_unavailable_total", env="mdown", host="primary"
    ) + 1
    assert value(after, "pgsessions_commands_total", command="list_sessions", outcome="ok") == value(
        before, "pgsessions_commands_total", command="list_sessions", outcome="ok"
    )
    assert value(after, "pgsessions_ack_seconds_count", kind="command") == value(
        before, "pgsessions_ack_seconds_count", kind="command"
    ) + 4


def test_rejected_signature_is_counted_with_its_status(bot):
    _, before = scrape(bot.url)
    reply = bot.slack.slash("mprod", bad_signature=True)
    assert reply.status == 401
    assert reply.headers.get("X-Request-Id")
    _, after = scrape(bot.url)
    labels = {"kind": "command", "status": "401"}
    assert value(after, "pgsessions_slack_requests_total", **labels) == value(
        before, "pgsessions_slack_requests_total", **labels
    ) + 1
    # a refused request ran no command
    assert sum(v for (n, _), v in after.items() if n == "pgsessions_commands_total") == sum(
        v for (n, _), v in before.items() if n == "pgsessions_commands_total"
    )


def test_metrics_served_without_a_slack_app(pg):
    """Socket Mode: the HTTP server carries only /healthz and /metrics."""
    from bot.config import parse_config
    from bot.runtime import Runtime, SlackSettings
    from bot.slack.server import HttpServer

    config = parse_config({"state": "sqlite://", "environments": {"mprod": env_config(pg)}}, environ={})
    rt = Runtime(config, SlackSettings(bot_token=None, signing_secret=None, app_token=None, api_url="http://127.0.0.1:9/api/"))
    http = HttpServer(rt, None, host="127.0.0.1", port=0).start()
    try:
        _, samples = scrape(f"http://127.0.0.1:{http.port}")
        assert ("pgsessions_build_info", ()) in {(n, ()) for n, _ in samples}
    finally:
        http.stop()
        rt.close()


def _button(msg, label: str):
    for block in msg.blocks or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("type") == "button" and el["text"]["text"] == label:
                return el
    return None


def _posted_after(fake, n: int, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fake.calls_for("chat.postMessage", ok=True)
        if len(calls) > n:
            return fake.messages[(calls[n].response["channel"], calls[n].response["ts"])]
        time.sleep(0.02)
    raise AssertionError("nothing posted:\n" + fake.summary())


@pytest.mark.skipif(importlib.util.find_spec("bot.slack.kill_handlers") is None,
                    reason="the approval workflow (bot/slack/kill_handlers.py) is not there yet")
def test_kill_requests_are_counted(bot, pg):
    import json
    import uuid

    app = "metrics-victim-" + uuid.uuid4().hex[:6]
    victim = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    victim.execute("SELECT 1")
    pid = victim.info.backend_pid
    fake = bot.fake
    try:
        _, before = scrape(bot.url)
        n = len(fake.calls_for("chat.postMessage", ok=True))
        bot.command(f"mprod --app {app} --min 0s", channel_id="C1", user_id="U1")
        listing = _posted_after(fake, n)
        button = _button(listing, f"Terminate {pid}")
        assert button is not None
        n_views = len(fake.calls_for("views.open", ok=True))
        assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=listing).status == 200
        fake.wait_for("views.open", ok=True, predicate=lambda c: len(fake.calls_for("views.open", ok=True)) > n_views)
        view = fake.calls_for("views.open", ok=True)[-1].params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        n = len(fake.calls_for("chat.postMessage", ok=True))
        reply = bot.slack.view_submission(view["callback_id"], private_metadata=view["private_metadata"],
                                          state_values={"reason": {"reason": "metrics"}}, user_id="U1")
        assert reply.status == 200
        request = _posted_after(fake, n)
        requested = {"env": "mprod", "action": "terminate", "state": "pending", "outcome": "requested"}
        assert wait_value(bot.url, "pgsessions_kill_requests_total",
                          value(before, "pgsessions_kill_requests_total", **requested) + 1, **requested) == value(
            before, "pgsessions_kill_requests_total", **requested) + 1
        approve = _button(request, "Approve")
        assert bot.slack.block_action(approve["action_id"], approve["value"], user_id="U2", message=request).status == 200
        done = {"env": "mprod", "action": "terminate", "state": "done", "outcome": "done"}
        assert wait_value(bot.url, "pgsessions_kill_requests_total",
                          value(before, "pgsessions_kill_requests_total", **done) + 1, **done) == value(
            before, "pgsessions_kill_requests_total", **done) + 1
        _, after = scrape(bot.url)
        # the click and the approval were acknowledged and timed as actions, the modal as a view
        assert value(after, "pgsessions_ack_seconds_count", kind="action") >= value(
            before, "pgsessions_ack_seconds_count", kind="action") + 2
        assert value(after, "pgsessions_ack_seconds_count", kind="view") == value(
            before, "pgsessions_ack_seconds_count", kind="view") + 1
        assert not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
    finally:
        victim.close()
