from __future__ import annotations

import pytest
import torch

from detection.patchcore import nearest_neighbours


def test_nearest_neighbours_match_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(103, 24, generator=g), torch.randn(37, 24, generator=g)
    dist, idx = nearest_neighbours(q, bank, chunk=10)
    full = torch.cdist(q, bank)
    assert torch.equal(idx, full.argmin(1))
    torch.testing.assert_close(dist, full.min(1).values, rtol=1e-4, atol=1e-4)


def test_a_query_equal_to_a_bank_row_has_distance_zero():
    bank = torch.randn(5, 8)
    dist, idx = nearest_neighbours(bank[3:4].clone(), bank)
    assert idx.item() == 3
    assert dist.item() == pytest.approx(0.0, abs=1e-2)  # sqrt of a float32 cancellation


def test_empty_bank_or_mismatched_dims_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbours(torch.randn(2, 3), torch.empty(0, 3))
    with pytest.raises(ValueError, match="share D"):
        nearest_neighbours(torch.randn(2, 3), torch.randn(4, 5))
