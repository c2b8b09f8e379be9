"""Checkpoints and fitted state are data, never pickles: every torch.load in the app and the ML packages passes
weights_only=True, and nothing unpickles (pickle.load, np.load(allow_pickle=True))."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["inspector", "detection", "classification"]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def _sources():
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]


def test_every_torch_load_passes_weights_only_true():
    loads = [(path, call) for path in _sources() for call, func in _calls(path) if func == "torch.load"]
    unsafe = [
        f"{path.relative_to(ROOT)}:{call.lineno}" for path, call in loads if not _keyword_is_true(call, "weights_only")
    ]
    assert len(loads) >= 3, "the scan found no torch.load at all: is it still looking at the right files?"
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_torch_load_is_never_imported_under_another_name():
    aliased = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names)
    ]
    assert not aliased, "import torch and call torch.load(..., weights_only=True) so the scan above sees it"


def test_nothing_unpickles():
    found = [
        f"{path.relative_to(ROOT)}:{call.lineno} {func}"
        for path in _sources()
        for call, func in _calls(path)
        if func in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "dill.load", "dill.loads")
        or (func in ("np.load", "numpy.load") and _keyword_is_true(call, "allow_pickle"))
    ]
    assert not found


def test_the_scan_catches_an_unsafe_load(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\nstate = torch.load(path, map_location='cpu')\nok = torch.load(p, weights_only=True)\n"
    )
    flagged = [c.lineno for c, f in _calls(bad) if f == "torch.load" and not _keyword_is_true(c, "weights_only")]
    assert flagged == [2]
