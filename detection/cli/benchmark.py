"""Where the time goes, on this machine: `python -m detection.cli.benchmark [--data DIR] [--size 256]`.

Prints backbone ms/image, fit seconds for 1/4/8 shots, per-query time split into decode, backbone,
method scoring and map post-processing, and peak memory. Real images from DATA/train/good when given,
else seeded random images (timings do not depend on content except decoding).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from detection.cli.common import add_method_argument, sync
from detection.config import DetectorConfig
from detection.dataset import train_images
from detection.detector import Detector
from detection.images import ImageInput
from detection.postprocess import anomaly_maps
from detection.weights import add_weights_argument


def _time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median wall seconds of `repeat` calls after one warm-up call (GPU work waited for)."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(detector: Detector, images: list[ImageInput], shots: list[int], repeat: int) -> list[str]:
    cfg = detector.config
    lines = [
        f"device {detector.device}, torch threads {torch.get_num_threads()}, S={cfg.image_size}, method {cfg.method}"
    ]
    queries = images[: cfg.batch_size]
    batch, _ = detector.load_images(queries)
    n = len(queries)

    decode = _time(lambda: detector.load_images(queries), repeat, detector.device) / n
    backbone = _time(lambda: detector.features(batch), repeat, detector.device) / n
    lines.append(f"decode+resize           {decode * 1e3:8.1f} ms/image")
    lines.append(f"backbone (forward batch {detector.forward_batch}) {backbone * 1e3:8.1f} ms/image")
    feats = detector.features(batch)
    for k in shots:
        support = images[len(images) - k :]
        fit_s = _time(lambda s=support: detector.fit(s), max(1, repeat // 2), detector.device)
        fitted = detector.fit(support)
        score = _time(lambda f=fitted: detector.patch_scores(f, feats), repeat, detector.device) / n
        patch = detector.patch_scores(fitted, feats)
        post = _time(lambda p=patch: anomaly_maps(p, cfg.image_size, cfg.gaussian_sigma), repeat, detector.device) / n
        total = _time(lambda f=fitted: detector.predict(f, queries), max(1, repeat // 2), detector.device) / n
        kept = fitted.state.summary()
        extra = f", bank M={fitted.memory_bank.shape[0]}" + (f", {kept}" if kept else "")
        lines.append(
            f"{k} shots: fit {fit_s:6.2f} s{extra}; per query: scoring {score * 1e3:6.1f} ms "
            f"+ map {post * 1e3:5.1f} ms "
            f"= {(score + post) / backbone * 100:5.1f}% of backbone; whole predict {total * 1e3:6.1f} ms/image"
        )
    if detector.device.type == "cuda":
        lines.append(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    lines.append(f"peak RSS {_peak_rss_mb():.0f} MiB")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset in MVTec AD layout (uses train/good)")
    add_method_argument(parser)
    parser.add_argument("--size", type=int, default=DetectorConfig.image_size)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int)
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = replace(DetectorConfig(), method=args.method, image_size=args.size)
    detector = Detector(config, weights=args.weights)
    need = config.batch_size + max(args.shots)
    if args.data:
        images: list[ImageInput] = list(train_images(args.data)[:need])
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(need)]
    if len(images) < need:
        parser.error(f"need {need} images, found {len(images)}")
    print("\n".join(run(detector, images, args.shots, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
