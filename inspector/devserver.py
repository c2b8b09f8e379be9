"""`make run`: the web server and a Celery worker together, on embedded defaults; one Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def settings_var_dir():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inspector.settings")
    from django.conf import settings

    return settings.VAR_DIR


def main() -> int:
    port = os.environ.get("PORT", "8000")
    python = sys.executable
    procs = [
        subprocess.Popen([python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]),
        subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                "-A",
                "inspector",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                "1",
                "--queues",
                "celery,fit",
                "--beat",
                "--schedule",
                str(settings_var_dir() / "celerybeat-schedule"),
            ]
        ),
    ]
    print(f"Inspector on http://127.0.0.1:{port}/ with a Celery worker; Ctrl-C stops both.", flush=True)

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        stop()
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
    return max((p.returncode or 0) for p in procs)


if __name__ == "__main__":
    sys.exit(main())
