"""Thresholds from good parts only: a "good" ceiling and a "defective" floor, three verdicts.

Normal image scores come from leave-one-out over the support set (each support image scored against a
model of the other k-1), plus any extra good images (scored against the full model). They are modelled
as log-normal (scores are positive and vary by ratios) with robust estimates, median and MAD of the log
scores, so one unusual support image does not move the thresholds much. With z the standard normal
quantile and the factor sqrt(1 + 1/n) for the uncertainty of the location:

    good_max      = exp(m + z(1 - review_rate)       * s * sqrt(1 + 1/n))
    defective_min = exp(m + z(1 - false_reject_rate) * s * sqrt(1 + 1/n))

so under the model a good part exceeds good_max (review or defective) with probability review_rate and is
rejected as defective with probability false_reject_rate (the target false-reject rate).
s is floored (min_log_spread): two to eight scores cannot measure a spread reliably. Student-t bounds
would be the textbook answer for small n but explode at n = 2..3 (t_1(0.995) = 63.7).

Known bias: leave-one-out scores come from k-1 support images and are higher than what the k-image
model gives good parts, most at small k; the thresholds err on the conservative side (more reviews,
fewer false rejects). k = 1 has no leave-one-out: the rule is "augmented-single" (see Detector.fit), whose
jittered copies of the one image show pose/lighting variation but not part-to-part variation, so its
spread floor is wider (single_image_log_spread).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

GOOD, REVIEW, DEFECTIVE = "good", "review", "defective"
_MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its standard deviation


@dataclass(frozen=True)
class Thresholds:
    good_max: float
    defective_min: float
    rule: str  # how the normal scores were obtained: "leave-one-out" or "augmented-single"
    n_scores: int
    log_median: float
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
    median = statistics.median(logs)
    mad = statistics.median(abs(v - median) for v in logs)
    spread = max(_MAD_TO_SD * mad, min_log_spread)
    widen = spread * math.sqrt(1 + 1 / n)
    z = statistics.NormalDist().inv_cdf

    return Thresholds(
        good_max=math.exp(median + z(1 - review_rate) * widen),
        defective_min=math.exp(median + z(1 - false_reject_rate) * widen),
        rule=rule,
        n_scores=n,
        log_median=median,
        log_spread=spread,
    )
