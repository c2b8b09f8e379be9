"""PatchCore (Roth et al., CVPR 2022): distance of each query patch to its nearest memory-bank patch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from detection.method import BankOnly, BankScoredMethod, Query, check_fraction, require_bank


@dataclass(frozen=True)
class PatchCoreConfig:
    # Memory bank = greedy coreset of this fraction of the support patches.
    bank_ratio: float = 0.1

    LEGACY_KEYS: ClassVar[dict[str, str]] = {"bank_ratio": "patchcore_coreset_ratio"}

    def __post_init__(self) -> None:
        check_fraction(self, "bank_ratio")


def nearest_neighbours(
    queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """For queries (N, D) and bank (M, D): Euclidean distance to, and index of, the nearest bank row.

    Squared distances come from ||q||^2 - 2 q.m + ||m||^2 in chunks of queries, so memory stays
    O(chunk * M) and there is no Python loop over patches.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries (N, D) and bank (M, D) must share D, got {tuple(queries.shape)}, {tuple(bank.shape)}"
        )
    if bank.shape[0] == 0:
        raise ValueError("memory bank is empty")
    bank_sq = bank.pow(2).sum(1)  # (M,)
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        d2 = q.pow(2).sum(1, keepdim=True) - 2 * (q @ bank.T) + bank_sq  # (n, M)
        best, idx = d2.min(1)
        dists.append(best.clamp_min_(0).sqrt_())
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


class PatchCore(BankScoredMethod):
    name = "patchcore"
    label = "PatchCore"
    description = "nearest good patch"
    config_type = PatchCoreConfig

    def score(self, config: PatchCoreConfig, state: BankOnly, bank: torch.Tensor | None, query: Query) -> torch.Tensor:
        bank = require_bank(bank, self.label)
        patches = query.patches
        b, r, d = patches.shape
        dist, _ = nearest_neighbours(patches.reshape(b * r, d), bank)
        return dist.view(b, r)


METHOD = PatchCore()
