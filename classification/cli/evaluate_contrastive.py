"""Few-shot defect-type classification with the contrastive residual encoder (MVTec AD layout).

    python -m classification.cli.evaluate_contrastive DATA --shots 1 2 3 5 --seeds 5 --json OUT [--no-pretrain]
        [--textures DIR]

Same protocol as classification.cli.evaluate: the detector is fitted once on `--bank-size` seeded train/good
images, residual samples of every defect test image are computed once, and each shots/seed episode labels
`shots` images per type, the rest are queries (classification.episodes: `evaluate_contrastive`).

Pre-training (unless --no-pretrain): once per run, on synthetic defects made from the same bank images (the
product's support set), residuals against the same memory bank; textures from --textures (a folder of class
folders, e.g. dtd_small/train) or procedural ones. It never sees a test image. Per episode: a copy of the
(pre-trained or, with --no-pretrain, freshly initialised with torch seed = episode seed) encoder is fine-tuned on
the labelled examples (skipped at 1 shot), prototypes from its embeddings, every query predicted.

Timing: pretrain_s (synthetic pool + training, end to end), finetune_s (mean per episode, fine-tuning + prototype
fit), predict_ms (per query: encoder embedding + prototype comparison, beyond the detector's own work).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from classification.cli.common import add_dataset_arguments, format_table, run_header, start_run, write_json
from classification.contrastive import FinetuneConfig, PretrainConfig, pretrain
from classification.dataset import bank_images, residual_samples
from classification.encoder import EncoderConfig, ResidualEncoder
from classification.episodes import evaluate_contrastive
from classification.prototype import PrototypeConfig
from detection.config import DetectorConfig
from detection.detector import Detector
from detection.images import load_rgb
from detection.synthetic import SyntheticDefectGenerator, TextureBank
from detection.weights import add_weights_argument


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Contrastive few-shot defect-type classification (MVTec AD layout).")
    add_dataset_arguments(parser)
    parser.add_argument("--no-pretrain", action="store_true", help="fine-tune a freshly initialised encoder only")
    parser.add_argument("--textures", type=Path, help="texture class folders (default: procedural textures)")
    pre, fin = PretrainConfig(), FinetuneConfig()
    parser.add_argument("--pretrain-steps", type=int, default=pre.steps)
    parser.add_argument("--pool-classes", type=int, default=pre.pool_classes)
    parser.add_argument("--pool-per-class", type=int, default=pre.pool_per_class)
    parser.add_argument("--finetune-steps", type=int, default=fin.steps)
    parser.add_argument("--center", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_weights_argument(parser)
    return parser.parse_args(argv)


def pretrain_on_bank(
    encoder: ResidualEncoder, detector: Detector, args: argparse.Namespace, config: PretrainConfig
) -> tuple[dict, float]:
    """Pre-train `encoder` on synthetic defects of the bank images: (pretrain's info, seconds end to end)."""
    t0 = time.perf_counter()
    bank = bank_images(args.data, args.bank_size, args.bank_seed)
    fitted = detector.fit(bank)  # the same images and config as the residual samples' bank
    support = [cv2.resize(load_rgb(p), (args.size, args.size), interpolation=cv2.INTER_AREA) for p in bank]
    textures = TextureBank(args.textures) if args.textures else TextureBank()
    generator = SyntheticDefectGenerator(support, textures, rng_seed=args.pretrain_seed)
    info = pretrain(encoder, generator, detector, fitted, config, rng=np.random.default_rng(args.pretrain_seed))
    return info, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start_run(args.threads)
    enc_config = EncoderConfig()
    pre_config = replace(
        PretrainConfig(), steps=args.pretrain_steps, pool_classes=args.pool_classes, pool_per_class=args.pool_per_class
    )
    fin_config = replace(FinetuneConfig(), steps=args.finetune_steps)
    detector = Detector(replace(DetectorConfig(), image_size=args.size), weights=args.weights)
    samples, labels, det_timing = residual_samples(
        args.data, detector, bank_size=args.bank_size, bank_seed=args.bank_seed, keep_features=False
    )
    torch.manual_seed(args.pretrain_seed)
    encoder = ResidualEncoder(enc_config)
    pretrain_info, pretrain_s = {}, 0.0
    if not args.no_pretrain:
        pretrain_info, pretrain_s = pretrain_on_bank(encoder, detector, args, pre_config)

    method = "contrastive" + ("" if not args.no_pretrain else " (no pretrain)")
    result = run_header(args, method, detector, "cpu")
    result["textures"] = str(args.textures) if args.textures else "procedural"
    result["pretrained"] = not args.no_pretrain
    result["classifier_config"] = {
        **{f"enc.{k}": v for k, v in enc_config.to_dict().items()},
        **({f"pre.{k}": v for k, v in asdict(pre_config).items()} if not args.no_pretrain else {}),
        **{f"fin.{k}": v for k, v in asdict(fin_config).items()},
        "center": args.center,
        "threads": torch.get_num_threads(),
    }
    result["pretrain"] = {k: round(v, 3) for k, v in pretrain_info.items()}
    evaluated = evaluate_contrastive(
        samples,
        labels,
        encoder,
        pretrained=not args.no_pretrain,
        finetune_config=fin_config,
        prototype_config=PrototypeConfig(center=args.center, temperature=enc_config.temperature),
        shots=args.shots,
        seeds=args.seeds,
    )
    evaluated["timing"]["pretrain_s"] = round(pretrain_s, 1)
    evaluated["timing"].update(det_timing)
    result.update(evaluated)
    print(format_table(result))
    print(f"pretrain details: {result['pretrain']}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
