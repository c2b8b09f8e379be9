from __future__ import annotations

import math

import pytest

from detection.thresholds import DEFECTIVE, GOOD, REVIEW, Thresholds, calibrate


def _cal(scores, **kw):
    args = {"review_rate": 0.05, "false_reject_rate": 0.005, "min_log_spread": 0.1, "rule": "leave-one-out"} | kw
    return calibrate(scores, **args)


def test_thresholds_are_ordered_above_the_normal_scores():
    t = _cal([10.0, 11.0, 9.5, 10.5])
    assert 11.0 < t.good_max < t.defective_min


def test_three_verdicts():
    t = Thresholds(good_max=5.0, defective_min=8.0, rule="x", n_scores=3, log_mean=1.0, log_spread=0.1)
    assert t.verdict(4.9) == GOOD
    assert t.verdict(5.0) == GOOD
    assert t.verdict(6.0) == REVIEW
    assert t.verdict(8.0) == DEFECTIVE


def test_one_high_normal_score_widens_the_band_it_is_evidence_of_a_heavy_tail():
    base = _cal([10.0, 10.4, 9.8, 10.2, 10.1])
    with_high = _cal([10.0, 10.4, 9.8, 10.2, 20.0])
    assert with_high.defective_min > 20.0 > base.defective_min


def test_spread_floor_applies_when_scores_agree():
    t = _cal([10.0, 10.0, 10.0])
    assert t.log_spread == pytest.approx(0.1)
    assert t.good_max > 10.0


def test_rates_match_the_lognormal_model():
    t = _cal([math.e] * 50, min_log_spread=0.2)
    widen = 0.2 * math.sqrt(1 + 1 / 50)
    assert math.log(t.good_max) == pytest.approx(1 + 1.6448536 * widen)
    assert math.log(t.defective_min) == pytest.approx(1 + 2.5758293 * widen)


def test_a_single_score_still_calibrates():
    t = _cal([3.0], rule="augmented-single")
    assert t.n_scores == 1 and 3.0 < t.good_max < t.defective_min


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError):
        _cal([])
    with pytest.raises(ValueError):
        _cal([1.0, float("nan")])
    with pytest.raises(ValueError):
        _cal([0.0, 1.0])


def test_thresholds_round_trip_as_a_dict():
    t = _cal([1.0, 2.0])
    assert Thresholds.from_dict(t.to_dict()) == t
