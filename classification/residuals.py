"""The classifier's input: residual maps from the detector, and their pooling onto the anomalous region.

A `ResidualSample` is what the defect-type classifier sees of one flagged image: the residual map (each patch
feature minus its nearest patch in the product's normal memory bank, (D, h, w), spatial layout kept) and the
detector's patch-score map (h, w) on the same grid, which says where the defect is.

Pooling. A defect covering 2 % of the image is ~20 of the 1024 patches at S = 256; a plain mean over the grid
would be 98 % background. `anomaly_weights` therefore concentrates the weights on the anomalous patches. The
default is a softmax over the patch scores with a temperature *relative to the image's own score spread*:

    w_i = softmax_i((s_i - max s) / (tau * (max s - median s)))

Why this scheme rather than a fixed top fraction:
- It is scale-free: FastRecon and PatchCore scores, and different products, have different units; dividing by
  (max - median) makes tau mean the same thing everywhere. The median is the typical (normal) patch of the
  image, since defects cover well under half of it.
- It adapts to the defect's extent: every patch whose score is near the maximum gets a comparable weight, so a
  large defect is pooled over all of its area and a small one over its few patches. A top-5 % rule pools 51
  patches whatever the defect's size: 2.5 times the area of a 2 % defect, i.e. mostly its normal surroundings.
- With tau = 0.1 a patch at the median weighs e^-10 of the maximum: even 1000 such patches add up to < 5 % of
  the weight of a single maximal patch, so the background cannot drown the defect.
- On an image whose map is flat (no clear defect) the weights spread out instead of latching onto noise.

`weighting="top"` (uniform over the top `top_fraction` patches) and `"uniform"` (global mean) are kept for
comparison (the evaluator reports what each gives).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

WEIGHTINGS = ("softmax", "top", "uniform")
SOURCES = ("residual", "features")
# Below this spread (max - median) the patch-score map is flat to float precision: weights become uniform.
_FLAT_SPREAD = 1e-12


class ResidualSample(NamedTuple):
    residual: torch.Tensor  # (D, h, w) patch features minus their nearest memory-bank patch
    anomaly: torch.Tensor  # (h, w) detector patch scores on the same grid
    features: torch.Tensor | None = None  # (D, h, w) raw patch features, kept only when asked for

    @classmethod
    def from_prediction(cls, prediction: object, *, keep_features: bool = False) -> ResidualSample:
        """From a `detection.Prediction` made with `return_features=True` (duck-typed: no detection import)."""
        residual = getattr(prediction, "residual", None)
        if residual is None:
            raise ValueError("the prediction carries no residual: predict with return_features=True")
        features = getattr(prediction, "features", None) if keep_features else None
        if keep_features and features is None:
            raise ValueError("keep_features=True but the prediction carries no features")
        sample = cls(residual.detach().float(), prediction.patch_scores.detach().float(), features)
        check_sample(sample)
        return sample

    def map(self, source: str) -> torch.Tensor:
        """The (D, h, w) map to pool: the residual, or the raw features."""
        if source == "residual":
            return self.residual
        if source == "features":
            if self.features is None:
                raise ValueError("source='features' but this sample was built without features")
            return self.features
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def check_sample(sample: ResidualSample) -> None:
    if sample.residual.ndim != 3:
        raise ValueError(f"residual must be (D, h, w), got {tuple(sample.residual.shape)}")
    if sample.anomaly.shape != sample.residual.shape[1:]:
        grid = tuple(sample.residual.shape[1:])
        raise ValueError(f"anomaly map {tuple(sample.anomaly.shape)} is not on the residual's grid {grid}")
    if sample.features is not None and sample.features.shape != sample.residual.shape:
        raise ValueError(f"features {tuple(sample.features.shape)} and residual {tuple(sample.residual.shape)} differ")


def anomaly_weights(
    anomaly: torch.Tensor, *, weighting: str = "softmax", temperature: float = 0.1, top_fraction: float = 0.05
) -> torch.Tensor:
    """(h, w) patch scores -> (h, w) non-negative weights summing to 1, concentrated on the anomalous patches.

    weighting: "softmax" (default; temperature relative to the image's max - median score spread, see the
    module docstring), "top" (uniform over the ceil(top_fraction * h * w) highest-scoring patches),
    "uniform" (plain mean).
    """
    if anomaly.ndim != 2:
        raise ValueError(f"anomaly map must be (h, w), got {tuple(anomaly.shape)}")
    scores = anomaly.detach().float().flatten()
    n = scores.numel()
    if n == 0:
        raise ValueError("anomaly map is empty")
    if not torch.isfinite(scores).all():
        raise ValueError("anomaly map has non-finite scores")
    if weighting == "uniform":
        weights = torch.full_like(scores, 1.0 / n)
    elif weighting == "top":
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        k = max(1, math.ceil(top_fraction * n))
        weights = torch.zeros_like(scores)
        weights[scores.topk(k).indices] = 1.0 / k
    elif weighting == "softmax":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        top = scores.max()
        spread = float(top - scores.median())
        if spread <= _FLAT_SPREAD:
            weights = torch.full_like(scores, 1.0 / n)
        else:
            weights = torch.softmax((scores - top) / (temperature * spread), dim=0)
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return weights.view_as(anomaly)


def weighted_mean(feature_map: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(D, h, w) map, (h, w) weights summing to 1 -> (D,) weighted mean of the patch vectors."""
    if feature_map.ndim != 3 or feature_map.shape[1:] != weights.shape:
        raise ValueError(f"map {tuple(feature_map.shape)} and weights {tuple(weights.shape)} do not match")
    d = feature_map.shape[0]
    return feature_map.float().reshape(d, -1) @ weights.reshape(-1).to(feature_map.device)  # (D,)


def pooled_residual(
    sample: ResidualSample,
    *,
    source: str = "residual",
    weighting: str = "softmax",
    temperature: float = 0.1,
    top_fraction: float = 0.05,
    rectify: bool = False,
) -> torch.Tensor:
    """(D,) anomaly-weighted mean of the sample's residual vectors (or of its raw features, source="features").

    rectify: pool max(residual, 0), the part of each patch feature that exceeds its nearest normal patch
    ("what is there that the normal part lacks"). The backbone's features are non-negative (post-ReLU, then
    averaged), so a defect shows as added activation on its own channels; the negative part is mostly "the
    normal texture is missing here", common to every defect type, and averaging signed residuals over a region
    lets opposite signs cancel. Measured on mvtec_bottle: see PrototypeConfig.
    """
    check_sample(sample)
    weights = anomaly_weights(sample.anomaly, weighting=weighting, temperature=temperature, top_fraction=top_fraction)
    feature_map = sample.map(source)
    if rectify:
        feature_map = feature_map.clamp_min(0)
    return weighted_mean(feature_map, weights)
