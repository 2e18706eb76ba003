"""Throw-away PostgreSQL primary + streaming hot standby for the tests.

    pair = start_pair()                 # ~1.5 s: initdb, primary, roles, pg_basebackup, standby
    pair.primary.sql("SELECT 1")        # -> [(1,)]
    pair.standby.connect(user="pgsessions_bot")
    pair.wait_replayed()
    pair.stop()                         # also runs at interpreter exit

Every cluster lives in its own directory under /tmp, listens only on 127.0.0.1 on a free port and
keeps its unix socket inside its data directory, so the PostgreSQL server that may already run on
port 5432 is never touched.  As root, initdb/pg_ctl/pg_basebackup run as the ``postgres`` OS user.

Other major versions: ``start_pair(bindir=...)`` starts the pair from those server binaries (13-18:
``tests/harness/pgversions.py`` fetches them); when that directory has no pg_basebackup, ``tools_bindir``
(PostgreSQL 18's, which can copy every older server) takes the base backup. The standby's
``primary_conninfo`` is written by us, never by ``pg_basebackup -R``: a newer pg_basebackup writes options
an older walreceiver rejects (``sslnegotiation`` on 17+, more before 16).

External mode: when ``PGSESSIONS_TEST_PRIMARY_DSN`` (and optionally ``PGSESSIONS_TEST_STANDBY_DSN``)
is set, ``start_pair()`` wraps those servers instead of starting any; ``stop()`` then leaves them
alone, and ``Node.stop()/start()`` raise ``ClusterError``.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "APP_DB",
    "APP_ROLE",
    "BOT_ROLE",
    "PW_ROLE",
    "PW_ROLE_PASSWORD",
    "ClusterError",
    "ClusterPair",
    "Node",
    "find_bindir",
    "start_pair",
]

BOT_ROLE = "pgsessions_bot"
PW_ROLE = "pgsessions_pw"
PW_ROLE_PASSWORD = "pw-s3cret-Xy"
APP_ROLE = "app_user"
APP_DB = "appdb"

ENV_PRIMARY_DSN = "PGSESSIONS_TEST_PRIMARY_DSN"
ENV_STANDBY_DSN = "PGSESSIONS_TEST_STANDBY_DSN"

_SLOT_NAME = "pgsessions_standby"
_LOG_NAME = "postgresql.log"
_SOCK_DIR = "sock"
_CONF_NAME = "pgsessions.conf"


class ClusterError(RuntimeError):
    """Starting, stopping or waiting on a test cluster failed (message carries the server log tail)."""


# --------------------------------------------------------------------------------------------------
# binaries and OS user


def find_bindir() -> str:
    """Directory holding initdb/pg_ctl: ``pg_config --bindir`` if usable, else the highest
    /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and os.path.exists(os.path.join(out, "initdb")):
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    candidates = [
        d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))
    ]

    def version_key(path: str) -> tuple[int, ...]:
        ver = path.split("/")[-2]
        return tuple(int(p) for p in re.findall(r"\d+", ver)) or (0,)

    if not candidates:
        raise ClusterError(
            "no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
        )
    return max(candidates, key=version_key)


def _as_root() -> bool:
    return os.geteuid() == 0


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# --------------------------------------------------------------------------------------------------
# nodes


@dataclass
class Node:
    """One PostgreSQL server (managed: started by us; external: given by DSN)."""

    name: str
    host: str
    port: int
    datadir: str | None = None  # None for external nodes
    bindir: str | None = None
    base_dsn: str | None = None  # external mode: the DSN we were given
    running: bool = False
    admin_user: str = "postgres"  # used when user=None
    admin_dbname: str = "postgres"  # used when dbname=None
    _cwd: str | None = field(default=None, repr=False)

    # ---- connection helpers ----------------------------------------------------------------------

    @property
    def managed(self) -> bool:
        return self.datadir is not None

    @property
    def logfile(self) -> str | None:
        return os.path.join(self.datadir, _LOG_NAME) if self.datadir else None

    @property
    def socket_dir(self) -> str | None:
        return os.path.join(self.datadir, _SOCK_DIR) if self.datadir else None

    def dsn(
        self, user: str | None = None, dbname: str | None = None, password: str | None = None, **extra: Any
    ) -> str:
        """libpq conninfo string for ``user`` on ``dbname`` on this node (TCP to its host/port).

        ``None`` means the node's admin user / database (postgres for managed nodes, the DSN's own
        for external ones).  Extra keywords become libpq parameters (e.g. application_name)."""
        user = user or self.admin_user
        dbname = dbname or self.admin_dbname
        params: dict[str, Any] = {}
        if self.base_dsn:
            params = conninfo_to_dict(self.base_dsn)
            if params.get("user") and params["user"] != user:
                params.pop("password", None)  # never send the admin's password for another role
        params.update(host=self.host, port=str(self.port), user=user, dbname=dbname)
        params.setdefault("connect_timeout", "5")
        if password is not None:
            params["password"] = password
        params.update({k: str(v) for k, v in extra.items()})
        return make_conninfo(**params)

    def connect(
        self,
        user: str | None = None,
        dbname: str | None = None,
        autocommit: bool = True,
        application_name: str | None = None,
        password: str | None = None,
    ) -> psycopg.Connection:
        extra = {"application_name": application_name} if application_name is not None else {}
        return psycopg.connect(
            self.dsn(user=user, dbname=dbname, password=password, **extra), autocommit=autocommit
        )

    def sql(
        self,
        query: str | pgsql.Composable,
        params: Any = None,
        user: str | None = None,
        dbname: str | None = None,
        password: str | None = None,
    ) -> list[tuple] | None:
        """Run one statement in autocommit mode; return the fetched rows, or None if it returns none."""
        with self.connect(user=user, dbname=dbname, password=password) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else None

    def is_ready(self) -> bool:
        try:
            self.sql("SELECT 1")
            return True
        except psycopg.Error:
            return False

    # ---- lifecycle (managed nodes only) ----------------------------------------------------------

    def _require_managed(self) -> None:
        if not self.managed:
            raise ClusterError(
                f"{self.name}: external server ({self.host}:{self.port}) cannot be started/stopped"
            )

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return _run_pg(args, cwd=self._cwd, timeout=timeout)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        assert self.bindir and self.datadir
        return self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, *args], timeout=timeout)

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections (no-op if running)."""
        self._require_managed()
        if self.running:
            return
        for attempt in range(5):
            res = self._pg_ctl(
                "-l", self.logfile, "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10
            )
            if res.returncode == 0:
                self.running = True
                return
            log = _tail(self.logfile)
            # somebody grabbed our port between _free_port() and the bind: take another one
            if "could not bind" in log or "Address already in use" in log:
                self._pg_ctl("-m", "immediate", "-w", "stop")
                self.port = _free_port()
                _write_conf(self, {"port": self.port})
                continue
            raise ClusterError(
                f"{self.name}: pg_ctl start failed (attempt {attempt + 1}, exit {res.returncode})\n"
                f"{res.stdout}{res.stderr}\n--- server log tail ({self.logfile}) ---\n{log}"
            )
        raise ClusterError(f"{self.name}: could not find a free port\n{_tail(self.logfile)}")

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Stop the server (``mode``: smart/fast/immediate); no-op if not running."""
        self._require_managed()
        if not self.running:
            return
        res = self._pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 10)
        if res.returncode != 0 and os.path.exists(os.path.join(self.datadir or "", "postmaster.pid")):
            raise ClusterError(
                f"{self.name}: pg_ctl stop failed: {res.stdout}{res.stderr}\n--- log tail ---\n{_tail(self.logfile)}"
            )
        self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.logfile, lines) if self.logfile else "(external server: no log)"


def _run_pg(args: list[str], cwd: str | None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool, as the postgres OS user when we are root."""
    if _as_root():
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(
        args,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _write_conf(node: Node, settings: dict[str, Any]) -> None:
    """Merge ``settings`` into the node's pgsessions.conf (included last by postgresql.conf)."""
    assert node.datadir
    path = os.path.join(node.datadir, _CONF_NAME)
    current: dict[str, str] = {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    current[k.strip()] = v.strip()
    for k, v in settings.items():
        if isinstance(v, bool):
            v = "on" if v else "off"
        current[k] = f"'{v}'" if isinstance(v, str) else str(v)
    with open(path, "w") as fh:
        fh.write("# written by tests/harness/pgcluster.py\n")
        for k, v in current.items():
            fh.write(f"{k} = {v}\n")
    _chown_tree(path)


def _chown_tree(path: str) -> None:
    if not _as_root():
        return
    uid, gid = _postgres_ids()
    os.chown(path, uid, gid)
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                os.chown(os.path.join(root, n), uid, gid)


# --------------------------------------------------------------------------------------------------
# the pair


_BASE_SETTINGS: dict[str, Any] = {
    "listen_addresses": "127.0.0.1",
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "hot_standby": True,
    "hot_standby_feedback": False,
    "max_connections": 1200,
    "max_prepared_transactions": 10,  # the xmin-horizon tests hold it with PREPARE TRANSACTION
    "shared_buffers": "32MB",
    "wal_writer_delay": "10ms",
    "wal_retrieve_retry_interval": "200ms",
    "wal_receiver_status_interval": "1s",
    "max_wal_size": "256MB",
    "dynamic_shared_memory_type": "posix",
    "logging_collector": False,
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "password_encryption": "scram-sha-256",
    "timezone": "UTC",
}

_HBA = f"""\
# written by tests/harness/pgcluster.py -- first match wins
host    all          {PW_ROLE}  127.0.0.1/32  scram-sha-256
local   all          all            trust
host    all          all            127.0.0.1/32  trust
local   replication  all            trust
host    replication  all            127.0.0.1/32  trust
"""


@dataclass
class ClusterPair:
    primary: Node
    standby: Node | None
    base_dir: str | None = None  # None in external mode
    external: bool = False
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- waiting ---------------------------------------------------------------------------------

    def _need_standby(self) -> Node:
        if self.standby is None:
            raise ClusterError("this pair has no standby")
        return self.standby

    def wait_streaming(self, timeout: float = 15) -> None:
        """Wait until the standby's WAL receiver and the primary's WAL sender both say 'streaming'."""
        standby = self._need_standby()
        deadline = time.monotonic() + timeout
        last = "never checked"
        while True:
            try:
                recv = standby.sql("SELECT status FROM pg_stat_wal_receiver")
                send = self.primary.sql("SELECT state FROM pg_stat_replication WHERE state = 'streaming'")
                last = f"standby wal_receiver={recv!r} primary replication={send!r}"
                if recv and recv[0][0] == "streaming" and send:
                    return
            except psycopg.Error as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"standby not streaming after {timeout}s ({last})\n"
                    f"--- primary log ---\n{self.primary.log_tail()}\n--- standby log ---\n{standby.log_tail()}"
                )
            time.sleep(0.02)

    def wait_replayed(self, timeout: float = 10) -> None:
        """Wait until the standby has replayed everything inserted into the primary's WAL so far.

        Uses pg_current_wal_insert_lsn() (pg_current_wal_lsn() is not enough with
        synchronous_commit=off).  If nothing flushes that WAL for a while, a tiny synchronously
        committed transaction on the primary pushes it out.
        """
        standby = self._need_standby()
        target = self.primary.sql("SELECT pg_current_wal_insert_lsn()")[0][0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        nudged = False
        started = time.monotonic()
        with standby.connect() as conn:
            while True:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn(), "
                    "pg_last_wal_receive_lsn()",
                    (str(target),),
                ).fetchone()
                assert row is not None
                if row[0]:
                    return
                if not nudged and time.monotonic() - started > 0.5:
                    nudged = True
                    with self.primary.connect(autocommit=False) as pconn:
                        pconn.execute("SET LOCAL synchronous_commit = local")
                        pconn.execute("SELECT txid_current()")
                        pconn.commit()
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"standby did not replay {target} within {timeout}s "
                        f"(replayed {row[1]}, received {row[2]})\n--- standby log ---\n{standby.log_tail()}"
                    )
                time.sleep(0.01)

    def set_standby_delay(self, value: str, timeout: float = 5) -> None:
        """ALTER SYSTEM SET max_standby_streaming_delay on the standby and reload ('-1' = wait forever)."""
        standby = self._need_standby()
        standby.sql(
            pgsql.SQL("ALTER SYSTEM SET max_standby_streaming_delay = {}").format(pgsql.Literal(str(value)))
        )
        standby.sql("SELECT pg_reload_conf()")
        want = _to_ms(str(value))
        deadline = time.monotonic() + timeout
        while True:
            got = standby.sql("SELECT setting FROM pg_settings WHERE name = 'max_standby_streaming_delay'")
            if want is None or (got and int(got[0][0]) == want):
                if want is None:
                    time.sleep(0.2)
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"max_standby_streaming_delay still {got} after reload (wanted {value})")
            time.sleep(0.01)

    # ---- teardown --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Fast shutdown of both servers and removal of their files (idempotent; external: no-op)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.external:
            return
        errors = []
        for node in (self.standby, self.primary):
            if node is None:
                continue
            try:
                node.stop(mode="fast")
            except Exception as exc:  # keep going, we are tearing down
                errors.append(exc)
                try:
                    node.stop(mode="immediate")
                except Exception:
                    pass
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if errors:
            raise ClusterError(f"errors while stopping the pair: {errors}")

    def __enter__(self) -> ClusterPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _to_ms(value: str) -> int | None:
    m = re.fullmatch(r"\s*(-?\d+)\s*(ms|s|min|h|d)?\s*", value)
    if not m:
        return None
    n = int(m.group(1))
    if n < 0:
        return -1
    return n * {None: 1, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}[m.group(2)]


# --------------------------------------------------------------------------------------------------
# setup


def _create_objects(node: Node, ignore_permission_errors: bool = False) -> None:
    """Roles and database the tests rely on; only what is missing is created."""

    def run(stmt: str | pgsql.Composable) -> None:
        try:
            node.sql(stmt)
        except psycopg.errors.InsufficientPrivilege:
            if not ignore_permission_errors:
                raise

    existing = {r[0] for r in node.sql("SELECT rolname FROM pg_roles") or []}
    for role, password in ((BOT_ROLE, None), (PW_ROLE, PW_ROLE_PASSWORD), (APP_ROLE, None)):
        if role not in existing:
            stmt = pgsql.SQL("CREATE ROLE {} LOGIN").format(pgsql.Identifier(role))
            if password:
                stmt = stmt + pgsql.SQL(" PASSWORD {}").format(pgsql.Literal(password))
            run(stmt)
    for role in (BOT_ROLE, PW_ROLE):
        run(pgsql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(pgsql.Identifier(role)))
    if not node.sql("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DB,)):
        run(
            pgsql.SQL("CREATE DATABASE {} OWNER {}").format(
                pgsql.Identifier(APP_DB), pgsql.Identifier(APP_ROLE)
            )
        )


def _init_primary(base: str, bindir: str) -> Node:
    datadir = os.path.join(base, "primary")
    res = _run_pg(
        [
            os.path.join(bindir, "initdb"),
            "--no-sync",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
            datadir,
        ],
        cwd=base,
        timeout=120,
    )
    if res.returncode != 0:
        raise ClusterError(f"initdb failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    node = Node(
        name="primary", host="127.0.0.1", port=_free_port(), datadir=datadir, bindir=bindir, _cwd=base
    )
    os.makedirs(node.socket_dir, exist_ok=True)  # type: ignore[arg-type]
    with open(os.path.join(datadir, "pg_hba.conf"), "w") as fh:
        fh.write(_HBA)
    with open(os.path.join(datadir, "postgresql.conf"), "a") as fh:
        fh.write(f"\ninclude '{_CONF_NAME}'\n")
    _write_conf(
        node,
        {
            **_BASE_SETTINGS,
            "port": node.port,
            "unix_socket_directories": node.socket_dir,
            "cluster_name": "pgsessions-primary",
        },
    )
    _chown_tree(datadir)
    return node


def _init_standby(base: str, bindir: str, primary: Node, tools_bindir: str | None = None) -> Node:
    datadir = os.path.join(base, "standby")
    res = _run_pg(
        [
            os.path.join(tools_bindir or bindir, "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            datadir,
            "-X",
            "stream",
            "-C",
            "-S",
            _SLOT_NAME,
            "-c",
            "fast",
            "--no-sync",
        ],
        cwd=base,
        timeout=120,
    )
    if res.returncode != 0:
        raise ClusterError(
            f"pg_basebackup failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}\n"
            f"--- primary log ---\n{primary.log_tail()}"
        )
    node = Node(
        name="standby", host="127.0.0.1", port=_free_port(), datadir=datadir, bindir=bindir, _cwd=base
    )
    # the backup copied the primary's socket lock file and log: the standby has its own
    shutil.rmtree(node.socket_dir, ignore_errors=True)  # type: ignore[arg-type]
    os.makedirs(node.socket_dir, exist_ok=True)  # type: ignore[arg-type]
    with open(node.logfile, "w"):  # type: ignore[arg-type]
        pass
    # what `pg_basebackup -R` would write, minus the options an older walreceiver rejects
    with open(os.path.join(datadir, "standby.signal"), "w"):
        pass
    _write_conf(
        node,
        {
            "port": node.port,
            "unix_socket_directories": node.socket_dir,
            "cluster_name": "pgsessions-standby",
            "hot_standby_feedback": False,
            "primary_conninfo": f"host={primary.host} port={primary.port} user=postgres",
            "primary_slot_name": _SLOT_NAME,
        },
    )
    _chown_tree(datadir)
    return node


def _start_managed(standby: bool, bindir: str | None = None, tools_bindir: str | None = None) -> ClusterPair:
    bindir = bindir or find_bindir()
    base = tempfile.mkdtemp(prefix="pgsessions-pg-", dir="/tmp")
    if _as_root():
        uid, gid = _postgres_ids()
        os.chown(base, uid, gid)
    os.chmod(base, 0o700)
    pair = ClusterPair(primary=Node(name="primary", host="127.0.0.1", port=0), standby=None, base_dir=base)
    atexit.register(_stop_quietly, pair)
    try:
        pair.primary = _init_primary(base, bindir)
        pair.primary.start()
        _create_objects(pair.primary)
        if standby:
            pair.standby = _init_standby(base, bindir, pair.primary, tools_bindir)
            pair.standby.start()
            pair.wait_streaming()
            pair.wait_replayed()
    except BaseException:
        _stop_quietly(pair)
        raise
    return pair


def _stop_quietly(pair: ClusterPair) -> None:
    try:
        pair.stop()
    except Exception:
        pass


def _external_node(name: str, dsn: str) -> Node:
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "127.0.0.1")
    port = int(params.get("port") or os.environ.get("PGPORT") or 5432)
    return Node(
        name=name,
        host=host,
        port=port,
        base_dsn=dsn,
        running=True,
        admin_user=str(params.get("user") or os.environ.get("PGUSER") or "postgres"),
        admin_dbname=str(params.get("dbname") or "postgres"),
    )


def _start_external(primary_dsn: str, standby_dsn: str | None, standby: bool) -> ClusterPair:
    pair = ClusterPair(primary=_external_node("primary", primary_dsn), standby=None, external=True)
    _create_objects(pair.primary, ignore_permission_errors=True)
    if standby and standby_dsn:
        pair.standby = _external_node("standby", standby_dsn)
        pair.wait_replayed()
    return pair


def start_pair(standby: bool = True, bindir: str | None = None, tools_bindir: str | None = None) -> ClusterPair:
    """Start a primary (+ streaming hot standby) or wrap the external servers named in the environment.

    ``bindir``: the server binaries to start (default :func:`find_bindir`; a given one is never replaced by
    external servers); ``tools_bindir``: where pg_basebackup is when ``bindir`` has none."""
    primary_dsn = os.environ.get(ENV_PRIMARY_DSN)
    if primary_dsn and bindir is None:
        return _start_external(primary_dsn, os.environ.get(ENV_STANDBY_DSN), standby)
    if standby and bindir and not os.path.exists(os.path.join(tools_bindir or bindir, "pg_basebackup")):
        raise ClusterError(f"no pg_basebackup in {tools_bindir or bindir}: pass tools_bindir (PostgreSQL 18's "
                           "pg_basebackup copies every older server)")
    return _start_managed(standby, bindir, tools_bindir)
