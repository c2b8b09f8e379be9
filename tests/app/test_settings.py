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
