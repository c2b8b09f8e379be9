"""The detector's configuration: one frozen dataclass, validated, serialisable as a plain dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from detection import dfd

METHODS = ("fastrecon", "patchcore", "patchcore_plus", "dfd")


@dataclass(frozen=True)
class DetectorConfig:
    method: str = "fastrecon"
    # Every image is resized to image_size x image_size (aspect ratio not kept; maps are resized back).
    image_size: int = 256
    # FastRecon (Fang et al. 2023): weight of the pull toward the per-position support mean, and the
    # coreset size as a fraction of all k*R support patches. The paper uses lambda 0.3; with this backbone
    # lambda 2 beats 0.3 on both bottle and cookies at every shot count (README, "Choosing lambda").
    fastrecon_lambda: float = 2.0
    fastrecon_coreset_ratio: float = 0.15
    # The coreset must stay well below the feature dimension D: with c >= D the row space of S is all of
    # R^D, the projection becomes the identity and the score degenerates to lambda/(1+lambda)*||Q - mu||.
    fastrecon_max_coreset_fraction: float = 0.5
    # Ridge on S S^T, relative to its mean eigenvalue (numerical safety only; it barely changes P).
    fastrecon_ridge: float = 1e-6
    # PatchCore (Roth et al. 2022): memory bank = greedy coreset of this fraction of the support patches.
    # It is always built: it gives the nearest normal patch that defect-type residuals need.
    patchcore_coreset_ratio: float = 0.1
    # PatchCore+ (detection/patchcore_plus.py): paper settings lambda 0.3, bank ratio 0.05, 10 EM iterations.
    # m_steps gradient steps on W per M-step; Sinkhorn eps relative to the mean initial cost; temperature of
    # the soft nearest-prototype initialisation of W, relative to the query's mean nearest squared distance.
    patchcore_plus_lambda: float = 0.3
    patchcore_plus_coreset_ratio: float = 0.05
    patchcore_plus_iterations: int = 10
    patchcore_plus_m_steps: int = 3
    patchcore_plus_eps: float = 0.05
    patchcore_plus_temperature: float = 1.0
    # DFD (detection/dfd.py, Bai et al. 2024). Paper: 80 augmentations per image, 80 epochs, batch 8, Adam
    # 5e-4 / 2e-4 / 1e-4 (adaptor / Gaussian / Perlin), theta 0.8, lambda_per 2, lambda_sim 0.02. The CPU
    # budget caps the augmented pool (dfd_max_augmented over all k images) and the optimiser steps.
    dfd_augmentations: int = 80
    dfd_max_augmented: int = 48
    dfd_epochs: int = 80
    dfd_max_steps: int = 150
    dfd_batch: int = 8
    dfd_adaptor_dim: int = 256
    dfd_hidden: int = 256
    dfd_perlin_dim: int = 128
    dfd_heads: int = 4
    dfd_noise_std: float = 0.1  # Gaussian noise, relative to the adapted features' standard deviation
    dfd_theta: float = 0.8
    dfd_lambda_per: float = 2.0
    dfd_lambda_sim: float = 0.02
    dfd_lr_adaptor: float = 5e-4
    dfd_lr_gaussian: float = 2e-4
    dfd_lr_perlin: float = 1e-4
    dfd_calibration_images: int = 8
    # Training sees a window of dfd_window x dfd_window patches of each image (containing its pseudo-defect), not
    # the whole 32 x 32 grid: a quarter of the cost per step. Scoring always sees the whole image.
    dfd_window: int = 16
    # Random projection used only to choose coreset points (approximate greedy k-center).
    coreset_projection_dim: int = 128
    gaussian_sigma: float = 4.0
    # Thresholds from good images only, under a fitted model of normal scores: a good part exceeds
    # good_max with probability review_rate, and defective_min with probability false_reject_rate.
    review_rate: float = 0.05
    false_reject_rate: float = 0.005
    # Floors on the log-spread of normal scores (detection/thresholds.py): a handful of scores
    # underestimates it, and jittered copies of a single image (k = 1) even more so.
    min_log_spread: float = 0.1
    single_image_log_spread: float = 0.25
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        if self.fastrecon_lambda < 0:
            raise ValueError("fastrecon_lambda must be >= 0")
        if self.patchcore_plus_lambda < 0:
            raise ValueError("patchcore_plus_lambda must be >= 0")
        if self.patchcore_plus_iterations < 0 or self.patchcore_plus_m_steps < 0:
            raise ValueError("patchcore_plus_iterations and patchcore_plus_m_steps must be >= 0")
        if self.patchcore_plus_eps <= 0 or self.patchcore_plus_temperature <= 0:
            raise ValueError("patchcore_plus_eps and patchcore_plus_temperature must be > 0")
        names = ("fastrecon_coreset_ratio", "patchcore_coreset_ratio", "patchcore_plus_coreset_ratio")
        for name in (*names, "fastrecon_max_coreset_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0 < self.false_reject_rate < self.review_rate < 1:
            raise ValueError("need 0 < false_reject_rate < review_rate < 1")
        if self.fastrecon_ridge < 0:
            raise ValueError("fastrecon_ridge must be >= 0")
        if 4 * self.gaussian_sigma >= self.image_size:
            raise ValueError(f"gaussian_sigma {self.gaussian_sigma} is too large for image_size {self.image_size}")
        if self.min_log_spread <= 0 or self.single_image_log_spread <= 0:
            raise ValueError("log-spread floors must be > 0")
        dfd_counts = ("augmentations", "max_augmented", "epochs", "max_steps", "batch", "adaptor_dim", "hidden")
        for name in (*dfd_counts, "perlin_dim", "heads", "calibration_images", "window"):
            if getattr(self, f"dfd_{name}") < 1:
                raise ValueError(f"dfd_{name} must be >= 1")
        if self.dfd_perlin_dim % self.dfd_heads:
            raise ValueError("dfd_perlin_dim must be a multiple of dfd_heads")
        if self.batch_size < 1 or self.coreset_projection_dim < 1 or self.gaussian_sigma < 0:
            raise ValueError("batch_size and coreset_projection_dim must be >= 1, gaussian_sigma >= 0")

    @property
    def bank_ratio(self) -> float:
        """Memory-bank coreset ratio of the configured method (FastRecon keeps PatchCore's bank)."""
        return self.patchcore_plus_coreset_ratio if self.method == "patchcore_plus" else self.patchcore_coreset_ratio

    def dfd_settings(self) -> dfd.DFDSettings:
        """The dfd_* fields as the settings object detection/dfd.py takes."""
        names = [f.name for f in fields(dfd.DFDSettings)]
        return dfd.DFDSettings(**{name: getattr(self, f"dfd_{name}") for name in names})

    @property
    def feature_grid(self) -> int:
        """Side of the patch grid: layer2 has stride 8."""
        return self.image_size // 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)
