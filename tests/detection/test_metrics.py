from __future__ import annotations

import itertools

import numpy as np
import pytest

from detection.metrics import auroc, f1_max


def _pairwise_auroc(labels, scores):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = rng.integers(0, 6, 60).astype(float) + labels  # many ties
    assert auroc(labels, scores) == pytest.approx(_pairwise_auroc(labels, scores))


def test_auroc_extremes():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auroc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        auroc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_f1_max_known_example():
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    # threshold 0.6: tp=3, fp=1, fn=0 -> 6/7; threshold 0.8: tp=2, fp=0, fn=1 -> 0.8
    assert f1_max(labels, scores) == pytest.approx(6 / 7)


def test_f1_max_does_not_split_tied_scores():
    labels = np.array([1, 0])
    scores = np.array([0.5, 0.5])
    assert f1_max(labels, scores) == pytest.approx(2 / 3)
