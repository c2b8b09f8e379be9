"""DFD's networks and its two frequency paths (Bai et al. 2024; the method is detection/dfd.py).

Each image is split into a low-frequency image (Gaussian pyramid Down then Up, OpenCV's filter and border) and
a high-frequency image (the image minus its low part); the frozen backbone gives patch features of both. A
shared linear adaptor feeds a Gaussian discriminator (2-layer MLP) and a Perlin discriminator (1-layer MLP +
one transformer layer over the image's patches); both discriminators on both paths give four anomaly maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

MAP_NAMES = ("gaussian_low", "gaussian_high", "perlin_low", "perlin_high")  # the order of DFDModel.maps
N_MAPS = len(MAP_NAMES)

# 5-tap binomial kernel of cv2.pyrDown / pyrUp.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur5(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5x5 binomial blur, reflect-101 border (OpenCV's BORDER_DEFAULT), (B, C, H, W)."""
    c = x.shape[1]
    k = (_BINOMIAL * math.sqrt(gain)).to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: blur, keep every second row and column. (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
    return _blur5(x)[..., ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.pyrUp: zeros between samples, blur with 4x the kernel. (B, C, h, w) -> (B, C, *size)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur5(up, gain=4.0)[..., : size[0], : size[1]]


def frequency_split(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> (low, high): low = Up(Down(x)), high = x - low, so low + high == x."""
    if images.ndim != 4:
        raise ValueError(f"frequency_split expects (B, C, H, W), got {tuple(images.shape)}")
    low = pyr_up(pyr_down(images), images.shape[-2:])
    return low, images - low


def path_inputs(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (2B, 3, S, S) backbone inputs: the B low images, then the B high images.

    The high-frequency image is centred on mid-grey (0.5 + high): it is signed, and the backbone's input
    normalisation expects images around the ImageNet mean, not around black.
    """
    low, high = frequency_split(images)
    return torch.cat([low, high + 0.5])


# ------------------------------------------------------------------------------------------------ model


class GaussianDiscriminator(nn.Module):
    """2-layer MLP: (N, A) adapted features -> (N,) normality."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class PerlinDiscriminator(nn.Module):
    """1-layer MLP, then one transformer layer over an image's patches: (B, R, A) -> (B, R) normality.

    The transformer lets a patch be judged against the rest of the same image (a texture that fits the part
    elsewhere is not an anomaly). No positional encoding: the judgement is about content, not place.
    """

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2))
        self.mix = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.embed(x))).squeeze(-1)


class DFDModel(nn.Module):
    """Adaptor + both discriminators; `maps` gives the four raw anomaly maps (-normality)."""

    def __init__(self, in_dim: int, adaptor_dim: int, hidden: int, perlin_dim: int, heads: int) -> None:
        super().__init__()
        self.adaptor = nn.Linear(in_dim, adaptor_dim)
        self.gaussian = GaussianDiscriminator(adaptor_dim, hidden)
        self.perlin = PerlinDiscriminator(adaptor_dim, perlin_dim, heads)
        # Per-map (offset, scale) of the min-max normalisation, measured on good images after training.
        self.register_buffer("norm", torch.tensor([[0.0, 1.0]] * N_MAPS))

    def maps(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) patch features of both paths -> (B, 4, R) raw anomaly scores (-normality)."""
        out = []
        for feats in (low, high):
            a = self.adaptor(feats)  # (B, R, A)
            out += [-self.gaussian(a), -self.perlin(a)]
        return torch.stack([out[0], out[2], out[1], out[3]], 1)  # Gaussian low/high, Perlin low/high

    def normalised_maps(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) x 2 -> (B, 4, R): the four maps min-max normalised by the fitted constants (MAP_NAMES order)."""
        raw = self.maps(low, high)
        return (raw - self.norm[:, 0, None]) / self.norm[:, 1, None]

    def scores(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) x 2 -> (B, R) patch scores: the four normalised maps averaged."""
        return self.normalised_maps(low, high).mean(1)


FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) in [0, 1] -> (B, D, h, w) frozen features


def path_features(features: FeatureFn, images: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) -> low and high path patch features, each (B, R, D) float32."""
    low, high = [], []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        f = features(path_inputs(part))  # (2b, D, h, w)
        f = f.permute(0, 2, 3, 1).flatten(1, 2).float()  # (2b, R, D)
        low.append(f[: part.shape[0]])
        high.append(f[part.shape[0] :])
    return torch.cat(low), torch.cat(high)
