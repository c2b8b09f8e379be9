"""Residual samples of a dataset's defect images against a seeded normal memory bank (MVTec AD layout).

The evaluators fit the detector ONCE on `bank_size` train/good images drawn with `bank_seed` and compute the
residual samples of every defect test image once; every shots/seed episode reuses them (see
classification.episodes): what varies between seeds is which images are labelled, the quantity under test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classification.residuals import ResidualSample
from detection.dataset import test_samples, train_images
from detection.detector import Detector, FittedSupport

PREDICT_CHUNK = 8  # images per detector.predict call: bounds the memory of features + residuals in flight


def seeded_choice(n_total: int, n: int, seed: int) -> list[int]:
    """`n` sorted distinct indices out of `n_total`, drawn with np.random.default_rng(seed): a reproducible bank."""
    return sorted(np.random.default_rng(seed).choice(n_total, n, replace=False).tolist())


def bank_images(data: Path, bank_size: int, bank_seed: int) -> list[Path]:
    """The seeded train/good images of the normal memory bank."""
    train = train_images(data)
    if bank_size > len(train):
        raise ValueError(f"bank of {bank_size} images requested but train/good has {len(train)}")
    return [train[i] for i in seeded_choice(len(train), bank_size, bank_seed)]


def residual_samples_of(
    detector: Detector, fitted: FittedSupport, images: Sequence[Path | np.ndarray], *, keep_features: bool = False
) -> list[ResidualSample]:
    """Residual samples of `images` (paths or RGB arrays) against the fitted bank, as for real flagged images."""
    samples: list[ResidualSample] = []
    for start in range(0, len(images), PREDICT_CHUNK):
        for pred in detector.predict(fitted, images[start : start + PREDICT_CHUNK], return_features=True):
            samples.append(ResidualSample.from_prediction(pred, keep_features=keep_features))
    return samples


def residual_samples(
    data: Path, detector: Detector, *, bank_size: int, bank_seed: int, keep_features: bool
) -> tuple[list[ResidualSample], list[str], dict[str, float]]:
    """Fit the detector on seeded train/good images; residual samples of every defect test image, once.

    Returns (samples, their defect types, timing: bank_fit_s and residual_ms per image).
    """
    bank = bank_images(data, bank_size, bank_seed)
    defects = [s for s in test_samples(data) if s.is_anomalous]
    if not defects:
        raise ValueError(f"{data}: no defect images under test/ (only good)")
    t0 = time.perf_counter()
    fitted = detector.fit(bank)
    t1 = time.perf_counter()
    samples = residual_samples_of(detector, fitted, [s.path for s in defects], keep_features=keep_features)
    t2 = time.perf_counter()
    timing = {"bank_fit_s": round(t1 - t0, 2), "residual_ms": round((t2 - t1) / len(defects) * 1e3, 1)}
    return samples, [s.defect_type for s in defects], timing
