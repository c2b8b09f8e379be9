"""Synthetic defects made from a product's own good images (plain numpy/OpenCV, no Django, no torch).

Below both ML packages: `detection` (DFD's training data) and `classification` (the encoder's pre-training,
the synthetic benchmark) use it, and it imports neither.
"""

from __future__ import annotations

from detection.synthetic.generator import (
    FOREGROUND_MAX_FRACTION,
    FOREGROUND_MIN_FRACTION,
    IMAGE_SUFFIXES,
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
