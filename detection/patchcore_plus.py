"""PatchCore+ ("A prototype-oriented fast refinement model for few-shot industrial anomaly detection", ICLR 2025
submission): refine the normal prototypes toward each query at test time, then score like PatchCore.

For one query with patches F (m, D) and the memory bank M (n, D) of normal prototypes:

    W*, T* = argmin_{W,T}  1/m ||F - W M||^2  +  lam * OT_eps(p, q),     R = W M (m, D) refined prototypes,

OT_eps = <T, C> + eps sum T log T over couplings T (n, m) of p = uniform(n) and q = uniform(m), with the
squared Euclidean cost C_ij = ||M_i - R_j||^2. The reconstruction term is a mean over patches (the paper's
Frobenius norm divided by m) so that both terms are averages of squared distances: with the plain sum, lam
would have to grow with the number of patches to mean the same thing.

Parametrisation of W (the subtlety): with W unconstrained, R = W M can be any point of the row space of M,
and the reconstruction term alone drives R_j to the projection of f_j on that space -- f_j itself once n >= D
or f_j is a linear combination of prototypes, so every score would be ~0, anomalies included. The OT term
only pulls each R_j toward a barycentre of prototypes with weight lam/m against 1/m for the reconstruction,
so it cannot prevent that on its own. Here W is row-stochastic, W = softmax(Z) per row: a refined prototype
is a convex mixture of normal prototypes, never an extrapolation, so a patch unlike every normal pattern
stays far from all refined prototypes. Z starts at -d^2(f_j, M_i) / (temperature * s) with s the query's
mean nearest-prototype squared distance, so W starts as a soft nearest-neighbour assignment (the PatchCore
answer) and refinement moves it only as far as the objective pays for.

EM: the E-step solves the entropic OT for T given W (log-space Sinkhorn, warm-started); the M-step takes a
few gradient steps on Z given T, each with per-image backtracking (a step is kept only if it does not raise
the objective), so the objective never increases except by the Sinkhorn tolerance. No closed form is used:
with the simplex constraint there is none. eps is eps_rel times the mean initial cost, fixed per query for
all iterations (the objective must not change under the iterations for the monotonicity to mean anything).

Everything is computed in the n-dimensional coefficient space: with G = M M^T (n, n) and A = F M^T (m, n),
||f_j - R_j||^2 = ||f_j||^2 - 2 <w_j, A_j> + w_j G w_j^T and C = ||M_i||^2 - 2 (W G)^T + ||R_j||^2, so an
iteration costs O(m n^2), independent of D. The patch score is min_r ||f_j - R_r|| over all m refined
prototypes -- a Euclidean distance (square root), the same units as PatchCore's nearest_neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from detection.method import BankOnly, BankScoredMethod, Query, check_fraction, require_bank

_TINY = 1e-12


@dataclass(frozen=True)
class PatchCorePlusConfig:
    # Paper settings: lambda 0.3, bank ratio 0.05, 10 EM iterations. m_steps gradient steps on W per M-step;
    # Sinkhorn eps relative to the mean initial cost; temperature of the soft nearest-prototype initialisation
    # of W, relative to the query's mean nearest squared distance.
    lam: float = 0.3
    bank_ratio: float = 0.05
    iterations: int = 10
    m_steps: int = 3
    eps: float = 0.05
    temperature: float = 1.0

    LEGACY_KEYS: ClassVar[dict[str, str]] = {
        "lam": "patchcore_plus_lambda",
        "bank_ratio": "patchcore_plus_coreset_ratio",
    }

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ValueError("lam (PatchCore+ lambda) must be >= 0")
        if self.iterations < 0 or self.m_steps < 0:
            raise ValueError("iterations and m_steps must be >= 0")
        if self.eps <= 0 or self.temperature <= 0:
            raise ValueError("eps and temperature must be > 0")
        check_fraction(self, "bank_ratio")


class Refinement(NamedTuple):
    weights: torch.Tensor  # (B, m, n) row-stochastic W: refined prototypes R = W M
    plan: torch.Tensor  # (B, n, m) transport plan T from prototypes to refined prototypes
    objective: torch.Tensor  # (iterations + 1, B) objective after the first E-step and after each EM iteration
    scores: torch.Tensor  # (B, m) min_r ||f_j - R_r||


def sinkhorn(
    cost: torch.Tensor,
    eps: torch.Tensor | float,
    iterations: int = 200,
    potentials: tuple[torch.Tensor, torch.Tensor] | None = None,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Entropic OT between uniform marginals, in log space: cost (B, n, m), eps scalar or (B,).

    Returns log T (B, n, m) -- rows sum to 1/n, columns to 1/m -- and the potentials (u, v) in units of eps
    (log T = u_i + v_j - C_ij / eps), to warm-start the next call with the same eps. Stops early once every
    row sum is within tol (relative) of 1/n; columns are exact after each v update.
    """
    if cost.ndim != 3:
        raise ValueError(f"cost must be (B, n, m), got {tuple(cost.shape)}")
    b, n, m = cost.shape
    eps_t = torch.as_tensor(eps, dtype=cost.dtype, device=cost.device).reshape(-1, 1, 1).expand(b, 1, 1)
    scaled = cost / eps_t  # (B, n, m)
    log_a, log_b = -math.log(n), -math.log(m)
    if potentials is None:
        u = cost.new_zeros(b, n)
        v = log_b - torch.logsumexp(-scaled, dim=1)
    else:
        u, v = potentials
    for it in range(iterations):
        u = log_a - torch.logsumexp(v[:, None, :] - scaled, dim=2)
        v = log_b - torch.logsumexp(u[:, :, None] - scaled, dim=1)
        if it % 10 == 9:
            rows = torch.logsumexp(u[:, :, None] + v[:, None, :] - scaled, dim=2) - log_a  # log(n * row sum)
            if float(rows.abs().max()) < tol:
                break
    return u[:, :, None] + v[:, None, :] - scaled, (u, v)


class _Problem:
    """The quantities of one batch of queries that do not change under refinement."""

    def __init__(self, queries: torch.Tensor, bank: torch.Tensor, lam: float) -> None:
        self.lam = lam
        self.m = queries.shape[1]
        self.gram = bank @ bank.T  # (n, n)
        self.bank_sq = self.gram.diagonal()  # (n,)
        self.cross = queries @ bank.T  # (B, m, n)
        self.q_sq = queries.pow(2).sum(-1)  # (B, m)

    def terms(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """W (B, m, n) -> W G (B, m, n), ||R_j||^2 (B, m), reconstruction term (B,), cost C (B, n, m)."""
        wg = weights @ self.gram
        r_sq = (weights * wg).sum(-1)
        rec = (self.q_sq - 2 * (weights * self.cross).sum(-1) + r_sq).clamp_min(0).mean(-1)
        cost = (self.bank_sq[:, None] - 2 * wg.transpose(1, 2) + r_sq[:, None, :]).clamp_min(0)
        return wg, r_sq, rec, cost

    def objective(self, weights: torch.Tensor, log_plan: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        _, _, rec, cost = self.terms(weights)
        return rec + self.lam * _ot_value(log_plan, cost, eps)

    def logit_gradient(self, weights: torch.Tensor, log_plan: torch.Tensor) -> torch.Tensor:
        """d objective / d Z for W = softmax(Z), T fixed (the entropy term does not depend on W)."""
        plan = log_plan.exp()  # (B, n, m)
        wg = weights @ self.gram
        # dJ/dR_j = 2/m (R_j - f_j) + 2 lam (c_j R_j - sum_i T_ij M_i), c_j = column sum; times M^T gives dJ/dW.
        col = plan.sum(1)  # (B, m)
        pull = col[..., None] * wg - plan.transpose(1, 2) @ self.gram  # (B, m, n)
        grad_w = (2 / self.m) * (wg - self.cross) + 2 * self.lam * pull
        return weights * (grad_w - (weights * grad_w).sum(-1, keepdim=True))


def _ot_value(log_plan: torch.Tensor, cost: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """<T, C> + eps sum T log T per batch item: (B,)."""
    plan = log_plan.exp()
    return (plan * cost).sum((1, 2)) + eps * (plan * log_plan).sum((1, 2))


def refine(
    queries: torch.Tensor,
    bank: torch.Tensor,
    *,
    lam: float = 0.3,
    iterations: int = 10,
    m_steps: int = 3,
    eps_rel: float = 0.05,
    temperature: float = 1.0,
    sinkhorn_iterations: int = 200,
) -> Refinement:
    """Refine the bank (n, D) toward each query (B, m, D) by EM; see the module docstring."""
    if queries.ndim != 3 or bank.ndim != 2 or queries.shape[2] != bank.shape[1]:
        shapes = f"{tuple(queries.shape)}, {tuple(bank.shape)}"
        raise ValueError(f"queries (B, m, D) and bank (n, D) must share D, got {shapes}")
    if bank.shape[0] == 0:
        raise ValueError("memory bank is empty")
    bank = bank.to(queries.dtype)
    prob = _Problem(queries, bank, lam)
    d2 = (prob.q_sq[..., None] - 2 * prob.cross + prob.bank_sq).clamp_min(0)  # (B, m, n)
    scale = d2.amin(-1).mean(-1).clamp_min(_TINY)  # (B,)
    logits = -d2 / (temperature * scale[:, None, None])
    weights = logits.softmax(-1)
    _, _, _, cost = prob.terms(weights)
    eps = eps_rel * cost.mean((1, 2)).clamp_min(_TINY)  # (B,) fixed for all iterations
    log_plan, pots = sinkhorn(cost, eps, sinkhorn_iterations)
    current = prob.objective(weights, log_plan, eps)
    history = [current]
    step = torch.ones_like(eps)  # per-image step, in logit units per unit of max |gradient|
    for _ in range(iterations):
        # M-step: gradient steps on Z with T fixed; each image keeps a step only if it does not raise J.
        for _ in range(m_steps):
            grad = prob.logit_gradient(weights, log_plan)
            direction = grad / grad.abs().amax((1, 2)).clamp_min(_TINY)[:, None, None]
            todo = torch.ones_like(eps, dtype=torch.bool)
            for _ in range(12):
                trial_logits = logits - step[:, None, None] * direction
                trial_weights = trial_logits.softmax(-1)
                trial = prob.objective(trial_weights, log_plan, eps)
                accept = todo & (trial <= current)
                logits = torch.where(accept[:, None, None], trial_logits, logits)
                weights = torch.where(accept[:, None, None], trial_weights, weights)
                current = torch.where(accept, trial, current)
                step = torch.where(accept, step * 1.5, torch.where(todo, step * 0.5, step))
                todo &= ~accept
                if not bool(todo.any()):
                    break
        # E-step: the optimal plan for the new refined prototypes.
        _, _, _, cost = prob.terms(weights)
        log_plan, pots = sinkhorn(cost, eps, sinkhorn_iterations, potentials=pots)
        current = prob.objective(weights, log_plan, eps)
        history.append(current)
    return Refinement(weights, log_plan.exp(), torch.stack(history), _min_distance(prob, weights))


def _min_distance(prob: _Problem, weights: torch.Tensor) -> torch.Tensor:
    """min over refined prototypes r of ||f_j - R_r||: (B, m)."""
    r_sq = (weights * (weights @ prob.gram)).sum(-1)  # (B, m)
    d2 = prob.q_sq[..., None] - 2 * (prob.cross @ weights.transpose(1, 2)) + r_sq[:, None, :]  # (B, m, m)
    return d2.amin(-1).clamp_min(0).sqrt()


def patch_scores(
    patches: torch.Tensor,
    bank: torch.Tensor,
    *,
    lam: float,
    iterations: int,
    m_steps: int,
    eps_rel: float,
    temperature: float,
    batch: int = 8,
) -> torch.Tensor:
    """(B, m, D) query patches -> (B, m) PatchCore+ scores, refining `batch` queries at a time."""
    out = []
    for start in range(0, patches.shape[0], batch):
        res = refine(
            patches[start : start + batch].float(),
            bank.float(),
            lam=lam,
            iterations=iterations,
            m_steps=m_steps,
            eps_rel=eps_rel,
            temperature=temperature,
        )
        out.append(res.scores)
    return torch.cat(out)


class PatchCorePlus(BankScoredMethod):
    name = "patchcore_plus"
    label = "PatchCore+"
    description = "optimal-transport refinement; 1-12 s per image on a CPU, more with more images"
    config_type = PatchCorePlusConfig

    def score(
        self, config: PatchCorePlusConfig, state: BankOnly, bank: torch.Tensor | None, query: Query
    ) -> torch.Tensor:
        return patch_scores(
            query.patches,
            require_bank(bank, self.label),
            lam=config.lam,
            iterations=config.iterations,
            m_steps=config.m_steps,
            eps_rel=config.eps,
            temperature=config.temperature,
            batch=query.batch,
        )


METHOD = PatchCorePlus()
