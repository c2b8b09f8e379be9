"""Fault tests: real processes that the tests kill and restart. Each module gets its OWN PostgreSQL cluster
(initdb in a temporary folder, random port) and each test its OWN redis-server (random port), so restarting them
disturbs nobody else; Celery workers and beat run as subprocesses in their own process groups. Everything is
bounded in time and removed after the test."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop_group(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class PostgresCluster:
    """A throwaway PostgreSQL cluster run by the postgres user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="inspector-fault-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _as_postgres(self, *args, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, args)],
            check=True,
            timeout=timeout,
            capture_output=True,
            cwd=self.dir,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.dir / "log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres", params=()) -> list:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True, connect_timeout=3) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server on a random port, without persistence: a restart loses every queued message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=(self.folder / "redis.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.ping, 10, "redis-server to answer")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class Stack:
    """One test's world: a fresh database in the module's cluster, a Redis, and the processes a test starts."""

    pg: PostgresCluster
    redis: RedisServer
    db: str
    tmp: Path
    env: dict
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.tmp / "detector.log"

    def _spawn(self, args: list[str], name: str, **env) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env | env,
            stdout=(self.tmp / f"{name}.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def worker(self, name: str = "worker", **env) -> subprocess.Popen:
        args = ["-m", "tests.fault.worker", "-Q", "celery,fit", "-c", "1", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h"]
        args += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        return self._spawn(args, name, **env)

    def beat(self) -> subprocess.Popen:
        schedule = self.tmp / "beat-schedule"
        args = ["-m", "celery", "-A", "inspector", "beat", "-s", str(schedule), "--loglevel", "INFO"]
        return self._spawn(args, "beat")

    def web(self, port: int) -> subprocess.Popen:
        return self._spawn(
            ["-m", "gunicorn", "inspector.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "30"], "web"
        )

    def scenario(self, names: list[str], timeout: float = 240) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "tests.fault.driver", *names],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def rows(self, batch: int) -> list[dict]:
        """The batch's inspections (id, name, status, attempts, error); [] while the database is unreachable."""
        import psycopg

        try:
            rows = self.pg.sql(
                "SELECT id, original_name, status, attempts, error, image, duplicate_of_id "
                "FROM inspections_inspection WHERE batch_id = %s ORDER BY id",
                db=self.db,
                params=(batch,),
            )
        except psycopg.OperationalError:
            return []
        keys = ("id", "name", "status", "attempts", "error", "image", "duplicate_of")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def finished(self, batch: int) -> list[dict] | None:
        rows = self.rows(batch)
        return rows if rows and all(r["status"] in ("done", "failed") for r in rows) else None

    def detector_runs(self, event: str = "end") -> Counter:
        if not self.log.exists():
            return Counter()
        return Counter(line.split()[1] for line in self.log.read_text().splitlines() if line.startswith(event + " "))

    def pool_pids(self, worker: subprocess.Popen) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def dump_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop_all(self) -> None:
        for proc in reversed(self.procs):  # the test is over: no warm shutdown to wait for
            _stop_group(proc, signal.SIGKILL)


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("fault tests start their own PostgreSQL as the postgres user: run as root (as .ci/run does)")
    if PG_BIN is None or not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("fault tests need PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/*/bin) and runuser")
    if shutil.which("redis-server") is None:
        pytest.skip("fault tests need redis-server")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("fault tests need the postgres system user")


BASE_ENV = {
    "INSPECTOR_IMAGE_SIZE": "64",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CELERY_TASK_ALWAYS_EAGER": "0",
    "CELERY_TASK_SOFT_TIME_LIMIT": "20",
    "CELERY_TASK_TIME_LIMIT": "25",
    "INSPECTOR_LOST_AFTER": "30",
    "INSPECTOR_REAP_EVERY": "2",
    "INSPECTOR_REQUEUE_AFTER": "6",
    "DATABASE_CONNECT_TIMEOUT": "2",
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="module")
def pg_cluster():
    """The module's PostgreSQL cluster, with a template database migrated once (each test copies it)."""
    _require_tools()
    cluster = PostgresCluster()
    try:
        cluster.sql("CREATE DATABASE fault_template")
        env = os.environ | BASE_ENV | {"DATABASE_URL": cluster.url("fault_template"), "CELERY_BROKER_URL": "memory://"}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def stack(pg_cluster):
    tmp = Path(tempfile.mkdtemp(prefix="inspector-fault-"))
    db = f"fault_{uuid.uuid4().hex[:8]}"
    pg_cluster.sql(f"CREATE DATABASE {db} TEMPLATE fault_template")
    redis_server = RedisServer(tmp)
    env = os.environ | BASE_ENV | {
        "DATABASE_URL": pg_cluster.url(db),
        "CELERY_BROKER_URL": redis_server.url,
        "MEDIA_ROOT": str(tmp / "media"),
        "INSPECTOR_VAR_DIR": str(tmp / "var"),
        "FAULT_LOG": str(tmp / "detector.log"),
    }
    s = Stack(pg_cluster, redis_server, db, tmp, env)
    started = time.monotonic()
    try:
        yield s
    finally:
        s.stop_all()
        redis_server.stop()
        with contextlib.suppress(Exception):  # the cluster goes with the module anyway
            pg_cluster.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"fault stack for this test: {time.monotonic() - started:.1f} s")
