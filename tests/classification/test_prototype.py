"""Training-free prototype classifier, its unknown-type threshold, save/load, and the evaluator's episode split.

CPU only, tiny random tensors, no backbone weights.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classification.episodes import episode_split, query_folds
from classification.metrics import confusion_matrix, macro_f1
from classification.prototype import (
    PrototypeClassifier,
    PrototypeConfig,
    calibrate_threshold,
    leave_one_out_similarities,
)
from classification.residuals import ResidualSample, pooled_residual

D, H, W = 32, 10, 10


def class_directions(n: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed)), dim=1)


def make_sample(direction: torch.Tensor, gen: torch.Generator, *, noise: float = 0.3) -> ResidualSample:
    """A defect of a few patches whose residual points along the type's direction; noise elsewhere."""
    residual = noise * torch.randn(D, H, W, generator=gen)
    anomaly = 0.1 * torch.rand(H, W, generator=gen)
    top, left = (int(v) for v in torch.randint(0, H - 2, (2,), generator=gen))
    residual[:, top : top + 2, left : left + 2] += 2.0 * direction[:, None, None]
    anomaly[top : top + 2, left : left + 2] += 1.0
    return ResidualSample(residual, anomaly)


def make_examples(directions: torch.Tensor, per_type: int, seed: int) -> dict[str, list[ResidualSample]]:
    gen = torch.Generator().manual_seed(seed)
    return {f"type{k}": [make_sample(d, gen) for _ in range(per_type)] for k, d in enumerate(directions)}


# --------------------------------------------------------------------------------------------- prototypes


@pytest.mark.parametrize("center", [False, True])
def test_prototypes_are_means_of_normalised_pooled_embeddings(center):
    examples = make_examples(class_directions(3), per_type=3, seed=1)
    config = PrototypeConfig(center=center)
    clf = PrototypeClassifier(config).fit(examples)

    def pooled(s):
        return pooled_residual(s, temperature=config.weight_temperature, rectify=config.rectify)

    embedded = {t: F.normalize(torch.stack([pooled(s) for s in samples]), dim=1) for t, samples in examples.items()}
    centre = torch.stack([e.mean(0) for e in embedded.values()]).mean(0) if center else torch.zeros(D)
    for k, t in enumerate(clf.types):
        e = F.normalize(embedded[t] - centre, dim=1) if center else embedded[t]
        torch.testing.assert_close(clf.prototypes[k], e.mean(0))


def test_rectified_pooling_is_the_weighted_mean_of_the_positive_part():
    sample = make_sample(class_directions(1)[0], torch.Generator().manual_seed(11))
    clamped = ResidualSample(sample.residual.clamp_min(0), sample.anomaly)
    torch.testing.assert_close(pooled_residual(sample, rectify=True), pooled_residual(clamped, rectify=False))
    assert not torch.allclose(pooled_residual(sample, rectify=True), pooled_residual(sample, rectify=False))


def test_centre_comes_from_the_unlabelled_pool_with_enough_images_else_from_the_labelled_types():
    directions = class_directions(3, seed=12)
    examples = make_examples(directions, per_type=1, seed=13)
    pool = [s for samples in make_examples(directions, per_type=4, seed=14).values() for s in samples]  # 12
    config = PrototypeConfig(min_pool=8)
    clf = PrototypeClassifier(config)
    x = torch.cat([clf.embed(examples[t]) for t in sorted(examples)])
    clf.fit(examples, unlabelled=pool)
    assert clf.centre_rule == "pool"
    torch.testing.assert_close(clf.centre, torch.cat([clf.embed(pool), x]).mean(0))
    clf.fit(examples, unlabelled=pool[:7])  # below min_pool: the labelled types' mean
    assert clf.centre_rule == "labelled"
    torch.testing.assert_close(clf.centre, x.mean(0))  # one example per type: mean of means = mean
    assert PrototypeClassifier(PrototypeConfig(center=False)).fit(examples, unlabelled=pool).centre_rule == "none"


def test_query_folds_never_put_a_query_in_the_pool_of_its_own_centre():
    queries = list(range(3, 40, 2))
    folds = query_folds(queries, "pool", seed=4)
    assert sorted(q for fold, _ in folds for q in fold) == queries  # every query scored exactly once
    for fold, pool in folds:
        assert fold and not set(fold) & set(pool)
        assert set(fold) | set(pool) == set(queries)
    assert query_folds(queries, "labelled", seed=4) == [(queries, [])]
    assert query_folds(queries, "pool", seed=4) == folds  # seeded


@pytest.mark.parametrize("center", [False, True])
def test_classifier_separates_well_separated_types(center):
    directions = class_directions(4, seed=2)
    clf = PrototypeClassifier(PrototypeConfig(center=center)).fit(make_examples(directions, per_type=2, seed=3))
    queries = make_examples(directions, per_type=10, seed=4)
    predicted = [(t, clf.predict(s).best) for t, samples in queries.items() for s in samples]
    assert all(truth == best for truth, best in predicted)


def test_prediction_ranks_every_type_and_confidence_is_a_softmax_of_similarities():
    directions = class_directions(3, seed=5)
    config = PrototypeConfig(temperature=0.2)
    clf = PrototypeClassifier(config).fit(make_examples(directions, per_type=2, seed=6))
    query = make_sample(directions[1], torch.Generator().manual_seed(7))
    pred = clf.predict(query)
    assert [t for t, _ in pred.ranking] and sorted(t for t, _ in pred.ranking) == clf.types
    sims = [s for _, s in pred.ranking]
    assert sims == sorted(sims, reverse=True)
    assert pred.best == "type1" == pred.ranking[0][0]
    expected = torch.softmax(torch.tensor(sims) / 0.2, 0)[0]
    assert pred.confidence == pytest.approx(float(expected), rel=1e-5)
    assert pred.similarity == pytest.approx(sims[0])


def test_an_unseen_type_is_rejected_as_unknown_and_known_types_are_accepted():
    directions = class_directions(4, seed=8)
    clf = PrototypeClassifier().fit(make_examples(directions[:3], per_type=5, seed=9))
    assert clf.threshold_rule == "leave-one-out"
    gen = torch.Generator().manual_seed(10)
    unseen = [clf.predict(make_sample(directions[3], gen)) for _ in range(20)]
    known = [clf.predict(make_sample(directions[k % 3], gen)) for k in range(30)]
    assert sum(p.label is None for p in unseen) >= 18
    assert sum(p.label == p.best for p in known) >= 24  # reject_rate 0.05 from 15 LOO values: a noisy quantile
    assert all(p.best in clf.types for p in unseen)  # the nearest type is still reported


def test_fitting_no_types_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        PrototypeClassifier().fit({})


# ---------------------------------------------------------------------------------------------- threshold


def test_leave_one_out_holds_each_example_out_of_its_own_prototype():
    e = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.2]]), dim=1)
    labels = torch.tensor([0, 0, 1, 2])  # types 1 and 2 have a single example: not held out
    sims = leave_one_out_similarities(e, labels, center=False)
    # example 0 against {type0: e1, type1: e2, type2: e3}; example 1 against {type0: e0, ...}
    expected = [max(float(e[0] @ e[j]) for j in (1, 2, 3)), max(float(e[1] @ e[j]) for j in (0, 2, 3))]
    torch.testing.assert_close(sims, torch.tensor(expected))


def test_threshold_is_the_reject_rate_quantile_of_leave_one_out_similarities():
    gen = torch.Generator().manual_seed(11)
    e = F.normalize(torch.randn(12, D, generator=gen), dim=1)
    labels = torch.arange(12) % 3
    loo = leave_one_out_similarities(e, labels, center=True)
    assert len(loo) == 12
    low, rule = calibrate_threshold(e, labels, center=True, reject_rate=0.0)
    mid, _ = calibrate_threshold(e, labels, center=True, reject_rate=0.5)
    assert rule == "leave-one-out"
    assert low == pytest.approx(float(loo.min()))
    assert mid == pytest.approx(float(loo.median() if len(loo) % 2 else loo.sort().values[5:7].mean()))


def test_one_example_per_type_falls_back_to_the_closest_pair_of_types():
    e = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    threshold, rule = calibrate_threshold(e, torch.tensor([0, 1, 2]), center=False, reject_rate=0.05)
    assert rule == "between-types"
    assert threshold == pytest.approx(0.6)


def test_a_single_example_of_a_single_type_rejects_nothing():
    clf = PrototypeClassifier().fit(make_examples(class_directions(1), per_type=1, seed=12))
    assert clf.threshold_rule == "none"
    query = make_sample(-class_directions(1)[0], torch.Generator().manual_seed(13))
    assert clf.predict(query).label == "type0"


# -------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip_gives_identical_predictions(tmp_path):
    directions = class_directions(3, seed=14)
    config = PrototypeConfig(center=True, weighting="top", top_fraction=0.04, temperature=0.05)
    clf = PrototypeClassifier(config).fit(make_examples(directions, per_type=3, seed=15))
    path = tmp_path / "classifier.pt"
    clf.save(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 2 and payload["config"] == config.to_dict()
    loaded = PrototypeClassifier.load(path)
    assert loaded.config == config and loaded.types == clf.types
    assert loaded.threshold == clf.threshold and loaded.threshold_rule == clf.threshold_rule
    assert loaded.centre_rule == clf.centre_rule
    gen = torch.Generator().manual_seed(16)
    queries = [make_sample(directions[k % 3], gen) for k in range(6)] + [make_sample(class_directions(1, 99)[0], gen)]
    assert loaded.predict_many(queries) == clf.predict_many(queries)


def test_load_reads_an_open_file_and_refuses_another_format_version():
    clf = PrototypeClassifier().fit(make_examples(class_directions(2), per_type=2, seed=17))
    buffer = io.BytesIO()
    clf.save(buffer)
    buffer.seek(0)
    assert PrototypeClassifier.load(buffer).types == ["type0", "type1"]
    payload = clf.to_payload() | {"format_version": 99}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match="format 99"):
        PrototypeClassifier.load(buffer)


# ------------------------------------------------------------------------------------ evaluator episodes


@pytest.mark.parametrize("shots", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_episode_split_never_puts_a_query_among_the_labelled_examples(shots, seed):
    labels = ["a"] * 7 + ["b"] * 6 + ["c"] * 9
    support, queries = episode_split(labels, shots, seed)
    labelled = [i for idx in support.values() for i in idx]
    assert not set(labelled) & set(queries)
    assert sorted(labelled + queries) == list(range(len(labels)))
    for name, idx in support.items():
        assert len(idx) == shots and all(labels[i] == name for i in idx)


def test_episode_split_is_reproducible_and_varies_with_the_seed():
    labels = ["a"] * 10 + ["b"] * 10
    assert episode_split(labels, 2, 3) == episode_split(labels, 2, 3)
    assert len({str(episode_split(labels, 2, s)[0]) for s in range(5)}) > 1


def test_episode_split_refuses_a_type_that_would_have_no_query():
    with pytest.raises(ValueError, match="no query"):
        episode_split(["a"] * 3 + ["b"] * 5, 3, 0)


def test_macro_f1_averages_per_type_f1_from_the_confusion_matrix():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    # type0: P 1/2 R 1/2 -> 0.5; type1: P 2/3 R 1 -> 0.8; type2: 0
    assert macro_f1(cm) == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)


# ------------------------------------------------------------------------------------------ method choice


def test_choice_follows_the_measured_record_for_the_nearest_shot_count(monkeypatch):
    from classification import selection

    monkeypatch.setattr(selection, "MEASURED", {"prototype": {1: 60.0, 3: 70.0}, "contrastive": {1: 50.0, 3: 80.0}})
    assert selection.choose_method(1).method == "prototype"
    assert selection.choose_method(2).method == "prototype"  # nearest measured below: 1
    assert selection.choose_method(7).method == "contrastive"
    assert "80.0 %" in selection.choose_method(3).reason
    with pytest.raises(ValueError):
        selection.choose_method(0)


@pytest.mark.parametrize("mode", ["none", "labelled", "pool"])
def test_closed_form_leave_one_out_equals_refitting_without_each_example(mode):
    from classification.prototype import _centre_and_prototypes, _similarities, leave_one_out

    gen = torch.Generator().manual_seed(21)
    labels = torch.tensor([0, 1, 2] * 4 + [0, 0])  # type sizes 6 / 4 / 4
    x = F.normalize(torch.randn(14, D, generator=gen) + 2 * class_directions(3)[labels], dim=1)
    centre = F.normalize(torch.randn(D, generator=gen), dim=0) * 0.3 if mode == "pool" else None
    center = mode != "none"
    held, sims = leave_one_out(x, labels, center=center, centre=centre)
    assert held.tolist() == list(range(14))
    for row, i in zip(sims, held.tolist(), strict=True):
        keep = torch.arange(14) != i
        c, protos = _centre_and_prototypes(x[keep], labels[keep], 3, center, centre)
        torch.testing.assert_close(row, _similarities(x[i : i + 1], c, protos, center)[0])


def test_a_type_with_one_example_is_never_held_out_but_stays_a_candidate():
    from classification.prototype import leave_one_out

    x = F.normalize(torch.randn(5, D, generator=torch.Generator().manual_seed(3)), dim=1)
    held, sims = leave_one_out(x, torch.tensor([0, 0, 0, 1, 2]), center=True)
    assert held.tolist() == [0, 1, 2] and sims.shape == (3, 3)


def test_too_few_held_out_similarities_fall_back_to_the_between_types_rule():
    directions = class_directions(3, seed=30)
    few = PrototypeClassifier(PrototypeConfig(min_calibration=9)).fit(make_examples(directions, per_type=2, seed=31))
    enough = PrototypeClassifier(PrototypeConfig(min_calibration=9)).fit(make_examples(directions, per_type=3, seed=31))
    assert (few.threshold_rule, enough.threshold_rule) == ("between-types", "leave-one-out")
