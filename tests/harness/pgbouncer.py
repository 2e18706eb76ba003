"""Throw-away PgBouncer processes in front of the test primary (issue 25).

    bouncer = start_pgbouncer(pair.primary, "new", pool_mode="transaction", pool_size=2)
    bouncer.dsn(user="app_user", dbname="appdb")     # a client through the pooler
    bouncer.admin_dsn()                              # its admin console (dbname=pgbouncer)
    bouncer.pause() / bouncer.resume()               # SIGSTOP / SIGCONT: a pooler that hangs
    bouncer.stop()

Two builds: ``old`` is Debian's package (1.18, ``/usr/sbin/pgbouncer``), ``new`` the 1.24 built from
Debian trixie's source package by ``scripts/ensure-pgbouncer.sh`` into the project's ``.cache/pgbouncer``
(``PGSESSIONS_PGBOUNCER_OLD`` / ``PGSESSIONS_PGBOUNCER_NEW`` name other binaries). Each process gets its
own directory under /tmp, listens only on 127.0.0.1 on a free port with no unix socket, and runs as the
``postgres`` OS user when we are root (PgBouncer refuses to run as root). Nothing outside the project
and /tmp is read or written. This module never imports ``bot.*``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo

from tests.harness.pgcluster import APP_DB, APP_ROLE, BOT_ROLE, Node

__all__ = ["STATS_ROLE", "Bouncer", "PgBouncerMissing", "find_pgbouncer", "start_pgbouncer"]

STATS_ROLE = "pgsessions_stats"  # in stats_users only: may read, may not KILL_CLIENT
_PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BUILDS = {
    "old": ("PGSESSIONS_PGBOUNCER_OLD", "/usr/sbin/pgbouncer"),
    "new": ("PGSESSIONS_PGBOUNCER_NEW", os.path.join(_PROJECT, ".cache", "pgbouncer", "bin", "pgbouncer")),
}
_RUNNING: list[Bouncer] = []


class PgBouncerMissing(RuntimeError):
    """The build asked for is not installed (run scripts/ensure-pgbouncer.sh)."""


def find_pgbouncer(build: str) -> str:
    var, default = _BUILDS[build]
    path = os.environ.get(var) or default
    if not os.access(path, os.X_OK):
        raise PgBouncerMissing(f"PgBouncer ({build}) not found at {path}: run scripts/ensure-pgbouncer.sh")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class Bouncer:
    build: str
    binary: str
    port: int
    workdir: str
    pool_mode: str
    proc: subprocess.Popen | None = None
    version: tuple[int, ...] = ()
    _paused: bool = field(default=False, repr=False)

    def dsn(self, user: str = APP_ROLE, dbname: str = APP_DB, **extra: str) -> str:
        return make_conninfo(host="127.0.0.1", port=str(self.port), user=user, dbname=dbname,
                             connect_timeout="5", **extra)

    def admin_dsn(self, user: str = BOT_ROLE) -> str:
        return make_conninfo(host="127.0.0.1", port=str(self.port), user=user, dbname="pgbouncer")

    def connect(self, user: str = APP_ROLE, dbname: str = APP_DB, application_name: str | None = None,
                autocommit: bool = True) -> psycopg.Connection:
        """A client through the pooler (no prepared statements: transaction pooling would break them)."""
        extra = {"application_name": application_name} if application_name is not None else {}
        return psycopg.connect(self.dsn(user=user, dbname=dbname, **extra), autocommit=autocommit,
                               prepare_threshold=None)

    def admin(self, command: str) -> list[dict]:
        """One admin-console command (simple query protocol), rows as dicts."""
        with psycopg.connect(self.admin_dsn(user="postgres"), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.cursor()
            cur.execute(command.encode())  # bytes: sent as it is, no parameters
            if cur.description is None:
                return []
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pause(self) -> None:
        """SIGSTOP: the process keeps its socket but answers nothing (a hung pooler)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self._paused = False

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(os.path.join(self.workdir, "pgbouncer.log"), errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self._paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _config(primary: Node, port: int, workdir: str, pool_mode: str, pool_size: int, max_client_conn: int) -> str:
    target = f"host={primary.host} port={primary.port}"
    return f"""[databases]
{APP_DB} = {target} dbname={APP_DB}
postgres = {target} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
admin_users = {BOT_ROLE}, postgres
stats_users = {STATS_ROLE}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_client_conn}
server_idle_timeout = 600
server_lifetime = 3600
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    first = out.split()[1] if len(out.split()) > 1 else "0"
    return tuple(int(p) for p in first.split(".") if p.isdigit())


def start_pgbouncer(primary: Node, build: str = "new", *, pool_mode: str = "session", pool_size: int = 5,
                    max_client_conn: int = 200, timeout: float = 15) -> Bouncer:
    """A PgBouncer on a free loopback port in front of ``primary`` (its ``appdb`` and ``postgres``)."""
    binary = find_pgbouncer(build)
    workdir = tempfile.mkdtemp(prefix=f"pgs-pgbouncer-{build}-")
    port = _free_port()
    with open(os.path.join(workdir, "pgbouncer.ini"), "w") as fh:
        fh.write(_config(primary, port, workdir, pool_mode, pool_size, max_client_conn))
    with open(os.path.join(workdir, "userlist.txt"), "w") as fh:
        for role in (APP_ROLE, BOT_ROLE, STATS_ROLE, "postgres"):
            fh.write(f'"{role}" ""\n')
    cmd = [binary, os.path.join(workdir, "pgbouncer.ini")]
    as_user: dict[str, int] = {}
    if _as_root():
        # not through runuser: it stops itself when its child is stopped, and a SIGCONT to PgBouncer
        # would not wake it (pause/resume must reach PgBouncer alone)
        pw = pwd.getpwnam("postgres")
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        for root, dirs, files in os.walk(workdir):
            for n in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.chown(n, pw.pw_uid, pw.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **as_user)
    bouncer = Bouncer(build=build, binary=binary, port=port, workdir=workdir, pool_mode=pool_mode, proc=proc,
                      version=_version(binary))
    _RUNNING.append(bouncer)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = bouncer.log_tail()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited ({proc.returncode}):\n{tail}")
        try:
            bouncer.admin("SHOW VERSION")
            break
        except psycopg.Error:
            if time.monotonic() > deadline:
                tail = bouncer.log_tail()
                bouncer.stop()
                raise RuntimeError(f"pgbouncer did not answer within {timeout:g}s:\n{tail}") from None
            time.sleep(0.05)
    return bouncer


@atexit.register
def _stop_all() -> None:
    for b in list(_RUNNING):
        try:
            b.stop()
        except Exception:
            pass
