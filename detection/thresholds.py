"""Thresholds from good parts only: a "good" ceiling and a "defective" floor, three verdicts.

Normal image scores come from leave-one-out over the support set (each support image scored against a
model of the other k-1), plus any extra good images (scored against the full model). They are modelled
as log-normal (scores are positive and vary by ratios): m and s are the mean and standard deviation of the
log scores. With z the standard normal quantile and sqrt(1 + 1/n) for the uncertainty of the mean:

    good_max      = exp(m + z(1 - review_rate)       * s * sqrt(1 + 1/n))
    defective_min = exp(m + z(1 - false_reject_rate) * s * sqrt(1 + 1/n))

so under the model a good part exceeds good_max (review or defective) with probability review_rate and is
rejected as defective with probability false_reject_rate (the target false-reject rate).
The standard deviation, not a robust spread, on purpose: normal scores have a heavy upper tail, and one
high leave-one-out score is evidence of it that the thresholds must keep. s is floored (min_log_spread):
two to eight scores cannot measure a spread reliably. Student-t bounds would be the textbook answer for
small n but explode at n = 2..3 (t_1(0.995) = 63.7).

Leave-one-out scores come from k-1 support images, which score higher than the k-image model does, most
at small k. k = 1 has no leave-one-out: the rule is "augmented-single" (see Detector.fit), whose jittered
copies of the one image show pose/lighting variation but not part-to-part variation, so its spread floor
is wider (single_image_log_spread). Measured rates are in the README; they miss the targets at k <= 8.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

GOOD, REVIEW, DEFECTIVE = "good", "review", "defective"


@dataclass(frozen=True)
class Thresholds:
    good_max: float
    defective_min: float
    rule: str  # how the normal scores were obtained: "leave-one-out" or "augmented-single"
    n_scores: int
    log_mean: float
    log_spread: float

    def verdict(self, score: float) -> str:
        if score <= self.good_max:
            return GOOD
        if score < self.defective_min:
            return REVIEW
        return DEFECTIVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        return cls(**data)


def calibrate(
    normal_scores: list[float], *, review_rate: float, false_reject_rate: float, min_log_spread: float, rule: str
) -> Thresholds:
    n = len(normal_scores)
    if n == 0:
        raise ValueError("need at least one normal score to calibrate thresholds")
    if any(not (math.isfinite(s) and s > 0) for s in normal_scores):
        raise ValueError(f"normal scores must be finite and positive, got {normal_scores}")
    logs = [math.log(s) for s in normal_scores]
    mean = statistics.fmean(logs)
    sd = statistics.stdev(logs) if n > 1 else 0.0
    spread = max(sd, min_log_spread)
    widen = spread * math.sqrt(1 + 1 / n)
    z = statistics.NormalDist().inv_cdf

    return Thresholds(
        good_max=math.exp(mean + z(1 - review_rate) * widen),
        defective_min=math.exp(mean + z(1 - false_reject_rate) * widen),
        rule=rule,
        n_scores=n,
        log_mean=mean,
        log_spread=spread,
    )
