"""Synthetic pseudo-defects for pre-training: masks, foreground, Perlin noise, textures, blending, episodes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detection.synthetic import (
    VARIANTS,
    SyntheticDefectGenerator,
    TextureBank,
    defect_mask,
    draw_scratches,
    foreground_mask,
    intensity_spot,
    make_pseudo_defect,
    missing_material,
    perlin_noise,
)

DTD_SMALL = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "dtd_small"
SIZE = 64


def disc_image(rng: np.random.Generator, size: int = SIZE, radius: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A bright, slightly textured disc (the part) centred on a dark flat background, and the disc's mask."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (radius * size) ** 2
    img = np.where(disc[..., None], [200, 170, 120], [25, 30, 35]) + rng.normal(0, 4, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def procedural_bank() -> TextureBank:
    return TextureBank(n_procedural=10, seed=0)


@pytest.fixture(scope="module")
def generator(procedural_bank: TextureBank) -> SyntheticDefectGenerator:
    rng = np.random.default_rng(0)
    return SyntheticDefectGenerator([disc_image(rng)[0] for _ in range(3)], procedural_bank, rng_seed=0)


# Perlin noise


def test_perlin_noise_is_deterministic_per_seed_and_differs_across_seeds():
    a = perlin_noise((SIZE, 48), 4, np.random.default_rng(7))
    b = perlin_noise((SIZE, 48), 4, np.random.default_rng(7))
    c = perlin_noise((SIZE, 48), 4, np.random.default_rng(8))
    assert a.shape == (SIZE, 48) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05


def test_perlin_noise_is_smooth_and_spans_about_minus_one_to_one():
    noise = perlin_noise((SIZE, SIZE), (3, 5), np.random.default_rng(0))  # lattice need not divide the image
    assert -1.01 <= noise.min() < -0.2 and 0.2 < noise.max() <= 1.01
    # neighbouring pixels are close: blobs, not white noise
    assert np.abs(np.diff(noise, axis=1)).mean() < 0.1 * np.abs(noise).mean() + 0.05


def test_perlin_noise_does_not_touch_the_global_numpy_rng():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    perlin_noise((16, 16), 2, np.random.default_rng(0))
    assert np.random.random() == expected


# foreground


def test_foreground_of_a_bright_disc_on_a_dark_flat_background_is_roughly_the_disc():
    img, disc = disc_image(np.random.default_rng(0))
    for method in ("auto", "floodfill", "grabcut"):
        fg = foreground_mask(img, method)
        assert fg.shape == disc.shape and fg.dtype == bool
        assert iou(fg, disc) > 0.75, method


def test_foreground_of_a_large_image_is_computed_small_and_returned_at_full_size():
    img, disc = disc_image(np.random.default_rng(0), size=400)
    fg = foreground_mask(img)
    assert fg.shape == (400, 400)
    assert iou(fg, disc) > 0.85


def test_a_texture_like_image_of_uniform_noise_gives_the_whole_image():
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    assert foreground_mask(noise).all()
    assert foreground_mask(noise, "grabcut").all()


def test_a_flat_image_gives_the_whole_image():
    assert foreground_mask(np.full((SIZE, SIZE, 3), 128, np.uint8)).all()


def test_procedural_textures_filling_the_frame_give_the_whole_image(procedural_bank):
    rng = np.random.default_rng(0)
    whole = [foreground_mask(procedural_bank.sample(c, SIZE, rng)).all() for c in procedural_bank.classes]
    assert sum(whole) >= len(whole) - 1  # at most one texture mistaken for a part on a background


def test_foreground_rejects_an_unknown_method_and_a_non_rgb_array():
    img, _ = disc_image(np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown method"):
        foreground_mask(img, "magic")
    with pytest.raises(ValueError, match="uint8 RGB"):
        foreground_mask(img[..., 0])


# defect masks


@pytest.mark.parametrize("whole", [False, True])
def test_defect_masks_lie_within_the_foreground_and_the_area_bounds_over_many_seeds(whole):
    _, disc = disc_image(np.random.default_rng(0))
    fg = np.ones_like(disc) if whole else disc
    fractions = []
    for seed in range(150):
        mask = defect_mask(fg, np.random.default_rng(seed), min_area=0.005, max_area=0.40)
        assert mask.dtype == bool and mask.shape == fg.shape
        assert not (mask & ~fg).any(), seed
        fraction = mask.sum() / fg.sum()
        assert 0.005 <= fraction <= 0.40, (seed, fraction)
        fractions.append(fraction)
    fractions = np.array(fractions)
    assert (fractions < 0.03).mean() > 0.15  # small defects are common, not an afterthought
    assert (fractions > 0.15).mean() > 0.15


def test_defect_masks_are_deterministic_per_seed_and_vary_across_seeds():
    _, disc = disc_image(np.random.default_rng(0))
    a = defect_mask(disc, np.random.default_rng(3))
    np.testing.assert_array_equal(a, defect_mask(disc, np.random.default_rng(3)))
    assert not np.array_equal(a, defect_mask(disc, np.random.default_rng(4)))


def test_defect_mask_on_a_tiny_foreground_still_has_at_least_one_pixel():
    fg = np.zeros((SIZE, SIZE), bool)
    fg[10:14, 20:24] = True
    mask = defect_mask(fg, np.random.default_rng(0))
    assert 1 <= mask.sum() <= 6 and not (mask & ~fg).any()


def test_defect_mask_rejects_an_empty_foreground_and_inverted_bounds():
    with pytest.raises(ValueError, match="empty foreground"):
        defect_mask(np.zeros((8, 8), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_area"):
        defect_mask(np.ones((8, 8), bool), np.random.default_rng(0), min_area=0.5, max_area=0.1)


# textures


def test_procedural_texture_bank_has_n_distinct_classes_whose_samples_differ_between_classes(procedural_bank):
    classes = procedural_bank.classes
    assert len(classes) == len(set(classes)) == len(procedural_bank) == 10
    rng = np.random.default_rng(0)
    samples = {c: procedural_bank.sample(c, SIZE, rng) for c in classes}
    for c, s in samples.items():
        assert s.shape == (SIZE, SIZE, 3) and s.dtype == np.uint8, c
    features = {c: np.concatenate([s.reshape(-1, 3).mean(0), s.reshape(-1, 3).std(0)]) for c, s in samples.items()}
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            assert np.abs(features[a] - features[b]).max() > 10, (a, b)


def test_procedural_texture_samples_of_one_class_resemble_each_other_more_than_other_classes(procedural_bank):
    rng = np.random.default_rng(1)

    def colour(c: str) -> np.ndarray:
        return procedural_bank.sample(c, SIZE, rng).reshape(-1, 3).mean(0)

    for c in procedural_bank.classes:
        same = np.abs(colour(c) - colour(c)).max()
        others = min(np.abs(colour(c) - colour(o)).max() for o in procedural_bank.classes if o != c)
        assert same < others, c


def test_procedural_texture_classes_depend_on_the_seed_only_and_samples_on_the_generator():
    a, b = TextureBank(n_procedural=5, seed=3), TextureBank(n_procedural=5, seed=3)
    c = a.classes[0]
    np.testing.assert_array_equal(a.sample(c, 32, np.random.default_rng(1)), b.sample(c, 32, np.random.default_rng(1)))
    assert not np.array_equal(a.sample(c, 32, np.random.default_rng(1)), a.sample(c, 32, np.random.default_rng(2)))


def test_texture_bank_subset_keeps_only_the_named_classes(procedural_bank):
    sub = procedural_bank.subset(procedural_bank.classes[:3])
    assert sub.classes == procedural_bank.classes[:3]
    with pytest.raises(KeyError):
        sub.sample(procedural_bank.classes[5], 16, np.random.default_rng(0))


def test_texture_bank_without_the_folder_fails_loudly(tmp_path):
    with pytest.raises(FileNotFoundError):
        TextureBank(tmp_path / "absent")


@pytest.mark.datasets
def test_the_real_dtd_small_folder_gives_47_classes_sampled_at_the_requested_size():
    if not DTD_SMALL.is_dir():
        pytest.skip(f"dtd_small absent at {DTD_SMALL}")
    bank = TextureBank(DTD_SMALL / "train")
    assert len(bank.classes) == 47
    rng = np.random.default_rng(0)
    a = bank.sample(bank.classes[0], 100, rng)  # larger than the ~72 px source images: upscaled
    b = bank.sample(bank.classes[1], 40, rng)
    assert a.shape == (100, 100, 3) and b.shape == (40, 40, 3) and a.dtype == np.uint8
    assert a.std() > 1 and b.std() > 1
    np.testing.assert_array_equal(
        bank.sample(bank.classes[2], 48, np.random.default_rng(5)),
        bank.sample(bank.classes[2], 48, np.random.default_rng(5)),
    )


# blending and variants


def test_blending_keeps_pixels_outside_the_mask_and_changes_pixels_inside():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    texture = 255 - img  # guaranteed different from the image everywhere except at 127.5
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:30, 20:50] = True
    beta = 0.3
    out = make_pseudo_defect(img, texture, mask, beta)
    np.testing.assert_array_equal(out[~mask], img[~mask])
    expected = (1 - beta) * texture[mask].astype(float) + beta * img[mask].astype(float)
    assert np.abs(out[mask].astype(float) - expected).max() <= 0.51  # rounding to uint8
    assert (out[mask] != img[mask]).mean() > 0.9


def test_blending_with_beta_zero_pastes_the_texture_opaquely():
    img = np.full((16, 16, 3), 10, np.uint8)
    texture = np.full((16, 16, 3), 200, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    out = make_pseudo_defect(img, texture, mask, 0.0)
    assert (out[mask] == 200).all() and (out[~mask] == 10).all()


def test_blending_rejects_mismatched_shapes_and_beta_out_of_range():
    img = np.zeros((16, 16, 3), np.uint8)
    mask = np.ones((16, 16), bool)
    with pytest.raises(ValueError, match="differ"):
        make_pseudo_defect(img, np.zeros((8, 8, 3), np.uint8), mask, 0.1)
    with pytest.raises(ValueError, match="beta"):
        make_pseudo_defect(img, img, mask, 1.5)


def test_darker_and_brighter_spots_change_intensity_only_inside_the_mask():
    img, disc = disc_image(np.random.default_rng(0))
    mask = defect_mask(disc, np.random.default_rng(1), min_area=0.1, max_area=0.2)
    dark = intensity_spot(img, mask, 0.6, brighter=False)
    bright = intensity_spot(img, mask, 0.6, brighter=True)
    np.testing.assert_array_equal(dark[~mask], img[~mask])
    np.testing.assert_array_equal(bright[~mask], img[~mask])
    inside = img[mask].astype(float).mean()
    assert dark[mask].astype(float).mean() < inside - 20
    assert bright[mask].astype(float).mean() > inside + 10


def test_scratches_stay_inside_the_foreground_over_many_seeds():
    img, disc = disc_image(np.random.default_rng(0))
    survivors = []
    for seed in range(40):
        out, mask = draw_scratches(img, disc, np.random.default_rng(seed))
        assert mask.any(), seed
        assert not (mask & ~disc).any(), seed
        np.testing.assert_array_equal(out[~mask], img[~mask])
        assert mask.sum() < 0.5 * disc.sum(), seed
        survivors.append(cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).sum() / mask.sum())
    assert np.mean(survivors) < 0.2  # thin curves: a 5x5 erosion removes nearly all of them, unlike blobs


def test_missing_material_shows_the_background_colour_inside_the_mask():
    img, disc = disc_image(np.random.default_rng(0))
    mask = defect_mask(disc, np.random.default_rng(2), min_area=0.1, max_area=0.2)
    out = missing_material(img, mask, disc, np.random.default_rng(0))
    np.testing.assert_array_equal(out[~mask], img[~mask])
    background = np.median(img[~disc].astype(float), 0)
    assert np.abs(out[mask].astype(float).mean(0) - background).max() < 10


def test_missing_material_on_a_texture_smooths_the_region_away():
    img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:40, 20:40] = True
    out = missing_material(img, mask, np.ones_like(mask), np.random.default_rng(0))
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert out[25:35, 25:35].astype(float).std() < 0.5 * img[25:35, 25:35].astype(float).std()


# generator


def test_generator_lists_texture_classes_and_variants_as_pseudo_types(generator, procedural_bank):
    assert generator.classes == procedural_bank.classes + list(VARIANTS)


def test_episode_classes_are_distinct_within_and_differ_across_episodes(generator):
    rng = np.random.default_rng(0)
    episodes = [generator.episode_classes(5, rng) for _ in range(30)]
    assert all(len(set(e)) == 5 for e in episodes)
    assert len({frozenset(e) for e in episodes}) > 20  # not one fixed set reused every step
    seen = set().union(*episodes)
    assert seen == set(generator.classes)  # over 30 episodes every pseudo type shows up


def test_episode_classes_reject_more_ways_than_pseudo_types(generator):
    with pytest.raises(ValueError, match="n_way"):
        generator.episode_classes(len(generator.classes) + 1, np.random.default_rng(0))


def test_every_pseudo_type_gives_a_changed_image_with_a_mask_inside_the_foreground(generator):
    rng = np.random.default_rng(0)
    for name in generator.classes:
        for _ in range(3):
            out, mask = generator.sample(name, rng)
            assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8, name
            assert mask.shape == (SIZE, SIZE) and mask.dtype == bool and mask.any(), name
            sources = [i for i, img in enumerate(generator.images) if np.array_equal(out[~mask], img[~mask])]
            assert sources, f"{name}: pixels outside the mask changed"
            assert not (mask & ~generator.foregrounds[sources[0]]).any(), name
            assert (out[mask] != generator.images[sources[0]][mask]).any(), name


def test_generator_samples_are_deterministic_given_the_generator_passed_in(generator):
    name = generator.classes[0]
    a = generator.sample(name, np.random.default_rng(11))
    b = generator.sample(name, np.random.default_rng(11))
    c = generator.sample(name, np.random.default_rng(12))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_generator_rejects_an_unknown_pseudo_type_and_texture_classes_named_like_variants(generator, tmp_path):
    with pytest.raises(KeyError):
        generator.sample("not_a_type", np.random.default_rng(0))
    # a texture folder named like a variant would make two pseudo types share one label
    (tmp_path / "scratch").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "scratch" / "a.png")
    with pytest.raises(ValueError, match="named like variants"):
        SyntheticDefectGenerator([generator.images[0]], TextureBank(tmp_path))
