"""Synthetic defects made from a product's own good images (numpy and OpenCV only; no Django).

Below both ML packages: `detection` (DFD's training data) and `classification` (the encoder's pre-training,
the synthetic benchmark) use it, and it imports neither. Modules: `masks` (foreground of the part, Perlin blob
masks), `textures` (`TextureBank`: folder or procedural texture classes), `generator` (blending, the hand-made
variants and `SyntheticDefectGenerator`; its docstring describes the whole pipeline).
"""

from __future__ import annotations

from detection.synthetic.generator import (
    VARIANTS,
    SyntheticDefectGenerator,
    draw_scratches,
    intensity_spot,
    make_pseudo_defect,
    missing_material,
)
from detection.synthetic.masks import (
    FOREGROUND_MAX_FRACTION,
    FOREGROUND_MIN_FRACTION,
    defect_mask,
    foreground_mask,
    perlin_noise,
)
from detection.synthetic.textures import IMAGE_SUFFIXES, TextureBank

__all__ = [
    "FOREGROUND_MAX_FRACTION",
    "FOREGROUND_MIN_FRACTION",
    "IMAGE_SUFFIXES",
    "VARIANTS",
    "SyntheticDefectGenerator",
    "TextureBank",
    "defect_mask",
    "draw_scratches",
    "foreground_mask",
    "intensity_spot",
    "make_pseudo_defect",
    "missing_material",
    "perlin_noise",
]
