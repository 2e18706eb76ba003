"""A fake Slack Socket Mode endpoint: the WebSocket that ``apps.connections.open`` hands out.

    with FakeSocketMode() as sm:
        fake_slack.app_token, fake_slack.socket_mode_url = "xapp-test", sm.url
        ... start the bot in Socket Mode ...
        sm.wait_connected()
        ack = sm.deliver(socket_envelope(sender.event_payload(event)))   # waits for the bot's ack

Speaks the protocol as Slack does: a ``hello`` message on connect, envelopes
(``{"envelope_id", "type": "events_api"|"interactive"|"slash_commands", "payload", ...}``) as text
frames, and records the acknowledgements the app sends back (``{"envelope_id": ..., "payload"?}``).
Standard WebSocket ping/pong is answered by the server library. Independent of the bot's code.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

__all__ = ["FakeSocketMode"]


class FakeSocketMode:
    def __init__(self, app_id: str = "A0PGSESS") -> None:
        self.app_id = app_id
        self.connections: list[ServerConnection] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._server = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSocketMode:
        self._server = serve(self._handle, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-socket-mode", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/link/?ticket=test-ticket&app_id={self.app_id}"

    # ---- the connection --------------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        ws.send(json.dumps({
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }))
        with self._cond:
            self.connections.append(ws)
            self._cond.notify_all()
        try:
            for message in ws:
                try:
                    data = json.loads(message)
                except (TypeError, ValueError):
                    data = {"raw": message}
                with self._cond:
                    self.received.append(data)
                    if isinstance(data, dict) and data.get("envelope_id"):
                        self.acks[str(data["envelope_id"])] = data
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                if ws in self.connections:
                    self.connections.remove(ws)
                self._cond.notify_all()

    def wait_connected(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the app did not open a Socket Mode connection in time")
                self._cond.wait(remaining)

    def send(self, envelope: dict[str, Any]) -> None:
        """Send one envelope on the newest connection."""
        self.wait_connected()
        with self._cond:
            ws = self.connections[-1]
        ws.send(json.dumps(envelope))

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while envelope_id not in self.acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"envelope {envelope_id} was not acknowledged within {timeout}s")
                self._cond.wait(remaining)
            return self.acks[envelope_id]

    def deliver(self, envelope: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Send an envelope and wait for the app's acknowledgement of it."""
        self.send(envelope)
        return self.wait_ack(envelope["envelope_id"], timeout)
