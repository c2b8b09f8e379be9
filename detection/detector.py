"""The detector: fit a support set of good images, predict scores, verdicts and anomaly maps."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from detection import dfd, fastrecon, patchcore_plus
from detection.backbone import FeatureExtractor, PatchFeatures, load_resnet50
from detection.config import DetectorConfig
from detection.coreset import greedy_coreset
from detection.images import ImageInput, load_rgb, to_model_input
from detection.patchcore import nearest_neighbours
from detection.postprocess import anomaly_maps, resize_map
from detection.thresholds import Thresholds, calibrate

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
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


@dataclass(eq=False)
class FittedSupport:
    """Everything predict needs about one support set; saved as tensors + plain config, no pickles."""

    config: DetectorConfig
    grid: tuple[int, int]  # (h, w) feature grid
    memory_bank: torch.Tensor  # (M, D) PatchCore coreset of the support patches
    bank_source: torch.Tensor  # (M,) support image index of each bank row
    mu: torch.Tensor  # (R, D) per-position mean of the support maps
    coreset: torch.Tensor | None  # (c, D) FastRecon coreset S (None for PatchCore)
    descriptors: torch.Tensor  # (k, D) mean patch feature of each support image
    normal_scores: torch.Tensor  # (n,) image scores of good images used for the thresholds
    thresholds: Thresholds
    dfd_state: dict[str, torch.Tensor] | None = None  # the trained DFD model (None for the other methods)
    _projector: fastrecon.Projector | None = field(default=None, repr=False, compare=False)
    _moved: dict[str, FittedSupport] = field(default_factory=dict, repr=False, compare=False)
    _dfd_model: dfd.DFDModel | None = field(default=None, repr=False, compare=False)

    @property
    def n_support(self) -> int:
        return int(self.descriptors.shape[0])

    def to(self, device: torch.device | str) -> FittedSupport:
        """A copy on `device`, made once and kept (a worker moves each support set to its GPU only once)."""
        device = torch.device(device)
        if self.memory_bank.device == device:
            return self
        key = str(device)
        if key not in self._moved:
            move = {k: getattr(self, k).to(device) for k in ("memory_bank", "bank_source", "mu", "descriptors")}
            coreset = None if self.coreset is None else self.coreset.to(device)
            self._moved[key] = FittedSupport(
                self.config,
                self.grid,
                coreset=coreset,
                normal_scores=self.normal_scores,
                thresholds=self.thresholds,
                dfd_state=self.dfd_state,
                **move,
            )
        return self._moved[key]

    def projector(self) -> fastrecon.Projector:
        if self.coreset is None:
            raise ValueError("this support set was fitted for PatchCore, not FastRecon")
        if self._projector is None:
            self._projector = fastrecon.build_projector(
                self.coreset, self.mu, self.config.fastrecon_lambda, self.config.fastrecon_ridge
            )
        return self._projector

    def dfd_model(self) -> dfd.DFDModel:
        """The trained DFD model on this support set's device (built once)."""
        if self.dfd_state is None:
            raise ValueError(f"this support set was fitted for {self.config.method}, not DFD")
        if self._dfd_model is None:
            with torch.inference_mode(False):  # a plain module, even when first asked for inside predict
                model = dfd.model_from_state(self.dfd_state, self.config.dfd_settings())
                self._dfd_model = model.to(self.memory_bank.device)
        return self._dfd_model

    def _payload(self) -> dict[str, Any]:
        tensors = {
            k: getattr(self, k).detach().cpu().contiguous()
            for k in ("memory_bank", "bank_source", "mu", "descriptors", "normal_scores")
        }
        if self.coreset is not None:
            tensors["coreset"] = self.coreset.detach().cpu().contiguous()
        for key, value in (self.dfd_state or {}).items():
            tensors[f"dfd.{key}"] = value.detach().cpu().contiguous()
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "grid": list(self.grid),
            "thresholds": self.thresholds.to_dict(),
            "tensors": tensors,
        }

    def save(self, path: str | Path) -> None:
        """Write atomically to a local path (tensors and plain values only: loadable with weights_only)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self._payload(), tmp)
        tmp.replace(path)

    def save_to(self, fh: BinaryIO) -> None:
        """Write into an open binary file (for storage backends that are not a local disk)."""
        torch.save(self._payload(), fh)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, map_location: str | torch.device = "cpu") -> FittedSupport:
        payload: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: fitted support format {version!r}, this code reads {FORMAT_VERSION}")
        t = payload["tensors"]
        return cls(
            config=DetectorConfig.from_dict(payload["config"]),
            grid=(int(payload["grid"][0]), int(payload["grid"][1])),
            memory_bank=t["memory_bank"],
            bank_source=t["bank_source"],
            mu=t["mu"],
            coreset=t.get("coreset"),
            descriptors=t["descriptors"],
            normal_scores=t["normal_scores"],
            thresholds=Thresholds.from_dict(payload["thresholds"]),
            dfd_state={key[4:]: value for key, value in t.items() if key.startswith("dfd.")} or None,
        )


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

    # -- fit --------------------------------------------------------------------------------------------

    def fit(
        self,
        support: Sequence[ImageInput],
        extra_good: Sequence[ImageInput] = (),
        *,
        progress: Callable[[float, str], None] | None = None,
    ) -> FittedSupport:
        """Fit a support set of k >= 1 good images; extra good images only sharpen the thresholds.
        `progress(fraction, message)` reports on long fits (DFD trains for minutes on a CPU)."""
        if len(support) == 0:
            raise ValueError("the support set is empty: give at least one good image")
        batch, _ = self.load_images(support)
        if self.config.method == "dfd":
            extra_batch = self.load_images(extra_good)[0] if len(extra_good) else None
            return self._fit_dfd(batch, extra_batch, progress)
        extra = self.features(self.load_images(extra_good)[0]).full() if len(extra_good) else None
        jittered = None
        if len(support) == 1:
            gen = torch.Generator().manual_seed(self.config.seed)
            copies = torch.stack([_jitter(batch[0], gen) for _ in range(SINGLE_IMAGE_AUGMENTATIONS)])
            jittered = self.features(copies).full()
        return self.fit_features(self.features(batch).full(), extra_good=extra, single_image_jitter=jittered)

    def fit_features(
        self,
        support: torch.Tensor,
        *,
        extra_good: torch.Tensor | None = None,
        single_image_jitter: torch.Tensor | None = None,
    ) -> FittedSupport:
        """Fit from support features (k, D, h, w); see `fit`."""
        if support.ndim != 4 or support.shape[0] == 0:
            raise ValueError(f"support features must be (k, D, h, w) with k >= 1, got {tuple(support.shape)}")
        cfg = self.config
        k, dim, h, w = support.shape
        patches = _to_patches(support)  # (k, R, D)
        fitted = self._fit_patches(patches, (h, w), with_bank=True)

        scores: list[float] = []
        if k >= 2:
            rule = "leave-one-out"
            for i in range(k):
                rest = torch.cat([patches[:i], patches[i + 1 :]])
                sub = self._fit_patches(rest, (h, w), with_bank=cfg.method != "fastrecon")
                scores.append(float(self._patch_scores(sub, patches[i : i + 1]).max()))
        else:
            rule = "augmented-single"
            if single_image_jitter is None:
                raise ValueError("k = 1 needs jittered copies of the support image to calibrate (use fit)")
            scores += self._patch_scores(fitted, _to_patches(single_image_jitter)).amax(1).tolist()
        if extra_good is not None and extra_good.shape[0]:
            scores += self._patch_scores(fitted, _to_patches(extra_good)).amax(1).tolist()
        fitted.normal_scores = torch.tensor(scores, dtype=torch.float32)
        fitted.thresholds = calibrate(
            scores,
            review_rate=cfg.review_rate,
            false_reject_rate=cfg.false_reject_rate,
            min_log_spread=cfg.single_image_log_spread if rule == "augmented-single" else cfg.min_log_spread,
            rule=rule,
        )
        log.info("fitted %s on %d images: thresholds %s", cfg.method, k, fitted.thresholds)
        return fitted

    def _frozen(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, D, h, w) frozen features on self.device, usable as training data."""
        with torch.no_grad():
            return self.extractor(images.to(self.device))

    def _fit_dfd(
        self,
        batch: torch.Tensor,
        extra_good: torch.Tensor | None,
        progress: Callable[[float, str], None] | None,
    ) -> FittedSupport:
        """Train DFD on the support images; the PatchCore bank is built too (defect-type residuals need it).

        Thresholds: leave-one-out would mean k more trainings, so they come from fresh augmented views of the
        support images that training never saw (rule "augmented", with the single-image spread floor: views
        of the same parts spread less than new parts do), plus any extra good images.
        """
        cfg = self.config
        patches = _to_patches(self.features(batch).full())
        fitted = self._fit_patches(patches, self.features(batch[:1]).grid, with_bank=True)
        model, scores = dfd.train(
            self._frozen, batch, cfg.dfd_settings(), seed=cfg.seed, chunk=self.forward_batch, progress=progress
        )
        fitted.dfd_state = dfd.state_of(model)
        if extra_good is not None:
            with torch.no_grad():
                scores += self._dfd_patch_scores(fitted.to(self.device), extra_good).amax(1).tolist()
        fitted.normal_scores = torch.tensor(scores, dtype=torch.float32)
        fitted.thresholds = calibrate(
            scores,
            review_rate=cfg.review_rate,
            false_reject_rate=cfg.false_reject_rate,
            min_log_spread=cfg.single_image_log_spread,
            rule="augmented",
        )
        log.info("fitted dfd on %d images: thresholds %s", batch.shape[0], fitted.thresholds)
        return fitted

    def _dfd_patch_scores(self, fitted: FittedSupport, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images -> (B, R) DFD patch scores."""
        return self.dfd_maps(fitted, images).mean(1)

    def dfd_maps(self, fitted: FittedSupport, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images -> (B, 4, R): DFD's four normalised maps (dfd.MAP_NAMES) before averaging."""
        low, high = dfd.path_features(self._frozen, images.to(self.device), self.forward_batch)
        with torch.no_grad():
            return fitted.to(self.device).dfd_model().normalised_maps(low, high)

    def _fit_patches(self, patches: torch.Tensor, grid: tuple[int, int], *, with_bank: bool) -> FittedSupport:
        """Coresets, mean map and descriptors of (k, R, D) support patches (thresholds are set by the caller).

        Greedy k-center selection is a sequence: with one seed the first n picks are the n-point coreset, so
        one run of max(c, bank size) serves both the FastRecon coreset and the PatchCore bank.
        """
        cfg = self.config
        k, n_pos, dim = patches.shape
        flat = patches.reshape(k * n_pos, dim)
        n_bank = max(1, round(cfg.bank_ratio * k * n_pos)) if with_bank else 0
        c = 0
        if cfg.method == "fastrecon":
            c = fastrecon.coreset_size(k * n_pos, dim, cfg.fastrecon_coreset_ratio, cfg.fastrecon_max_coreset_fraction)
            if c < round(cfg.fastrecon_coreset_ratio * k * n_pos):
                log.info("FastRecon coreset capped at %d < D=%d", c, dim)
        order = greedy_coreset(flat, max(c, n_bank), cfg.coreset_projection_dim, cfg.seed)
        bank_idx = order[:n_bank]
        coreset = flat[order[:c]] if c else None
        empty = torch.empty(0)
        return FittedSupport(
            config=cfg,
            grid=grid,
            memory_bank=flat[bank_idx].clone(),
            bank_source=torch.div(bank_idx, n_pos, rounding_mode="floor"),
            mu=patches.mean(0),
            coreset=coreset,
            descriptors=patches.mean(1),
            normal_scores=empty,
            thresholds=Thresholds(float("inf"), float("inf"), "uncalibrated", 0, 0.0, 0.0),
        )

    # -- predict ----------------------------------------------------------------------------------------

    def _patch_scores(self, fitted: FittedSupport, patches: torch.Tensor) -> torch.Tensor:
        """(B, R, D) -> (B, R) patch scores under the fitted method."""
        if fitted.config.method == "fastrecon":
            return fastrecon.patch_scores(fitted.projector(), patches)
        cfg = fitted.config
        if cfg.method == "patchcore_plus":
            return patchcore_plus.patch_scores(
                patches,
                fitted.memory_bank,
                lam=cfg.patchcore_plus_lambda,
                iterations=cfg.patchcore_plus_iterations,
                m_steps=cfg.patchcore_plus_m_steps,
                eps_rel=cfg.patchcore_plus_eps,
                temperature=cfg.patchcore_plus_temperature,
                batch=cfg.batch_size,
            )
        b, r, d = patches.shape
        dist, _ = nearest_neighbours(patches.reshape(b * r, d), fitted.memory_bank)
        return dist.view(b, r)

    def patch_scores(
        self, fitted: FittedSupport, features: PatchFeatures, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch features of B images -> (B, h, w) patch scores. DFD scores its own frequency paths and needs
        the (B, 3, S, S) images themselves."""
        fitted = self._check(fitted, features)
        b = features.fine.shape[0]
        h, w = features.grid
        if fitted.config.method == "dfd":
            if images is None:
                raise ValueError("DFD scores the images' frequency paths: pass images to patch_scores")
            return self._dfd_patch_scores(fitted, images).view(b, h, w)
        with torch.inference_mode():
            if fitted.config.method == "fastrecon":
                return fastrecon.patch_scores_split(fitted.projector(), features.fine, features.coarse).view(b, h, w)
            return self._patch_scores(fitted, _to_patches(features.full())).view(b, h, w)

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
                residual = nn_idx = None
                if return_features:
                    b, d, h, w = feats.shape
                    patches = _to_patches(feats).reshape(b * h * w, d)
                    _, nn_idx = nearest_neighbours(patches, fitted_dev.memory_bank)
                    residual = (patches - fitted_dev.memory_bank[nn_idx]).view(b, h, w, d).permute(0, 3, 1, 2)
                    nn_idx = nn_idx.view(b, h, w)
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
                        features=feats[i].cpu().clone() if return_features else None,
                        nearest_index=nn_idx[i].cpu().clone() if nn_idx is not None else None,
                        residual=residual[i].cpu().clone() if residual is not None else None,
                    )
                )
        return results

    def _check(self, fitted: FittedSupport, features: PatchFeatures) -> FittedSupport:
        if features.dim != fitted.mu.shape[1] or features.grid != tuple(fitted.grid):
            raise ValueError(
                f"features (D={features.dim}, grid={features.grid}) do not match the fitted support set "
                f"(D={fitted.mu.shape[1]}, grid={fitted.grid}): was it fitted with another image_size or backbone?"
            )
        if fitted.config.image_size != self.config.image_size:
            raise ValueError("fitted support set and detector use different image sizes")
        return fitted.to(features.fine.device)


def _to_patches(features: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D), row-major over positions (permute before reshape keeps space intact)."""
    b, d, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b, h * w, d)


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
