"""MVTec AD folder layout: train/good, test/<type>, ground_truth/<type>/<name>_mask.png."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class TestSample:
    path: Path
    defect_type: str  # "good" for normal images
    mask_path: Path | None  # None: all pixels count as normal

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type != "good"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def train_images(root: Path) -> list[Path]:
    folder = root / "train" / "good"
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: no train/good folder (expected the MVTec AD layout)")
    return _images(folder)


def test_samples(root: Path) -> list[TestSample]:
    test = root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{root}: no test folder (expected the MVTec AD layout)")
    samples = []
    for type_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        for path in _images(type_dir):
            mask = root / "ground_truth" / type_dir.name / f"{path.stem}_mask.png"
            samples.append(TestSample(path, type_dir.name, mask if mask.is_file() else None))
    return samples


def load_mask(sample: TestSample, size: int) -> np.ndarray:
    """(size, size) bool mask, resized like the images (nearest); all False when there is no mask."""
    if sample.mask_path is None:
        return np.zeros((size, size), dtype=bool)
    with Image.open(sample.mask_path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
