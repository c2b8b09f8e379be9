"""Load test on loopback: one large batch processed by N Celery worker processes while simulated users browse and
review. Bounded and self-stopping: it ends when every image is in a final state or after --max-seconds, stops
every process it started, prints the figures and exits non-zero if an image was lost.

    .venv/bin/python scripts/loadtest.py --images 1000 --users 10 --workers 2
    .venv/bin/python scripts/loadtest.py --images 200 --users 10 --workers 1   # scaling: compare with --workers 2

It starts gunicorn and the workers itself against PostgreSQL and Redis (a fresh database, --database, dropped and
re-created; a Redis db number of its own, flushed), with media in a temporary folder. Users are threads with a
logged-in requests session each: product, batch, inspection and review pages, heatmaps, and review decisions
through the API; latency is measured per request from the client side.

Worker utilisation is given two ways: busy time (sum of claim-to-result of the images processed) over
wall time x workers, and the CPU time of the worker processes (/proc) over wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages importable
FINAL = ("done", "failed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes (each -c 1)")
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per worker process (OMP_NUM_THREADS)")
    p.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--max-seconds", type=float, default=1800, help="stop here even if images are unfinished")
    p.add_argument("--think", type=float, default=1.0, help="mean pause of a user between requests, seconds")
    p.add_argument("--shots", type=int, default=4, help="good images in the support set")
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "mvtec_bottle")
    p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server (no database)")
    p.add_argument("--database", default="inspector_loadtest")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.images < 1 or args.users < 0 or args.workers < 1:
        p.error("--images and --workers must be >= 1, --users >= 0")
    if not (args.dataset / "train" / "good").is_dir() or not (args.dataset / "test").is_dir():
        p.error(f"{args.dataset} is not an MVTec-style folder (train/good, test/*)")
    return args


# ------------------------------------------------------------------------------------------------ processes


def _cpu_seconds_of_session(sid: int) -> float:
    """CPU time (user + system) of every live process in session `sid`, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # fields[3]: session id (field 6 of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


@dataclass
class Stack:
    env: dict
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list = field(default_factory=list)

    def start(self, name: str, cmd: list[str], logdir: Path, env: dict | None = None) -> subprocess.Popen:
        log = (logdir / f"{name}.log").open("w")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


def _reset_database(pg: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def _wait_http(url: str, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the web server did not answer at {url} within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------------ images


def _with_text_chunk(png: bytes, text: str) -> bytes:
    """The same PNG with a tEXt chunk before IEND: identical pixels, distinct bytes (a distinct checksum)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[-12:-8] != b"\x00\x00\x00\x00":
        raise ValueError("not a PNG ending in an empty IEND chunk")
    data = b"Comment\x00" + text.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


def batch_zip(dataset: Path, n: int) -> bytes:
    """n images cycling through the dataset's test images, each made unique, stored (PNG is compressed already)."""
    sources = sorted(dataset.glob("test/*/*.png"))
    if not sources:
        raise SystemExit(f"no test/*/*.png under {dataset}")
    raw = [p.read_bytes() for p in sources]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            k = i % len(sources)
            zf.writestr(f"{i:05d}_{sources[k].parent.name}_{sources[k].name}", _with_text_chunk(raw[k], f"copy {i}"))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ users


@dataclass
class Shared:
    base: str
    product_id: int
    batch_id: int
    stop: threading.Event
    done_ids: list[int] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    decisions: int = 0
    conflicts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def login(base: str, username: str, password: str):
    import requests

    s = requests.Session()
    s.get(f"{base}/login/", timeout=30)
    r = s.post(
        f"{base}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers={"Referer": f"{base}/login/"},
        timeout=30,
        allow_redirects=False,
    )
    if r.status_code != 302:
        raise SystemExit(f"login of {username} failed: HTTP {r.status_code}")
    return s


def user_loop(shared: Shared, session, seed: int, think: float) -> None:
    rng = random.Random(seed)
    base = shared.base

    def timed(kind: str, method: str, url: str, **kw):
        start = time.perf_counter()
        try:
            r = session.request(method, url, timeout=60, **kw)
        except Exception as exc:  # counted, the user goes on
            with shared.lock:
                shared.errors[f"{kind} {type(exc).__name__}"] += 1
            return None
        ms = (time.perf_counter() - start) * 1e3
        with shared.lock:
            shared.latencies[kind].append(ms)
            if r.status_code >= 400 and not (kind == "review" and r.status_code == 409):
                shared.errors[f"{kind} HTTP {r.status_code}"] += 1
        return r

    while not shared.stop.is_set():
        with shared.lock:
            ids = list(shared.done_ids[-200:])
        action = rng.choices(["product", "batch", "inspection", "heatmap", "review"], [1, 3, 3, 2, 2])[0]
        if action == "product":
            timed("product", "GET", f"{base}/products/{shared.product_id}/")
        elif action == "batch":
            timed("batch", "GET", f"{base}/batches/{shared.batch_id}/")
        elif ids:
            iid = rng.choice(ids)
            if action == "inspection":
                timed("inspection", "GET", f"{base}/inspections/{iid}/")
            elif action == "heatmap":
                r = timed("inspection_api", "GET", f"{base}/api/inspections/{iid}/")
                if r is not None and r.ok and r.json().get("heatmap_url"):
                    timed("heatmap", "GET", base + r.json()["heatmap_url"].removeprefix(base))
            else:
                r = timed("inspection_api", "GET", f"{base}/api/inspections/{iid}/")
                if r is not None and r.ok:
                    version = (r.json().get("review") or {}).get("version", 0)
                    verdict = rng.choice(["good", "defective"])
                    r = timed(
                        "review",
                        "POST",
                        f"{base}/api/inspections/{iid}/review/",
                        json={"verdict": verdict, "version": version},
                        headers={"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": base + "/"},
                    )
                    if r is not None:
                        with shared.lock:
                            shared.decisions += r.ok
                            shared.conflicts += r.status_code == 409
        shared.stop.wait(rng.expovariate(1 / think) if think > 0 else 0)


# ------------------------------------------------------------------------------------------------ main


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="inspector-loadtest-"))
    env = os.environ | {
        "DATABASE_URL": f"{args.pg}/{args.database}",
        "CELERY_BROKER_URL": args.redis,
        "MEDIA_ROOT": str(workdir / "media"),
        "INSPECTOR_VAR_DIR": str(workdir / "var"),
        "INSPECTOR_MEDIA_STORAGE": "local",
        "DEBUG": "1",
        "INSPECTOR_MAX_FILES_PER_UPLOAD": str(max(2000, args.images)),
        "DJANGO_SETTINGS_MODULE": "inspector.settings",
    }
    os.environ.update(env)
    worker_env = env | {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    print(f"load test: {args.images} images, {args.users} users, {args.workers} worker processes; logs in {workdir}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _reset_database(args.pg, args.database)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from inspector.inspections.models import Inspection
    from inspector.products.models import Team

    User = get_user_model()
    password = "loadtest-password-123"
    team = Team.objects.create(name="Load test")
    names = ["uploader"] + [f"reviewer{i}" for i in range(args.users)]
    for name in names:
        team.members.add(User.objects.create_user(name, password=password))

    stack = Stack(env)
    base = f"http://127.0.0.1:{args.port}"
    try:
        web = stack.start(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "inspector.wsgi:application",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                str(args.web_workers),
                "--threads",
                "4",
                "--timeout",
                "600",
            ],
            workdir,
        )
        workers = [
            stack.start(
                f"worker{i}",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "inspector",
                    "worker",
                    "-Q",
                    "celery,fit",
                    "-c",
                    "1",
                    "--prefetch-multiplier",
                    "1",
                    "-n",
                    f"loadtest{i}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                workdir,
                worker_env,
            )
            for i in range(args.workers)
        ]
        _wait_http(f"{base}/healthz", 120)
        uploader = login(base, "uploader", password)
        csrf = {"X-CSRFToken": uploader.cookies["csrftoken"], "Referer": base + "/"}
        product = uploader.post(f"{base}/api/products/", json={"name": "Bottle"}, headers=csrf, timeout=30)
        product.raise_for_status()
        product_id = product.json()["id"]
        goods = sorted((args.dataset / "train" / "good").glob("*.png"))[: args.shots]
        r = uploader.post(
            f"{base}/api/products/{product_id}/support-images/",
            files=[("images", (p.name, p.read_bytes(), "image/png")) for p in goods],
            headers=csrf,
            timeout=120,
        )
        r.raise_for_status()
        deadline = time.monotonic() + 300
        while True:
            support = uploader.get(f"{base}/api/products/{product_id}/", timeout=30).json().get("support_set") or {}
            if support.get("status") == "ready":
                break
            if support.get("status") == "failed" or time.monotonic() > deadline:
                raise SystemExit(f"support set not ready: {support}")
            time.sleep(1)

        archive = batch_zip(args.dataset, args.images)
        sessions = [login(base, f"reviewer{i}", password) for i in range(args.users)]
        cpu0 = {p.pid: _cpu_seconds_of_session(p.pid) for p in [web, *workers]}
        t0 = time.monotonic()
        load0 = os.getloadavg()
        r = uploader.post(
            f"{base}/api/products/{product_id}/batches/",
            files=[("images", ("batch.zip", archive, "application/zip"))],
            data={"lot": "load"},
            headers=csrf,
            timeout=900,
        )
        r.raise_for_status()
        upload_s = time.monotonic() - t0
        batch_id = r.json()["id"]
        shared = Shared(base, product_id, batch_id, threading.Event())
        threads = [
            threading.Thread(target=user_loop, args=(shared, s, i, args.think), daemon=True)
            for i, s in enumerate(sessions)
        ]
        for t in threads:
            t.start()

        inspections = Inspection.objects.filter(batch_id=batch_id)
        total = inspections.count()
        while time.monotonic() - t0 < args.max_seconds:
            done = list(inspections.filter(status__in=FINAL).order_by("finished_at").values_list("id", flat=True))
            with shared.lock:
                shared.done_ids = done
            if len(done) == total:
                break
            if any(p.poll() is not None for p in [web, *workers]):
                print("a process of the stack exited early; see the logs", file=sys.stderr)
                break
            time.sleep(1)
        wall = time.monotonic() - t0
        cpu = {pid: _cpu_seconds_of_session(pid) - c for pid, c in cpu0.items()}
        load1 = os.getloadavg()
        shared.stop.set()
        for t in threads:
            t.join(timeout=70)
    finally:
        stack.stop()

    from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Sum

    counts = dict(inspections.values_list("status").annotate(n=Count("id")).order_by())
    verdicts = dict(inspections.filter(status="done").values_list("verdict").annotate(n=Count("id")).order_by())
    span = inspections.filter(status__in=FINAL).aggregate(
        first=Min("started_at"),
        last=Max("finished_at"),
        busy=Sum(ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())),
        detect=Sum("detect_ms"),
    )
    processed = sum(counts.get(s, 0) for s in FINAL)
    lost = total - processed
    batch = Inspection.objects.filter(batch_id=batch_id).first().batch
    processing_s = (span["last"] - batch.created_at).total_seconds() if span["last"] else float("nan")
    busy_s = span["busy"].total_seconds() if span["busy"] else 0.0
    all_ms = [ms for values in shared.latencies.values() for ms in values]
    figures = {
        "images": args.images,
        "accepted": total,
        "users": args.users,
        "workers": args.workers,
        "cpu_cores": os.cpu_count(),
        "torch_threads_per_worker": args.torch_threads,
        "upload_seconds": round(upload_s, 1),
        "wall_seconds_upload_to_last_result": round(wall, 1),
        "processing_seconds_batch_created_to_last_result": round(processing_s, 1),
        "throughput_images_per_s": round(processed / processing_s, 2) if processed else 0.0,
        "worker_ms_per_image": round(busy_s * 1e3 / processed, 1) if processed else None,
        "detect_ms_per_image": round((span["detect"] or 0) / max(1, counts.get("done", 0)), 1),
        "worker_utilisation_busy_over_wall": round(busy_s / (processing_s * args.workers), 3) if processed else None,
        "worker_cpu_cores_used": round(sum(cpu[p.pid] for p in workers) / wall, 2),
        "web_cpu_cores_used": round(cpu[web.pid] / wall, 2),
        "final_status_counts": counts,
        "verdicts": verdicts,
        "lost": lost,
        "page_latency_ms": {
            kind: {"n": len(v), "p50": round(percentile(v, 50), 1), "p95": round(percentile(v, 95), 1)}
            for kind, v in sorted(shared.latencies.items())
        },
        "page_latency_ms_all": {
            "n": len(all_ms),
            "p50": round(percentile(all_ms, 50), 1),
            "p95": round(percentile(all_ms, 95), 1),
        },
        "http_errors": dict(shared.errors),
        "review_decisions": shared.decisions,
        "review_conflicts_409": shared.conflicts,
        "load_average_at_upload": [round(x, 2) for x in load0],
        "load_average_at_end": [round(x, 2) for x in load1],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    if lost:
        print(f"LOST: {lost} images never reached a final state within {args.max_seconds:.0f} s", file=sys.stderr)
        return 1
    print(f"every image reached a final state: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
