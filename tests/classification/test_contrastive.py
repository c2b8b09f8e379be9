"""InfoNCE, episodes, pre-training / fine-tuning loops and the contrastive classifier. CPU, tiny random tensors."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classification.classifier import ContrastiveClassifier
from classification.contrastive import (
    FinetuneConfig,
    PretrainConfig,
    embed,
    finetune,
    info_nce,
    make_episode,
    pretrain,
    train_steps,
)
from classification.encoder import EncoderConfig, ResidualEncoder
from classification.residuals import ResidualSample

D, H, W = 16, 4, 4
CONFIG = EncoderConfig(in_dim=D, hidden=16, embed=8, temperature=0.2)


def toy_sample(direction: torch.Tensor, gen: torch.Generator) -> ResidualSample:
    """A 2-patch defect whose residual is the type's direction plus noise; noise elsewhere."""
    residual = 0.5 * torch.randn(D, H, W, generator=gen)
    anomaly = 0.1 * torch.rand(H, W, generator=gen)
    r, c = (int(v) for v in torch.randint(0, H - 1, (2,), generator=gen))
    residual[:, r, c : c + 2] += direction[:, None] + 0.3 * torch.randn(D, 1, generator=gen)
    anomaly[r, c : c + 2] += 1.0
    return ResidualSample(residual, anomaly)


def toy_pool(n_types: int, per_type: int, seed: int) -> tuple[list[ResidualSample], list[int]]:
    directions = F.normalize(torch.randn(n_types, D, generator=torch.Generator().manual_seed(99)), dim=1) * 1.5
    gen = torch.Generator().manual_seed(seed)
    samples, labels = [], []
    for k in range(n_types):
        for _ in range(per_type):
            samples.append(toy_sample(directions[k], gen))
            labels.append(k)
    return samples, labels


def nearest_prototype_accuracy(enc, train, train_y, test, test_y) -> float:
    e_train, e_test = embed(enc, train), embed(enc, test)
    y = torch.tensor(train_y)
    protos = F.normalize(torch.stack([e_train[y == k].mean(0) for k in sorted(set(train_y))]), dim=1)
    pred = (e_test @ protos.T).argmax(1)
    return float((pred == torch.tensor(test_y)).float().mean())


# ------------------------------------------------------------------------------------------------------ loss


def test_info_nce_is_low_for_separated_types_and_high_for_mixed_ones():
    e = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.05, 1.0]]), dim=1)
    good = info_nce(e, torch.tensor([0, 0, 1, 1]), 0.1)
    bad = info_nce(e, torch.tensor([0, 1, 0, 1]), 0.1)
    assert good < 0.01 < 5.0 < bad


def test_info_nce_never_counts_an_anchor_as_its_own_positive():
    e = F.normalize(torch.randn(3, 4), dim=1)
    with pytest.raises(ValueError, match="positive"):
        info_nce(e, torch.tensor([0, 1, 2]), 0.1)


def test_info_nce_on_a_toy_problem_learns_to_separate_held_out_samples():
    torch.manual_seed(0)
    train, train_y = toy_pool(6, 6, seed=1)
    test, test_y = toy_pool(6, 6, seed=2)
    enc = ResidualEncoder(CONFIG)
    untrained = nearest_prototype_accuracy(enc, train, train_y, test, test_y)
    losses = train_steps(
        enc,
        train,
        train_y,
        steps=60,
        n_way=4,
        k_shot=2,
        n_query=2,
        lr=3e-3,
        weight_decay=0.0,
        rng=np.random.default_rng(0),
    )
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    trained = nearest_prototype_accuracy(enc, train, train_y, test, test_y)
    assert trained > 1 / 6 + 0.35  # chance is 1/6
    assert trained > untrained + 0.15


# --------------------------------------------------------------------------------------------------- episodes


def test_episodes_never_put_a_query_in_its_own_support():
    labels = [k for k in range(8) for _ in range(5)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        ep = make_episode(labels, n_way=3, k_shot=2, n_query=3, rng=rng)
        assert not set(ep.support) & set(ep.query)
        assert len(set(ep.indices)) == len(ep.indices) == 15
        # episode-local labels agree with the pool's labels
        local_to_pool = {}
        for i, local in zip(ep.indices, ep.labels, strict=True):
            assert local_to_pool.setdefault(local, labels[i]) == labels[i]
        assert len(set(local_to_pool.values())) == 3


def test_pseudo_classes_differ_across_episodes_of_one_generator():
    labels = [k for k in range(24) for _ in range(4)]
    rng = np.random.default_rng(0)
    drawn = [frozenset(labels[i] for i in make_episode(labels, 5, 2, 2, rng).indices) for _ in range(20)]
    assert len(set(drawn)) > 15
    assert len(set().union(*drawn)) == 24


def test_episode_construction_refuses_types_with_too_few_samples():
    with pytest.raises(ValueError, match="episodes need more"):
        make_episode([0, 0, 1, 1], n_way=2, k_shot=2, n_query=1, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ train / eval mode


def record_bn_modes(enc: ResidualEncoder) -> list[bool]:
    modes: list[bool] = []
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, _i, _o: modes.append(mod.training))
            break
    return modes


def test_batchnorm_is_in_train_mode_while_fine_tuning_and_eval_mode_when_embedding():
    torch.manual_seed(0)
    pool, labels = toy_pool(3, 3, seed=3)
    enc = ResidualEncoder(CONFIG).eval()  # left in eval mode on purpose: finetune must switch it
    modes = record_bn_modes(enc)
    examples = {f"t{k}": [s for s, y in zip(pool, labels, strict=True) if y == k] for k in range(3)}
    losses = finetune(enc, examples, FinetuneConfig(steps=3))
    assert len(losses) == 3 and modes == [True, True, True]
    assert not enc.training
    modes.clear()
    embed(enc, pool)
    assert modes and not any(modes)
    modes.clear()
    finetune(enc, examples, FinetuneConfig(steps=2))  # after an evaluation, training mode comes back
    assert modes == [True, True]


def test_fine_tuning_is_skipped_when_every_type_has_one_example():
    torch.manual_seed(0)
    pool, _ = toy_pool(3, 1, seed=4)
    enc = ResidualEncoder(CONFIG)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert finetune(enc, {f"t{k}": [s] for k, s in enumerate(pool)}, FinetuneConfig(steps=5)) == []
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k])


class FakeGenerator:
    """Pseudo type k = a residual direction; `sample` returns an 'image' that encodes it for FakeDetector."""

    def __init__(self, n: int) -> None:
        self.classes = [f"c{k}" for k in range(n)]

    def episode_classes(self, n_way: int, rng: np.random.Generator) -> list[str]:
        return [self.classes[i] for i in rng.choice(len(self.classes), n_way, replace=False)]

    def sample(self, name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img = np.full((8, 8, 3), int(name[1:]), np.uint8)
        img[0, 0, 0] = rng.integers(256)
        return img, np.zeros((8, 8), bool)


class FakeDetector:
    """Residual = features(image) - memory bank patch: what pretrain must ask for (return_features=True)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.directions = F.normalize(torch.randn(16, D, generator=torch.Generator().manual_seed(5)), dim=1) * 1.5

    def predict(self, fitted, images, *, return_features=False):
        assert return_features and fitted == "bank"
        self.calls.append(len(images))
        out = []
        for img in images:
            s = toy_sample(self.directions[int(img[1, 1, 0])], torch.Generator().manual_seed(int(img[0, 0, 0])))
            out.append(SimpleNamespace(residual=s.residual, patch_scores=s.anomaly))
        return out


def test_pretraining_computes_residuals_of_synthetic_images_through_the_detector_and_learns():
    torch.manual_seed(0)
    det = FakeDetector()
    enc = ResidualEncoder(CONFIG)
    cfg = PretrainConfig(pool_classes=6, pool_per_class=5, steps=40, n_way=3, k_shot=2, n_query=2, lr=3e-3)
    info = pretrain(enc, FakeGenerator(10), det, "bank", cfg, rng=np.random.default_rng(0))
    assert sum(det.calls) == 30
    assert info["loss_last"] < info["loss_first"]
    assert not enc.training


# ------------------------------------------------------------------------------------------------ classifier


def test_classifier_save_load_round_trip_gives_identical_embeddings_and_predictions():
    torch.manual_seed(0)
    pool, labels = toy_pool(3, 3, seed=6)
    examples = {f"t{k}": [s for s, y in zip(pool, labels, strict=True) if y == k] for k in range(3)}
    clf = ContrastiveClassifier(ResidualEncoder(CONFIG)).fit(examples, FinetuneConfig(steps=3))
    buf = io.BytesIO()
    clf.save(buf)
    buf.seek(0)
    loaded = ContrastiveClassifier.load(buf)
    assert loaded.types == clf.types == ["t0", "t1", "t2"]
    queries, _ = toy_pool(3, 2, seed=7)
    assert torch.equal(clf.embed(queries), loaded.embed(queries))
    assert clf.predict_many(queries) == loaded.predict_many(queries)
    assert loaded.prototypes.threshold == clf.prototypes.threshold


def test_classifier_load_rejects_another_format_version():
    torch.manual_seed(0)
    pool, labels = toy_pool(2, 2, seed=8)
    examples = {f"t{k}": [s for s, y in zip(pool, labels, strict=True) if y == k] for k in range(2)}
    clf = ContrastiveClassifier(ResidualEncoder(CONFIG)).fit(examples)
    buf = io.BytesIO()
    clf.save(buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    payload["format_version"] = 99
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    with pytest.raises(ValueError, match="format"):
        ContrastiveClassifier.load(buf)
