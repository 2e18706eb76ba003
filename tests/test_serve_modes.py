"""`pgsessions serve` in Socket Mode: every Web API call (apps.connections.open included) goes through
SLACK_API_URL with the right token, and /healthz still answers on PORT."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

from tests.harness.bot import env_config

LINE = re.compile(r"health and metrics on port (\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_socket_mode_opens_its_connection_through_slack_api_url(pg, fake_slack, tmp_path):
    fake_slack.app_token = "xapp-test-app-token"
    # a WebSocket address that refuses connections: the bot must keep serving health while it retries
    fake_slack.socket_mode_url = f"ws://127.0.0.1:{free_port()}/link"
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"state": f"sqlite:///{tmp_path / 's.db'}",
                                   "environments": {"test": env_config(pg)}}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PGSESSIONS_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-test", SLACK_APP_TOKEN="xapp-test-app-token", SLACK_API_URL=fake_slack.api_url,
               PORT=str(port), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--config", str(cfg), "--host", "127.0.0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        call = fake_slack.wait_for("apps.connections.open", timeout=30)
        assert call.headers.get("authorization") == "Bearer xapp-test-app-token"
        assert call.ok, call.response
        auth = fake_slack.calls_for("auth.test")
        assert auth and auth[0].headers.get("authorization") == "Bearer xoxb-test"
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out[-3000:]
    assert "xapp-test-app-token" not in out and "xoxb-test" not in out
