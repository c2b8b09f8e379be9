from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("INSPECTOR_DATASETS", ROOT.parent / "shared" / "datasets"))
WEIGHTS = Path(
    os.environ.get("INSPECTOR_WEIGHTS", Path.home() / ".cache" / "inspector" / "resnet50_imagenet.safetensors")
)


@pytest.fixture(scope="session")
def weights_path() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"converted backbone weights absent at {WEIGHTS} (run: make setup)")
    return WEIGHTS


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets absent at {DATASETS}")
    return DATASETS
