from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from detection import Detector, DetectorConfig, FittedSupport, dfd, dfd_model
from detection.dfd import DFDConfig, DFDState
from detection.metrics import auroc

from .helpers import part_image, random_resnet

# A small, fast DFD: the tests check the method's mechanics, not the paper's budget.
TINY_DFD = DFDConfig(
    max_augmented=24, max_steps=60, adaptor_dim=64, hidden=64, perlin_dim=32, heads=2, calibration_images=4
)
TINY = dict(method="dfd", image_size=64, batch_size=4, method_configs=(TINY_DFD,))


@pytest.fixture(scope="module")
def resnet():
    return random_resnet()


@pytest.fixture(scope="module")
def detector(resnet):
    return Detector(DetectorConfig(**TINY), resnet=resnet, device="cpu")


@pytest.fixture(scope="module")
def fitted(detector):
    rng = np.random.default_rng(0)
    return detector.fit([part_image(rng) for _ in range(3)])


def _image(seed: int, size: int = 37) -> torch.Tensor:
    return torch.rand(2, 3, size, size + 6, generator=torch.Generator().manual_seed(seed))


def test_frequency_split_matches_opencvs_gaussian_pyramid_and_reconstructs_the_image():
    images = _image(0)
    low, high = dfd_model.frequency_split(images)
    for b in range(images.shape[0]):
        rgb = images[b].permute(1, 2, 0).numpy().astype(np.float64)
        size = (rgb.shape[1], rgb.shape[0])
        expected = cv2.pyrUp(cv2.pyrDown(rgb), dstsize=size)
        np.testing.assert_allclose(low[b].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    torch.testing.assert_close(low + high, images)


def test_low_path_keeps_a_flat_image_and_high_path_gets_the_fine_detail():
    flat = torch.full((1, 3, 32, 32), 0.4)
    low, high = dfd_model.frequency_split(flat)
    torch.testing.assert_close(low, flat)
    assert high.abs().max() < 1e-6
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2  # the finest pattern there is
    low, high = dfd_model.frequency_split(checker.float().expand(1, 3, 32, 32))
    assert high.abs().mean() > 4 * (low - low.mean()).abs().mean()


def test_frequency_split_refuses_a_single_image_without_batch_axis():
    with pytest.raises(ValueError, match="expects"):
        dfd_model.frequency_split(torch.rand(3, 8, 8))


def test_truncated_l1_stops_pushing_past_theta():
    d = torch.tensor([2.0, 0.5, -2.0, -0.5])
    anomalous = torch.tensor([False, False, True, True])
    # normal side: relu(0.8 - 2) = 0, relu(0.8 - 0.5) = 0.3; anomalous: relu(0.8 - 2) = 0, relu(0.8 - 0.5) = 0.3
    assert float(dfd.truncated_l1(d, anomalous, 0.8)) == pytest.approx(0.15 + 0.15)
    assert float(dfd.truncated_l1(torch.tensor([1.0, -1.0]), torch.tensor([False, True]), 0.8)) == 0.0


def test_grid_labels_mark_covered_patches_and_ignore_slivers():
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :4] = 1  # patch (0, 0) of a 2x2 grid fully anomalous
    mask[0, 4, 4] = 1  # one pixel of patch (1, 1): 1/16 < 25 %, ignored
    labels = dfd.grid_labels(mask, (2, 2))
    assert labels.tolist() == [[1.0, 0.0, 0.0, -1.0]]


def test_pseudo_anomaly_changes_pixels_only_inside_its_mask():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(part_image(rng)).permute(2, 0, 1).float() / 255
    out, mask = dfd.pseudo_anomaly(image, dfd.TextureBank(seed=0), np.random.default_rng(2))
    assert out.shape == image.shape and mask.shape == image.shape[1:]
    assert mask.sum() > 0
    outside = (out - image).abs().amax(0)[mask == 0]
    assert float(outside.max()) < 1 / 255 + 1e-6


def test_trained_model_scores_pseudo_anomalies_above_the_clean_patches_of_the_same_image(resnet):
    detector = Detector(DetectorConfig(**TINY), resnet=resnet, device="cpu")
    rng = np.random.default_rng(3)
    support = detector.load_images([part_image(rng) for _ in range(2)])[0]
    model, scores = dfd.train(detector.frozen, support, TINY_DFD, seed=0)
    assert len(scores) == 4  # calibration: ceil(4 / k) fresh views of each of the k = 2 images
    views = dfd._augmented(support, 4, torch.Generator().manual_seed(9))  # views training never saw
    bank = dfd.TextureBank(seed=5)
    pairs = [dfd.pseudo_anomaly(v, bank, np.random.default_rng(i)) for i, v in enumerate(views)]
    low, high = dfd_model.path_features(detector.frozen, torch.stack([p[0] for p in pairs]), chunk=4)
    patch = model.scores(low, high)  # (N, R)
    grid = detector.config.feature_grid
    labels = dfd.grid_labels(torch.stack([p[1] for p in pairs]), (grid, grid))
    inside, outside = patch[labels == 1], patch[labels == 0]
    assert inside.numel() and float(inside.mean()) > float(outside.mean())


def test_the_loss_falls_when_the_model_is_trained_on_it():
    s = TINY_DFD
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(4, 16, 32, generator=g)
    anomaly = normal.clone()
    labels = torch.zeros(4, 16)
    labels[:, :4] = 1
    anomaly[:, :4] += 3.0  # the "defect" patches
    torch.manual_seed(0)
    model = dfd.build_model(32, s)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss, parts = dfd.dfd_loss(model, normal, anomaly, labels, s, g)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"gau", "per", "sim", "img"}
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_training_on_a_tiny_product_separates_an_obvious_defect(detector, fitted):
    rng = np.random.default_rng(42)
    goods = [part_image(rng) for _ in range(8)]
    defects = [part_image(rng, defect=True) for _ in range(8)]
    preds = detector.predict(fitted, goods + defects)
    scores = np.array([p.score for p in preds])
    assert auroc(np.array([0] * 8 + [1] * 8), scores) >= 0.9
    for p in preds:
        assert p.patch_scores.shape == (8, 8)
        assert p.score == pytest.approx(float(p.patch_scores.max()))


def test_image_score_is_not_erased_by_per_image_normalisation(detector, fitted):
    # The paper's per-image min-max would give every image a maximum of exactly 1.
    rng = np.random.default_rng(7)
    scores = {round(p.score, 6) for p in detector.predict(fitted, [part_image(rng) for _ in range(4)])}
    assert len(scores) == 4


def test_save_and_load_round_trip_gives_identical_predictions(detector, fitted, tmp_path):
    path = tmp_path / "dfd.pt"
    fitted.save(path)
    loaded = FittedSupport.load(path)
    assert loaded.config == fitted.config
    assert set(loaded.state.tensors()) == set(fitted.state.tensors())
    queries = [part_image(np.random.default_rng(11), defect=True), part_image(np.random.default_rng(12))]
    before = detector.predict(fitted, queries)
    after = detector.predict(loaded, queries)
    for a, b in zip(before, after, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-5)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-5)


def test_patch_scores_without_images_is_a_clear_error(detector, fitted):
    batch, _ = detector.load_images([part_image(np.random.default_rng(0))])
    with pytest.raises(ValueError, match="pass images"):
        detector.patch_scores(fitted, detector.features(batch))


def test_a_support_set_of_another_method_has_no_dfd_model(resnet, tmp_path):
    other = Detector(DetectorConfig(method="patchcore", image_size=64), resnet=resnet, device="cpu")
    fitted = other.fit([part_image(np.random.default_rng(0))])
    assert not isinstance(fitted.state, DFDState) and fitted.state.tensors() == {}
    from detection.cli.dfd_maps import map_aurocs

    from .test_evaluate import _write_dataset

    _write_dataset(tmp_path)
    with pytest.raises(ValueError, match="DFD's"):
        map_aurocs(tmp_path, other, shots=1, seed=0)


def test_fit_reports_progress_from_zero_to_one(resnet):
    fast = DetectorConfig(**TINY).with_method_config(replace(TINY_DFD, max_steps=5))
    detector = Detector(fast, resnet=resnet, device="cpu")
    seen: list[tuple[float, str]] = []
    detector.fit([part_image(np.random.default_rng(0))], progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("training step" in m for _, m in seen)


@pytest.mark.parametrize("field", ["max_steps", "heads", "batch"])
def test_bad_dfd_settings_are_refused(field):
    with pytest.raises(ValueError, match=field):
        DFDConfig(**{field: 0})


def test_training_window_is_a_square_of_the_grid_that_holds_the_pseudo_defect():
    labels = torch.zeros(3, 10 * 12)
    labels[0, 7 * 12 + 11] = 1  # one anomalous patch near the bottom-right corner
    labels[1, 0] = 1
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = dfd.training_window(labels, (10, 12), 4, gen)
        assert idx.shape == (3, 16)
        for b in range(3):
            ys, xs = idx[b] // 12, idx[b] % 12
            assert ys.max() - ys.min() == 3 and xs.max() - xs.min() == 3 and len(set(idx[b].tolist())) == 16
        assert 7 * 12 + 11 in idx[0].tolist() and 0 in idx[1].tolist()
    whole = dfd.training_window(labels, (10, 12), 10, gen)
    assert whole.shape == (3, 120) and whole[2].tolist() == list(range(120))


def test_the_four_maps_average_to_the_patch_scores(detector, fitted):
    batch, _ = detector.load_images(
        [part_image(np.random.default_rng(5), defect=True), part_image(np.random.default_rng(6))]
    )
    maps = dfd.four_maps(fitted.state, detector, batch)
    assert maps.shape == (2, len(dfd_model.MAP_NAMES), 64)
    scores = detector.patch_scores(fitted, detector.features(batch), batch)
    torch.testing.assert_close(maps.mean(1).view(2, 8, 8), scores)


def test_map_diagnostic_reports_every_map_and_the_paper_average(detector, tmp_path):
    from detection.cli.dfd_maps import COMBINATIONS, map_aurocs

    from .test_evaluate import _write_dataset

    _write_dataset(tmp_path)
    result = map_aurocs(tmp_path, detector, shots=2, seed=0)
    assert set(result) == set(COMBINATIONS) and set(dfd_model.MAP_NAMES) <= set(result)
    # the paper's average over the four maps is what the detector scores with: obvious defects are found
    assert result["all four (DFD)"]["image_auroc"] >= 90
    assert all(0 <= row["pixel_auroc"] <= 100 for row in result.values())
