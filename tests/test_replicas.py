"""Several bot processes on one PostgreSQL state store: real ``pgsessions serve`` subprocesses.

Two processes serve HTTP on different ports (as behind a load balancer). A listing through A and a
listing through B both work, their button tokens land in the same ``pgs_targets``, a button drawn
by A is honoured by B, a request submitted through A is approved through B, and /healthz and
/metrics answer on both.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql as pgsql

from tests.harness.bot import SIGNING_SECRET, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.slack_requests import SlackSender

BOT_TOKEN = "xoxb-replica-7f3k2-TOKENSECRET"
PORT_LINE = re.compile(r"serving Slack over HTTP on [^ ]*:(\d+)/slack/events")
METRICS_LINE = re.compile(r"metrics on [^ ]*:(\d+)/metrics")


def pgsessions_exe() -> str:
    exe = Path(sys.executable).with_name("pgsessions")
    return str(exe) if exe.exists() else "pgsessions"


class ServeProcess:
    """``pgsessions serve`` as a real subprocess in HTTP mode on a port of its choosing (PORT=0)."""

    def __init__(self, config_path: Path, fake: FakeSlack, *, env: dict[str, str] | None = None,
                 log_format: str = "json", log_level: str = "INFO", name: str = "bot"):
        self.config_path = config_path
        self.fake = fake
        self.name = name
        self.log_format = log_format
        self.log_level = log_level
        self.extra_env = env or {}
        self.lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.port: int | None = None
        self.metrics_port: int | None = None  # /metrics: a loopback listener of its own (METRICS_ADDR)
        self.proc: subprocess.Popen | None = None
        self._cond = threading.Condition()

    def _read(self, stream, into: list[str]) -> None:
        for raw in iter(stream.readline, ""):
            line = raw.rstrip("\n")
            with self._cond:
                into.append(line)
                m = PORT_LINE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                m = METRICS_LINE.search(line)
                if m and self.metrics_port is None:
                    self.metrics_port = int(m.group(1))
                self._cond.notify_all()

    def start(self, timeout: float = 30) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PGSESSIONS_", "PG"))}
        env.update(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=self.fake.api_url,
            PYTHONUNBUFFERED="1",
            METRICS_ADDR="127.0.0.1:0",  # a free loopback port: two replicas on one machine
        )
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [pgsessions_exe(), "serve", "--config", str(self.config_path), "--host", "127.0.0.1", "--port", "0",
             "--log-format", self.log_format, "--log-level", self.log_level],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        for stream, into in ((self.proc.stderr, self.lines), (self.proc.stdout, self.stdout_lines)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} did not start (exit {self.proc.poll()}):\n" + "\n".join(self.lines))
                self._cond.wait(0.1)
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: /healthz never became ready:\n" + "\n".join(self.lines))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sender(self) -> SlackSender:
        return SlackSender(self.url, SIGNING_SECRET, fake=self.fake)

    def get(self, path: str, port: int | None = None) -> tuple[int, str, str]:
        url = self.url if port is None else f"http://127.0.0.1:{port}"
        try:
            with urllib.request.urlopen(url + path, timeout=5) as resp:  # local URL
                return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read().decode()

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.name} did not stop on SIGTERM within {timeout}s") from None

    def output(self) -> str:
        return "\n".join(self.lines + self.stdout_lines)


def state_database(pg, prefix: str) -> tuple[str, str]:
    """A fresh database on the primary for the bots' state; (state URL, conninfo)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return f"postgresql://postgres@{pg.primary.host}:{pg.primary.port}/{name}", pg.primary.dsn(dbname=name)


def find_button(msg, label: str, prefix: bool = False):
    for block in msg.blocks or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            text = el.get("text", {}).get("text", "")
            if el.get("type") == "button" and (text.startswith(label) if prefix else text == label):
                return el
    return None


def posted_after(fake: FakeSlack, n: int, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fake.calls_for("chat.postMessage", ok=True)
        if len(calls) > n:
            c = calls[n]
            return fake.messages[(c.response["channel"], c.response["ts"])]
        time.sleep(0.02)
    raise AssertionError("nothing posted:\n" + fake.summary())


@pytest.fixture
def replicas(pg, tmp_path):
    state_url, state_dsn = state_database(pg, "pgs_replicas")
    config = {"state": state_url, "environments": {"rprod": env_config(pg)}}
    path = tmp_path / "pgsessions.yml"
    path.write_text(yaml.safe_dump(config))
    with FakeSlack(token=BOT_TOKEN) as fake:
        a = ServeProcess(path, fake, name="A")
        b = ServeProcess(path, fake, name="B")
        a.start()
        b.start()
        try:
            yield a, b, fake, state_dsn
        finally:
            for p in (a, b):
                p.stop()


def test_two_processes_share_one_state_store(replicas, pg):
    a, b, fake, state_dsn = replicas
    app = "replica-victim-" + uuid.uuid4().hex[:6]
    victim = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    victim.execute("SELECT 1")
    pid = victim.info.backend_pid
    try:
        assert a.port != b.port
        for proc in (a, b):
            status, _, body = proc.get("/healthz")
            assert (status, body) == (200, "ok\nstate store: up\n")  # and whether the state store answers
            # /metrics: on the replica's own loopback listener, not on the Slack port (issue 23 §14)
            status, ctype, metrics = proc.get("/metrics", port=proc.metrics_port)
            assert status == 200 and ctype.startswith("text/plain")
            assert "pgsessions_commands_total" in metrics

        # a listing through A, then one through B
        tokens = {}
        for proc in (a, b):
            n = len(fake.calls_for("chat.postMessage", ok=True))
            reply = proc.sender().slash(f"rprod --app {app} --min 0s", user_id="U1", channel_id="C1")
            assert reply.status == 200, reply.body
            assert reply.headers.get("X-Request-Id")
            msg = posted_after(fake, n)
            button = find_button(msg, f"Terminate {pid}")
            assert button is not None, json.dumps(msg.blocks)[:1000]
            tokens[proc.name] = (button["value"], msg)
        assert tokens["A"][0] != tokens["B"][0]

        # both processes wrote their button tokens into the one shared store
        with psycopg.connect(state_dsn) as c:
            stored = {r[0]: r[1] for r in c.execute("SELECT token, env FROM pgs_targets")}
        assert tokens["A"][0] in stored and tokens["B"][0] in stored
        assert stored[tokens["A"][0]] == "rprod"

        # a button drawn by A is honoured by B (B finds A's token in the shared store) ...
        token, msg = tokens["A"]
        n_views = len(fake.calls_for("views.open", ok=True))
        reply = b.sender().block_action(f"pgs_kill:terminate:{token}", token, user_id="U1", message=msg)
        assert reply.status == 200
        fake.wait_for("views.open", ok=True, predicate=lambda c: len(fake.calls_for("views.open", ok=True)) > n_views)
        view = fake.calls_for("views.open", ok=True)[-1].params["view"]
        view = json.loads(view) if isinstance(view, str) else view

        # ... the request is submitted through A ...
        n = len(fake.calls_for("chat.postMessage", ok=True))
        reply = a.sender().view_submission(
            view["callback_id"], private_metadata=view["private_metadata"],
            state_values={"reason": {"reason": "replica test"}}, user_id="U1",
        )
        assert reply.status == 200 and "errors" not in reply.body, reply.body
        request_msg = posted_after(fake, n)
        approve = find_button(request_msg, "Approve")
        assert approve is not None

        # ... and approved through B, which signals the backend
        reply = b.sender().block_action(approve["action_id"], approve["value"], user_id="U2", message=request_msg)
        assert reply.status == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the approved terminate did not happen:\n" + fake.summary() + "\n" + b.output())
        with psycopg.connect(state_dsn) as c:
            state = c.execute("SELECT state FROM pgs_requests WHERE id = %s", (approve["value"],)).fetchone()
            events = {r[0] for r in c.execute("SELECT event FROM pgs_audit WHERE request_id = %s", (approve["value"],))}
        assert state is not None and state[0] in ("done", "executing", "failed")
        assert "terminate:requested" in events

        # /metrics on each process counts the commands it served itself (on its own loopback listener,
        # not on the port Slack reaches: issue 23 §14)
        for proc in (a, b):
            assert proc.get("/metrics")[0] == 404
            assert proc.metrics_port is not None, proc.lines
            _, _, metrics = proc.get("/metrics", port=proc.metrics_port)
            assert re.search(r'pgsessions_commands_total\{command="list_sessions",outcome="ok"\} 1\.0', metrics), proc.name
    finally:
        victim.close()
        for proc in (a, b):
            assert BOT_TOKEN not in proc.output()
            assert "TOKENSECRET" not in proc.output()


# --- the image: what the Dockerfile promises, checked without a docker engine ----------------------

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def healthcheck_command() -> list[str]:
    (rest,) = [r for w, r in dockerfile_instructions() if w == "HEALTHCHECK"]
    return json.loads(rest[rest.index("CMD ") + 4:])


def test_dockerfile_shape():
    ins = dockerfile_instructions()
    froms = [r for w, r in ins if w == "FROM"]
    assert len(froms) >= 2 and all("python:${PYTHON_VERSION}-slim" in f for f in froms)
    assert ("ARG", "PYTHON_VERSION=3.11") in ins
    runtime = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [r for w, r in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("EXPOSE", "3000") in runtime
    assert json.loads(next(r for w, r in runtime if w == "CMD")) == ["pgsessions", "serve"]
    env = " ".join(r for w, r in runtime if w == "ENV")
    assert "PGSESSIONS_CONFIG=/config/pgsessions.yml" in env
    assert not any("curl" in r or "wget" in r for _, r in runtime)
    cmd = healthcheck_command()
    assert cmd[0] == "python" and "/healthz" in cmd[-1]
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list: local configs and .env files stay out"
    assert {"!pyproject.toml", "!README.md", "!bot"} <= set(ignore)


def test_sigterm_stops_a_replica_cleanly_and_the_image_healthcheck_follows(pg, tmp_path):
    state_url, _ = state_database(pg, "pgs_replicas")
    path = tmp_path / "pgsessions.yml"
    path.write_text(yaml.safe_dump({"state": state_url, "environments": {"rprod": env_config(pg)}}))
    cmd = [sys.executable if part == "python" else part for part in healthcheck_command()]
    with FakeSlack(token=BOT_TOKEN) as fake:
        p = ServeProcess(path, fake, name="solo").start()
        env = {**os.environ, "PORT": str(p.port)}
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode == 0
        started = time.monotonic()
        assert p.stop() == 0
        assert time.monotonic() - started < 10
        assert any("shutting down" in line for line in p.lines), p.output()
        assert subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode != 0
