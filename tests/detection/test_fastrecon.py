from __future__ import annotations

import pytest
import torch

from detection import fastrecon


def _data(c: int, d: int, r: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(c, d, generator=g, dtype=torch.float64)
    mu = torch.randn(r, d, generator=g, dtype=torch.float64)
    q = torch.randn(2, r, d, generator=g, dtype=torch.float64)
    return s, mu, q


def _direct_least_squares(s, mu, q, lam):
    """W* = argmin ||Q - W S||^2 + lam ||W S - mu||^2, solved row by row as one stacked least squares."""
    a = torch.cat([s.T, lam**0.5 * s.T])  # (2D, c)
    out = []
    for qb in q:
        b = torch.cat([qb.T, lam**0.5 * mu.T])  # (2D, R)
        w = torch.linalg.lstsq(a, b).solution  # (c, R)
        out.append(w.T @ s)
    return torch.stack(out)


@pytest.mark.parametrize("lam", [0.0, 0.3, 2.0])
def test_reconstruction_equals_the_direct_least_squares_solution(lam):
    s, mu, q = _data(c=12, d=40, r=9)
    proj = fastrecon.build_projector(s, mu, lam, ridge=1e-12)
    want = _direct_least_squares(s, mu, q, lam)
    torch.testing.assert_close(fastrecon.reconstruct(proj, q), want, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(fastrecon.patch_scores(proj, q), (q - want).norm(dim=-1), rtol=1e-6, atol=1e-6)


def test_float32_scores_match_the_float64_solution():
    s, mu, q = _data(c=50, d=128, r=16, seed=1)
    want = (q - _direct_least_squares(s, mu, q, 0.3)).norm(dim=-1)
    proj = fastrecon.build_projector(s.float(), mu.float(), 0.3)
    torch.testing.assert_close(fastrecon.patch_scores(proj, q.float()).double(), want, rtol=1e-3, atol=1e-3)


def test_rank_deficient_coreset_is_handled():
    s, mu, q = _data(c=6, d=20, r=5)
    s = torch.cat([s, s[:3] * 2.0])  # 9 rows, rank 6: S S^T is singular
    proj = fastrecon.build_projector(s, mu, 0.3, ridge=1e-12)
    assert proj.basis.shape[1] == 6
    torch.testing.assert_close(fastrecon.reconstruct(proj, q), _direct_least_squares(s[:6], mu, q, 0.3))


def test_coreset_at_least_as_large_as_the_dimension_degenerates_to_distance_from_the_mean():
    # The reason the coreset is capped: with c >= D, P is the identity and the method is ||Q - mu||.
    s, mu, q = _data(c=30, d=20, r=5)
    proj = fastrecon.build_projector(s, mu, 0.3, ridge=1e-12)
    torch.testing.assert_close(fastrecon.patch_scores(proj, q), 0.3 / 1.3 * (q - mu).norm(dim=-1))


def test_coreset_size_is_capped_below_the_feature_dimension():
    assert fastrecon.coreset_size(4 * 1024, 1536, 0.15, 0.5) == 614
    assert fastrecon.coreset_size(8 * 1024, 1536, 0.15, 0.5) == 768
    assert fastrecon.coreset_size(8 * 1024, 1536, 0.15, 1.0) == 1229
    assert fastrecon.coreset_size(10**6, 64, 0.5, 1.0) == 63
    assert fastrecon.coreset_size(3, 64, 0.01, 0.5) == 1


def test_query_shape_mismatch_is_a_clear_error():
    s, mu, q = _data(c=6, d=20, r=5)
    proj = fastrecon.build_projector(s, mu, 0.3)
    with pytest.raises(ValueError, match="queries must be"):
        fastrecon.patch_scores(proj, q[:, :3])


def test_scoring_before_upsampling_the_coarse_features_equals_scoring_the_full_map():
    from detection.backbone import PatchFeatures

    g = torch.Generator().manual_seed(4)
    parts = PatchFeatures(torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 10, 4, 4, generator=g))
    full = parts.full()  # (2, 16, 8, 8)
    queries = full.permute(0, 2, 3, 1).reshape(2, 64, 16)
    s = torch.randn(12, 16, generator=g)
    proj = fastrecon.build_projector(s, queries.mean(0), 0.7)
    torch.testing.assert_close(
        fastrecon.patch_scores_split(proj, parts.fine, parts.coarse), fastrecon.patch_scores(proj, queries)
    )
