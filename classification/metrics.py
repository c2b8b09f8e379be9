"""Figures of few-shot defect-type classification: confusion matrix, macro-F1, one episode's and one shot count's."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_types: int) -> np.ndarray:
    """(K, K) counts: row = true type, column = predicted type."""
    m = np.zeros((n_types, n_types), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[t, p] += 1
    return m


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean of per-type F1 (a type never predicted nor present counts 0), in percent."""
    tp = np.diag(confusion).astype(float)
    precision_den = confusion.sum(0)
    recall_den = confusion.sum(1)
    f1 = np.where(precision_den + recall_den > 0, 2 * tp / np.maximum(precision_den + recall_den, 1), 0.0)
    return 100.0 * float(f1.mean())


def seed_result(cm: np.ndarray, n_queries: int, types: Sequence[str], threshold_rule: str, open_set: dict) -> dict:
    """One episode's figures from its confusion matrix (rows: true type)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_type = 100.0 * np.diag(cm) / cm.sum(1)
    return {
        "accuracy": 100.0 * float(np.trace(cm)) / n_queries,
        "macro_f1": macro_f1(cm),
        "per_type": dict(zip(types, per_type.tolist(), strict=True)),
        "threshold_rule": threshold_rule,
        **open_set,
    }


def shots_row(shots: int, per_seed: list[dict], types: Sequence[str], confusion: np.ndarray) -> dict:
    """Means and sample std over seeds for one shot count, per-type accuracy, the summed confusion matrix."""
    row: dict = {"shots": shots}
    for metric in ("accuracy", "macro_f1", "unknown_rejected", "known_rejected"):
        values = [r[metric] for r in per_seed if metric in r]
        if values:
            row[metric] = round(statistics.fmean(values), 2)
            row[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
    row["per_type_accuracy"] = {
        name: round(statistics.fmean(r["per_type"][name] for r in per_seed), 2) for name in types
    }
    row["per_seed_accuracy"] = [round(r["accuracy"], 2) for r in per_seed]
    row["confusion"] = confusion.tolist()
    row["threshold_rule"] = sorted({r["threshold_rule"] for r in per_seed})
    return row
