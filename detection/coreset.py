"""Greedy k-center coreset (Sener & Savarese 2018), approximated with a random projection as in PatchCore."""

from __future__ import annotations

import torch


def greedy_coreset(features: torch.Tensor, n: int, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Indices of `n` rows of `features` (N, D) chosen by farthest-point sampling.

    Distances are measured after a seeded Gaussian random projection to `projection_dim` dims (which
    preserves them approximately, Johnson-Lindenstrauss) so each of the n steps costs O(N * projection_dim).
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
    total = features.shape[0]
    if n <= 0 or total == 0:
        raise ValueError(f"need n >= 1 and at least one feature, got n={n}, N={total}")
    if n >= total:
        return torch.arange(total, device=features.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = features.float()
    if projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=gen) / projection_dim**0.5
        x = x @ proj.to(x.device)
    start = int(torch.randint(total, (1,), generator=gen))
    chosen = torch.empty(n, dtype=torch.long, device=x.device)
    chosen[0] = start
    min_dist = ((x - x[start]) ** 2).sum(1)  # (N,) squared distance to the chosen set
    for i in range(1, n):
        nxt = torch.argmax(min_dist)
        chosen[i] = nxt
        min_dist = torch.minimum(min_dist, ((x - x[nxt]) ** 2).sum(1))
    return chosen
