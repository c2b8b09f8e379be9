"""Few-shot anomaly detection on a frozen ImageNet ResNet-50, in plain PyTorch (no Django here).

A Detector fits a support set of a few good images and predicts, per query image, a score, a verdict (good /
review / defective, against thresholds learned from good images only) and an anomaly map. The methods
(FastRecon, PatchCore, PatchCore+, DFD: detection/registry.py) sit behind one fit/score contract
(detection/method.py), each in its own module with its own config. Command-line evaluators and benchmarks
are in detection/cli/.
"""

from detection.config import DetectorConfig
from detection.detector import Detector, FittedSupport, Prediction
from detection.images import ImageError
from detection.thresholds import DEFECTIVE, GOOD, REVIEW, Thresholds

__all__ = [
    "DEFECTIVE",
    "GOOD",
    "REVIEW",
    "Detector",
    "DetectorConfig",
    "FittedSupport",
    "ImageError",
    "Prediction",
    "Thresholds",
]
