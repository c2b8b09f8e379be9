"""The floors of inspector/ (README, "Architecture"): a module imports only from its own floor or lower ones.

Every import statement of every module (migrations aside) is read with ast, including imports inside functions,
so a lazy import cannot hide an upward dependency. A module of inspector/ with no floor below fails too: a new
module is placed deliberately."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "inspector"

# Lowest first. A key covers the module or package of that name and everything inside it.
FLOORS: dict[str, int] = {
    # 0: the ground floor, which imports no app: settings, security, the Celery app, the ML adapter, the job
    # lifecycle, upload validation and storage, CSV writing, the htmx render helper.
    "inspector": 0,  # the package itself (__init__.py: starts the Celery app); exact name only
    "inspector.env": 0,
    "inspector.settings": 0,
    "inspector.security": 0,
    "inspector.celery": 0,
    "inspector.ml": 0,
    "inspector.jobs": 0,
    "inspector.uploads": 0,
    "inspector.exports": 0,
    "inspector.params": 0,
    "inspector.api_errors": 0,
    "inspector.htmx": 0,
    "inspector.audit": 1,  # record and read events
    "inspector.accounts": 2,  # tokens, login
    "inspector.products": 3,  # teams, roles, products, support sets, defect types, team pages (audit log too)
    "inspector.inspections": 4,  # batches, inspections, their processing and API
    "inspector.review": 5,  # decisions, leases, undo, bulk
    "inspector.classifier": 6,  # classification step, versions, training, promotion, re-classification
    "inspector.stats": 7,  # figures, charts, exports
    # 8: the top: operations pages, the URL map, the reaper, tasks that chain work across apps, entry points.
    "inspector.ops": 8,
    "inspector.urls": 8,
    "inspector.reaper": 8,
    "inspector.wsgi": 8,
    "inspector.asgi": 8,
    "inspector.devserver": 8,
}

# Upward imports waiting for the split of inspector/review (a parallel change). Remove each entry when its import
# goes: test_every_pending_upward_import_is_still_there fails once an entry is no longer needed.
PENDING_REVIEW_SPLIT: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def floor_of(module: str) -> int | None:
    """The floor of a module of inspector/ (None if it has none); the longest key that covers it wins."""
    if module == "inspector":
        return FLOORS["inspector"]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        floor = FLOORS.get(".".join(parts[:n]))
        if floor is not None:
            return floor
    return None


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every inspector module `module` imports: `from X import Y` counts as X.Y where that is a module (always
    under the package itself: `from inspector import ml`), else X."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if base == "inspector" or child in modules else base)
    return {name for name in found if name == "inspector" or name.startswith("inspector.")}


def _upward_imports() -> set[tuple[str, str]]:
    modules = _modules()
    upward = set()
    for module, path in modules.items():
        own = floor_of(module)
        for target in _imported(module, path, modules):
            floor = floor_of(target)
            if own is not None and floor is not None and floor > own:
                upward.add((module, target))
    return upward


def test_every_module_of_inspector_has_a_floor():
    assert [m for m in _modules() if floor_of(m) is None] == []


def test_no_module_imports_from_a_higher_floor():
    upward = _upward_imports() - PENDING_REVIEW_SPLIT
    assert sorted(f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})" for a, b in upward) == []


def test_every_pending_upward_import_is_still_there():
    assert PENDING_REVIEW_SPLIT - _upward_imports() == set()


def test_the_floor_rules_catch_an_upward_import_and_allow_a_downward_one(tmp_path):
    path = tmp_path / "services.py"
    path.write_text(
        "from inspector.review.services import x\nfrom inspector import ml, stats\nimport inspector.jobs\n"
        "def f():\n    from .models import Batch\n"
    )
    imported = _imported("inspector.inspections.services", path, _modules())
    assert imported == {
        "inspector.review.services",
        "inspector.ml",
        "inspector.stats",
        "inspector.jobs",
        "inspector.inspections.models",
    }
    assert sorted(floor_of(m) for m in imported) == [0, 0, 4, 5, 7]
    assert floor_of("inspector.stats.views") == 7 and floor_of("inspector.classifier") == 6
