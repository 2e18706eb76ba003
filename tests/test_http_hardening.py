"""HTTP mode under abuse (issue 13 §3): oversized bodies, idle connections, a flood of idle sockets, and
/metrics on a listener of its own (METRICS_PORT / METRICS_ADDR)."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest

from bot.slack.server import MAX_SLACK_BODY, HttpServer, metrics_address
from tests.harness.bot import BotUnderTest, env_config


@pytest.fixture
def bot(pg, fake_slack):
    b = BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack).start()
    yield b
    b.close()


def _status_line(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_a_body_over_one_mib_is_refused_before_it_is_read(bot):
    port = bot.http.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # announce 50 MiB, send only the headers and 1 KiB: the answer comes without the rest
        s.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: %d\r\n\r\n" % (50 * 1024 * 1024) + b"a" * 1024)
        started = time.monotonic()
        assert _status_line(s).startswith(b"HTTP/1.1 413"), "an oversized body must be refused at once"
        assert time.monotonic() - started < 2


def test_a_chunked_body_over_one_mib_is_refused(bot):
    port = bot.http.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"b" * 65536
        try:
            for _ in range(MAX_SLACK_BODY // len(chunk) + 4):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: also a refusal
        try:
            line = _status_line(s)
        except ConnectionResetError:
            line = b"reset"
        assert line.startswith(b"HTTP/1.1 413") or line in (b"", b"reset"), line


def test_a_normal_request_still_works_after_refusals(bot):
    test_a_body_over_one_mib_is_refused_before_it_is_read(bot)
    assert bot.command("help").status == 200


def test_idle_connections_are_closed(bot):
    http = HttpServer(bot.rt, None, host="127.0.0.1", port=0, channel_timeout=1, cleanup_interval=1).start()
    try:
        with socket.create_connection(("127.0.0.1", http.port), timeout=10) as s:
            s.settimeout(10)
            started = time.monotonic()
            assert s.recv(1) == b"", "the server must close an idle connection"
            assert time.monotonic() - started < 5
    finally:
        http.stop()


def test_a_flood_of_idle_connections_leaves_slack_and_healthz_online(bot):
    port = bot.http.port
    idle: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                s.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # half a request, never finished
            idle.append(s)
        time.sleep(0.3)
        started = time.monotonic()
        with urllib.request.urlopen(bot.url + "/healthz", timeout=5) as r:
            assert r.status == 200
        assert bot.command("help").status == 200
        params = bot.listing("test")
        assert params["channel"] == "C1"
        assert time.monotonic() - started < 5
    finally:
        for s in idle:
            s.close()


def test_metrics_on_a_port_of_their_own(bot):
    http = HttpServer(bot.rt, None, host="127.0.0.1", port=0, metrics=("127.0.0.1", 0)).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"pgsessions_" in r.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{http.port}/metrics", timeout=5)
        assert info.value.code == 404
        conn = http_client(http.port)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        http.stop()
    # the main server of the bot, built without METRICS_PORT, still serves /metrics itself
    with urllib.request.urlopen(bot.url + "/metrics", timeout=5) as r:
        assert r.status == 200


def http_client(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=5)


@pytest.mark.unit
def test_metrics_address_from_the_environment():
    # issue 23 §14: never on the public Slack port by default, a loopback listener of its own
    assert metrics_address({}) == ("127.0.0.1", 9108)
    assert metrics_address({"METRICS_PORT": ""}) == ("127.0.0.1", 9108)
    assert metrics_address({"METRICS_PORT": "9102"}) == ("127.0.0.1", 9102)
    assert metrics_address({"METRICS_PORT": "9102", "METRICS_ADDR": "127.0.0.1"}) == ("127.0.0.1", 9102)
    assert metrics_address({"METRICS_ADDR": "0.0.0.0"}) == ("0.0.0.0", 9108)
    assert metrics_address({"METRICS_ADDR": "10.0.0.5:9200"}) == ("10.0.0.5", 9200)
    assert metrics_address({"METRICS_ADDR": "[::1]:9200"}) == ("::1", 9200)
    assert metrics_address({"METRICS_ADDR": "[::1]"}) == ("::1", 9108)
    assert metrics_address({"METRICS_ADDR": "10.0.0.5:9200", "METRICS_PORT": "9300"}) == ("10.0.0.5", 9300)
    # only with a token, and no address asked for, on the main port
    assert metrics_address({"METRICS_TOKEN": "s3cret"}) is None
    assert metrics_address({"METRICS_TOKEN": "s3cret", "METRICS_ADDR": "127.0.0.1:0"}) == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match="METRICS_ADDR='x:y' is not a port number"):
        metrics_address({"METRICS_ADDR": "x:y"})
    with pytest.raises(ValueError, match="names no address"):
        metrics_address({"METRICS_ADDR": ":9108"})
    with pytest.raises(ValueError, match="METRICS_PORT='abc' is not a port number"):
        metrics_address({"METRICS_PORT": "abc"})
    with pytest.raises(ValueError, match="0-65535"):
        metrics_address({"METRICS_PORT": "70000"})


def test_pgsessions_serve_moves_metrics_to_metrics_port(pg, fake_slack, tmp_path):
    import re

    from tests.harness.flows import ServeProcess, write_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    path = write_config(tmp_path / "pgsessions.yml", {"state": f"sqlite:///{tmp_path}/state.db",
                                                      "environments": {"test": env_config(pg)}})
    bot = ServeProcess(path, fake_slack, env={"METRICS_PORT": str(metrics_port), "METRICS_ADDR": "127.0.0.1"}).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"pgsessions_build_info" in r.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bot.url + "/metrics", timeout=5)
        assert info.value.code == 404
        assert any(re.search(r"metrics on 127\.0\.0\.1:\d+/metrics", line) for line in bot.lines)
    finally:
        bot.stop()


def test_pgsessions_serve_keeps_metrics_off_the_slack_port_by_default(pg, fake_slack, tmp_path):
    """Issue 23 §14: without METRICS_* the Slack port answers 404 for /metrics; they are on 127.0.0.1:9108
    (or, when another process holds that port, not served, and the log says so)."""
    import re

    from tests.harness.flows import ServeProcess, write_config

    path = write_config(tmp_path / "pgsessions.yml", {"state": f"sqlite:///{tmp_path}/state.db",
                                                      "environments": {"test": env_config(pg)}})
    bot = ServeProcess(path, fake_slack, env={"METRICS_ADDR": ""}).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bot.url + "/metrics", timeout=5)
        assert info.value.code == 404
        assert any(re.search(r"metrics on 127\.0\.0\.1:9108/metrics|could not serve /metrics on 127\.0\.0\.1:9108", line)
                   for line in bot.lines), bot.output()
    finally:
        bot.stop()


def test_pgsessions_serve_with_metrics_token_serves_metrics_on_the_slack_port_to_the_token_only(
        pg, fake_slack, tmp_path):
    from tests.harness.flows import ServeProcess, write_config

    token = "metrics-" + uuid.uuid4().hex
    path = write_config(tmp_path / "pgsessions.yml", {"state": f"sqlite:///{tmp_path}/state.db",
                                                      "environments": {"test": env_config(pg)}})
    bot = ServeProcess(path, fake_slack, env={"METRICS_ADDR": "", "METRICS_TOKEN": token}).start()
    try:
        for auth in (None, "Bearer wrong", f"Basic {token}"):
            req = urllib.request.Request(bot.url + "/metrics", headers={"Authorization": auth} if auth else {})
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=5)
            assert info.value.code == 401
        req = urllib.request.Request(bot.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200 and b"pgsessions_build_info" in r.read()
        assert token not in bot.output()
    finally:
        bot.stop()
