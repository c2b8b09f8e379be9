"""Patch scores -> anomaly maps."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, kernel truncated at 4 sigma, reflect padding."""
    if sigma <= 0:
        return maps
    radius = int(math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    m = maps[:, None]  # (B, 1, H, W)
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return m[:, 0]


def anomaly_maps(patch_scores: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B, h, w) patch scores -> (B, size, size): bilinear upsampling, then Gaussian smoothing."""
    up = F.interpolate(patch_scores[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(up, sigma)


def resize_map(amap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one float map back to an image's own size."""
    if amap.shape == (height, width):
        return amap.astype(np.float32, copy=False)
    return np.asarray(
        Image.fromarray(amap.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )
