"""detection/ and classification/ are plain PyTorch packages: no Django, no settings, no environment variables."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "detection", ROOT / "classification"]
# Synthetic defects move below both ML packages (issue 15); until then DFD's pseudo-anomalies come from there.
DETECTION_MAY_IMPORT_CLASSIFICATION: set[str] = set()


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_importing_every_ml_module_loads_no_django():
    modules = sorted(_module(p) for pkg in PACKAGES for p in pkg.rglob("*.py"))
    forbidden = "('django', 'rest_framework', 'celery', 'inspector')"
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += f"bad = [m for m in sys.modules if m.split('.')[0] in {forbidden}]\nassert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ml_sources_do_not_read_the_environment_or_django():
    for path in (p for pkg in PACKAGES for p in pkg.rglob("*.py")):
        text = path.read_text()
        for needle in ("import django", "from django", "os.environ", "getenv"):
            assert needle not in text, f"{path.name} contains {needle!r}"


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a source file."""
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}


def test_detection_does_not_import_classification():
    importers = {
        str(p.relative_to(ROOT / "detection"))
        for p in (ROOT / "detection").rglob("*.py")
        if any(m.split(".")[0] == "classification" for m in _imports(p))
    }
    assert importers <= DETECTION_MAY_IMPORT_CLASSIFICATION, importers


def test_the_library_never_imports_its_command_line_tools():
    library = [p for p in (ROOT / "detection").rglob("*.py") if "cli" not in p.relative_to(ROOT).parts]
    assert library
    for path in library:
        assert not any(m.startswith("detection.cli") for m in _imports(path)), path.name
