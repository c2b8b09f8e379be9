"""Few-shot anomaly detection: FastRecon and PatchCore on a frozen ImageNet ResNet-50. No Django here."""

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
