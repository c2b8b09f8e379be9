from __future__ import annotations

import numpy as np
import pytest
import torch

from detection import Detector, DetectorConfig, FittedSupport
from detection.patchcore import nearest_neighbours
from detection.patchcore_plus import PatchCorePlusConfig, refine, sinkhorn

from .helpers import part_image, random_resnet


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_sinkhorn_plan_has_uniform_marginals_at_any_cost_scale(scale):
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 7, 13, generator=g, dtype=torch.float64) * scale
    cost[1] *= 50  # a second item with a very different range in the same batch, eps per item
    eps = 0.05 * cost.mean((1, 2))
    log_plan, _ = sinkhorn(cost, eps, iterations=2000, tol=1e-8)
    plan = log_plan.exp()
    torch.testing.assert_close(plan.sum(2), torch.full((2, 7), 1 / 7, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(plan.sum(1), torch.full((2, 13), 1 / 13, dtype=torch.float64), rtol=1e-5, atol=1e-9)


def test_sinkhorn_with_small_eps_approaches_the_assignment():
    # n = m: the optimal coupling of uniform marginals under a cost with a clear diagonal is the permutation.
    cost = (torch.ones(1, 5, 5, dtype=torch.float64) - torch.eye(5, dtype=torch.float64)) * 1e3
    plan = sinkhorn(cost, 1.0, iterations=500)[0].exp()
    torch.testing.assert_close(plan[0], torch.eye(5, dtype=torch.float64) / 5, atol=1e-6, rtol=0)


def _bank_and_queries(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(12, 16, generator=g, dtype=torch.float64)
    # Normal queries are noisy mixtures of prototypes; row 0 is far from all of them.
    mix = torch.rand(2, 30, 12, generator=g, dtype=torch.float64).softmax(-1)
    queries = mix @ bank + 0.05 * torch.randn(2, 30, 16, generator=g, dtype=torch.float64)
    queries[:, 0] += 6.0
    return bank, queries


def test_em_objective_does_not_increase():
    bank, queries = _bank_and_queries()
    res = refine(queries, bank, lam=0.3, iterations=10, m_steps=3)
    obj = res.objective  # (iterations + 1, B)
    assert obj.shape == (11, 2)
    increase = (obj[1:] - obj[:-1]) / obj[:-1].abs()
    assert float(increase.max()) <= 1e-6
    assert bool((obj[-1] < obj[0]).all())  # and refinement does something


def test_refined_prototypes_are_convex_mixtures_and_anomalies_still_score_high():
    bank, queries = _bank_and_queries(1)
    res = refine(queries, bank, lam=0.3, iterations=10, m_steps=3)
    torch.testing.assert_close(res.weights.sum(-1), torch.ones(2, 30, dtype=torch.float64))
    assert bool((res.weights >= 0).all())
    # Refinement brings normal patches closer than the nearest raw prototype, but never to zero,
    # and the far-away patch stays far: it is the top score of each query.
    nn, _ = nearest_neighbours(queries.reshape(-1, 16), bank)
    assert float(res.scores.mean()) < float(nn.mean())
    assert bool((res.scores.argmax(1) == 0).all())
    assert float(res.scores[:, 1:].min()) > 0


@pytest.fixture(scope="module")
def detector():
    pp = PatchCorePlusConfig(bank_ratio=0.1)
    cfg = DetectorConfig(method="patchcore_plus", image_size=64, batch_size=4, method_configs=(pp,))
    return Detector(cfg, resnet=random_resnet(), device="cpu")


def _goods(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [part_image(rng) for _ in range(n)]


def test_detector_scores_defective_parts_higher_than_good_ones(detector):
    fitted = detector.fit(_goods(3))
    assert fitted.thresholds.rule == "leave-one-out" and fitted.thresholds.n_scores == 3
    assert 0 < fitted.thresholds.good_max < fitted.thresholds.defective_min
    assert fitted.memory_bank.shape[0] == round(0.1 * 3 * 64)
    rng = np.random.default_rng(42)
    goods = [part_image(rng) for _ in range(6)]
    defects = [part_image(rng, defect=True) for _ in range(6)]
    scores = [p.score for p in detector.predict(fitted, goods + defects)]
    assert min(scores[6:]) > max(scores[:6]) * 0.9  # nearly separated
    assert np.mean(scores[6:]) > np.mean(scores[:6])


def test_single_image_fit_and_save_load_round_trip(detector, tmp_path):
    one = detector.fit(_goods(1))
    assert one.thresholds.rule == "augmented-single"
    fitted = detector.fit(_goods(2))
    path = tmp_path / "support.pt"
    fitted.save(path)
    loaded = FittedSupport.load(path)
    assert loaded.config == fitted.config and loaded.config.method == "patchcore_plus"
    assert loaded.thresholds == fitted.thresholds
    queries = [part_image(np.random.default_rng(7), defect=True)]
    a, b = detector.predict(fitted, queries)[0], detector.predict(loaded, queries)[0]
    assert a.score == pytest.approx(b.score, rel=1e-6)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5)
    assert a.verdict in ("good", "review", "defective")
