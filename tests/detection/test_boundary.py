"""detection/ is a plain PyTorch package: no Django, no settings, no environment variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "detection"


def test_importing_every_detection_module_loads_no_django():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import detection.{m}\n" for m in modules)
        + (
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'celery', 'inspector')]\n"
            "assert not bad, bad\n"
        )
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_detection_sources_do_not_read_the_environment_or_django():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for needle in ("import django", "from django", "os.environ", "getenv"):
            assert needle not in text, f"{path.name} contains {needle!r}"
