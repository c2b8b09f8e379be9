"""Few-shot evaluation on a dataset in MVTec AD layout.

    python -m detection.cli.evaluate DATA --method fastrecon --shots 1 2 4 8 --seeds 3 --json OUT

For each shots k and seed: k support images drawn (seeded) from train/good, every test image scored.
Image AUROC / F1-max from image scores; pixel AUROC / F1-max from anomaly maps at S x S against masks
resized to S x S (images without a mask count as all-normal pixels). Figures in percent, means over seeds.
Test-image features are computed once and reused across shots and seeds (they do not depend on them).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from detection.backbone import PatchFeatures
from detection.cli.common import (
    add_method_argument,
    add_set_argument,
    apply_overrides,
    choose_support,
    sync,
    write_json,
)
from detection.config import DetectorConfig
from detection.dataset import load_mask, test_samples, train_images
from detection.detector import Detector, FittedSupport
from detection.metrics import auroc, f1_max
from detection.postprocess import anomaly_maps
from detection.weights import add_weights_argument

log = logging.getLogger(__name__)
SCORE_CHUNK = 16


class TestSet(NamedTuple):
    labels: np.ndarray  # (N,) bool: defective
    masks: np.ndarray  # (N, S, S)
    batch: torch.Tensor  # (N, 3, S, S)
    features: PatchFeatures
    decode_ms: float  # per image
    backbone_ms: float  # per image


def load_test_set(data: Path, detector: Detector) -> TestSet:
    samples = test_samples(data)
    masks = np.stack([load_mask(s, detector.config.image_size) for s in samples])  # (N, S, S)
    t0 = time.perf_counter()
    batch, _ = detector.load_images([s.path for s in samples])
    t1 = time.perf_counter()
    feats = detector.features(batch)
    sync(detector.device)
    t2 = time.perf_counter()
    n = len(samples)
    labels = np.array([s.is_anomalous for s in samples])
    return TestSet(labels, masks, batch, feats, (t1 - t0) / n * 1e3, (t2 - t1) / n * 1e3)


def score_test_set(detector: Detector, fitted: FittedSupport, test: TestSet) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and anomaly maps (N, S, S) of every test image."""
    cfg = detector.config
    patch, maps = [], []
    for start in range(0, len(test.labels), SCORE_CHUNK):  # bounded memory: PatchCore expands (n*R, D)
        chunk = PatchFeatures(*(t[start : start + SCORE_CHUNK] for t in test.features))
        p = detector.patch_scores(fitted, chunk, test.batch[start : start + SCORE_CHUNK])  # (n, h, w)
        patch.append(p.cpu())
        maps.append(anomaly_maps(p, cfg.image_size, cfg.gaussian_sigma).cpu())
    return torch.cat(patch).flatten(1).amax(1).numpy(), torch.cat(maps).numpy()


def episode_metrics(test: TestSet, fitted: FittedSupport, img_scores: np.ndarray, pix: np.ndarray) -> dict:
    labels, masks = test.labels, test.masks
    has_pixels = bool(masks.any())
    good = ~labels
    return {
        "image_auroc": 100 * auroc(labels, img_scores),
        "pixel_auroc": 100 * auroc(masks, pix) if has_pixels else None,
        "image_f1_max": 100 * f1_max(labels, img_scores),
        "pixel_f1_max": 100 * f1_max(masks, pix) if has_pixels else None,
        # thresholds come from good support images only: how they behave on the test set
        "good_flagged_pct": 100 * float(np.mean(img_scores[good] > fitted.thresholds.good_max)),
        "good_rejected_pct": 100 * float(np.mean(img_scores[good] >= fitted.thresholds.defective_min)),
        "defect_caught_pct": 100 * float(np.mean(img_scores[labels] > fitted.thresholds.good_max)),
    }


def mean_row(shots: int, per_seed: list[dict]) -> dict[str, float | int | None]:
    """Mean and sample std over seeds of each metric (None where no seed has it)."""
    row: dict[str, float | int | None] = {"shots": shots}
    for metric in per_seed[0]:
        values = [r[metric] for r in per_seed if r[metric] is not None]
        row[metric] = round(statistics.fmean(values), 2) if values else None
        row[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
    return row


def evaluate(data: Path, detector: Detector, shots: list[int], seeds: int) -> dict:
    cfg = detector.config
    train = train_images(data)
    test = load_test_set(data, detector)
    if not test.masks.any():
        log.warning("%s: no mask has a defect pixel; pixel metrics are reported as null", data)
    rows, fit_times, score_ms = [], [], []
    for k in shots:
        per_seed = []
        for seed in range(seeds):
            support = [train[i] for i in choose_support(len(train), k, seed)]
            t = time.perf_counter()
            fitted = detector.fit(support)
            fit_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            img_scores, pix = score_test_set(detector, fitted, test)
            sync(detector.device)
            score_ms.append((time.perf_counter() - t) / len(test.labels) * 1e3)
            per_seed.append(episode_metrics(test, fitted, img_scores, pix))
            # cost at this number of shots: the fit, and one query image end to end
            per_seed[-1] |= {"fit_s": fit_times[-1], "query_ms": test.decode_ms + test.backbone_ms + score_ms[-1]}
            shown = {m: v if v is None else round(v, 2) for m, v in per_seed[-1].items()}
            log.info("shots=%d seed=%d %s", k, seed, shown)
        rows.append(mean_row(k, per_seed))
    return {
        "method": cfg.method,
        "dataset": data.name,
        "size": cfg.image_size,
        "seeds": seeds,
        "n_test": len(test.labels),
        "pixel_masks": bool(test.masks.any()),
        "config": cfg.to_dict(),
        "device": str(detector.device),
        "results": rows,
        "timing": {
            "fit_s": round(statistics.fmean(fit_times), 3),
            "query_ms": round(test.decode_ms + test.backbone_ms + statistics.fmean(score_ms), 1),
            "decode_ms": round(test.decode_ms, 1),
            "backbone_ms": round(test.backbone_ms, 1),
            "score_ms": round(statistics.fmean(score_ms), 1),
        },
    }


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return f"{'n/a':>17}"
    return f"{mean:>10.2f} ±{std:>5.2f}" if std is not None else f"{mean:>10.2f}       "


def format_table(result: dict) -> str:
    head = (
        f"{result['method']} on {result['dataset']} "
        f"(S={result['size']}, {result['seeds']} seeds, {result['n_test']} test images)"
    )
    cols = [
        "shots",
        "image_auroc",
        "pixel_auroc",
        "image_f1_max",
        "pixel_f1_max",
        "good_flagged_pct",
        "good_rejected_pct",
        "defect_caught_pct",
    ]
    lines = [head, "  ".join(f"{c:>17}" for c in cols)]
    for r in result["results"]:
        cells = [f"{r['shots']:>17}"] + [_cell(r[c], r[c + "_std"]) for c in cols[1:]]
        lines.append("  ".join(cells))
    t = result["timing"]
    lines.append(
        f"fit {t['fit_s']:.2f} s mean; query {t['query_ms']:.1f} ms/image (decode {t['decode_ms']:.1f}, "
        f"backbone {t['backbone_ms']:.1f}, scoring+map {t['score_ms']:.1f}) on {result['device']}"
    )
    return "\n".join(lines)


# Shortcut flags -> the config field they set (flat format-1 keys set FastRecon's fields whichever method runs,
# as they always did; bank_ratio is the running method's).
SHORTCUTS = {
    "lam": "fastrecon_lambda",
    "ratio": "fastrecon_coreset_ratio",
    "max_coreset_fraction": "fastrecon_max_coreset_fraction",
    "bank_ratio": "bank_ratio",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Few-shot anomaly detection evaluation (MVTec AD layout).")
    parser.add_argument("data", type=Path)
    add_method_argument(parser)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--lam", type=float, help="FastRecon lambda (default: its config's)")
    parser.add_argument("--ratio", type=float, help="FastRecon coreset ratio (default: its config's)")
    parser.add_argument("--bank-ratio", type=float, help="memory-bank coreset ratio (default: the method's config's)")
    parser.add_argument("--max-coreset-fraction", type=float, help="FastRecon cap on c / D (default: its config's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_set_argument(parser)
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("detection.detector").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    shortcuts = [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None]
    config = replace(DetectorConfig(), method=args.method, image_size=args.size)
    config = apply_overrides(config, shortcuts + args.overrides)
    detector = Detector(config, weights=args.weights)
    result = evaluate(args.data, detector, args.shots, args.seeds)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
