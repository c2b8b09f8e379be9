"""The detector: fit a support set of good images, predict scores, verdicts and anomaly maps.

The Detector holds what every method shares: the frozen backbone and its patch features, the memory bank, the
thresholds, the maps. What a method does with the features is behind detection/registry.py (the contract is
in detection/method.py): the Detector never asks which method it runs.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from detection import registry
from detection.backbone import FeatureExtractor, PatchFeatures, load_resnet50
from detection.config import DetectorConfig
from detection.coreset import greedy_coreset
from detection.fitted import FittedSupport
from detection.images import ImageInput, load_rgb, to_model_input
from detection.method import MethodState, Progress, Query, Support, to_patches
from detection.patchcore import nearest_neighbours
from detection.postprocess import anomaly_maps, resize_map
from detection.thresholds import calibrate

__all__ = ["Detector", "FittedSupport", "Prediction", "default_device"]

log = logging.getLogger(__name__)

# k = 1 has no leave-one-out: the single image is scored, under small crop/brightness jitter, against the
# model fitted on itself (see Detector.fit).
SINGLE_IMAGE_AUGMENTATIONS = 6


class Prediction(NamedTuple):
    score: float  # image score: max patch score
    verdict: str  # good / review / defective
    anomaly_map: np.ndarray  # (H, W) float32 at the input image's own size
    patch_scores: torch.Tensor  # (h, w) on the feature grid
    nearest_support: int  # index of the most similar support image (global feature)
    # With return_features=True (what the defect-type classifier consumes), else None:
    features: torch.Tensor | None = None  # (D, h, w) patch features
    nearest_index: torch.Tensor | None = None  # (h, w) row of the memory bank nearest to each patch
    residual: torch.Tensor | None = None  # (D, h, w) features minus their nearest memory-bank patch


class _Bank(NamedTuple):
    """The memory bank of some support patches and the method's coreset, from one greedy k-center run."""

    bank: torch.Tensor | None  # (M, D), None when not asked for
    source: torch.Tensor  # (M,) support image index of each bank row
    coreset: torch.Tensor  # (c, D)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Detector:
    """Holds the frozen backbone (load once per process); fit and predict are pure functions of their inputs."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        weights: str | Path | None = None,
        resnet: torchvision.models.ResNet | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if (weights is None) == (resnet is None):
            raise ValueError("give exactly one of weights (path to the converted backbone) or resnet")
        self.config = config or DetectorConfig()
        self.device = torch.device(device) if device is not None else default_device()
        model = load_resnet50(weights) if resnet is None else resnet
        self.extractor = FeatureExtractor(model).to(self.device)

    def with_method(self, method: str) -> Detector:
        """The same backbone (shared, not copied) under another detection method: one backbone per process
        serves products that use different detectors."""
        if method == self.config.method:
            return self
        other = copy.copy(self)
        other.config = replace(self.config, method=method)
        return other

    # -- features ---------------------------------------------------------------------------------------

    def load_images(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Decode and resize: (B, 3, S, S) in [0, 1] and each image's own (H, W)."""
        tensors, sizes = [], []
        for i, image in enumerate(images):
            rgb = load_rgb(image, name=f"image {i}")
            sizes.append(rgb.shape[:2])
            tensors.append(to_model_input(rgb, self.config.image_size))
        return torch.stack(tensors), sizes

    @property
    def forward_batch(self) -> int:
        """Images per backbone forward: config.batch_size on a GPU, 1 on the CPU, where batching is slower
        (measured on the 2-core CPU at S=256: 54 ms/image at batch 1, 68 at batch 8)."""
        return self.config.batch_size if self.device.type == "cuda" else 1

    def features(self, batch: torch.Tensor) -> PatchFeatures:
        """(B, 3, S, S) in [0, 1] -> patch features on self.device; `.full()` gives (B, D, h, w)."""
        out = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.forward_batch):
                out.append(self.extractor.parts(batch[start : start + self.forward_batch].to(self.device)))
        return PatchFeatures.cat(out)

    def frozen(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D, h, w) frozen features on self.device, usable as training data."""
        with torch.no_grad():
            return self.extractor(images.to(self.device))

    # -- fit --------------------------------------------------------------------------------------------

    def fit(
        self,
        support: Sequence[ImageInput],
        extra_good: Sequence[ImageInput] = (),
        *,
        progress: Progress | None = None,
    ) -> FittedSupport:
        """Fit a support set of k >= 1 good images; extra good images only sharpen the thresholds.
        `progress(fraction, message)` reports on long fits (DFD trains for minutes on a CPU)."""
        if len(support) == 0:
            raise ValueError("the support set is empty: give at least one good image")
        cfg = self.config
        method, params = registry.get(cfg.method), cfg.method_config
        batch, _ = self.load_images(support)
        extra = self.load_images(extra_good)[0] if len(extra_good) else None
        feats = self.features(batch)
        patches = to_patches(feats.full())  # (k, R, D)
        bank = self._bank(patches, with_bank=True)
        outcome = method.fit(params, Support(batch, patches, feats.grid, bank.coreset, self, cfg.seed, progress))
        score = self._scorer(cfg, outcome.state, bank.bank)

        if outcome.held_out is not None:
            rule, scores = "augmented", list(outcome.held_out)
        elif len(support) >= 2:
            rule, scores = "leave-one-out", self._leave_one_out(batch, patches, feats.grid)
        else:
            rule, scores = "augmented-single", self._single_image_scores(batch[0], score)
        if extra is not None:
            scores += score(Query(self, images=extra, batch=cfg.batch_size)).amax(1).tolist()
        thresholds = calibrate(
            scores,
            review_rate=cfg.review_rate,
            false_reject_rate=cfg.false_reject_rate,
            min_log_spread=cfg.min_log_spread if rule == "leave-one-out" else cfg.single_image_log_spread,
            rule=rule,
        )
        log.info("fitted %s on %d images: thresholds %s", cfg.method, len(support), thresholds)
        assert bank.bank is not None
        return FittedSupport(
            config=cfg,
            grid=feats.grid,
            memory_bank=bank.bank,
            bank_source=bank.source,
            descriptors=patches.mean(1),
            normal_scores=torch.tensor(scores, dtype=torch.float32),
            thresholds=thresholds,
            state=outcome.state,
        )

    def _bank(self, patches: torch.Tensor, *, with_bank: bool) -> _Bank:
        """The memory bank (when asked for) and the method's coreset of (k, R, D) support patches.

        Greedy k-center selection is a sequence: with one seed the first n picks are the n-point coreset, so
        one run of max(c, bank size) serves both the method's coreset and the memory bank.
        """
        cfg = self.config
        params = cfg.method_config
        k, n_pos, dim = patches.shape
        flat = patches.reshape(k * n_pos, dim)
        n_bank = max(1, round(params.bank_ratio * k * n_pos)) if with_bank else 0
        c = registry.get(cfg.method).coreset_size(params, k * n_pos, dim)
        n = max(c, n_bank)
        order = greedy_coreset(flat, n, cfg.coreset_projection_dim, cfg.seed) if n else flat.new_zeros(0).long()
        bank_idx = order[:n_bank]
        return _Bank(
            bank=flat[bank_idx].clone() if with_bank else None,
            source=torch.div(bank_idx, n_pos, rounding_mode="floor"),
            coreset=flat[order[:c]],
        )

    def _scorer(
        self, config: DetectorConfig, state: MethodState, bank: torch.Tensor | None
    ) -> Callable[[Query], torch.Tensor]:
        """query -> (B, R) patch scores under `config`'s method with `state` and `bank`."""
        method, params = registry.get(config.method), config.method_config
        return lambda query: method.score(params, state, bank, query)

    def _leave_one_out(self, batch: torch.Tensor, patches: torch.Tensor, grid: tuple[int, int]) -> list[float]:
        """Each support image's score against the method fitted on the other k-1."""
        cfg = self.config
        method, params = registry.get(cfg.method), cfg.method_config
        scores = []
        for i in range(patches.shape[0]):
            keep = [j for j in range(patches.shape[0]) if j != i]
            rest = patches[keep]
            sub = self._bank(rest, with_bank=method.scores_with_bank)
            outcome = method.fit(params, Support(batch[keep], rest, grid, sub.coreset, self, cfg.seed))
            query = Query(self, patches=patches[i : i + 1], batch=cfg.batch_size)
            scores.append(float(self._scorer(cfg, outcome.state, sub.bank)(query).max()))
        return scores

    def _single_image_scores(self, image: torch.Tensor, score: Callable[[Query], torch.Tensor]) -> list[float]:
        """k = 1: jittered copies of the one image scored against the model fitted on it."""
        gen = torch.Generator().manual_seed(self.config.seed)
        copies = torch.stack([_jitter(image, gen) for _ in range(SINGLE_IMAGE_AUGMENTATIONS)])
        patches = to_patches(self.features(copies).full())
        return score(Query(self, patches=patches, batch=self.config.batch_size)).amax(1).tolist()

    # -- predict ----------------------------------------------------------------------------------------

    def patch_scores(
        self, fitted: FittedSupport, features: PatchFeatures, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch features of B images -> (B, h, w) patch scores. Methods that score the images themselves (DFD:
        its frequency paths) need the (B, 3, S, S) images too."""
        fitted = self._check(fitted, features)
        b = features.fine.shape[0]
        h, w = features.grid
        query = Query(self, features=features, images=images, batch=fitted.config.batch_size)
        with torch.inference_mode():
            return self._scorer(fitted.config, fitted.state, fitted.memory_bank)(query).view(b, h, w)

    def predict(
        self, fitted: FittedSupport, images: Sequence[ImageInput], *, return_features: bool = False
    ) -> list[Prediction]:
        cfg = fitted.config
        results: list[Prediction] = []
        for start in range(0, len(images), cfg.batch_size):
            batch, sizes = self.load_images(images[start : start + cfg.batch_size])
            parts = self.features(batch)
            fitted_dev = self._check(fitted, parts)
            with torch.inference_mode():
                scores = self.patch_scores(fitted_dev, parts, batch)  # (B, h, w)
                maps = anomaly_maps(scores, cfg.image_size, cfg.gaussian_sigma).cpu().numpy()
                feats = parts.full()  # (B, D, h, w)
                pooled = feats.mean((2, 3))  # (B, D)
                nearest_support = torch.cdist(pooled, fitted_dev.descriptors).argmin(1).tolist()
                extras = _residuals(feats, fitted_dev.memory_bank) if return_features else None
            # Clone outside inference mode: callers (the defect-type classifier) train on these tensors.
            for i, (height, width) in enumerate(sizes):
                score = float(scores[i].max())
                results.append(
                    Prediction(
                        score=score,
                        verdict=fitted.thresholds.verdict(score),
                        anomaly_map=resize_map(maps[i], height, width),
                        patch_scores=scores[i].cpu().clone(),
                        nearest_support=int(nearest_support[i]),
                        **({k: v[i].cpu().clone() for k, v in extras.items()} if extras else {}),
                    )
                )
        return results

    def _check(self, fitted: FittedSupport, features: PatchFeatures) -> FittedSupport:
        if features.dim != fitted.dim or features.grid != tuple(fitted.grid):
            raise ValueError(
                f"features (D={features.dim}, grid={features.grid}) do not match the fitted support set "
                f"(D={fitted.dim}, grid={fitted.grid}): was it fitted with another image_size or backbone?"
            )
        if fitted.config.image_size != self.config.image_size:
            raise ValueError("fitted support set and detector use different image sizes")
        return fitted.to(features.fine.device)


def _residuals(feats: torch.Tensor, bank: torch.Tensor) -> dict[str, Any]:
    """(B, D, h, w) features -> the Prediction fields the defect-type classifier consumes: the features, the
    nearest bank row of each patch (B, h, w) and the residual to it (B, D, h, w)."""
    b, d, h, w = feats.shape
    patches = to_patches(feats).reshape(b * h * w, d)
    _, nn_idx = nearest_neighbours(patches, bank)
    residual = (patches - bank[nn_idx]).view(b, h, w, d).permute(0, 3, 1, 2)
    return {"features": feats, "nearest_index": nn_idx.view(b, h, w), "residual": residual}


def _jitter(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A plausible re-shot of the same good part: crop 90-98% of the image at a random offset, resize back,
    scale brightness by 0.95-1.05."""
    _, size, _ = image.shape
    frac = 0.90 + 0.08 * float(torch.rand((), generator=gen))
    crop = max(8, round(size * frac))
    top, left = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=gen))
    out = F.interpolate(
        image[None, :, top : top + crop, left : left + crop], size=(size, size), mode="bilinear", align_corners=False
    )[0]
    return (out * (0.95 + 0.1 * float(torch.rand((), generator=gen)))).clamp_(0, 1)
