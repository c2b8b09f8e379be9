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
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("darker_spot", "brighter_spot", "scratch", "missing_material")
"""Pseudo defect types that are not textures; each is its own class in an episode."""

FOREGROUND_MIN_FRACTION = 0.10
FOREGROUND_MAX_FRACTION = 0.98
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# Foreground work is done at most at this side length: flood fill and GrabCut are resolution-dependent and
# slow on 1000 px photos; the part's outline does not need more.
_FOREGROUND_WORK_SIDE = 256


def _check_rgb(rgb: np.ndarray, name: str = "rgb") -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", None)
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{name}: empty image {rgb.shape}")


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> None:
    if not isinstance(mask, np.ndarray) or mask.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {getattr(mask, 'shape', None)}")


# --------------------------------------------------------------------------------------------------- noise


def _fade(t: np.ndarray) -> np.ndarray:
    # Perlin's quintic 6t^5 - 15t^4 + 10t^3: zero first and second derivatives at the lattice, so no grid
    # artefacts show in thresholded masks (the cubic 3t^2 - 2t^3 leaves visible creases).
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], scale: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin (gradient) noise of `shape`, with `scale` lattice cells along (rows, cols).

    Smooth random blobs whose size is image size / scale: thresholding it gives the irregular, connected
    defect shapes of DRAEM-style synthesis. Random unit gradients sit on a (ry + 1, rx + 1) lattice; each
    pixel blends the dot products with its cell's four corner gradients. Any shape works (the lattice need
    not divide the image). Returns float32 in about [-1, 1] (raw Perlin spans +-sqrt(2)/2; scaled by sqrt(2)).
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = (scale, scale) if isinstance(scale, int | np.integer) else (int(scale[0]), int(scale[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"perlin_noise: shape must be positive, got {shape}")
    if ry <= 0 or rx <= 0:
        raise ValueError(f"perlin_noise: scale must be positive, got {scale}")
    angles = rng.uniform(0.0, 2.0 * math.pi, size=(ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)  # (ry+1, rx+1) unit gradients

    ys = (np.arange(h) + 0.5) * (ry / h)  # lattice coordinate of each pixel centre, in [0, ry)
    xs = (np.arange(w) + 0.5) * (rx / w)
    y0 = np.minimum(ys.astype(np.int64), ry - 1)
    x0 = np.minimum(xs.astype(np.int64), rx - 1)
    fy = (ys - y0)[:, None]  # (H, 1) offset inside the cell
    fx = (xs - x0)[None, :]  # (1, W)

    def corner(dy: int, dx: int) -> np.ndarray:
        iy, ix = np.ix_(y0 + dy, x0 + dx)
        return gx[iy, ix] * (fx - dx) + gy[iy, ix] * (fy - dy)  # (H, W)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return ((top * (1 - v) + bottom * v) * math.sqrt(2.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- foreground


def _work_copy(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    f = _FOREGROUND_WORK_SIDE / max(h, w)
    if f >= 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _flood_fill_background(small: np.ndarray, tolerance: int) -> np.ndarray:
    """Background = everything reachable from the image border through small colour steps (bool, work size)."""
    h, w = small.shape[:2]
    sigma = max(1.0, min(h, w) / 100.0)
    blurred = cv2.GaussianBlur(small, (0, 0), sigma)
    # floodFill's own mask is (H+2, W+2); value 1 = filled. Neighbour-relative steps (no FIXED_RANGE) follow
    # slow illumination gradients of the background but stop at the part's edge.
    ff_mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    diff = (tolerance, tolerance, tolerance)
    ring = (
        [(x, 0) for x in range(w)]
        + [(x, h - 1) for x in range(w)]
        + [(0, y) for y in range(1, h - 1)]
        + [(w - 1, y) for y in range(1, h - 1)]
    )
    for x, y in ring:
        if ff_mask[y + 1, x + 1] == 0:
            cv2.floodFill(blurred, ff_mask, (x, y), (0, 0, 0), diff, diff, flags)
    return ff_mask[1:-1, 1:-1].astype(bool)


def _grabcut_foreground(small: np.ndarray) -> np.ndarray:
    h, w = small.shape[:2]
    if h < 8 or w < 8:
        return np.ones((h, w), bool)
    mx, my = max(1, round(0.05 * w)), max(1, round(0.05 * h))
    gc_mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, gc_mask, (mx, my, w - 2 * mx, h - 2 * my), bgd, fgd, 4, cv2.GC_INIT_WITH_RECT)
    return (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)


def _clean(fg: np.ndarray) -> np.ndarray:
    """Drop specks (< 0.5 % of the image) left by noise at the background's edge."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(1, 0.005 * fg.size)
    return keep[labels]


def _separation(lab: np.ndarray, fg: np.ndarray) -> float:
    """How distinct the part's colours are from the background's: |mean_fg - mean_bg| / (std_fg + std_bg).

    A texture split by a flood fill gives two samples of the same texture: 0.0-0.45 on DTD images at 256 px;
    a part on its background gives more (MVTec bottle on white 3.4, cookie on a tray 1.4), hence the 0.75 cut.
    """
    a, b = lab[fg], lab[~fg]
    if len(a) == 0 or len(b) == 0:
        return 0.0
    spread = float(np.linalg.norm(a.std(0)) + np.linalg.norm(b.std(0)))
    return float(np.linalg.norm(a.mean(0) - b.mean(0))) / (spread + 1e-6)


def foreground_mask(
    rgb: np.ndarray, method: str = "auto", *, tolerance: int = 3, min_separation: float = 0.75
) -> np.ndarray:
    """Bool (H, W) mask of the part, so that synthetic defects land on the part and not on the background.

    Methods: "floodfill" (background = what a flood fill from every border pixel reaches through colour
    steps <= `tolerance` on a blurred copy; part = the rest, specks removed), "grabcut" (cv2.grabCut
    initialised with the image minus a 5 % border as "probably part"), "auto" (= flood fill, the cheaper and
    deterministic one; GrabCut's k-means seeds from OpenCV's global RNG, so its masks can vary between calls),
    "whole" (every pixel).

    Rule for falling back to the whole image: the result is implausible when it covers less than 10 % or
    more than 98 % of the image, or when part and background are not distinct in colour (separation below
    `min_separation`, see `_separation`). Both happen on textures (carpet, wood, fabric) and flat parts that
    fill the frame, where there is no background and a defect may be anywhere, so the whole image is the
    right answer there, not a failure.
    """
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    if method == "whole":
        return np.ones((h, w), bool)
    if method not in ("auto", "floodfill", "grabcut"):
        raise ValueError(f"foreground_mask: unknown method {method!r} (auto, floodfill, grabcut, whole)")
    small = _work_copy(rgb)
    fg = _grabcut_foreground(small) if method == "grabcut" else ~_flood_fill_background(small, tolerance)
    fg = _clean(fg)
    frac = float(fg.mean())
    if not FOREGROUND_MIN_FRACTION <= frac <= FOREGROUND_MAX_FRACTION:
        log.debug("foreground %s covers %.1f%% of the image: using the whole image", method, 100 * frac)
        return np.ones((h, w), bool)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    sep = _separation(lab, fg)
    if sep < min_separation:
        log.debug("foreground %s: part and background alike (separation %.2f): whole image", method, sep)
        return np.ones((h, w), bool)
    if fg.shape != (h, w):
        fg = cv2.resize(fg.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return fg


# ------------------------------------------------------------------------------------------- defect masks


def defect_mask(
    fg: np.ndarray,
    rng: np.random.Generator,
    min_area: float = 0.005,
    max_area: float = 0.40,
    *,
    max_tries: int = 10,
) -> np.ndarray:
    """A random blob-shaped defect region inside the foreground, bool (H, W).

    Perlin noise at a random scale, thresholded, intersected with `fg`. The target area (as a fraction of
    the foreground) is drawn log-uniformly in [min_area, max_area], so small defects (the hard, common case:
    a 2 % scratch or spot) are as frequent per octave as large ones; the threshold is the noise quantile that
    gives that area, which keeps the top of one or a few noise peaks, i.e. compact blobs. Masks outside the
    bounds (ties, rounding) are redrawn with new noise; after `max_tries` the exact top-k pixels are kept.
    """
    if fg.ndim != 2:
        raise ValueError(f"defect_mask: fg must be (H, W), got shape {fg.shape}")
    if not 0.0 < min_area <= max_area <= 1.0:
        raise ValueError(f"defect_mask: need 0 < min_area <= max_area <= 1, got {min_area}, {max_area}")
    fg = fg.astype(bool)
    n_fg = int(fg.sum())
    if n_fg == 0:
        raise ValueError("defect_mask: empty foreground")
    lo = max(1, math.ceil(min_area * n_fg))
    hi = max(lo, math.floor(max_area * n_fg))
    h, w = fg.shape
    # 2, 4 or 8 lattice cells per side (fewer on tiny images: at least 8 px per cell). Finer noise at a large
    # area scatters dozens of specks over the part, which no real defect looks like; small defects come from
    # small target areas instead (the top of one noise peak).
    max_exp = max(1, min(3, int(math.log2(max(2, min(h, w) // 8)))))
    noise = np.zeros(fg.shape, np.float32)
    k = lo
    for _ in range(max_tries):
        scale = int(2 ** rng.integers(1, max_exp + 1))
        noise = perlin_noise((h, w), scale, rng)
        target = math.exp(rng.uniform(math.log(min_area), math.log(max_area)))
        k = int(np.clip(round(target * n_fg), lo, hi))
        values = noise[fg]
        threshold = np.partition(values, n_fg - k)[n_fg - k]  # k-th largest inside the foreground
        mask = fg & (noise >= threshold)
        if lo <= int(mask.sum()) <= hi:
            return mask
    flat = np.flatnonzero(fg)
    top = flat[np.argsort(noise.ravel()[flat], kind="stable")[-k:]]
    mask = np.zeros(fg.size, bool)
    mask[top] = True
    return mask.reshape(fg.shape)


# ---------------------------------------------------------------------------------------------- textures


def _contrasting_colours(rng: np.random.Generator, min_distance: float = 110.0) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.uniform(0, 255, 3)
    for _ in range(50):
        c2 = rng.uniform(0, 255, 3)
        if np.linalg.norm(c1 - c2) >= min_distance:
            break
    else:
        c2 = 255.0 - c1
    return c1, c2


class TextureBank:
    """Named texture classes to paste as pseudo defects: a folder of class subfolders, or procedural ones.

    Folder mode (`root` given): every subfolder of `root` holding images is a class, e.g.
    `dtd_small/train/<class>/*.jpg`; a sample is a random file of the class, randomly flipped/rotated by a
    multiple of 90 degrees, kept at its own scale (x1-1.5 random zoom), mirror-tiled to cover `size`, and
    randomly cropped.

    Procedural mode (`root=None`): `n_procedural` classes generated from formulas (stripes, checker, dots,
    blotches, grain), each with its own fixed parameters (angle, period, colours, ...) derived from `seed`
    and the class index, so a fresh machine with no dataset still has distinct texture classes. Samples of
    one class differ only by phase/offset and noise drawn from the Generator passed to `sample`.
    """

    FAMILIES: tuple[str, ...] = ("stripes", "checker", "dots", "blotches", "grain")

    def __init__(
        self, root: str | Path | None = None, *, n_procedural: int = 24, seed: int = 0, cache_size: int = 512
    ) -> None:
        self.root = Path(root) if root is not None else None
        self._files: dict[str, list[Path]] = {}
        self._params: dict[str, dict] = {}
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_size = cache_size
        if self.root is not None:
            if not self.root.is_dir():
                raise FileNotFoundError(f"TextureBank: no texture folder at {self.root}")
            for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
                files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if files:
                    self._files[sub.name] = files
            if not self._files:
                raise ValueError(f"TextureBank: no class subfolders with images under {self.root}")
            self._classes = list(self._files)
            log.info("texture bank: %d classes from %s", len(self._classes), self.root)
        else:
            if n_procedural < 1:
                raise ValueError(f"TextureBank: n_procedural must be >= 1, got {n_procedural}")
            for i in range(n_procedural):
                family = self.FAMILIES[i % len(self.FAMILIES)]
                # A private Generator per class: class parameters depend only on (seed, index), never on
                # how many samples were drawn before.
                params = self._draw_params(family, np.random.default_rng([seed, i]))
                self._params[f"{family}_{i:02d}"] = params
            self._classes = list(self._params)

    @property
    def classes(self) -> list[str]:
        """Class names, in a fixed order."""
        return list(self._classes)

    @property
    def procedural(self) -> bool:
        return self.root is None

    def __len__(self) -> int:
        return len(self._classes)

    def subset(self, class_names: Sequence[str]) -> TextureBank:
        """A bank restricted to `class_names` (e.g. pre-training classes vs held-out benchmark classes)."""
        missing = [c for c in class_names if c not in self._classes]
        if missing:
            raise ValueError(f"TextureBank.subset: unknown classes {missing[:5]}")
        bank = object.__new__(TextureBank)
        bank.root = self.root
        bank._files = {c: self._files[c] for c in class_names if c in self._files}
        bank._params = {c: self._params[c] for c in class_names if c in self._params}
        bank._cache = self._cache  # shared decoded-file cache; read-only arrays
        bank._cache_size = self._cache_size
        bank._classes = list(class_names)
        return bank

    def sample(self, class_name: str, size: int, rng: np.random.Generator) -> np.ndarray:
        """A (size, size, 3) uint8 RGB texture patch of `class_name`."""
        if class_name not in self._files and class_name not in self._params:
            raise KeyError(f"TextureBank: unknown class {class_name!r}")
        if size < 1:
            raise ValueError(f"TextureBank.sample: size must be >= 1, got {size}")
        if self.root is not None:
            return self._sample_file(class_name, size, rng)
        return self._sample_procedural(self._params[class_name], size, rng)

    # folder mode

    def _load(self, path: Path) -> np.ndarray:
        arr = self._cache.get(path)
        if arr is None:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))  # oldest first: a FIFO is enough here
            self._cache[path] = arr
        return arr

    def _sample_file(self, class_name: str, size: int, rng: np.random.Generator) -> np.ndarray:
        files = self._files[class_name]
        img = self._load(files[int(rng.integers(len(files)))])
        img = np.rot90(img, int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        h, w = img.shape[:2]
        # The texture's own scale, with up to 1.5x random zoom so patches of one file differ; a file smaller than
        # `size` is mirror-tiled to cover it. Never magnified to fill the image: dtd_small's 72 px files scaled
        # up to a 512 px part became flat colour blobs, and every class looked alike.
        f = rng.uniform(1.0, 1.5)
        nh, nw = math.ceil(h * f), math.ceil(w * f)
        img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
        img = np.pad(img, ((0, max(0, size - nh)), (0, max(0, size - nw)), (0, 0)), mode="symmetric")
        nh, nw = img.shape[:2]
        y, x = int(rng.integers(nh - size + 1)), int(rng.integers(nw - size + 1))
        return np.ascontiguousarray(img[y : y + size, x : x + size])

    # procedural mode

    @staticmethod
    def _draw_params(family: str, crng: np.random.Generator) -> dict:
        c1, c2 = _contrasting_colours(crng)
        p: dict = {
            "family": family,
            "c1": c1,
            "c2": c2,
            "angle": crng.uniform(0, math.pi),
            "grain": crng.uniform(3, 12),
        }
        if family == "stripes":
            p.update(period=crng.uniform(4, 16), duty=crng.uniform(0.3, 0.7))
        elif family == "checker":
            p.update(period=crng.uniform(4, 14))
        elif family == "dots":
            period = crng.uniform(6, 16)
            p.update(period=period, radius=crng.uniform(0.2, 0.4) * period)
        elif family == "blotches":
            p.update(cell=crng.uniform(6, 24), level=crng.uniform(-0.3, 0.3))
        else:  # grain: coloured noise blurred to a class-specific grain size
            p.update(blur=crng.uniform(0.5, 3.0), amplitude=crng.uniform(40, 90))
        return p

    @staticmethod
    def _sample_procedural(p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        theta = p["angle"] + rng.normal(0.0, 0.05)  # a little jitter: same class, not the same pixels
        u = xx * math.cos(theta) + yy * math.sin(theta) + rng.uniform(0, 100)
        v = -xx * math.sin(theta) + yy * math.cos(theta) + rng.uniform(0, 100)
        family = p["family"]
        if family == "stripes":
            t = ((u / p["period"]) % 1.0 < p["duty"]).astype(np.float32)
        elif family == "checker":
            t = ((np.floor(u / p["period"]) + np.floor(v / p["period"])) % 2).astype(np.float32)
        elif family == "dots":
            du = u % p["period"] - p["period"] / 2
            dv = v % p["period"] - p["period"] / 2
            t = (np.hypot(du, dv) < p["radius"]).astype(np.float32)
        elif family == "blotches":
            scale = max(1, round(size / p["cell"]))
            t = 1.0 / (1.0 + np.exp(-12.0 * (perlin_noise((size, size), scale, rng) - p["level"])))
        else:
            g = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), p["blur"])
            t = np.clip(0.5 + g / (g.std() + 1e-6) * p["amplitude"] / 255.0, 0.0, 1.0)
        t = t.astype(np.float32)[..., None]  # (S, S, 1) mixing weight between the two class colours
        img = p["c1"] * (1 - t) + p["c2"] * t + rng.normal(0, p["grain"], (size, size, 1))
        return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- blending


def make_pseudo_defect(rgb: np.ndarray, texture: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """DRAEM blend of `texture` into `rgb` inside `mask`: out = I (1 - M) + (1 - beta) T M + beta I M.

    Outside the mask the image is untouched; inside, the texture shows with opacity 1 - beta over the image,
    so beta ~ U[0, 0.5) gives defects from opaque (beta = 0) to half transparent, some of which keep the
    part's shading visible like real stains do. `mask` may be bool or float in [0, 1] (soft edges).
    Note: not (1 - beta) T + beta I everywhere, which would repaint the whole image.
    """
    _check_rgb(rgb)
    _check_rgb(texture, "texture")
    if texture.shape != rgb.shape:
        raise ValueError(f"make_pseudo_defect: texture {texture.shape} and image {rgb.shape} differ")
    _check_mask(mask, rgb.shape[:2])
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
    _check_rgb(rgb)
    _check_mask(mask, rgb.shape[:2])
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
    _check_rgb(rgb)
    _check_mask(fg, rgb.shape[:2], "fg")
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
    _check_rgb(rgb)
    _check_mask(mask, rgb.shape[:2])
    _check_mask(fg, rgb.shape[:2], "fg")
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
            _check_rgb(img, f"support_images[{i}]")
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
