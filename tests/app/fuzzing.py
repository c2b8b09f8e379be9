"""Shared settings of the fuzz tests: few examples by default (the suite stays fast), many on demand:
INSPECTOR_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -m fuzz tests/app/test_fuzz.py tests/app/test_fuzz_api.py"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("INSPECTOR_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(default_examples: int):
    """Hypothesis settings: `default_examples` unless INSPECTOR_FUZZ_EXAMPLES asks for a long run; no deadline
    (a 2-core machine shared with other work times out honest cases); the autouse app fixtures are harmless here."""
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=None,
        derandomize=EXAMPLES is None,  # the default run is the same every time; long runs explore
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
        database=None,
    )
