"""The real backbone on real images: a small slice of mvtec_bottle (skips without weights or datasets)."""

from __future__ import annotations

import numpy as np
import pytest

from detection import Detector, DetectorConfig, dataset
from detection.metrics import auroc


@pytest.mark.backbone
@pytest.mark.datasets
@pytest.mark.parametrize("method", ["fastrecon", "patchcore"])
def test_two_good_bottles_separate_broken_from_good_bottles(method, weights_path, datasets_dir):
    root = datasets_dir / "mvtec_bottle"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    detector = Detector(DetectorConfig(method=method), weights=weights_path, device="cpu")
    train = dataset.train_images(root)
    fitted = detector.fit([train[0], train[100]])
    samples = [s for s in dataset.test_samples(root) if s.defect_type in ("good", "broken_large")][::2]
    preds = detector.predict(fitted, [s.path for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    scores = np.array([p.score for p in preds])
    assert auroc(labels, scores) >= 0.95
    assert preds[0].anomaly_map.shape == (512, 512)
    # thresholds from two good images only: most broken bottles are not called good
    verdicts = [p.verdict for p, bad in zip(preds, labels, strict=True) if bad]
    assert verdicts.count("good") <= len(verdicts) // 4
