"""Few-shot evaluation on a dataset in MVTec AD layout.

    python -m detection.evaluate DATA --method fastrecon --shots 1 2 4 8 --seeds 3 --json OUT

For each shots k and seed: k support images drawn (seeded) from train/good, every test image scored.
Image AUROC / F1-max from image scores; pixel AUROC / F1-max from anomaly maps at S x S against masks
resized to S x S (images without a mask count as all-normal pixels). Figures in percent, means over seeds.
Test-image features are computed once and reused across shots and seeds (they do not depend on them).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from detection.backbone import PatchFeatures
from detection.config import METHODS, DetectorConfig
from detection.dataset import load_mask, test_samples, train_images
from detection.detector import Detector
from detection.metrics import auroc, f1_max
from detection.postprocess import anomaly_maps
from detection.weights import add_weights_argument

log = logging.getLogger(__name__)
SCORE_CHUNK = 16


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_support(n_train: int, shots: int, seed: int) -> list[int]:
    if shots > n_train:
        raise ValueError(f"{shots} shots requested but train/good has only {n_train} images")
    return sorted(np.random.default_rng(seed).choice(n_train, size=shots, replace=False).tolist())


def evaluate(data: Path, detector: Detector, shots: list[int], seeds: int) -> dict:
    cfg = detector.config
    train = train_images(data)
    samples = test_samples(data)
    labels = np.array([s.is_anomalous for s in samples])
    masks = np.stack([load_mask(s, cfg.image_size) for s in samples])  # (N, S, S)
    has_pixels = bool(masks.any())
    if not has_pixels:
        log.warning("%s: no mask has a defect pixel; pixel metrics are reported as null", data)

    t0 = time.perf_counter()
    batch, _ = detector.load_images([s.path for s in samples])
    t1 = time.perf_counter()
    feats = detector.features(batch)
    sync(detector.device)
    t2 = time.perf_counter()
    decode_ms = (t1 - t0) / len(samples) * 1e3
    backbone_ms = (t2 - t1) / len(samples) * 1e3

    rows, fit_times, score_ms = [], [], []
    for k in shots:
        per_seed = []
        for seed in range(seeds):
            support = [train[i] for i in choose_support(len(train), k, seed)]
            t = time.perf_counter()
            fitted = detector.fit(support)
            fit_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            patch, maps = [], []
            for start in range(0, len(samples), SCORE_CHUNK):  # bounded memory: PatchCore expands (n*R, D)
                chunk = PatchFeatures(*(t[start : start + SCORE_CHUNK] for t in feats))
                p = detector.patch_scores(fitted, chunk, batch[start : start + SCORE_CHUNK])  # (n, h, w)
                patch.append(p.cpu())
                maps.append(anomaly_maps(p, cfg.image_size, cfg.gaussian_sigma).cpu())
            sync(detector.device)
            score_ms.append((time.perf_counter() - t) / len(samples) * 1e3)
            img_scores = torch.cat(patch).flatten(1).amax(1).numpy()
            pix = torch.cat(maps).numpy()
            good = ~labels
            per_seed.append(
                {
                    "image_auroc": 100 * auroc(labels, img_scores),
                    "pixel_auroc": 100 * auroc(masks, pix) if has_pixels else None,
                    "image_f1_max": 100 * f1_max(labels, img_scores),
                    "pixel_f1_max": 100 * f1_max(masks, pix) if has_pixels else None,
                    # thresholds come from good support images only: how they behave on the test set
                    "good_flagged_pct": 100 * float(np.mean(img_scores[good] > fitted.thresholds.good_max)),
                    "good_rejected_pct": 100 * float(np.mean(img_scores[good] >= fitted.thresholds.defective_min)),
                    "defect_caught_pct": 100 * float(np.mean(img_scores[labels] > fitted.thresholds.good_max)),
                    # cost at this number of shots: the fit, and one query image end to end
                    "fit_s": fit_times[-1],
                    "query_ms": decode_ms + backbone_ms + score_ms[-1],
                }
            )
            shown = {m: v if v is None else round(v, 2) for m, v in per_seed[-1].items()}
            log.info("shots=%d seed=%d %s", k, seed, shown)
        row: dict[str, float | int | None] = {"shots": k}
        for metric in per_seed[0]:
            values = [r[metric] for r in per_seed if r[metric] is not None]
            row[metric] = round(statistics.fmean(values), 2) if values else None
            row[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
        rows.append(row)

    return {
        "method": cfg.method,
        "dataset": data.name,
        "size": cfg.image_size,
        "seeds": seeds,
        "n_test": len(samples),
        "pixel_masks": has_pixels,
        "config": cfg.to_dict(),
        "device": str(detector.device),
        "results": rows,
        "timing": {
            "fit_s": round(statistics.fmean(fit_times), 3),
            "query_ms": round(decode_ms + backbone_ms + statistics.fmean(score_ms), 1),
            "decode_ms": round(decode_ms, 1),
            "backbone_ms": round(backbone_ms, 1),
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


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """--set FIELD=VALUE (repeatable) into args.overrides; parse_overrides turns them into config fields."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="any other DetectorConfig field, e.g. --set dfd_max_steps=800 (repeatable)",
    )


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def parse_overrides(items: list[str]) -> dict[str, int | float | str]:
    """["dfd_window=32", ...] -> {"dfd_window": 32}, each value converted to its DetectorConfig field's type."""
    types = {f.name: type(getattr(DetectorConfig(), f.name)) for f in fields(DetectorConfig)}
    out: dict[str, int | float | str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD a DetectorConfig field")
        try:
            out[name] = types[name](value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a {types[name].__name__}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Few-shot anomaly detection evaluation (MVTec AD layout).")
    parser.add_argument("data", type=Path)
    parser.add_argument("--method", choices=METHODS, default="fastrecon")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--lam", type=float, default=DetectorConfig.fastrecon_lambda, help="FastRecon lambda")
    parser.add_argument(
        "--ratio", type=float, default=DetectorConfig.fastrecon_coreset_ratio, help="FastRecon coreset ratio"
    )
    parser.add_argument(
        "--bank-ratio",
        type=float,
        help="PatchCore / PatchCore+ memory-bank coreset ratio (default: the config's, per method)",
    )
    parser.add_argument("--max-coreset-fraction", type=float, default=DetectorConfig.fastrecon_max_coreset_fraction)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_set_argument(parser)
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("detection.detector").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = replace(
        DetectorConfig(),
        method=args.method,
        image_size=args.size,
        fastrecon_lambda=args.lam,
        fastrecon_coreset_ratio=args.ratio,
        fastrecon_max_coreset_fraction=args.max_coreset_fraction,
    )
    if args.bank_ratio is not None:
        field = "patchcore_plus_coreset_ratio" if args.method == "patchcore_plus" else "patchcore_coreset_ratio"
        config = replace(config, **{field: args.bank_ratio})
    config = replace(config, **parse_overrides(args.overrides))
    detector = Detector(config, weights=args.weights)
    result = evaluate(args.data, detector, args.shots, args.seeds)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
