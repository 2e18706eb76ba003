"""The terminal of ``pgsessions shell``: lines in and out, never torn apart across threads.

On a terminal it reads lines with readline and redraws the prompt under what the bot posts meanwhile;
with a script on standard input it echoes each line after its prompt. Nothing reaches the terminal raw:
a control character in a database string is shown as a visible sign (:func:`bot.render.common.visible`).
"""

from __future__ import annotations

try:
    import readline
except ImportError:  # pragma: no cover - Windows
    readline = None  # type: ignore[assignment]

import contextlib
import io
import threading
from typing import IO, Any

from bot.render.common import visible


class Terminal:
    """Writes lines without tearing them apart across threads; redraws the prompt on a terminal."""

    def __init__(self, out: IO[str], inp: IO[str], interactive: bool):
        self.out = out
        self.inp = inp
        self.interactive = interactive
        self.lock = threading.RLock()
        self._prompt: str | None = None
        self._readline: Any = None
        if interactive:
            self._readline = readline

    def write(self, lines: list[str]) -> None:
        # nothing reaches the terminal raw: a control character in a database string (ESC[ ..., a
        # carriage return, a bidi override) is shown as a visible sign, never interpreted
        lines = [visible(line) for line in "\n".join(lines).split("\n")]
        with self.lock:
            text = "\n".join(lines) + "\n"
            if self.interactive and self._prompt is not None:
                buf = self._readline.get_line_buffer() if self._readline else ""
                self.out.write("\n" + text + self._prompt + buf)
            else:
                self.out.write(text)
            self.out.flush()

    def read(self, prompt: str) -> str | None:
        """One line (without its newline), or None at the end of the input."""
        if self.interactive:
            with self.lock:
                self._prompt = prompt
            try:
                return input(prompt)
            except EOFError:
                self.out.write("\n")
                return None
            finally:
                with self.lock:
                    self._prompt = None
        line = self.inp.readline()
        if not line:
            return None
        line = line.rstrip("\r\n")
        self.write([prompt + line])
        return line


def text_stream(stream: IO[str]) -> IO[str]:
    """stdout that never fails on a character the terminal cannot show."""
    if isinstance(stream, io.TextIOWrapper):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace", line_buffering=True)
    return stream

