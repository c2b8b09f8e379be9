"""Texture classes pasted as pseudo defects: a folder of class folders (e.g. dtd_small/train), or procedural ones."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detection.synthetic.masks import perlin_noise

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


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
