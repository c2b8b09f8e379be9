"""Shared by the classification command lines: logging and threads, common arguments, the table, the JSON."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from detection.config import DetectorConfig
from detection.detector import Detector


def start_run(threads: int | None, quiet: tuple[str, ...] = ()) -> None:
    """Logging for a command-line run (the per-image loggers silenced) and the torch CPU thread count."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("detection.detector", "classification.prototype", *quiet):
        logging.getLogger(name).setLevel(logging.WARNING)
    if threads:
        torch.set_num_threads(threads)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA, the episodes (--shots, --seeds), the image size, --json and the seeded normal bank."""
    parser.add_argument("data", type=Path)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--bank-size", type=int, default=8, help="train/good images in the normal memory bank")
    parser.add_argument("--bank-seed", type=int, default=0)


def run_header(args: argparse.Namespace, method: str, detector: Detector, device: str) -> dict:
    """The descriptive keys of a dataset run that format_table prints (from add_dataset_arguments' arguments)."""
    return {
        "dataset": args.data.name,
        "method": method,
        "size": args.size,
        "seeds": args.seeds,
        "bank_size": args.bank_size,
        "bank_seed": args.bank_seed,
        "detector_method": detector.config.method,
        "device": device,
    }


def format_table(result: dict) -> str:
    """The evaluators' printed table: accuracy, macro-F1, per-type and open-set rows, confusion, timing."""
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


def write_json(path: Path | None, result: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
