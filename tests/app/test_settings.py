from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")} | env
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; from django.conf import settings; django.setup(); print(settings.DEBUG)",
        ],
        cwd=ROOT,
        env=environ | {"DJANGO_SETTINGS_MODULE": "inspector.settings"},
        capture_output=True,
        text=True,
    )


def test_production_refuses_to_start_with_the_default_secret_key():
    result = _load_settings(DEBUG="0")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_production_starts_with_a_real_secret_key():
    result = _load_settings(DEBUG="0", SECRET_KEY="x" * 50, ALLOWED_HOSTS="inspector.example")
    assert result.returncode == 0, result.stderr


def test_a_malformed_boolean_fails_loudly():
    result = _load_settings(DEBUG="maybe")
    assert result.returncode != 0 and "DEBUG='maybe' is not a boolean" in result.stderr


def test_a_lost_after_not_above_the_hard_time_limit_is_refused():
    result = _load_settings(CELERY_TASK_TIME_LIMIT="100", CELERY_TASK_SOFT_TIME_LIMIT="90", INSPECTOR_LOST_AFTER="100")
    assert result.returncode != 0 and "INSPECTOR_LOST_AFTER must exceed CELERY_TASK_TIME_LIMIT" in result.stderr


def test_a_visibility_timeout_not_above_the_hard_time_limit_is_refused():
    result = _load_settings(CELERY_TASK_TIME_LIMIT="600", CELERY_VISIBILITY_TIMEOUT="300")
    assert result.returncode != 0 and "CELERY_VISIBILITY_TIMEOUT must exceed" in result.stderr


def test_the_reaper_runs_every_inspector_reap_every_seconds_and_postgresql_connects_with_a_timeout():
    code = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.CELERY_BEAT_SCHEDULE['work-reap']['schedule'], settings.INSPECTOR_LOST_AFTER, "
        "settings.DATABASES['default']['OPTIONS']['connect_timeout'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=os.environ
        | {
            "DJANGO_SETTINGS_MODULE": "inspector.settings",
            "INSPECTOR_REAP_EVERY": "7",
            "CELERY_TASK_TIME_LIMIT": "100",
            "CELERY_TASK_SOFT_TIME_LIMIT": "90",
            "DATABASE_URL": "postgres://u@127.0.0.1:1/x",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7.0", "160", "5"]
