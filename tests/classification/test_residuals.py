"""Residual samples and their anomaly-weighted pooling: tiny CPU tensors, no weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from classification.residuals import ResidualSample, anomaly_weights, pooled_residual, weighted_mean
from detection.detector import Prediction

H = W = 20  # 400 patches: a 2 % defect is 8 of them
D = 16


def defect_sample(
    gen: torch.Generator, *, defect_fraction: float = 0.02
) -> tuple[ResidualSample, torch.Tensor, torch.Tensor]:
    """Residual noise everywhere, a fixed direction on a small square defect with higher anomaly scores."""
    n_defect = round(defect_fraction * H * W)
    mask = torch.zeros(H * W, dtype=torch.bool)
    mask[torch.randperm(H * W, generator=gen)[:n_defect]] = True
    mask = mask.view(H, W)
    direction = F.normalize(torch.randn(D, generator=gen), dim=0)
    residual = 0.5 * torch.randn(D, H, W, generator=gen)  # normal patches: residuals of similar norm, any direction
    residual[:, mask] = 2.0 * direction[:, None]
    anomaly = 1.0 + 0.1 * torch.rand(H, W, generator=gen)
    anomaly[mask] = 3.0 + 0.1 * torch.rand(int(mask.sum()), generator=gen)
    return ResidualSample(residual, anomaly), mask, direction


@pytest.mark.parametrize("weighting", ["softmax", "top", "uniform"])
def test_weights_are_non_negative_and_sum_to_one(weighting):
    anomaly = torch.rand(H, W, generator=torch.Generator().manual_seed(0))
    w = anomaly_weights(anomaly, weighting=weighting)
    assert w.shape == (H, W)
    assert (w >= 0).all()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("weighting", ["softmax", "top"])
def test_weights_concentrate_on_the_anomalous_region(weighting):
    sample, mask, _ = defect_sample(torch.Generator().manual_seed(1))
    w = anomaly_weights(sample.anomaly, weighting=weighting, top_fraction=0.02)
    assert float(w[mask].sum()) > 0.9


def test_softmax_weights_do_not_depend_on_the_units_of_the_scores():
    anomaly = torch.rand(H, W, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(anomaly_weights(anomaly), anomaly_weights(100.0 * anomaly + 7.0))


def test_a_flat_anomaly_map_gives_uniform_weights():
    w = anomaly_weights(torch.full((H, W), 0.3))
    torch.testing.assert_close(w, torch.full((H, W), 1.0 / (H * W)))


def test_a_two_percent_defect_dominates_the_pooled_residual():
    sample, _, direction = defect_sample(torch.Generator().manual_seed(3))
    pooled = pooled_residual(sample)
    plain_mean = sample.residual.mean((1, 2))
    assert float(F.cosine_similarity(pooled, direction, dim=0)) > 0.95
    # without the anomaly weights the other 98 % drown it
    assert float(F.cosine_similarity(plain_mean, direction, dim=0)) < 0.8


def test_weighted_mean_is_the_weighted_average_of_patch_vectors():
    gen = torch.Generator().manual_seed(4)
    fmap = torch.randn(D, 3, 2, generator=gen)
    weights = torch.softmax(torch.randn(6, generator=gen), 0).view(3, 2)
    expected = sum(weights[i, j] * fmap[:, i, j] for i in range(3) for j in range(2))
    torch.testing.assert_close(weighted_mean(fmap, weights), expected)


def test_pooling_raw_features_needs_a_sample_built_with_features():
    sample, _, _ = defect_sample(torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="without features"):
        pooled_residual(sample, source="features")
    with_features = sample._replace(features=torch.ones(D, H, W))
    torch.testing.assert_close(pooled_residual(with_features, source="features"), torch.ones(D))


def test_anomaly_map_off_the_residual_grid_is_refused():
    with pytest.raises(ValueError, match="grid"):
        pooled_residual(ResidualSample(torch.zeros(D, H, W), torch.zeros(H, W + 1)))


def test_sample_from_a_detector_prediction_keeps_residual_and_patch_scores():
    gen = torch.Generator().manual_seed(6)
    residual, scores = torch.randn(D, 4, 4, generator=gen), torch.rand(4, 4, generator=gen)
    pred = Prediction(
        score=float(scores.max()),
        verdict="defective",
        anomaly_map=scores.numpy(),
        patch_scores=scores,
        nearest_support=0,
        features=residual + 1.0,
        nearest_index=torch.zeros(4, 4, dtype=torch.long),
        residual=residual,
    )
    sample = ResidualSample.from_prediction(pred, keep_features=True)
    torch.testing.assert_close(sample.residual, residual)
    torch.testing.assert_close(sample.anomaly, scores)
    torch.testing.assert_close(sample.features, residual + 1.0)
    assert ResidualSample.from_prediction(pred).features is None


def test_sample_from_a_prediction_without_features_is_refused():
    pred = Prediction(0.0, "good", torch.zeros(4, 4).numpy(), torch.zeros(4, 4), 0)
    with pytest.raises(ValueError, match="return_features=True"):
        ResidualSample.from_prediction(pred)
