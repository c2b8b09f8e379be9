"""The one adapter between Django rows/files and the `detection` and `classification` packages.

The detector (backbone) is loaded once per process; fitted support sets are cached per support-set id
(a version is immutable once ready), trained classifiers per classifier-version id. Nothing else in the app
imports torch.

Defect types. Every image gets an embedding at detection time (flagged ones are classified with it): the
prototype classifier's pooled, rectified residual (classification/prototype.py), stored with the inspection as
float16 bytes (3 KiB). Training a classifier version and re-classifying need only these, never the image or the
backbone again. Which method a product uses follows classification.selection (the measured record); the
prototype method is the one it picks at every measured number of examples, and the only one this adapter
trains: the contrastive encoder would need the full residual maps stored per image (6 MiB each).
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from classification.prototype import (
    PrototypeClassifier,
    PrototypeConfig,
    TypePrediction,
    leave_one_out_predictions,
    save_payload,
)
from classification.residuals import ResidualSample
from classification.selection import choose_method
from detection import Detector, DetectorConfig, FittedSupport, Thresholds, registry
from detection.images import load_rgb

_lock = threading.Lock()
_detector: Detector | None = None
_fitted: OrderedDict[int, FittedSupport] = OrderedDict()
_classifiers: OrderedDict[int, PrototypeClassifier] = OrderedDict()
FITTED_CACHE_SIZE = 16


def get_detector() -> Detector:
    global _detector
    with _lock:
        if _detector is None:
            config = DetectorConfig(method=settings.INSPECTOR_DETECTOR_METHOD, image_size=settings.INSPECTOR_IMAGE_SIZE)
            _detector = Detector(config, weights=settings.INSPECTOR_WEIGHTS)
        return _detector


def set_detector(detector: Detector | None) -> None:
    """Install a detector (tests use a small random-weight one); None unloads."""
    global _detector
    with _lock:
        _detector = detector
        _fitted.clear()
        _classifiers.clear()


@dataclass(frozen=True)
class FitResult:
    state: bytes
    thresholds: dict
    seconds: float


@dataclass(frozen=True)
class InspectResult:
    score: float
    verdict: str
    heatmap_jpeg: bytes
    nearest_position: int
    detect_ms: float
    embedding: bytes  # the classifier's input (classified only when the image is flagged)


def _read(name: str) -> np.ndarray:
    """The stored image as the detector sees it (EXIF orientation, 16-bit scaling: detection's own rules)."""
    with default_storage.open(name, "rb") as fh, Image.open(fh) as im:
        im.load()
        return load_rgb(im, name=name)


def fit_support(
    image_names: list[str], method: str | None = None, progress: Callable[[float, str], None] | None = None
) -> FitResult:
    """Fit a support set with `method` (the product's detector; None: the configured default). Prediction needs
    no method: a fitted support set carries its own configuration. `progress(fraction, message)` is called as a
    long fit (DFD training) advances."""
    detector = get_detector() if method is None else get_detector().with_method(method)
    images = [_read(n) for n in image_names]
    start = time.perf_counter()
    fitted = detector.fit(images, progress=progress)
    seconds = time.perf_counter() - start
    buf = io.BytesIO()
    fitted.save_to(buf)
    return FitResult(buf.getvalue(), fitted.thresholds.to_dict(), seconds)


def _cached(cache: OrderedDict, key: int, load):
    """An LRU of FITTED_CACHE_SIZE loaded objects per process (support sets and classifier versions are
    immutable once ready, so an id names its content); loading runs outside the lock."""
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = load()
    with _lock:
        cache[key] = value
        while len(cache) > FITTED_CACHE_SIZE:
            cache.popitem(last=False)
    return value


def _read_bytes(name: str) -> io.BytesIO:
    with default_storage.open(name, "rb") as fh:
        return io.BytesIO(fh.read())


def _fitted_for(support_set_id: int, state_name: str) -> FittedSupport:
    return _cached(_fitted, support_set_id, lambda: FittedSupport.load(_read_bytes(state_name)))


def inspect(image_name: str, *, support_set_id: int, state_name: str) -> InspectResult:
    detector = get_detector()
    fitted = _fitted_for(support_set_id, state_name)
    rgb = _read(image_name)
    start = time.perf_counter()
    pred = detector.predict(fitted, [rgb], return_features=True)[0]
    detect_ms = (time.perf_counter() - start) * 1e3
    jpeg = render_heatmap(rgb, pred.anomaly_map, fitted.thresholds)
    # Every image, not only flagged ones: a reviewer may mark a missed defect, and it must be usable for training.
    embedding = embedding_to_bytes(PrototypeClassifier().embed([ResidualSample.from_prediction(pred)])[0])
    return InspectResult(pred.score, pred.verdict, jpeg, pred.nearest_support, detect_ms, embedding)


# ---------------------------------------------------------------------------------------- defect types


def embedding_to_bytes(vector: torch.Tensor) -> bytes:
    return vector.detach().to(torch.float16).cpu().numpy().tobytes()


def embedding_from_bytes(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(bytes(data), dtype=np.float16).astype(np.float32))


def _stack(rows: list[bytes]) -> torch.Tensor:
    return torch.stack([embedding_from_bytes(r) for r in rows])


@dataclass(frozen=True)
class TrainResult:
    payload: bytes
    method: str
    method_reason: str
    seconds: float
    held_out: list  # HeldOutPrediction per labelled example that could be held out
    types: list[str]


def train_classifier(examples: dict[str, list[bytes]], pool: list[bytes]) -> TrainResult:
    """Fit a classifier version on confirmed examples per type (+ the product's unlabelled flagged images for the
    centre) and judge it by leave-one-out on those examples."""
    start = time.perf_counter()
    fewest = min(len(v) for v in examples.values())
    choice = choose_method(fewest)
    if choice.method != "prototype":
        raise RuntimeError(f"the measured record picks {choice.method!r}, which this app cannot train yet")
    embedded = {name: _stack(rows) for name, rows in examples.items()}
    unlabelled = _stack(pool) if pool else None
    clf = PrototypeClassifier(PrototypeConfig()).fit_embeddings(embedded, unlabelled=unlabelled)
    held_out = leave_one_out_predictions(embedded, clf.config, unlabelled)
    buf = io.BytesIO()
    save_payload(clf.to_payload(), buf)
    return TrainResult(buf.getvalue(), choice.method, choice.reason, time.perf_counter() - start, held_out, clf.types)


def _classifier_for(version_id: int, payload_name: str) -> PrototypeClassifier:
    def load() -> PrototypeClassifier:
        payload = torch.load(_read_bytes(payload_name), map_location="cpu", weights_only=True)
        return PrototypeClassifier.from_payload(payload)

    return _cached(_classifiers, version_id, load)


def classify(embeddings: list[bytes], *, version_id: int, payload_name: str) -> list[TypePrediction]:
    """Defect-type predictions for stored embeddings, by one classifier version."""
    if not embeddings:
        return []
    return _classifier_for(version_id, payload_name).predict_embeddings(_stack(embeddings))


def colour_scale(amap: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Anomaly values -> [0, 1] on a fixed scale anchored at the thresholds, so one colour means one level of
    evidence on every image of the product: 0.5 at good_max, 0.75 at defective_min, 1 at 1.5x defective_min."""
    g, d = thresholds.good_max, thresholds.defective_min
    xs = [0.0, g, d, 1.5 * d]
    ys = [0.0, 0.5, 0.75, 1.0]
    return np.interp(amap, xs, ys).astype(np.float32)


def render_heatmap(rgb: np.ndarray, amap: np.ndarray, thresholds: Thresholds) -> bytes:
    """Colour overlay: jet colours blended over the image, transparent where values are low; JPEG, because
    at 512 x 512 it encodes in 0.6 ms and 67 KiB where PNG takes 16-69 ms and 450 KiB (measured), which
    alone would exceed the app's overhead budget per image."""
    level = colour_scale(amap, thresholds)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)  # BGR
    alpha = (np.clip((level - 0.25) / 0.5, 0, 1) * 0.65)[:, :, None]  # nothing below half of good_max
    bgr = rgb[:, :, ::-1].astype(np.float32)
    out = (bgr + (colours.astype(np.float32) - bgr) * alpha).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("heatmap encoding failed")
    return encoded.tobytes()


def detector_methods() -> tuple[str, ...]:
    """The detection methods a product may use (detection/registry.py), in the order people see them."""
    return registry.names()


def detector_labels() -> dict[str, str]:
    """Method name -> what the product page shows: "PatchCore (nearest good patch)"; the configured default
    (INSPECTOR_DETECTOR_METHOD) says so."""
    default = settings.INSPECTOR_DETECTOR_METHOD
    labels = {}
    for name in registry.names():
        method = registry.get(name)
        labels[name] = f"{method.label} ({'default: ' if name == default else ''}{method.description})"
    return labels
