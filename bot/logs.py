"""Logging: one line per event, plain text or JSON, secrets scrubbed from every line."""

from __future__ import annotations

import json
import logging
import sys
import time

from bot.secrets import ScrubFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "env", "host", "event"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # chatty libraries: their warnings still pass, scrubbed
    for name in ("slack_bolt", "slack_sdk", "apscheduler", "waitress", "psycopg.pool", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
