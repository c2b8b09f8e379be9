"""Synthetic defects made from a product's own good images, for pre-training the defect-type encoder.

Why: a new product comes with a handful of good images and maybe one confirmed example per defect type, too
little to train an embedding. Pasting textures through random blob masks onto the product's own images gives
an unlimited supply of labelled "defect types" (pseudo type = texture class, or one of a few hand-made
variants: darker/brighter spots, scratches, missing material) that look like the product everywhere except
the defect, which is what the encoder must learn to describe.

Pipeline for one synthetic image: foreground mask of the part (`foreground_mask`), a Perlin-noise blob mask
inside it (`defect_mask`), then either a texture blended through the mask (`make_pseudo_defect`, the DRAEM
blend) or a variant (`intensity_spot`, `draw_scratches`, `missing_material`).

Determinism: every random choice draws from a `np.random.Generator` passed in; nothing here seeds or reads a
global RNG (numpy's or Python's), so a run is reproducible from its seeds and two generators never share state.
Each episode draws its pseudo classes anew (`SyntheticDefectGenerator.episode_classes`): the research code
reseeded its RNG every step and so trained on the same 10 pseudo classes forever.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np

from detection.synthetic.masks import check_mask, check_rgb, defect_mask, foreground_mask
from detection.synthetic.textures import TextureBank

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("darker_spot", "brighter_spot", "scratch", "missing_material")
"""Pseudo defect types that are not textures; each is its own class in an episode."""


# --------------------------------------------------------------------------------------------- blending


def make_pseudo_defect(rgb: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """DRAEM blend of `texture` into `rgb` inside `mask`: out = I (1 - M) + (1 - beta) T M + beta I M.

    Outside the mask the image is untouched; inside, the texture shows with opacity 1 - beta over the image,
    so beta ~ U[0, 0.5) gives defects from opaque (beta = 0) to half transparent, some of which keep the
    part's shading visible like real stains do. `mask` may be bool or float in [0, 1] (soft edges).
    Note: not (1 - beta) T + beta I everywhere, which would repaint the whole image.
    """
    check_rgb(rgb)
    check_rgb(texture, "texture")
    if texture.shape != rgb.shape:
        raise ValueError(f"make_pseudo_defect: texture {texture.shape} and image {rgb.shape} differ")
    check_mask(mask, rgb.shape[:2])
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"make_pseudo_defect: beta must be in [0, 1], got {beta}")
    m = np.clip(mask.astype(np.float32), 0.0, 1.0)[..., None]  # (H, W, 1)
    img, tex = rgb.astype(np.float32), texture.astype(np.float32)
    out = img * (1 - m) + (1 - beta) * tex * m + beta * img * m
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[~(m[..., 0] > 0)] = rgb[~(m[..., 0] > 0)]  # bit-exact outside, whatever float rounding did
    return out


def _soft_inside(mask: np.ndarray) -> np.ndarray:
    """Mask blurred for soft edges, then cut to the mask: smooth like a real spot, zero outside it."""
    sigma = max(0.8, 0.01 * min(mask.shape))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return np.clip(soft / max(float(soft.max()), 1e-6), 0.0, 1.0) * mask


def intensity_spot(rgb: np.ndarray, mask: np.ndarray, strength: float, *, brighter: bool) -> np.ndarray:
    """Darker or brighter spot inside `mask`, `strength` in (0, 1]: a burn mark, a dent's shadow, a glare.

    Darker scales pixels towards black (I (1 - s m)); brighter towards white (I + (255 - I) s m), so a
    bright spot still shows on an already bright part instead of clipping away.
    """
    check_rgb(rgb)
    check_mask(mask, rgb.shape[:2])
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"intensity_spot: strength must be in (0, 1], got {strength}")
    m = (_soft_inside(mask.astype(bool)) * strength)[..., None]
    img = rgb.astype(np.float32)
    out = img + (255.0 - img) * m if brighter else img * (1.0 - m)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _bezier(points: np.ndarray, n: int = 48) -> np.ndarray:
    """Cubic Bezier through 4 control points (4, 2) -> (n, 2)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def draw_scratches(
    rgb: np.ndarray, fg: np.ndarray, rng: np.random.Generator, *, max_curves: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """1 to `max_curves` thin random curves (cubic Beziers, 1-3 px, anti-aliased) on the part.

    Each curve starts at a random foreground pixel and bends through two random control points; the drawn
    stroke is cut to `fg`, so scratches never land on the background. Colour: darker or brighter than the
    part under it. Returns (image, mask) with mask = the scratched pixels.
    """
    check_rgb(rgb)
    check_mask(fg, rgb.shape[:2], "fg")
    fg = fg.astype(bool)
    ys, xs = np.nonzero(fg)
    if len(ys) == 0:
        raise ValueError("draw_scratches: empty foreground")
    h, w = fg.shape
    side = min(h, w)
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(4):  # a curve can leave a thin foreground; redraw until something lands on it
        for _ in range(int(rng.integers(1, max_curves + 1))):
            i = int(rng.integers(len(ys)))
            p0 = np.array([xs[i], ys[i]], np.float64)
            length = rng.uniform(0.15, 0.6) * side
            ang = rng.uniform(0, 2 * math.pi)
            d = np.array([math.cos(ang), math.sin(ang)])
            n = np.array([-d[1], d[0]])
            ctrl = np.stack(
                [
                    p0,
                    p0 + d * length / 3 + n * rng.uniform(-0.3, 0.3) * length,
                    p0 + d * 2 * length / 3 + n * rng.uniform(-0.3, 0.3) * length,
                    p0 + d * length,
                ]
            )
            pts = np.rint(_bezier(ctrl)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [pts], False, 255, int(rng.integers(1, 4)), cv2.LINE_AA)
        alpha = canvas.astype(np.float32) / 255.0 * fg
        if (alpha > 0).sum() >= 3:
            break
    mask = alpha > 0
    img = rgb.astype(np.float32)
    dark = rng.random() < 0.5
    target = img * rng.uniform(0.1, 0.5) if dark else img + (255.0 - img) * rng.uniform(0.5, 0.9)
    a = (alpha * rng.uniform(0.7, 1.0))[..., None]
    out = np.clip(np.rint(img * (1 - a) + target * a), 0, 255).astype(np.uint8)
    out[~mask] = rgb[~mask]
    return out, mask


def missing_material(rgb: np.ndarray, mask: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The part's material gone inside `mask`: what shows through is background, or a smooth fill.

    With a background (fg not the whole image) the hole shows the background: its median colour plus noise
    of its own spread, like a chipped rim showing the table. Without one (textures, frame-filling parts) the
    region is in-painted from its edge (Telea), which erases the texture's structure: a worn or missing patch.
    """
    check_rgb(rgb)
    check_mask(mask, rgb.shape[:2])
    check_mask(fg, rgb.shape[:2], "fg")
    mask, fg = mask.astype(bool), fg.astype(bool)
    out = rgb.copy()
    if not mask.any():
        return out
    bg = ~fg
    if bg.sum() >= 0.02 * bg.size:
        pixels = rgb[bg].astype(np.float32)
        colour, spread = np.median(pixels, 0), pixels.std(0)
        fill = colour + rng.normal(0.0, 1.0, (int(mask.sum()), 3)) * spread * 0.5
        out[mask] = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
    else:
        radius = max(3, round(0.03 * min(rgb.shape[:2])))
        out = cv2.inpaint(rgb, mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out[~mask] = rgb[~mask]
    return out


# -------------------------------------------------------------------------------------------- generator


class SyntheticDefectGenerator:
    """Synthetic defective images of one product, labelled by pseudo defect type.

    Pseudo types = the texture bank's classes plus `variants` (see `VARIANTS`). Foreground masks of the
    support images are computed once here. `rng_seed` seeds this generator's own Generator, used only when
    a method is called without one; pass explicit Generators for reproducible experiments.
    """

    def __init__(
        self,
        support_images: list[np.ndarray],
        textures: TextureBank,
        rng_seed: int | None = 0,
        *,
        variants: Sequence[str] = VARIANTS,
        foreground: str = "auto",
        min_area: float = 0.005,
        max_area: float = 0.40,
    ) -> None:
        if not support_images:
            raise ValueError("SyntheticDefectGenerator: need at least one support image")
        for i, img in enumerate(support_images):
            check_rgb(img, f"support_images[{i}]")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"SyntheticDefectGenerator: unknown variants {unknown} (known: {VARIANTS})")
        clash = set(variants) & set(textures.classes)
        if clash:
            raise ValueError(f"SyntheticDefectGenerator: texture classes named like variants: {sorted(clash)}")
        self.images = list(support_images)
        self.textures = textures
        self.variants = tuple(variants)
        self.min_area, self.max_area = min_area, max_area
        self.foregrounds = [foreground_mask(img, foreground) for img in self.images]
        self._rng = np.random.default_rng(rng_seed)
        fractions = ", ".join(f"{fg.mean():.2f}" for fg in self.foregrounds[:8])
        log.info(
            "synthetic defects: %d images (foreground fractions %s), %d pseudo types",
            len(self.images),
            fractions,
            len(self.classes),
        )

    @property
    def classes(self) -> list[str]:
        """All pseudo defect types: texture classes, then variants."""
        return self.textures.classes + list(self.variants)

    def episode_classes(self, n_way: int, rng: np.random.Generator | None = None) -> list[str]:
        """`n_way` distinct pseudo types for one episode, drawn anew on every call from `rng`'s stream.

        Never reseed `rng` between episodes: a fresh draw per episode is what makes pre-training see all
        texture classes (the research code's reseeding pinned it to the same 10).
        """
        rng = self._rng if rng is None else rng
        classes = self.classes
        if not 1 <= n_way <= len(classes):
            raise ValueError(f"episode_classes: n_way must be in [1, {len(classes)}], got {n_way}")
        return [classes[i] for i in rng.choice(len(classes), size=n_way, replace=False)]

    def sample(self, class_name: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A synthetic defective image of type `class_name` from a random support image: (uint8 RGB, bool mask).

        The mask marks the defect's pixels (inside the support image's foreground).
        """
        rng = self._rng if rng is None else rng
        idx = int(rng.integers(len(self.images)))
        img, fg = self.images[idx], self.foregrounds[idx]
        h, w = fg.shape
        if class_name not in self.variants and class_name not in self.textures.classes:
            raise KeyError(f"SyntheticDefectGenerator: unknown pseudo type {class_name!r}")
        if class_name == "scratch":
            return draw_scratches(img, fg, rng)
        mask = defect_mask(fg, rng, self.min_area, self.max_area)
        if class_name == "darker_spot":
            return intensity_spot(img, mask, rng.uniform(0.3, 0.7), brighter=False), mask
        if class_name == "brighter_spot":
            return intensity_spot(img, mask, rng.uniform(0.3, 0.7), brighter=True), mask
        if class_name == "missing_material":
            return missing_material(img, mask, fg, rng), mask
        texture = self.textures.sample(class_name, max(h, w), rng)[:h, :w]
        beta = float(rng.uniform(0.0, 0.5))
        return make_pseudo_defect(img, np.ascontiguousarray(texture), mask, beta), mask
