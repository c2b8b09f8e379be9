"""Few-shot defect-type classification on a dataset in MVTec AD layout: the prototype classifier.

    python -m classification.cli.evaluate DATA --shots 1 2 3 5 --seeds 5 --json OUT --method prototype

Normal memory bank: the detector is fitted ONCE on `--bank-size` (8) train/good images drawn with
`--bank-seed` (0). Residual samples of every defect test image are computed once against it and reused by
every shots/seed episode (classification.dataset.residual_samples): what varies between seeds is which images
are labelled, the quantity under test; refitting the bank per seed would only add the detector's own (small)
variance and multiply the expensive part (backbone + nearest-neighbour search) by the number of seeds.

Defect types = test/ folders except good. Episodes and figures: classification.episodes (`evaluate_prototype`).
Timing: pretrain_s (0: nothing is trained), finetune_s (fitting the classifier on the labelled examples, mean),
predict_ms (per query, pooling + prototype comparison, beyond the detector's own work), and the detector's
residual cost for context.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from classification.cli.common import add_dataset_arguments, format_table, run_header, start_run, write_json
from classification.dataset import residual_samples
from classification.episodes import CENTRES, evaluate_prototype
from classification.prototype import PrototypeConfig
from classification.residuals import SOURCES, WEIGHTINGS
from detection import registry
from detection.config import DetectorConfig
from detection.detector import Detector
from detection.weights import add_weights_argument

METHODS = ("prototype",)  # the contrastive encoder has its own command: classification.cli.evaluate_contrastive


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Few-shot defect-type classification evaluation (MVTec AD layout).")
    add_dataset_arguments(parser)
    parser.add_argument("--method", choices=METHODS, default="prototype")
    parser.add_argument("--detector-method", choices=registry.names(), default=DetectorConfig.method)
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    result = run_header(args, args.method, detector, str(detector.device))
    result["classifier_config"] = config.to_dict()
    evaluated = evaluate_prototype(samples, labels, config, args.shots, args.seeds, centre=args.centre)
    evaluated["timing"].update(det_timing)
    result.update(evaluated)
    print(format_table(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
