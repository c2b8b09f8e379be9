"""Temporary: synthetic defects moved to `detection.synthetic` (issue 15). Only `detection/dfd.py` still imports
them from here; the coordinator repoints that import after the merge and deletes this file."""

from __future__ import annotations

from detection.synthetic import TextureBank, defect_mask, foreground_mask, make_pseudo_defect

__all__ = ["TextureBank", "defect_mask", "foreground_mask", "make_pseudo_defect"]
