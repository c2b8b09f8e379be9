"""Saved fitted support sets: format 2 round trips, and files written by format 1 (before the method registry)
still load and predict the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detection import Detector, DetectorConfig, FittedSupport
from detection.dfd import DFDConfig
from detection.fastrecon import FastReconState
from detection.fitted import FORMAT_VERSION

from .helpers import part_image, random_resnet

# DetectorConfig().to_dict() as format 1 wrote it: every method's fields side by side in one flat dict.
V1_CONFIG = {
    "method": "fastrecon", "image_size": 256, "fastrecon_lambda": 2.0, "fastrecon_coreset_ratio": 0.15,
    "fastrecon_max_coreset_fraction": 0.5, "fastrecon_ridge": 1e-06, "patchcore_coreset_ratio": 0.1,
    "patchcore_plus_lambda": 0.3, "patchcore_plus_coreset_ratio": 0.05, "patchcore_plus_iterations": 10,
    "patchcore_plus_m_steps": 3, "patchcore_plus_eps": 0.05, "patchcore_plus_temperature": 1.0,
    "dfd_augmentations": 80, "dfd_max_augmented": 48, "dfd_epochs": 80, "dfd_max_steps": 150, "dfd_batch": 8,
    "dfd_adaptor_dim": 256, "dfd_hidden": 256, "dfd_perlin_dim": 128, "dfd_heads": 4, "dfd_noise_std": 0.1,
    "dfd_theta": 0.8, "dfd_lambda_per": 2.0, "dfd_lambda_sim": 0.02, "dfd_lr_adaptor": 0.0005,
    "dfd_lr_gaussian": 0.0002, "dfd_lr_perlin": 0.0001, "dfd_calibration_images": 8, "dfd_window": 16,
    "coreset_projection_dim": 128, "gaussian_sigma": 4.0, "review_rate": 0.05, "false_reject_rate": 0.005,
    "min_log_spread": 0.1, "single_image_log_spread": 0.25, "batch_size": 8, "seed": 0,
}  # fmt: skip
SMALL_DFD = {"dfd_max_augmented": 8, "dfd_max_steps": 5, "dfd_adaptor_dim": 32, "dfd_hidden": 32}
SMALL_DFD_CONFIG = DFDConfig(max_augmented=8, max_steps=5, adaptor_dim=32, hidden=32)


@pytest.fixture(scope="module")
def resnet():
    return random_resnet()


def _goods(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [part_image(rng) for _ in range(n)]


def _v1_file(path, fitted: FittedSupport, flat_config: dict, mu: torch.Tensor) -> None:
    """The payload format 1 wrote: flat config; mu for every method, coreset (FastRecon), dfd.* (DFD)."""
    tensors = {k: getattr(fitted, k) for k in ("memory_bank", "bank_source", "descriptors", "normal_scores")}
    tensors["mu"] = mu
    state = fitted.state.tensors()
    if isinstance(fitted.state, FastReconState):
        tensors["coreset"] = state["coreset"]
    else:
        tensors |= {f"dfd.{k}": v for k, v in state.items()}
    payload = {
        "format_version": 1,
        "config": flat_config,
        "grid": list(fitted.grid),
        "thresholds": fitted.thresholds.to_dict(),
        "tensors": tensors,
    }
    torch.save(payload, path)


def _same_predictions(detector: Detector, a: FittedSupport, b: FittedSupport) -> None:
    queries = [part_image(np.random.default_rng(7), defect=True), part_image(np.random.default_rng(8))]
    for p, q in zip(detector.predict(a, queries), detector.predict(b, queries), strict=True):
        assert p.score == q.score and p.verdict == q.verdict
        np.testing.assert_array_equal(p.anomaly_map, q.anomaly_map)


@pytest.mark.parametrize("method", ["fastrecon", "patchcore", "patchcore_plus"])
def test_a_format_1_file_loads_with_its_config_and_predicts_the_same(method, resnet, tmp_path):
    flat = {**V1_CONFIG, "method": method, "image_size": 64, "batch_size": 4, "fastrecon_lambda": 1.5}
    config = DetectorConfig.from_flat_dict(flat)
    detector = Detector(config, resnet=resnet, device="cpu")
    fitted = detector.fit(_goods(3))
    patches = detector.features(detector.load_images(_goods(3))[0]).full()  # (k, D, h, w)
    mu = patches.mean(0).flatten(1).T.contiguous()  # (R, D): format 1 saved it whatever the method
    if isinstance(fitted.state, FastReconState):
        mu = fitted.state.mu
    _v1_file(tmp_path / "v1.pt", fitted, flat, mu)

    loaded = FittedSupport.load(tmp_path / "v1.pt")
    assert loaded.config == fitted.config and loaded.config.method == method
    assert loaded.config.config_for("fastrecon").lam == 1.5  # another method's setting survives too
    assert loaded.thresholds == fitted.thresholds
    torch.testing.assert_close(loaded.memory_bank, fitted.memory_bank, rtol=0, atol=0)
    _same_predictions(detector, fitted, loaded)


def test_a_format_1_dfd_file_loads_its_trained_model(resnet, tmp_path):
    flat = {**V1_CONFIG, **SMALL_DFD, "method": "dfd", "image_size": 64, "batch_size": 4}
    config = DetectorConfig.from_flat_dict(flat)
    assert config.method_config == SMALL_DFD_CONFIG
    detector = Detector(config, resnet=resnet, device="cpu")
    fitted = detector.fit(_goods(2))
    _v1_file(tmp_path / "v1.pt", fitted, flat, torch.zeros(64, fitted.dim))
    loaded = FittedSupport.load(tmp_path / "v1.pt")
    assert loaded.config == fitted.config
    assert set(loaded.state.tensors()) == set(fitted.state.tensors())
    _same_predictions(detector, fitted, loaded)


def test_format_2_keeps_only_the_methods_own_state(resnet, tmp_path):
    detector = Detector(DetectorConfig(method="patchcore", image_size=64), resnet=resnet, device="cpu")
    detector.fit(_goods(2)).save(tmp_path / "s.pt")
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 2
    assert payload["state"] == {} and set(payload["tensors"]) == {
        "memory_bank",
        "bank_source",
        "descriptors",
        "normal_scores",
    }
    assert payload["config"]["method"] == "patchcore"


def test_a_flat_config_with_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match="unknown config keys"):
        DetectorConfig.from_flat_dict({**V1_CONFIG, "fastrecon_colour": 3})


def test_moving_a_fitted_support_set_moves_its_state_once(resnet):
    detector = Detector(DetectorConfig(image_size=64), resnet=resnet, device="cpu")
    fitted = detector.fit(_goods(2))
    assert fitted.to("cpu") is fitted
    meta = fitted.to("meta")
    assert meta is fitted.to("meta") and meta.state.coreset.device.type == "meta"
    assert fitted.state.coreset.device.type == "cpu"
