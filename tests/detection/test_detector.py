from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection import Detector, DetectorConfig, FittedSupport, ImageError
from detection.metrics import auroc

from .helpers import part_image, random_resnet


@pytest.fixture(scope="module")
def resnet():
    return random_resnet()


@pytest.fixture(params=["fastrecon", "patchcore"])
def detector(request, resnet):
    return Detector(DetectorConfig(method=request.param, image_size=64, batch_size=4), resnet=resnet, device="cpu")


def _goods(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [part_image(rng) for _ in range(n)]


def test_predict_returns_score_verdict_and_a_map_of_each_images_own_size(detector):
    fitted = detector.fit(_goods(3))
    wide = np.array(Image.fromarray(part_image(np.random.default_rng(5))).resize((96, 48)))
    preds = detector.predict(fitted, [wide, part_image(np.random.default_rng(6))])
    assert preds[0].anomaly_map.shape == (48, 96)
    assert preds[1].anomaly_map.shape == (64, 64)
    for p in preds:
        assert p.anomaly_map.dtype == np.float32
        assert p.patch_scores.shape == (8, 8)
        assert p.score == pytest.approx(float(p.patch_scores.max()))
        assert p.verdict in ("good", "review", "defective")
        assert 0 <= p.nearest_support < 3
        assert p.features is None and p.residual is None


def test_grayscale_rgba_and_files_are_accepted(detector, tmp_path):
    fitted = detector.fit(_goods(2))
    rgb = part_image(np.random.default_rng(9))
    gray = Image.fromarray(rgb).convert("L")
    rgba = Image.fromarray(rgb).convert("RGBA")
    path = tmp_path / "part.png"
    Image.fromarray(rgb).save(path)
    preds = detector.predict(fitted, [gray, rgba, np.asarray(gray), str(path)])
    assert len(preds) == 4
    assert preds[2].score == pytest.approx(preds[0].score, rel=1e-4)


def test_defective_parts_score_higher_than_good_parts(detector):
    fitted = detector.fit(_goods(4))
    rng = np.random.default_rng(42)
    goods = [part_image(rng) for _ in range(8)]
    defects = [part_image(rng, defect=True) for _ in range(8)]
    scores = [p.score for p in detector.predict(fitted, goods + defects)]
    assert auroc(np.array([0] * 8 + [1] * 8), np.array(scores)) >= 0.9


def test_save_and_load_round_trip_gives_identical_predictions(detector, tmp_path):
    fitted = detector.fit(_goods(3))
    path = tmp_path / "support.pt"
    fitted.save(path)
    loaded = FittedSupport.load(path)
    assert loaded.config == fitted.config
    assert loaded.thresholds == fitted.thresholds
    queries = [part_image(np.random.default_rng(7), defect=True)]
    a, b = detector.predict(fitted, queries)[0], detector.predict(loaded, queries)[0]
    assert a.score == pytest.approx(b.score, rel=1e-6)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5)


def test_load_refuses_an_unknown_format_version(tmp_path, detector):
    fitted = detector.fit(_goods(2))
    path = tmp_path / "s.pt"
    fitted.save(path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="format"):
        FittedSupport.load(path)


def test_returned_residual_is_the_feature_minus_its_nearest_memory_patch_in_place(detector):
    fitted = detector.fit(_goods(2))
    p = detector.predict(fitted, [part_image(np.random.default_rng(3), defect=True)], return_features=True)[0]
    d, h, w = p.features.shape
    assert p.residual.shape == (d, h, w) and p.nearest_index.shape == (h, w)
    for y, x in [(0, 0), (2, 5), (h - 1, w - 1)]:
        want = p.features[:, y, x] - fitted.memory_bank[p.nearest_index[y, x]]
        torch.testing.assert_close(p.residual[:, y, x], want)


def test_thresholds_come_from_leave_one_out_or_from_jitter_for_a_single_image(detector):
    many = detector.fit(_goods(3))
    assert many.thresholds.rule == "leave-one-out" and many.thresholds.n_scores == 3
    one = detector.fit(_goods(1))
    assert one.thresholds.rule == "augmented-single" and one.thresholds.n_scores >= 2
    extra = detector.fit(_goods(3), extra_good=_goods(2, seed=1))
    assert extra.thresholds.n_scores == 5
    for f in (many, one, extra):
        assert 0 < f.thresholds.good_max < f.thresholds.defective_min


def test_empty_support_is_a_clear_error(detector):
    with pytest.raises(ValueError, match="empty"):
        detector.fit([])


def test_corrupt_image_is_a_clear_error_naming_the_file(detector, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="broken.png"):
        detector.fit([bad])
    fitted = detector.fit(_goods(2))
    with pytest.raises(ImageError, match="not found"):
        detector.predict(fitted, [tmp_path / "absent.png"])


def test_support_fitted_at_another_size_is_refused(resnet, detector):
    fitted = detector.fit(_goods(2))
    other = Detector(DetectorConfig(image_size=96), resnet=resnet, device="cpu")
    with pytest.raises(ValueError, match="image_size|grid"):
        other.predict(fitted, _goods(1))


def test_returned_features_can_be_trained_on(detector):
    fitted = detector.fit(_goods(2))
    p = detector.predict(fitted, _goods(1, seed=3), return_features=True)[0]
    layer = torch.nn.Conv2d(p.residual.shape[0], 2, 1)
    loss = layer(p.residual[None]).pow(2).mean() + layer(p.features[None]).mean()
    loss.backward()  # inference-mode tensors would refuse this
    p.residual.mul_(2)  # and refuse in-place updates
    assert layer.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_fit_on_gpu_save_load_on_cpu_predict_on_gpu(resnet, tmp_path):
    gpu = Detector(DetectorConfig(image_size=64), resnet=resnet, device="cuda")
    fitted = gpu.fit(_goods(3))
    fitted.save(tmp_path / "s.pt")
    loaded = FittedSupport.load(tmp_path / "s.pt")
    assert loaded.memory_bank.device.type == "cpu"
    p = gpu.predict(loaded, _goods(1, seed=5), return_features=True)[0]
    assert p.residual.device.type == "cpu" and np.isfinite(p.score)
    cpu = Detector(DetectorConfig(image_size=64), resnet=random_resnet(), device="cpu")
    q = cpu.predict(loaded, _goods(1, seed=5))[0]
    assert q.score == pytest.approx(p.score, rel=1e-2)


def test_with_method_shares_the_backbone_and_changes_only_the_method(resnet):
    base = Detector(DetectorConfig(image_size=64), resnet=resnet, device="cpu")
    other = base.with_method("patchcore_plus")
    assert other.extractor is base.extractor and other.config.method == "patchcore_plus"
    assert base.config.method == "fastrecon" and base.with_method("fastrecon") is base
    assert other.config == DetectorConfig(image_size=64, method="patchcore_plus")
