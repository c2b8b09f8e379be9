"""detection/ and classification/ are plain PyTorch packages: no Django, no settings, no environment variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "detection", ROOT / "classification"]


def test_importing_every_ml_module_loads_no_django():
    files = [p for pkg in PACKAGES for p in pkg.glob("*.py")]
    modules = sorted(f"{p.parent.name}.{p.stem}".removesuffix(".__init__") for p in files)
    forbidden = "('django', 'rest_framework', 'celery', 'inspector')"
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += f"bad = [m for m in sys.modules if m.split('.')[0] in {forbidden}]\nassert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ml_sources_do_not_read_the_environment_or_django():
    for path in (p for pkg in PACKAGES for p in pkg.glob("*.py")):
        text = path.read_text()
        for needle in ("import django", "from django", "os.environ", "getenv"):
            assert needle not in text, f"{path.name} contains {needle!r}"
