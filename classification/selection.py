"""Which defect-type method a product uses, for the number of confirmed examples it has.

The issue's rule: use whichever method the evaluation shows is better for the number of examples available.
`MEASURED` is that evaluation's record: closed-set accuracy (percent, mean over 5 seeds) on mvtec_bottle, the
only multi-type dataset we have, at 1/2/3/5 labelled examples per type, S = 256, FastRecon residuals:

    python -m classification.cli.evaluate ../shared/datasets/mvtec_bottle --shots 1 2 3 5 --seeds 5
    python -m classification.cli.evaluate_contrastive ../shared/datasets/mvtec_bottle --shots 1 2 3 5 --seeds 5 \
        [--no-pretrain] [--textures ../shared/datasets/dtd_small/...]

The contrastive rows are its best variant (no pre-training; synthetic pre-training measured lower, see the
classifier issue's note). Re-run both and update the record when either method changes: the choice follows it.
"""

from __future__ import annotations

from typing import NamedTuple

MEASURED: dict[str, dict[int, float]] = {
    "prototype": {1: 69.7, 2: 76.8, 3: 83.3, 5: 82.9},
    "contrastive": {1: 51.7, 2: 58.2, 3: 71.8, 5: 68.8},
}
METHODS = tuple(MEASURED)


class Choice(NamedTuple):
    method: str
    reason: str


def _nearest_measured(examples: int) -> int:
    """The largest measured shot count <= examples (the smallest one below every measurement)."""
    counts = sorted(MEASURED["prototype"])
    below = [n for n in counts if n <= examples]
    return below[-1] if below else counts[0]


def choose_method(examples_per_type: int) -> Choice:
    """The method for a product whose rarest type has `examples_per_type` confirmed examples, and why."""
    if examples_per_type < 1:
        raise ValueError(f"examples_per_type must be >= 1, got {examples_per_type}")
    n = _nearest_measured(examples_per_type)
    scores = {method: table[n] for method, table in MEASURED.items()}
    best = max(scores, key=lambda m: scores[m])
    others = ", ".join(f"{m} {v:.1f} %" for m, v in scores.items() if m != best)
    return Choice(best, f"{best}: {scores[best]:.1f} % at {n} examples per type on mvtec_bottle (vs {others})")
