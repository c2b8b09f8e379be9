"""Image loading and the resize policy shared by fit and predict.

Policy: any size and aspect ratio is accepted; EXIF orientation is applied; images are converted to RGB
(grayscale replicated, alpha dropped, palette expanded, 16-bit scaled by a fixed 1/257) and resized to
S x S without keeping the aspect ratio, the same way for support and query images, so patches correspond;
anomaly maps are resized back to each image's own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | Path | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input image cannot be used; the message says which one and why."""


def load_rgb(image: ImageInput, name: str = "image") -> np.ndarray:
    """Any supported input -> (H, W, 3) uint8 RGB array."""
    if isinstance(image, (str, Path)):
        name = str(image)
        try:
            with Image.open(image) as im:
                im.load()
                return _pil_to_rgb(im)
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: not a readable image ({exc})") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name}: too many pixels ({exc})") from None
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name)
    raise ImageError(f"{name}: unsupported input type {type(image).__name__}")


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise ImageError("empty image (0 pixels)")
    im = ImageOps.exif_transpose(im)  # phone photos: the pixels as the camera meant them
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # A fixed scale (not per-image min-max), so support and query images keep comparable brightness.
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return np.asarray(im.convert("RGB"))


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{name}: expected an (H, W), (H, W, 1|3|4) array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr / 257.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = (arr * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def to_model_input(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 in [0, 1]."""
    resized = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(resized, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
