"""A throw-away PostgreSQL primary and streaming hot standby from the machine's server binaries.

Used by ``make demo``. Both servers live in one directory under /tmp, listen on free ports on
127.0.0.1 only, keep their unix sockets inside their data directories (the machine's own server is
never touched), trust local connections, and are stopped and removed by :meth:`Pair.stop`. As root,
initdb / pg_ctl / pg_basebackup run as the ``postgres`` OS user (they refuse to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

SLOT = "demo_standby"


class ClusterError(RuntimeError):
    """Starting or stopping a server failed; the message says what to do or shows the server log."""


def bindir() -> str:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, the newest /usr/lib/postgresql/*/bin, or PATH."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if out and os.path.exists(os.path.join(out, "initdb")):
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    if found:
        return max(found, key=lambda d: [int(x) for x in re.findall(r"\d+", d.split("/")[-2])] or [0])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise ClusterError(
        "the PostgreSQL server programs (initdb, pg_ctl, pg_basebackup) are not installed: install them "
        "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or run `make postgres`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _chown(path: str) -> None:
    if not _as_root():
        return

    pw = pwd.getpwnam("postgres")
    for root, _dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def run_tool(args: list[str], cwd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL program, as the postgres OS user when we are root, without our PG* variables."""
    if _as_root():
        if shutil.which("runuser") is None:
            raise ClusterError("running as root needs `runuser` to start PostgreSQL as the postgres user")
        args = ["runuser", "-u", "postgres", "--", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    name: str
    datadir: str
    port: int
    bindir: str
    cwd: str
    running: bool = False

    @property
    def log(self) -> str:
        return os.path.join(self.datadir, "server.log")

    def dsn(self, user: str = "postgres", dbname: str = "postgres", **extra: str) -> str:
        return make_conninfo(host="127.0.0.1", port=str(self.port), user=user, dbname=dbname, connect_timeout="5",
                             **extra)

    def connect(self, user: str = "postgres", dbname: str = "postgres", autocommit: bool = True,
                application_name: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        extra = {"application_name": application_name} if application_name else {}
        return psycopg.connect(self.dsn(user, dbname, **extra), autocommit=autocommit)

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None, user: str = "postgres",
            dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(user, dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def configure(self, settings: dict[str, object]) -> None:
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a") as fh:
            for key, value in settings.items():
                if isinstance(value, bool):
                    value = "on" if value else "off"
                fh.write(f"{key} = '{value}'\n")

    def start(self) -> None:
        for _ in range(3):
            res = run_tool([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.log, "-w", "-t", "60",
                            "start"], self.cwd)
            if res.returncode == 0:
                self.running = True
                return
            if "could not bind" in _tail(self.log) or "already in use" in _tail(self.log):
                self.port = free_port()  # somebody took the port meanwhile
                self.configure({"port": self.port})
                continue
            break
        raise ClusterError(f"{self.name} did not start:\n{res.stderr}\n--- {self.log} ---\n{_tail(self.log)}")

    def stop(self) -> None:
        if not self.running:
            return
        res = run_tool([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "-t", "30",
                        "stop"], self.cwd, timeout=60)
        if res.returncode != 0:
            run_tool([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "immediate", "-w", "stop"],
                     self.cwd, timeout=60)
        self.running = False


SETTINGS: dict[str, object] = {
    "listen_addresses": "127.0.0.1",
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "wal_level": "replica",
    "max_wal_senders": 5,
    "max_replication_slots": 5,
    "hot_standby": True,
    "max_connections": 200,
    "shared_buffers": "32MB",
    "wal_writer_delay": "10ms",
    "wal_receiver_status_interval": "1s",
    "logging_collector": False,
    "timezone": "UTC",
}

HBA = """\
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
"""


@dataclass
class Pair:
    base: str
    primary: Server
    standby: Server | None = None
    _stopped: bool = field(default=False, repr=False)

    def wait_streaming(self, timeout: float = 30) -> None:
        assert self.standby is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.standby.sql("SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'"):
                    return
            except psycopg.Error:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"the standby is not streaming after {timeout:g}s\n{_tail(self.standby.log)}")
            time.sleep(0.05)

    def wait_replayed(self, timeout: float = 15) -> None:
        assert self.standby is not None
        target = self.primary.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]
        started = time.monotonic()
        nudged = False
        while not self.standby.sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0][0]:
            if time.monotonic() > started + timeout:
                raise ClusterError(f"the standby did not replay {target} within {timeout:g}s")
            if not nudged and time.monotonic() > started + 0.5:
                nudged = True  # with synchronous_commit off, a committed write may sit unflushed: push it out
                with self.primary.connect(autocommit=False) as conn:
                    conn.execute("SET LOCAL synchronous_commit = local")
                    conn.execute("SELECT txid_current()")
                    conn.commit()
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop both servers and remove every file (idempotent, never raises)."""
        if self._stopped:
            return
        self._stopped = True
        for server in (self.standby, self.primary):
            if server is not None:
                try:
                    server.stop()
                except Exception:  # keep tearing down
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_pair(standby: bool = True) -> Pair:
    """initdb, start the primary, pg_basebackup a standby from it, start that, wait until it streams."""
    bins = bindir()
    base = tempfile.mkdtemp(prefix="pgsessions-demo-", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.chmod(base, 0o700)
    _chown(base)
    primary = Server("primary", os.path.join(base, "primary"), free_port(), bins, base)
    pair = Pair(base, primary)
    try:
        res = run_tool([os.path.join(bins, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--locale=C", "-D", primary.datadir], base)
        if res.returncode != 0:
            raise ClusterError(f"initdb failed:\n{res.stdout}{res.stderr}")
        sock = os.path.join(primary.datadir, "sock")
        os.makedirs(sock, exist_ok=True)
        with open(os.path.join(primary.datadir, "pg_hba.conf"), "w") as fh:
            fh.write(HBA)
        primary.configure({**SETTINGS, "port": primary.port, "unix_socket_directories": sock})
        _chown(primary.datadir)
        primary.start()
        if standby:
            pair.standby = _standby(pair, bins, base)
            pair.wait_streaming()
    except BaseException:
        pair.stop()
        raise
    return pair


def _standby(pair: Pair, bins: str, base: str) -> Server:
    node = Server("standby", os.path.join(base, "standby"), free_port(), bins, base)
    res = run_tool([os.path.join(bins, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(pair.primary.port), "-U",
                    "postgres", "-D", node.datadir, "-R", "-X", "stream", "-C", "-S", SLOT, "-c", "fast",
                    "--no-sync"], base)
    if res.returncode != 0:
        raise ClusterError(f"pg_basebackup failed:\n{res.stdout}{res.stderr}")
    sock = os.path.join(node.datadir, "sock")
    shutil.rmtree(sock, ignore_errors=True)  # the copy of the primary's socket directory
    os.makedirs(sock, exist_ok=True)
    open(node.log, "w").close()
    node.configure({"port": node.port, "unix_socket_directories": sock, "hot_standby_feedback": False,
                    "max_standby_streaming_delay": -1})
    _chown(node.datadir)
    node.start()
    return node
