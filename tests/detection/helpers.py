"""Small synthetic data for the detection tests."""

from __future__ import annotations

import numpy as np
import torch

from detection.backbone import build_resnet50


def random_resnet(seed: int = 0):
    """A ResNet-50 with seeded random weights and sane BatchNorm statistics (no download, no cache)."""
    torch.manual_seed(seed)
    model = build_resnet50().eval()
    # Calibrate BN running statistics on random inputs so activations neither vanish nor explode.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, 64, 64) * 255 - 110)
    return model.eval()


def part_image(rng: np.random.Generator, size: int = 64, defect: bool = False) -> np.ndarray:
    """A 'good part': a smooth gradient with a bright disc, slightly shifted and noisy. A defect is a dark
    scratch-like bar across the disc."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 1, 2)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size * 0.3) ** 2
    img = 60 + 0.8 * xx + 120 * disc + rng.normal(0, 3, (size, size))
    if defect:
        y0 = int(rng.integers(size // 3, size // 2))
        x0 = int(rng.integers(size // 4, size // 2))
        img[y0 : y0 + 4, x0 : x0 + size // 3] = 0
    rgb = np.stack([img, img * 0.9, img * 0.8], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)
