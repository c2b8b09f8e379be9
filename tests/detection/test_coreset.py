from __future__ import annotations

import pytest
import torch

from detection.coreset import greedy_coreset


def _clusters(n_clusters: int = 5, per: int = 50, dim: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(n_clusters, dim, generator=g) * 10
    return (centers[:, None] + 0.1 * torch.randn(n_clusters, per, dim, generator=g)).reshape(-1, dim)


def _covering_radius(x: torch.Tensor, idx: torch.Tensor) -> float:
    return float(torch.cdist(x, x[idx]).min(1).values.max())


def test_coreset_returns_n_distinct_indices():
    x = torch.randn(300, 32)
    idx = greedy_coreset(x, 40, projection_dim=8, seed=1)
    assert idx.shape == (40,)
    assert len(set(idx.tolist())) == 40


def test_coreset_hits_every_cluster_before_repeating_one():
    x = _clusters()
    idx = greedy_coreset(x, 5, projection_dim=64)
    assert sorted((idx // 50).tolist()) == [0, 1, 2, 3, 4]


def test_coreset_covers_the_data_better_than_a_random_subset():
    x = torch.randn(500, 8) ** 3  # heavy tails: random sampling misses the outliers
    idx = greedy_coreset(x, 25, projection_dim=64)
    rand = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:25]
    assert _covering_radius(x, idx) < _covering_radius(x, rand)


def test_coreset_is_deterministic_for_a_seed():
    x = torch.randn(200, 64)
    assert torch.equal(greedy_coreset(x, 20, 16, seed=3), greedy_coreset(x, 20, 16, seed=3))


def test_asking_for_more_points_than_exist_returns_all():
    assert greedy_coreset(torch.randn(7, 4), 10).tolist() == list(range(7))


def test_bad_coreset_arguments_are_rejected():
    with pytest.raises(ValueError):
        greedy_coreset(torch.randn(7, 4), 0)
    with pytest.raises(ValueError):
        greedy_coreset(torch.randn(7), 3)
