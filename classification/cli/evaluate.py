"""Few-shot defect-type classification on a dataset in MVTec AD layout.

    python -m classification.cli.evaluate DATA --shots 1 2 3 5 --seeds 5 --json OUT --method prototype

Normal memory bank: the detector is fitted ONCE on `--bank-size` (8) train/good images drawn with
`--bank-seed` (0). Residual samples of every defect test image are computed once against it and reused by
every shots/seed episode: what varies between seeds is which images are labelled, the quantity under test;
refitting the bank per seed would only add the detector's own (small) variance and multiply the expensive
part (backbone + nearest-neighbour search) by the number of seeds.

Defect types = test/ folders except good. For each shots n and seed: n labelled examples per type drawn with
that seed (`episode_split`), every other defect image is a query. Reported: closed-set accuracy (argmax type;
percent; mean and sample std over seeds), macro-F1, per-type accuracy, the confusion matrix summed over seeds,
and an open-set check (each type in turn held out of the labelled set: how many of its images are rejected as
"unknown type", and how many known-type queries are rejected too). Timing: pretrain_s (0: nothing is trained),
finetune_s (fitting the classifier on the labelled examples, mean), predict_ms (per query, pooling + prototype
comparison, beyond the detector's own work), and the detector's residual cost for context.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from classification.prototype import PrototypeClassifier, PrototypeConfig
from classification.residuals import SOURCES, WEIGHTINGS, ResidualSample
from detection.config import METHODS as DETECTOR_METHODS
from detection.config import DetectorConfig
from detection.dataset import test_samples, train_images
from detection.detector import Detector
from detection.weights import add_weights_argument

log = logging.getLogger(__name__)

METHODS = ("prototype",)  # the contrastive encoder is not implemented yet: not offered
PREDICT_CHUNK = 8  # images per detector.predict call: bounds the memory of features + residuals in flight


# ------------------------------------------------------------------------------------------- pure functions


def episode_split(labels: Sequence[str], shots: int, seed: int) -> tuple[dict[str, list[int]], list[int]]:
    """Labelled examples and queries for one episode.

    labels: the defect type of each image. Returns ({type: indices of its `shots` labelled examples}, sorted
    indices of every other image, the queries). Each type's examples are drawn without replacement from that
    type's own images with np.random.default_rng(seed), types in sorted order, so a split is reproducible.
    A type needs more than `shots` images, else it would have no query.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(seed)
    support: dict[str, list[int]] = {}
    for name in sorted(set(labels)):
        idx = [i for i, label in enumerate(labels) if label == name]
        if len(idx) <= shots:
            raise ValueError(f"type {name!r} has {len(idx)} images: {shots} shots would leave it no query")
        support[name] = sorted(int(i) for i in rng.choice(idx, size=shots, replace=False))
    chosen = {i for idx in support.values() for i in idx}
    return support, [i for i in range(len(labels)) if i not in chosen]


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


# ------------------------------------------------------------------------------------------------ residuals


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


def residual_samples(
    data: Path, detector: Detector, *, bank_size: int, bank_seed: int, keep_features: bool
) -> tuple[list[ResidualSample], list[str], dict[str, float]]:
    """Fit the detector on seeded train/good images; residual samples of every defect test image, once."""
    train = train_images(data)
    if bank_size > len(train):
        raise ValueError(f"bank of {bank_size} images requested but train/good has {len(train)}")
    bank = [train[i] for i in sorted(np.random.default_rng(bank_seed).choice(len(train), bank_size, replace=False))]
    defects = [s for s in test_samples(data) if s.is_anomalous]
    if not defects:
        raise ValueError(f"{data}: no defect images under test/ (only good)")
    t0 = time.perf_counter()
    fitted = detector.fit(bank)
    t1 = time.perf_counter()
    samples: list[ResidualSample] = []
    for start in range(0, len(defects), PREDICT_CHUNK):
        chunk = [s.path for s in defects[start : start + PREDICT_CHUNK]]
        for pred in detector.predict(fitted, chunk, return_features=True):
            samples.append(ResidualSample.from_prediction(pred, keep_features=keep_features))
    t2 = time.perf_counter()
    timing = {"bank_fit_s": round(t1 - t0, 2), "residual_ms": round((t2 - t1) / len(defects) * 1e3, 1)}
    return samples, [s.defect_type for s in defects], timing


# ------------------------------------------------------------------------------------------------- evaluate


CENTRES = ("pool", "labelled")
POOL_FOLDS = 2


def query_folds(queries: Sequence[int], centre: str, seed: int) -> list[tuple[list[int], list[int]]]:
    """[(queries of the fold, unlabelled pool for its centre)] for one episode.

    centre="pool": the queries are split in POOL_FOLDS seeded folds; a fold's pool is every query outside it
    (cross-fitting: no query is ever in the pool its own centre comes from). The pool stands in for the
    product's other flagged images; their labels are never read. centre="labelled": one fold, no pool.
    """
    if centre == "labelled":
        return [(list(queries), [])]
    if centre != "pool":
        raise ValueError(f"centre must be one of {CENTRES}, got {centre!r}")
    order = np.random.default_rng([seed, 1]).permutation(len(queries))
    folds = [sorted(int(queries[i]) for i in order[f::POOL_FOLDS]) for f in range(POOL_FOLDS)]
    return [(fold, [q for q in queries if q not in set(fold)]) for fold in folds]


def evaluate_prototype(
    samples: Sequence[ResidualSample],
    labels: Sequence[str],
    config: PrototypeConfig,
    shots: list[int],
    seeds: int,
    *,
    centre: str = "pool",
) -> dict:
    """Every shots/seed episode on precomputed residual samples; figures as in the module docstring."""
    types = sorted(set(labels))
    k_types = len(types)
    type_index = {t: k for k, t in enumerate(types)}
    y = [type_index[label] for label in labels]
    clf = PrototypeClassifier(config)
    t = time.perf_counter()
    embeddings = clf.embed(samples)  # (N, D): independent of the split, computed once
    embed_ms = (time.perf_counter() - t) / len(samples) * 1e3

    rows, fit_s, predict_ms = [], [], []
    for n in shots:
        per_seed: list[dict] = []
        total = np.zeros((k_types, k_types), dtype=np.int64)
        for seed in range(seeds):
            support, queries = episode_split(labels, n, seed)
            folds = query_folds(queries, centre, seed)
            y_true, y_pred = [], []
            for fold, pool in folds:
                t = time.perf_counter()
                # the labelled examples' pooling counted as fine-tuning work: it is done when a user labels them
                clf.fit_embeddings(
                    {name: clf.embed([samples[i] for i in idx]) for name, idx in support.items()},
                    unlabelled=embeddings[pool] if pool else None,
                )
                fit_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                preds = clf.predict_many([samples[i] for i in fold])
                predict_ms.append((time.perf_counter() - t) / len(fold) * 1e3)
                y_true += [y[i] for i in fold]
                y_pred += [type_index[p.best] for p in preds]
            cm = confusion_matrix(y_true, y_pred, k_types)
            total += cm
            open_set = open_set_check(clf, embeddings, y, support, folds, types) if k_types >= 2 else {}
            per_seed.append(seed_result(cm, len(queries), types, clf.threshold_rule, open_set))
            log.info("shots=%d seed=%d accuracy %.1f%%", n, seed, per_seed[-1]["accuracy"])
        rows.append(shots_row(n, per_seed, types, total))
    return {
        "types": types,
        "n_images": len(samples),
        "images_per_type": {name: labels.count(name) for name in types},
        "centre": centre,
        "results": rows,
        "timing": {
            "pretrain_s": 0.0,
            "finetune_s": round(statistics.fmean(fit_s), 4),
            "predict_ms": round(statistics.fmean(predict_ms), 2),
            "embed_ms": round(embed_ms, 2),
        },
    }


def open_set_check(
    clf: PrototypeClassifier,
    embeddings: torch.Tensor,
    y: list[int],
    support: dict[str, list[int]],
    folds: list[tuple[list[int], list[int]]],
    types: list[str],
) -> dict[str, float]:
    """Hold each type out of the labelled set in turn: rejection rates of its images and of known queries.

    Its images among the queries are the "new kind of defect"; the known queries are the other types'. Each
    fold is scored with the centre of its own pool (`query_folds`). Refits `clf`; the caller has already used it
    for this episode's closed-set predictions.
    """
    unknown, known = [], []
    for held, name in enumerate(types):
        rejected_unknown = rejected_known = n_unknown = n_known = 0
        for fold, pool in folds:
            clf.fit_embeddings(
                {t: embeddings[idx] for t, idx in support.items() if t != name},
                unlabelled=embeddings[pool] if pool else None,
            )
            rejected = (clf.similarities(embeddings[fold]).max(1).values < clf.threshold).tolist()
            for i, r in zip(fold, rejected, strict=True):
                if y[i] == held:
                    n_unknown, rejected_unknown = n_unknown + 1, rejected_unknown + r
                else:
                    n_known, rejected_known = n_known + 1, rejected_known + r
        unknown.append(rejected_unknown / max(n_unknown, 1))
        known.append(rejected_known / max(n_known, 1))
    return {"unknown_rejected": 100.0 * statistics.fmean(unknown), "known_rejected": 100.0 * statistics.fmean(known)}


# ---------------------------------------------------------------------------------------------------- print


def format_table(result: dict) -> str:
    types = result["types"]
    cfg = result["classifier_config"]
    lines = [
        f"{result['method']} on {result['dataset']} (S={result['size']}, {result['seeds']} seeds, "
        f"{result['n_images']} defect images, bank {result['bank_size']} good images, detector "
        f"{result['detector_method']})",
        "classifier: " + ", ".join(f"{k}={v}" for k, v in cfg.items()) + f"; centre from {result.get('centre')}",
        f"{'shots':>5}  {'accuracy %':>14}  {'macro-F1 %':>14}  "
        + "  ".join(f"{t[:14]:>14}" for t in types)
        + f"  {'unknown rej. %':>14}  {'known rej. %':>12}",
    ]
    for r in result["results"]:
        acc = f"{r['accuracy']:>6.1f} ±{r['accuracy_std'] or 0:>5.1f}"
        f1 = f"{r['macro_f1']:>6.1f} ±{r['macro_f1_std'] or 0:>5.1f}"
        per_type = "  ".join(f"{r['per_type_accuracy'][t]:>14.1f}" for t in types)
        unk = f"{r.get('unknown_rejected', float('nan')):>14.1f}"
        kno = f"{r.get('known_rejected', float('nan')):>12.1f}"
        lines.append(f"{r['shots']:>5}  {acc:>14}  {f1:>14}  {per_type}  {unk}  {kno}")
    width = max(len(t) for t in types)
    for r in result["results"]:
        lines.append(f"confusion at {r['shots']} shots (rows true, columns predicted; summed over seeds)")
        lines.append(" " * (width + 2) + "  ".join(f"{t[:10]:>10}" for t in types))
        for t, row in zip(types, r["confusion"], strict=True):
            lines.append(f"{t:>{width}}  " + "  ".join(f"{v:>10d}" for v in row))
    tm = result["timing"]
    lines.append(
        f"timing: pretrain {tm['pretrain_s']:.1f} s, fit (finetune) {tm['finetune_s'] * 1e3:.1f} ms mean, "
        f"predict {tm['predict_ms']:.2f} ms/image beyond the detector; detector: bank fit {tm['bank_fit_s']:.1f} s, "
        f"residuals {tm['residual_ms']:.0f} ms/image on {result['device']}"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- shared by the evaluator CLIs


def start_run(threads: int | None, quiet: tuple[str, ...] = ()) -> None:
    """Logging for a command-line run (the per-image loggers silenced) and the torch CPU thread count."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("detection.detector", "classification.prototype", *quiet):
        logging.getLogger(name).setLevel(logging.WARNING)
    if threads:
        torch.set_num_threads(threads)


def write_json(path: Path | None, result: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Few-shot defect-type classification evaluation (MVTec AD layout).")
    parser.add_argument("data", type=Path)
    parser.add_argument("--method", choices=METHODS, default="prototype")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--bank-size", type=int, default=8, help="train/good images in the normal memory bank")
    parser.add_argument("--bank-seed", type=int, default=0)
    parser.add_argument("--detector-method", choices=DETECTOR_METHODS, default=DetectorConfig.method)
    defaults = PrototypeConfig()
    parser.add_argument("--source", choices=SOURCES, default=defaults.source, help="pool residuals or raw features")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default=defaults.weighting)
    parser.add_argument("--weight-temperature", type=float, default=defaults.weight_temperature)
    parser.add_argument("--top-fraction", type=float, default=defaults.top_fraction)
    parser.add_argument("--rectify", action=argparse.BooleanOptionalAction, default=defaults.rectify)
    parser.add_argument("--center", action=argparse.BooleanOptionalAction, default=defaults.center)
    parser.add_argument(
        "--centre",
        choices=CENTRES,
        default="pool",
        help="centre from the unlabelled flagged images (cross-fitted, the product's way) or the labelled only",
    )
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="confidence softmax")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    start_run(args.threads)
    config = PrototypeConfig(
        source=args.source,
        weighting=args.weighting,
        weight_temperature=args.weight_temperature,
        top_fraction=args.top_fraction,
        rectify=args.rectify,
        center=args.center,
        temperature=args.temperature,
    )
    det_config = replace(DetectorConfig(), method=args.detector_method, image_size=args.size)
    detector = Detector(det_config, weights=args.weights)
    samples, labels, det_timing = residual_samples(
        args.data, detector, bank_size=args.bank_size, bank_seed=args.bank_seed, keep_features=args.source == "features"
    )
    result = {
        "dataset": args.data.name,
        "method": args.method,
        "size": args.size,
        "seeds": args.seeds,
        "bank_size": args.bank_size,
        "bank_seed": args.bank_seed,
        "detector_method": args.detector_method,
        "device": str(detector.device),
        "classifier_config": config.to_dict(),
    }
    evaluated = evaluate_prototype(samples, labels, config, args.shots, args.seeds, centre=args.centre)
    evaluated["timing"].update(det_timing)
    result.update(evaluated)
    print(format_table(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
