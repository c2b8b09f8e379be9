"""Learned defect-type encoder: residual map -> L2-normalised embedding, pooled onto the anomalous region.

    residual (B, D, h, w) --1x1 conv, BN, ReLU (x2)--> (B, H, h, w)
        attention logits = learned 1x1 conv (B, h, w) + log anomaly_weights(anomaly) (B, h, w)
        softmax over the h*w positions -> weighted sum -> (B, H)
        [+ defect extent scalar] -> projection head -> (B, E) -> L2 normalise

Why the log of the anomaly weights is *added* to the attention logits: softmax(l + log w) = w * e^l / sum(...),
i.e. the learned attention can only re-weight among the patches the detector already calls anomalous. A defect
covering 2 % of the image keeps its weight whatever the encoder learns, and an untrained encoder pools exactly
like the training-free baseline (`anomaly_weights`, see classification/residuals.py).

Defect extent. broken_large vs broken_small differ mainly by size, which a weighted mean hides (it is a mean).
The extent scalar is log(n_eff / (h*w)) with n_eff = 1 / sum(w_i^2), the effective number of patches the anomaly
weights spread over: scale-free like the weights, ~0 for a flat map, very negative for a pin-point defect. It is
fed to the projection head (divided by a fixed 4 so it is O(1)); cost: one reduction per image.

1x1 convs only: the residual is already a spatially-aware backbone feature; the encoder's job is to re-weight
channels into a type-discriminative space, cheaply enough to train on a 2-core CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# log of a zero weight: softmax weights of background patches underflow to 0 in float32; clamp so their logit
# is very negative but finite (no NaN from -inf - -inf in the softmax).
_LOG_FLOOR = 1e-30
_EXTENT_SCALE = 4.0
_FLAT_SPREAD = 1e-12  # as in classification.residuals: below it the map is flat, weights uniform


@dataclass(frozen=True)
class EncoderConfig:
    in_dim: int = 1536  # D of the residual map (detector patch features)
    hidden: int = 256
    embed: int = 128
    temperature: float = 0.07  # InfoNCE temperature (Liu et al. 2024)
    weight_temperature: float = 0.1  # anomaly weights' softmax temperature, relative to the (max - median) spread
    use_extent: bool = True  # feed log defect extent to the head

    def __post_init__(self) -> None:
        for name in ("in_dim", "hidden", "embed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or self.weight_temperature <= 0:
            raise ValueError("temperatures must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown encoder config keys: {sorted(unknown)}")
        return cls(**data)


def log_anomaly_weights(anomaly: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, h, w) patch scores -> (B, h*w) log of `anomaly_weights(..., weighting="softmax")`, batched.

    Same rule as classification.residuals.anomaly_weights: softmax of (s - max) / (tau * (max - median)); a flat
    map (spread ~ 0) gives uniform weights. Computed as a log-softmax so tiny weights stay finite.
    """
    if anomaly.ndim != 3:
        raise ValueError(f"anomaly maps must be (B, h, w), got {tuple(anomaly.shape)}")
    s = anomaly.detach().float().flatten(1)  # (B, h*w)
    top = s.max(1, keepdim=True).values  # (B, 1)
    spread = top - s.median(1, keepdim=True).values  # (B, 1)
    flat = spread <= _FLAT_SPREAD
    scaled = (s - top) / (temperature * spread.clamp_min(_FLAT_SPREAD))
    scaled = torch.where(flat, torch.zeros_like(scaled), scaled)
    return torch.log_softmax(scaled, dim=1).clamp_min(math.log(_LOG_FLOOR))


def defect_extent(log_weights: torch.Tensor) -> torch.Tensor:
    """(B, n) log weights -> (B,) log(n_eff / n), n_eff = 1 / sum w^2: the fraction of the grid the defect covers."""
    n = log_weights.shape[1]
    n_eff = 1.0 / torch.exp(2 * log_weights).sum(1)
    return torch.log(n_eff / n)


class ResidualEncoder(nn.Module):
    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config if config is not None else EncoderConfig()
        self.trunk = nn.Sequential(
            nn.Conv2d(c.in_dim, c.hidden, 1, bias=False),
            nn.BatchNorm2d(c.hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(c.hidden, c.hidden, 1, bias=False),
            nn.BatchNorm2d(c.hidden),
            nn.ReLU(inplace=True),
        )
        self.attention = nn.Conv2d(c.hidden, 1, 1)
        # Start as the anomaly-weighted mean: zero learned logits, so only the detector's weights count at first.
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        head_in = c.hidden + (1 if c.use_extent else 0)
        self.head = nn.Sequential(nn.Linear(head_in, c.hidden), nn.ReLU(inplace=True), nn.Linear(c.hidden, c.embed))

    def attention_weights(self, residual: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w), (B, h, w) -> (B, h, w) pooling weights summing to 1 per image."""
        z = self._trunk(residual, anomaly)
        logits = self.attention(z).flatten(1) + log_anomaly_weights(anomaly, self.config.weight_temperature)
        return torch.softmax(logits, dim=1).view_as(anomaly)

    def _trunk(self, residual: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
        d = self.config.in_dim
        if residual.ndim != 4 or residual.shape[1] != d:
            raise ValueError(f"residual must be (B, {d}, h, w), got {tuple(residual.shape)}")
        if anomaly.shape != (residual.shape[0], *residual.shape[2:]):
            raise ValueError(f"anomaly {tuple(anomaly.shape)} does not match residual {tuple(residual.shape)}")
        if residual.shape[0] < 2 and self.training:
            raise ValueError("BatchNorm in training mode needs a batch of >= 2 images")
        return self.trunk(residual.float())  # (B, H, h, w)

    def forward(self, residual: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) residual maps, (B, h, w) anomaly maps -> (B, E) L2-normalised embeddings."""
        z = self._trunk(residual, anomaly)  # (B, H, h, w)
        log_w = log_anomaly_weights(anomaly, self.config.weight_temperature)  # (B, h*w)
        attn = torch.softmax(self.attention(z).flatten(1) + log_w, dim=1)  # (B, h*w)
        pooled = torch.bmm(z.flatten(2), attn.unsqueeze(2)).squeeze(2)  # (B, H)
        if self.config.use_extent:
            extent = defect_extent(log_w).unsqueeze(1) / _EXTENT_SCALE  # (B, 1)
            pooled = torch.cat([pooled, extent], dim=1)  # (B, H + 1)
        return F.normalize(self.head(pooled), dim=1)  # (B, E)
