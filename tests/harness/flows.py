"""Click-through helpers shared by the fault, fuzz and bench code: list → button → modal → approve.

Works with anything that has ``.fake`` (FakeSlack) and ``.slack`` (SlackSender): ``BotUnderTest`` and
:class:`ServeProcess` (a real ``pgsessions serve`` subprocess).
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
from pathlib import Path

import yaml

from tests.harness.bot import SIGNING_SECRET
from tests.harness.slack_requests import SlackSender
from tests.harness.waiting import wait_until

__all__ = ["wait_until"]  # re-exported: callers import it from here too

PORT_LINE = re.compile(r"serving Slack over HTTP on [^ ]*:(\d+)/slack/events")
METRICS_LINE = re.compile(r"metrics on [^ ]*:(\d+)/metrics")


def alive(node, pid: int) -> bool:
    return bool(node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def find_button(msg, label: str):
    for block in msg.blocks or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("type") == "button" and el["text"]["text"] == label:
                return el
    return None


def post_listing(bot, text: str, user: str = "U1", channel: str = "C1", timeout: float = 15):
    """Run a listing command; return the message the fake stored for it."""
    fake = bot.fake
    n = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.slash(text, user_id=user, channel_id=channel)
    assert reply.status == 200, (reply.status, reply.body)
    # the listing is posted in the channel; a note to a requester about an earlier request may land meanwhile
    calls = wait_until(
        lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n:] if c.response["channel"] == channel],
        timeout, f"a message for {text!r}\n{fake.summary()}",
    )
    return fake.messages[(calls[0].response["channel"], calls[0].response["ts"])]


def request_kill(bot, env: str, app: str, pid: int, action: str = "Terminate", user: str = "U1",
                 reason: str = "runaway session"):
    """List, click the button, submit the modal; return the approval message as stored by the fake."""
    fake = bot.fake
    msg = post_listing(bot, f"{env} --app {app} --min 0s", user=user)
    button = find_button(msg, f"{action} {pid}")
    assert button is not None, f"no {action} button for {pid} in {json.dumps(msg.blocks)[:800]}"
    n_views = len(fake.calls_for("views.open", ok=True))
    reply = bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg)
    assert reply.status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    if isinstance(view, str):
        view = json.loads(view)
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission(
        "pgs_kill_request", private_metadata=view["private_metadata"],
        state_values={"reason": {"reason": reason}}, user_id=user,
    )
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: fake.calls_for("chat.postMessage", ok=True)[n_posts:], 10,
                       "approval request\n" + fake.summary())
    msg = fake.messages[(posts[0].response["channel"], posts[0].response["ts"])]
    return request_message_saved(bot, msg)


def request_message_saved(bot, msg):
    """Wait until the bot has recorded where its approval message is (it saves that right after Slack
    answers the post, so a test that read the fake first could otherwise act before)."""
    approve = find_button(msg, "Approve")
    rt = getattr(bot, "rt", None)  # a bot in a process of its own (ServeProcess) cannot be asked
    if approve is not None and rt is not None:
        wait_until(lambda: getattr(rt.store.get_request(approve["value"]), "message_ts", None) == msg.ts, 10,
                   "the approval message recorded by the bot")
    return msg


def click(bot, msg, label: str, user: str):
    button = find_button(msg, label)
    assert button is not None, f"no {label} button on the message"
    return bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg)


def wait_state(bot, msg, needle: str, timeout: float = 10):
    def current():
        m = bot.fake.messages[(msg.channel, msg.ts)]
        return m if needle in json.dumps(m.blocks) + (m.text or "") else None

    try:
        return wait_until(current, timeout, repr(needle))
    except AssertionError:
        now = bot.fake.messages[(msg.channel, msg.ts)]
        raise AssertionError(f"{needle!r} never appeared; message now: {json.dumps(now.blocks)[:1500]}") from None


def answer_with(fake, needle: str, timeout: float = 10):
    """The first response_url post or ephemeral message whose text contains ``needle``."""

    def find():
        for r in fake.responses:
            if needle in (r.text or "") + json.dumps(r.blocks or []):
                return r
        for e in fake.ephemerals:
            if needle in (e.text or ""):
                return e
        return None

    try:
        return wait_until(find, timeout, repr(needle))
    except AssertionError:
        raise AssertionError(f"no answer containing {needle!r}:\n{fake.summary()}") from None


# --- a real `pgsessions serve` -----------------------------------------------------------------------


def pgsessions_exe() -> str:
    exe = Path(sys.executable).with_name("pgsessions")
    return str(exe) if exe.exists() else "pgsessions"


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class ServeProcess:
    """``pgsessions serve`` as a subprocess in HTTP mode on 127.0.0.1 (PORT=0: it picks a port)."""

    def __init__(self, config_path: Path, fake, env: dict[str, str] | None = None, token: str = "xoxb-test"):
        self.config_path = config_path
        self.fake = fake
        self.extra_env = env or {}
        self.token = token
        self.lines: list[str] = []
        self.port: int | None = None
        self.metrics_port: int | None = None  # /metrics: a loopback listener of its own (METRICS_ADDR)
        self.proc: subprocess.Popen | None = None
        self._cond = threading.Condition()

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, ""):
            with self._cond:
                self.lines.append(raw.rstrip("\n"))
                m = PORT_LINE.search(raw)
                if m and self.port is None:
                    self.port = int(m.group(1))
                m = METRICS_LINE.search(raw)
                if m and self.metrics_port is None:
                    self.metrics_port = int(m.group(1))
                self._cond.notify_all()

    def start(self, timeout: float = 30) -> ServeProcess:
        self.port = self.metrics_port = None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PGSESSIONS_", "PG"))}
        # /metrics on a free loopback port (the default 127.0.0.1:9108 may be taken by another test's bot)
        env.update(SLACK_BOT_TOKEN=self.token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                   SLACK_API_URL=self.fake.api_url, PYTHONUNBUFFERED="1", METRICS_ADDR="127.0.0.1:0")
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [pgsessions_exe(), "serve", "--config", str(self.config_path), "--host", "127.0.0.1", "--port", "0",
             "--log-format", "text"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"bot did not start (exit {self.proc.poll()}):\n" + self.output())
                self._cond.wait(0.1)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        self.slack = SlackSender(self.url, SIGNING_SECRET, fake=self.fake)
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("/healthz never became ready:\n" + self.output())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-80:])
