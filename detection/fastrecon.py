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

import logging
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch

from detection.backbone import upsample_to
from detection.method import FitOutcome, Query, Support, check_fraction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastReconConfig:
    # Weight of the pull toward the per-position support mean. The paper uses lambda 0.3; with this backbone
    # lambda 2 beats 0.3 on both bottle and cookies at every shot count (README, "Choosing lambda").
    lam: float = 2.0
    # Coreset size as a fraction of all k*R support patches.
    coreset_ratio: float = 0.15
    # The coreset must stay well below the feature dimension D: with c >= D the row space of S is all of
    # R^D, the projection becomes the identity and the score degenerates to lambda/(1+lambda)*||Q - mu||.
    max_coreset_fraction: float = 0.5
    # Ridge on S S^T, relative to its mean eigenvalue (numerical safety only; it barely changes P).
    ridge: float = 1e-6
    # PatchCore's memory bank, kept for the nearest normal patch that defect-type residuals need.
    bank_ratio: float = 0.1

    LEGACY_KEYS: ClassVar[dict[str, str]] = {"lam": "fastrecon_lambda", "bank_ratio": "patchcore_coreset_ratio"}

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError("lam (FastRecon lambda) must be >= 0")
        if self.ridge < 0:
            raise ValueError("ridge must be >= 0")
        check_fraction(self, "coreset_ratio", "max_coreset_fraction", "bank_ratio")


class Projector(NamedTuple):
    basis: torch.Tensor  # (D, c') orthonormal columns spanning the row space of S
    weights: torch.Tensor  # (c',) ridge shrinkage L / (L + eps), in (0, 1]
    mu: torch.Tensor  # (R, D) per-position support mean
    mu_basis: torch.Tensor  # (R, c') mu @ basis
    lam: float
    # ||Q - Qhat||^2 = ||Q||^2 + (QV)^2 . alpha + <QV, beta> + gamma: the expansion of the formula above
    # with a = 1/(1+lam) and m = a*lam*muV, precomputed so a query needs two passes over QV, not six.
    alpha: torch.Tensor  # (c',)   a^2 w^2 - 2 a w
    beta: torch.Tensor  # (R, c')  2 (a w^2 - w) m
    gamma: torch.Tensor  # (R,)    sum (w m)^2


def coreset_size(n_patches: int, dim: int, ratio: float, max_fraction: float) -> int:
    """c = ratio * k*R, capped below the feature dimension (see FastReconConfig)."""
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
    a = 1.0 / (1.0 + lam)
    m = a * lam * (mu.double() @ basis)  # (R, c')
    alpha = a * a * weights**2 - 2 * a * weights
    beta = 2 * (a * weights**2 - weights) * m
    gamma = ((weights * m) ** 2).sum(1)
    dt = coreset.dtype
    basis32 = basis.to(dt)
    return Projector(basis32, weights.to(dt), mu, mu @ basis32, lam, alpha.to(dt), beta.to(dt), gamma.to(dt))


def _distances(proj: Projector, qv: torch.Tensor, q_sq: torch.Tensor) -> torch.Tensor:
    """QV (B, R, c') and ||Q||^2 (B, R) -> ||Q - Qhat|| (B, R)."""
    sq = q_sq + (qv * qv) @ proj.alpha + (qv * proj.beta).sum(-1) + proj.gamma
    return sq.clamp_min_(0).sqrt_()


def patch_scores(proj: Projector, queries: torch.Tensor) -> torch.Tensor:
    """(B, R, D) query patch features -> (B, R) distances ||Q_i - Qhat_i||."""
    if queries.ndim != 3 or queries.shape[1:] != proj.mu.shape:
        raise ValueError(f"queries must be (B, {proj.mu.shape[0]}, {proj.mu.shape[1]}), got {tuple(queries.shape)}")
    return _distances(proj, queries @ proj.basis, queries.pow(2).sum(-1))


def patch_scores_split(proj: Projector, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """Same as patch_scores for Q = [fine | upsample(coarse)], without upsampling the coarse features first.

    fine (B, D1, h, w), coarse (B, D2, h', w'): QV = fine V1 + upsample(coarse V2), since bilinear
    upsampling is linear; the coarse matmul runs on h'w' = hw/4 rows. ||Q||^2 still needs the upsampled
    coarse part, but only its per-position norm.
    """
    b, d1, h, w = fine.shape
    if d1 + coarse.shape[1] != proj.basis.shape[0] or h * w != proj.mu.shape[0]:
        got = f"({d1}+{coarse.shape[1]}, {h}x{w})"
        raise ValueError(f"features {got} do not match the projector {tuple(proj.basis.shape)}, {tuple(proj.mu.shape)}")
    c = proj.basis.shape[1]
    qv = fine.flatten(2).transpose(1, 2) @ proj.basis[:d1]  # (B, R, c')
    cv = coarse.flatten(2).transpose(1, 2) @ proj.basis[d1:]  # (B, R', c')
    cv = cv.view(b, *coarse.shape[2:], c).permute(0, 3, 1, 2)  # (B, c', h', w'), channels_last in memory
    qv = qv + upsample_to(cv, (h, w)).flatten(2).transpose(1, 2)
    q_sq = fine.pow(2).sum(1).flatten(1) + upsample_to(coarse, (h, w)).pow(2).sum(1).flatten(1)  # (B, R)
    return _distances(proj, qv, q_sq)


def reconstruct(proj: Projector, queries: torch.Tensor) -> torch.Tensor:
    """The explicit normal version Qhat (B, R, D); for inspection and tests, not needed for scoring."""
    qv = queries @ proj.basis
    yv = (qv + proj.lam * proj.mu_basis) / (1.0 + proj.lam)
    return (yv * proj.weights) @ proj.basis.T


@dataclass(eq=False)
class FastReconState:
    coreset: torch.Tensor  # (c, D) S
    mu: torch.Tensor  # (R, D) per-position mean of the support maps
    lam: float
    ridge: float
    _projector: Projector | None = field(default=None, repr=False)

    def projector(self) -> Projector:
        """P factorised, built once per state (a state moved to another device builds its own)."""
        if self._projector is None:
            self._projector = build_projector(self.coreset, self.mu, self.lam, self.ridge)
        return self._projector

    def to(self, device: torch.device) -> FastReconState:
        if self.coreset.device == torch.device(device):
            return self
        return FastReconState(self.coreset.to(device), self.mu.to(device), self.lam, self.ridge)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"coreset": self.coreset.detach().cpu().contiguous(), "mu": self.mu.detach().cpu().contiguous()}

    def summary(self) -> str:
        return f"coreset c'={self.projector().basis.shape[1]}"


class FastRecon:
    name = "fastrecon"
    label = "FastRecon"
    description = "training-free regression onto the good patches"
    config_type = FastReconConfig
    scores_with_bank = False

    def coreset_size(self, config: FastReconConfig, n_patches: int, dim: int) -> int:
        c = coreset_size(n_patches, dim, config.coreset_ratio, config.max_coreset_fraction)
        if c < round(config.coreset_ratio * n_patches):
            log.info("FastRecon coreset capped at %d < D=%d", c, dim)
        return c

    def fit(self, config: FastReconConfig, support: Support) -> FitOutcome[FastReconState]:
        return FitOutcome(FastReconState(support.coreset, support.patches.mean(0), config.lam, config.ridge))

    def score(
        self, config: FastReconConfig, state: FastReconState, bank: torch.Tensor | None, query: Query
    ) -> torch.Tensor:
        if query.features is not None:  # the two parts: project before upsampling the coarse one
            return patch_scores_split(state.projector(), query.features.fine, query.features.coarse)
        return patch_scores(state.projector(), query.patches)

    def load_state(self, config: FastReconConfig, tensors: dict[str, torch.Tensor]) -> FastReconState:
        return FastReconState(tensors["coreset"], tensors["mu"], config.lam, config.ridge)


METHOD = FastRecon()
