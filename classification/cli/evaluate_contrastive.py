"""Few-shot defect-type classification with the contrastive residual encoder (MVTec AD layout).

    python -m classification.cli.evaluate_contrastive DATA --shots 1 2 3 5 --seeds 5 --json OUT [--no-pretrain]
        [--textures DIR]

Same protocol as classification/evaluate.py (whose functions it reuses): the detector is fitted once on
`--bank-size` seeded train/good images, residual samples of every defect test image are computed once, and each
shots/seed episode labels `shots` images per type (`episode_split`), the rest are queries.

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
import copy
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from classification.classifier import ContrastiveClassifier
from classification.cli.evaluate import (
    confusion_matrix,
    episode_split,
    format_table,
    open_set_check,
    residual_samples,
    seed_result,
    shots_row,
    start_run,
    write_json,
)
from classification.contrastive import FinetuneConfig, PretrainConfig, pretrain
from classification.encoder import EncoderConfig, ResidualEncoder
from classification.prototype import PrototypeConfig
from classification.residuals import ResidualSample
from detection.config import DetectorConfig
from detection.dataset import train_images
from detection.detector import Detector
from detection.images import load_rgb
from detection.synthetic import SyntheticDefectGenerator, TextureBank
from detection.weights import add_weights_argument

log = logging.getLogger(__name__)


def bank_images(data: Path, bank_size: int, bank_seed: int) -> list[Path]:
    """The same seeded train/good selection as classification.evaluate.residual_samples."""
    train = train_images(data)
    return [train[i] for i in sorted(np.random.default_rng(bank_seed).choice(len(train), bank_size, replace=False))]


def evaluate_contrastive(
    samples: Sequence[ResidualSample],
    labels: Sequence[str],
    encoder: ResidualEncoder,
    *,
    pretrained: bool,
    finetune_config: FinetuneConfig,
    prototype_config: PrototypeConfig,
    shots: list[int],
    seeds: int,
) -> dict:
    types = sorted(set(labels))
    k_types = len(types)
    type_index = {t: k for k, t in enumerate(types)}
    y = [type_index[label] for label in labels]
    rows, fit_s, predict_ms = [], [], []
    for n in shots:
        per_seed: list[dict] = []
        total = np.zeros((k_types, k_types), dtype=np.int64)
        for seed in range(seeds):
            support, queries = episode_split(labels, n, seed)
            if pretrained:
                enc = copy.deepcopy(encoder)
            else:
                torch.manual_seed(seed)
                enc = ResidualEncoder(encoder.config)
            clf = ContrastiveClassifier(enc, prototype_config)
            t = time.perf_counter()
            clf.fit({name: [samples[i] for i in idx] for name, idx in support.items()}, finetune_config)
            fit_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            preds = clf.predict_many([samples[i] for i in queries])
            predict_ms.append((time.perf_counter() - t) / len(queries) * 1e3)
            embeddings = clf.embed(samples)  # for the open-set check only
            cm = confusion_matrix([y[i] for i in queries], [type_index[p.best] for p in preds], k_types)
            total += cm
            folds = [(list(queries), [])]  # the contrastive classifier is centred on nothing: no pool
            open_set = open_set_check(clf.prototypes, embeddings, y, support, folds, types) if k_types >= 2 else {}
            per_seed.append(seed_result(cm, len(queries), types, clf.prototypes.threshold_rule, open_set))
            log.info("shots=%d seed=%d accuracy %.1f%%", n, seed, per_seed[-1]["accuracy"])
        rows.append(shots_row(n, per_seed, types, total))
    return {
        "types": types,
        "n_images": len(samples),
        "images_per_type": {name: labels.count(name) for name in types},
        "results": rows,
        "timing": {
            "finetune_s": round(statistics.fmean(fit_s), 3),
            "predict_ms": round(statistics.fmean(predict_ms), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Contrastive few-shot defect-type classification (MVTec AD layout).")
    parser.add_argument("data", type=Path)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--bank-size", type=int, default=8)
    parser.add_argument("--bank-seed", type=int, default=0)
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
    args = parser.parse_args(argv)
    start_run(args.threads)

    enc_config = EncoderConfig()
    pre_config = replace(
        pre, steps=args.pretrain_steps, pool_classes=args.pool_classes, pool_per_class=args.pool_per_class
    )
    fin_config = replace(fin, steps=args.finetune_steps)
    proto_config = PrototypeConfig(center=args.center, temperature=enc_config.temperature)
    detector = Detector(replace(DetectorConfig(), image_size=args.size), weights=args.weights)
    samples, labels, det_timing = residual_samples(
        args.data, detector, bank_size=args.bank_size, bank_seed=args.bank_seed, keep_features=False
    )

    torch.manual_seed(args.pretrain_seed)
    encoder = ResidualEncoder(enc_config)
    pretrain_info: dict = {}
    pretrain_s = 0.0
    if not args.no_pretrain:
        t0 = time.perf_counter()
        bank = bank_images(args.data, args.bank_size, args.bank_seed)
        fitted = detector.fit(bank)  # the same images and config as the residual samples' bank
        support = [cv2.resize(load_rgb(p), (args.size, args.size), interpolation=cv2.INTER_AREA) for p in bank]
        textures = TextureBank(args.textures) if args.textures else TextureBank()
        generator = SyntheticDefectGenerator(support, textures, rng_seed=args.pretrain_seed)
        pretrain_info = pretrain(
            encoder, generator, detector, fitted, pre_config, rng=np.random.default_rng(args.pretrain_seed)
        )
        pretrain_s = time.perf_counter() - t0

    result = {
        "dataset": args.data.name,
        "method": "contrastive" + ("" if not args.no_pretrain else " (no pretrain)"),
        "size": args.size,
        "seeds": args.seeds,
        "bank_size": args.bank_size,
        "bank_seed": args.bank_seed,
        "detector_method": detector.config.method,
        "device": "cpu",
        "textures": str(args.textures) if args.textures else "procedural",
        "pretrained": not args.no_pretrain,
        "classifier_config": {
            **{f"enc.{k}": v for k, v in enc_config.to_dict().items()},
            **({f"pre.{k}": v for k, v in asdict(pre_config).items()} if not args.no_pretrain else {}),
            **{f"fin.{k}": v for k, v in asdict(fin_config).items()},
            "center": args.center,
            "threads": torch.get_num_threads(),
        },
        "pretrain": {k: round(v, 3) for k, v in pretrain_info.items()},
    }
    evaluated = evaluate_contrastive(
        samples,
        labels,
        encoder,
        pretrained=not args.no_pretrain,
        finetune_config=fin_config,
        prototype_config=proto_config,
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
