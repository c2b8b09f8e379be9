"""Synthetic few-shot defect-type benchmark: held-out texture classes as defect types on a product's images.

    python -m classification.cli.synthetic_benchmark [--product DIR] [--textures DIR] --types 4 --per-type 12 \
        --shots 1 2 3 5 --seeds 5 --json OUT

For tests and quick iteration on the defect-type classifier where no labelled defects exist (or a fresh machine
has no data at all). Pipeline:

1. Product: `--bank-size` (8) good images. `--product DIR` is a folder in MVTec AD layout (its train/good is
   used) or a plain folder of images; the bank is a seeded choice (`--bank-seed`) among them. Without
   `--product`, procedural "products" are drawn (`procedural_product_images`: a shaded plate on a background).
2. The detector's normal memory bank is fitted on those images, once.
3. Defect types: `--types` K texture classes HELD OUT from the texture bank (`--textures DIR` of class folders,
   or procedural textures). `split_classes(bank classes, K, --split-seed)` chooses them; a pre-training run
   must train only on the complement (same class list, same seed) so that the benchmark's types are unseen.
4. `--per-type` synthetic defect images per held-out type, made on the bank's own images with the same
   generator pre-training uses (`SyntheticDefectGenerator`), then residual samples against the bank, exactly
   as for real flagged images (`make_heldout_samples`).
5. `evaluate_prototype` runs every shots/seed episode; the table of classification.cli.evaluate is printed.

Caveat, by construction: each defect image is a bank image plus a defect, so outside the defect every patch
has an exact copy in the memory bank and its residual is ~0. Real flagged images are not in the bank and
carry normal-variation residual everywhere; figures here are therefore an optimistic, clean-signal check of
the classifier (does it tell *types* apart?), not a prediction of accuracy on real defects.

Determinism: all randomness comes from the seeds above (`--sample-seed` for the defect images); the episode
splits come from evaluate_prototype's own seeds.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from classification.cli.common import format_table, start_run, write_json
from classification.dataset import residual_samples_of, seeded_choice
from classification.episodes import evaluate_prototype
from classification.prototype import PrototypeConfig
from classification.residuals import ResidualSample
from detection import registry
from detection.config import DetectorConfig
from detection.dataset import train_images
from detection.detector import Detector, FittedSupport
from detection.images import load_rgb
from detection.synthetic import IMAGE_SUFFIXES, SyntheticDefectGenerator, TextureBank
from detection.weights import add_weights_argument

log = logging.getLogger(__name__)

METHOD = "prototype"
PROCEDURAL_NAME = "procedural"


# ------------------------------------------------------------------------------------------- pure functions


def split_classes(classes: Sequence[str], n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """Split texture classes into (pre-training classes, held-out benchmark classes), both sorted.

    The choice depends only on the *set* of class names and `seed` (names are sorted before a
    np.random.default_rng(seed) draw without replacement), so a pre-training run given the same bank and seed
    excludes exactly the benchmark's types, whatever order it lists them in. At least one class is left for
    pre-training: a split that leaves none is a mistake, not a benchmark.
    """
    names = sorted(classes)
    if len(set(names)) != len(names):
        raise ValueError("split_classes: duplicate class names")
    if not 1 <= n_heldout < len(names):
        raise ValueError(f"split_classes: n_heldout must be in [1, {len(names) - 1}] for {len(names)} classes")
    held = set(np.random.default_rng(seed).choice(len(names), size=n_heldout, replace=False).tolist())
    return [c for i, c in enumerate(names) if i not in held], [c for i, c in enumerate(names) if i in held]


def procedural_product_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """`n` (size, size, 3) uint8 RGB "good parts": a shaded plate with a rim, on a flat darker background.

    The plate's colour, light direction and background are fixed by `seed` (one product); image i varies only
    by a small shift of the plate and its own sensor noise (np.random.default_rng([seed, i])), so image i is the
    same whatever `n`. Plate and background differ strongly in colour, so `foreground_mask` finds the plate and
    synthetic defects land on it.
    """
    if n < 1 or size < 16:
        raise ValueError(f"procedural_product_images: need n >= 1 and size >= 16, got n={n}, size={size}")
    prng = np.random.default_rng([seed, 1_000_000])  # the product's own parameters
    plate = prng.uniform(140, 210, 3)
    background = prng.uniform(20, 60, 3)
    light = prng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        cy, cx = size / 2 + rng.normal(0, 0.02 * size, 2)
        r = np.hypot(yy - cy, xx - cx) / (0.36 * size)  # 1 at the plate's edge
        inside = r < 1.0
        # Lambert-like shading of a shallow dome lit from `light`, plus a darker rim near the edge.
        shade = 1.0 + 0.25 * ((xx - cx) * math.cos(light) + (yy - cy) * math.sin(light)) / (0.36 * size)
        shade = shade * (1.0 - 0.25 * np.exp(-(((r - 0.85) / 0.04) ** 2)))
        img = np.where(inside[..., None], plate * shade[..., None], background)
        img = img + rng.normal(0, 3.0, (size, size, 3))
        images.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return images


def texture_root(path: Path) -> Path:
    """The folder of texture class folders: `path`, or `path/train` for a dataset split like dtd_small's.

    dtd_small has train/ (47 class folders), val/ and test/ (flat files): given the dataset's root, TextureBank
    would take "test" for a class. Pointing at train/ is what was meant.
    """
    train = path / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        log.info("textures: using %s (class folders)", train)
        return train
    return path


def product_images(product: Path, n: int, seed: int) -> list[np.ndarray]:
    """`n` good images of a product folder (MVTec layout: train/good; else the folder's own images), chosen with
    np.random.default_rng(seed) as classification.dataset chooses the evaluators' bank, decoded to RGB arrays."""
    if (product / "train" / "good").is_dir():
        files = train_images(product)
    elif product.is_dir():
        files = sorted(p for p in product.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise FileNotFoundError(f"{product}: no such folder")
    if n > len(files):
        raise ValueError(f"{product}: a bank of {n} images requested but only {len(files)} found")
    return [load_rgb(files[i]) for i in seeded_choice(len(files), n, seed)]


def make_heldout_images(
    generator: SyntheticDefectGenerator, heldout: Sequence[str], per_type: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[str]]:
    """`per_type` synthetic defect images of each type in `heldout` (any of the generator's types) and their
    labels. Types are generated in the given order, all from `rng`."""
    if per_type < 1:
        raise ValueError(f"make_heldout_images: per_type must be >= 1, got {per_type}")
    unknown = [t for t in heldout if t not in generator.classes]
    if unknown:
        raise ValueError(f"make_heldout_images: types unknown to the generator: {unknown}")
    images = [generator.sample(name, rng)[0] for name in heldout for _ in range(per_type)]
    return images, [name for name in heldout for _ in range(per_type)]


def make_heldout_samples(
    detector: Detector,
    fitted: FittedSupport,
    generator: SyntheticDefectGenerator,
    heldout: Sequence[str],
    per_type: int,
    rng: np.random.Generator,
    *,
    keep_features: bool = False,
) -> tuple[list[ResidualSample], list[str]]:
    """`make_heldout_images` then `residual_samples_of`: residual samples of the held-out types, and labels."""
    images, labels = make_heldout_images(generator, heldout, per_type, rng)
    return residual_samples_of(detector, fitted, images, keep_features=keep_features), labels


# ------------------------------------------------------------------------------------------------------ run


def run_benchmark(
    detector: Detector,
    bank_images: Sequence[np.ndarray],
    textures: TextureBank,
    *,
    types: int,
    per_type: int,
    shots: list[int],
    seeds: int,
    split_seed: int = 0,
    sample_seed: int = 0,
    config: PrototypeConfig | None = None,
) -> dict:
    """Fit the bank, hold out `types` texture classes, make and evaluate their synthetic defects.

    Returns evaluate_prototype's dict plus what the benchmark chose (held-out and pre-training types, seeds);
    the caller adds the descriptive keys format_table needs (dataset, size, device, ...).
    """
    if types < 2:
        raise ValueError(f"need at least 2 held-out types to classify, got {types}")
    if per_type <= max(shots):
        raise ValueError(f"per_type {per_type} must exceed the largest shots {max(shots)}: each type needs a query")
    config = config or PrototypeConfig()
    pretrain, heldout = split_classes(textures.classes, types, split_seed)
    t0 = time.perf_counter()
    fitted = detector.fit(list(bank_images))
    t1 = time.perf_counter()
    generator = SyntheticDefectGenerator(list(bank_images), textures.subset(heldout), rng_seed=sample_seed, variants=())
    t2 = time.perf_counter()
    images, labels = make_heldout_images(generator, heldout, per_type, np.random.default_rng(sample_seed))
    t3 = time.perf_counter()
    samples = residual_samples_of(detector, fitted, images, keep_features=config.source == "features")
    t4 = time.perf_counter()
    log.info("held-out types %s: %d synthetic defect images", heldout, len(samples))
    result = evaluate_prototype(samples, labels, config, shots, seeds)
    result["timing"].update(
        {
            "bank_fit_s": round(t1 - t0, 2),
            "synth_ms": round((t3 - t2) / len(images) * 1e3, 1),  # making one synthetic defect image
            "residual_ms": round((t4 - t3) / len(images) * 1e3, 1),  # the detector's residuals of one image
            "total_s": round(time.perf_counter() - t0, 2),
        }
    )
    return {
        "method": METHOD,
        "heldout_types": heldout,
        "pretrain_types": pretrain,
        "per_type": per_type,
        "split_seed": split_seed,
        "sample_seed": sample_seed,
        "classifier_config": config.to_dict(),
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Synthetic few-shot defect-type benchmark: held-out texture classes on a product's images."
    )
    parser.add_argument("--product", type=Path, help="MVTec-layout folder (train/good) or folder of images")
    parser.add_argument("--textures", type=Path, help="folder of texture class folders (default: procedural)")
    parser.add_argument("--procedural-textures", type=int, default=24, help="classes when --textures is absent")
    parser.add_argument("--texture-seed", type=int, default=0, help="procedural texture parameters")
    parser.add_argument("--types", type=int, default=4, help="held-out texture classes = defect types")
    parser.add_argument("--per-type", type=int, default=12, help="synthetic defect images per type")
    parser.add_argument("--split-seed", type=int, default=0, help="which texture classes are held out")
    parser.add_argument("--sample-seed", type=int, default=0, help="synthetic defect images")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--bank-size", type=int, default=8, help="good images in the normal memory bank")
    parser.add_argument("--bank-seed", type=int, default=0, help="bank choice, or the procedural product")
    parser.add_argument("--detector-method", choices=registry.names(), default=DetectorConfig.method)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    start_run(args.threads, quiet=("detection.synthetic",))

    if args.product is not None:
        bank = product_images(args.product, args.bank_size, args.bank_seed)
        dataset = f"synthetic:{args.product.name}"
    else:
        bank = procedural_product_images(args.bank_size, args.size, args.bank_seed)
        dataset = f"synthetic:{PROCEDURAL_NAME}"
    if args.textures is not None:
        textures = TextureBank(texture_root(args.textures))
    else:
        textures = TextureBank(n_procedural=args.procedural_textures, seed=args.texture_seed)

    det_config = replace(DetectorConfig(), method=args.detector_method, image_size=args.size)
    detector = Detector(det_config, weights=args.weights)
    result = {
        "dataset": dataset,
        "textures": str(args.textures) if args.textures is not None else f"procedural:{len(textures)}",
        "size": args.size,
        "seeds": args.seeds,
        "bank_size": args.bank_size,
        "bank_seed": args.bank_seed,
        "detector_method": args.detector_method,
        "device": str(detector.device),
    }
    result.update(
        run_benchmark(
            detector,
            bank,
            textures,
            types=args.types,
            per_type=args.per_type,
            shots=args.shots,
            seeds=args.seeds,
            split_seed=args.split_seed,
            sample_seed=args.sample_seed,
        )
    )
    print(format_table(result))
    tm = result["timing"]
    print(
        f"held-out types: {', '.join(result['heldout_types'])}; synthetic images {tm['synth_ms']:.0f} ms/image; "
        f"total {tm['total_s']:.1f} s"
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
