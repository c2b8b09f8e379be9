"""Which of DFD's four maps carry the signal: `python -m detection.cli.dfd_maps DATA --shots 1 [--seed 0]`.

DFD averages four normalised maps (Gaussian and Perlin discriminator x low and high frequency path). This fits
DFD once on the evaluator's support draw for (shots, seed) and prints image and pixel AUROC of each map alone,
of the paper's average of all four, and of the averages over one discriminator or one path. A diagnostic for
choosing what to try next, not a way to choose the maps: the figures are on the test images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from detection import dfd
from detection.cli.common import add_set_argument, apply_overrides, choose_support, write_json
from detection.config import DetectorConfig
from detection.dataset import load_mask, test_samples, train_images
from detection.detector import Detector
from detection.dfd_model import MAP_NAMES
from detection.metrics import auroc
from detection.postprocess import anomaly_maps
from detection.weights import add_weights_argument

CHUNK = 8

# name -> indices into MAP_NAMES averaged
COMBINATIONS = {
    **{name: (i,) for i, name in enumerate(MAP_NAMES)},
    "all four (DFD)": (0, 1, 2, 3),
    "gaussian": (0, 1),
    "perlin": (2, 3),
    "low path": (0, 2),
    "high path": (1, 3),
}


def map_aurocs(data: Path, detector: Detector, shots: int, seed: int) -> dict[str, dict[str, float | None]]:
    cfg = detector.config
    train = train_images(data)
    fitted = detector.fit([train[i] for i in choose_support(len(train), shots, seed)])
    if not isinstance(fitted.state, dfd.DFDState):
        raise ValueError(f"the detector runs {cfg.method}: the four maps are DFD's")
    samples = test_samples(data)
    labels = np.array([s.is_anomalous for s in samples])
    masks = np.stack([load_mask(s, cfg.image_size) for s in samples])
    maps = []
    for start in range(0, len(samples), CHUNK):
        batch, _ = detector.load_images([s.path for s in samples[start : start + CHUNK]])
        maps.append(dfd.four_maps(fitted.state, detector, batch).cpu())
    every = torch.cat(maps)  # (N, 4, R)
    grid = cfg.feature_grid
    out = {}
    for name, idx in COMBINATIONS.items():
        patch = every[:, list(idx)].mean(1).view(-1, grid, grid)
        pixel = anomaly_maps(patch, cfg.image_size, cfg.gaussian_sigma).numpy()
        out[name] = {
            "image_auroc": round(100 * auroc(labels, patch.flatten(1).amax(1).numpy()), 2),
            "pixel_auroc": round(100 * auroc(masks, pixel), 2) if masks.any() else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Image and pixel AUROC of each of DFD's four maps.")
    parser.add_argument("data", type=Path)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="support draw, as the evaluator's seed")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_set_argument(parser)
    parser.add_argument("--json", type=Path, help="write the results here")
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = apply_overrides(DetectorConfig(method="dfd"), args.overrides)
    result = map_aurocs(args.data, Detector(config, weights=args.weights), args.shots, args.seed)
    print(f"DFD maps on {args.data.name}, {args.shots} shots, seed {args.seed}")
    for name, row in result.items():
        pixel = "n/a" if row["pixel_auroc"] is None else f"{row['pixel_auroc']:.2f}"
        print(f"{name:>16}  image AUROC {row['image_auroc']:6.2f}  pixel AUROC {pixel:>6}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
