"""FastRecon (Fang et al., ICCV 2023): reconstruct each query feature map as a "normal version".

Per query, W* = argmin_W ||Q - W S||^2 + lam ||W S - mu||^2 with S (c, D) a coreset of the support patches
and mu (R, D) the per-position mean of the support maps. Setting the gradient to zero gives
(1 + lam) W S S^T = (Q + lam mu) S^T, so with Y = (Q + lam mu) / (1 + lam):

    Qhat = W* S = Y S^T (S S^T)^-1 S = Y P,

the projection of Y on the row space of S. (The paper prints S^T S + lam S S^T, a typo; the official
code inverts S S^T per query in float32 and, when c >= D, gets a singular matrix.)

P is computed once per support set in float64 and kept factorised: with S S^T + eps I = U (L + eps) U^T,
P = V diag(w) V^T, V = S^T U L^-1/2 (D, c') orthonormal, w = L / (L + eps). Directions with L ~ 0 carry
no weight and are dropped, so a rank-deficient S is handled. Scoring needs only QV (R, c'):

    ||Q - Qhat||^2 = ||Q||^2 - 2 <QV, w * YV> + ||w * YV||^2,   YV = (QV + lam muV) / (1 + lam),

one (R, D) x (D, c') matmul per image instead of forming the (R, D) reconstruction.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Projector(NamedTuple):
    basis: torch.Tensor  # (D, c') orthonormal columns spanning the row space of S
    weights: torch.Tensor  # (c',) ridge shrinkage L / (L + eps), in (0, 1]
    mu: torch.Tensor  # (R, D) per-position support mean
    mu_basis: torch.Tensor  # (R, c') mu @ basis
    lam: float


def coreset_size(n_patches: int, dim: int, ratio: float, max_fraction: float) -> int:
    """c = ratio * k*R, capped below the feature dimension (see DetectorConfig)."""
    return max(1, min(round(ratio * n_patches), int(max_fraction * dim), dim - 1))


def build_projector(coreset: torch.Tensor, mu: torch.Tensor, lam: float, ridge: float = 1e-6) -> Projector:
    """Factorise P = S^T (S S^T + eps I)^-1 S for the coreset S (c, D); eps = ridge * mean eigenvalue."""
    if coreset.ndim != 2 or mu.ndim != 2 or coreset.shape[1] != mu.shape[1]:
        raise ValueError(f"coreset (c, D) and mu (R, D) must share D, got {tuple(coreset.shape)}, {tuple(mu.shape)}")
    s64 = coreset.double()
    gram = s64 @ s64.T  # (c, c)
    evals, evecs = torch.linalg.eigh(gram)
    eps = ridge * float(evals.clamp_min(0).mean()) + 1e-12
    keep = evals > evals.max() * 1e-10  # numerically zero directions (rank-deficient S) add nothing to P
    evals, evecs = evals[keep], evecs[:, keep]
    basis = (s64.T @ evecs) / evals.sqrt()  # (D, c')
    weights = evals / (evals + eps)
    basis32 = basis.to(coreset.dtype)
    return Projector(basis32, weights.to(coreset.dtype), mu, mu @ basis32, lam)


def patch_scores(proj: Projector, queries: torch.Tensor) -> torch.Tensor:
    """(B, R, D) query patch features -> (B, R) distances ||Q_i - Qhat_i||."""
    if queries.ndim != 3 or queries.shape[1:] != proj.mu.shape:
        raise ValueError(f"queries must be (B, {proj.mu.shape[0]}, {proj.mu.shape[1]}), got {tuple(queries.shape)}")
    qv = queries @ proj.basis  # (B, R, c')
    yv = (qv + proj.lam * proj.mu_basis) / (1.0 + proj.lam)
    wyv = yv * proj.weights
    sq = queries.pow(2).sum(-1) - 2 * (qv * wyv).sum(-1) + wyv.pow(2).sum(-1)
    return sq.clamp_min_(0).sqrt_()


def reconstruct(proj: Projector, queries: torch.Tensor) -> torch.Tensor:
    """The explicit normal version Qhat (B, R, D); for inspection and tests, not needed for scoring."""
    qv = queries @ proj.basis
    yv = (qv + proj.lam * proj.mu_basis) / (1.0 + proj.lam)
    return (yv * proj.weights) @ proj.basis.T
