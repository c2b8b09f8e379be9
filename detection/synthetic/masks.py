"""Where a synthetic defect may go: the part's foreground mask and a Perlin-noise blob inside it.

`foreground_mask` finds the part (flood fill from the border, or GrabCut; the whole image where there is no
distinct background); `defect_mask` draws a blob-shaped region of a log-uniform area inside it from
`perlin_noise`. Every random choice draws from the `np.random.Generator` passed in.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

log = logging.getLogger(__name__)

FOREGROUND_MIN_FRACTION = 0.10
FOREGROUND_MAX_FRACTION = 0.98

# Foreground work is done at most at this side length: flood fill and GrabCut are resolution-dependent and
# slow on 1000 px photos; the part's outline does not need more.
_FOREGROUND_WORK_SIDE = 256


def check_rgb(rgb: np.ndarray, name: str = "rgb") -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", None)
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 RGB array, got shape {shape} dtype {dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{name}: empty image {rgb.shape}")


def check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> None:
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
    check_rgb(rgb)
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
