"""Validation of uploaded files before anything is stored or queued.

Type by content, never by name; size and pixel-count limits (decompression bombs); a full decode so a
truncated file is refused here and not in the worker; .zip archives expanded in memory with guards against
path traversal, symlinks, nested archives and zip bombs. Every refused file comes back with a reason.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
MAX_ZIP_RATIO = 200  # uncompressed / compressed per member: beyond this it is treated as a zip bomb


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_pixels: int
    max_files: int
    max_zip_bytes: int


@dataclass(frozen=True)
class AcceptedImage:
    name: str
    data: bytes
    checksum: str  # sha256 hex
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class RejectedUpload:
    name: str
    reason: str


def validate_uploads(
    files: Iterable[tuple[str, BinaryIO]], limits: Limits
) -> tuple[list[AcceptedImage], list[RejectedUpload]]:
    """(name, file) pairs -> accepted images and rejected files; a .zip (by content) is expanded."""
    accepted: list[AcceptedImage] = []
    rejected: list[RejectedUpload] = []
    for name, fh in files:
        data = fh.read(limits.max_zip_bytes + 1) if _peek_zip(fh) else fh.read(limits.max_file_bytes + 1)
        if zipfile.is_zipfile(io.BytesIO(data)):
            a, r = _expand_zip(name, data, limits)
            accepted += a
            rejected += r
        else:
            _check_one(name, data, limits, accepted, rejected)
        if len(accepted) > limits.max_files:
            raise UploadTooLarge(f"more than {limits.max_files} images in one upload")
    return accepted, rejected


class UploadTooLarge(ValueError):
    """The upload as a whole exceeds a limit; nothing of it is accepted."""


def _peek_zip(fh: BinaryIO) -> bool:
    head = fh.read(4)
    fh.seek(0)
    return head == b"PK\x03\x04"


def _check_one(name: str, data: bytes, limits: Limits, accepted: list, rejected: list) -> None:
    try:
        accepted.append(validate_image(name, data, limits))
    except InvalidImage as exc:
        rejected.append(RejectedUpload(name, str(exc)))


class InvalidImage(ValueError):
    pass


def validate_image(name: str, data: bytes, limits: Limits) -> AcceptedImage:
    if not data:
        raise InvalidImage("empty file")
    if len(data) > limits.max_file_bytes:
        raise InvalidImage(f"file larger than {limits.max_file_bytes // 2**20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            width, height = im.size
            if fmt not in ALLOWED_FORMATS:
                raise InvalidImage(f"unsupported image format {fmt or 'unknown'} (use PNG, JPEG, BMP, TIFF or WebP)")
            if width * height > limits.max_pixels:
                raise InvalidImage(f"{width}x{height} pixels exceeds the limit of {limits.max_pixels:,}")
            if width == 0 or height == 0:
                raise InvalidImage("image has no pixels")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() does not decode pixel data: a truncated file fails only here
    except InvalidImage:
        raise
    except Image.DecompressionBombError:
        raise InvalidImage("too many pixels (decompression bomb guard)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else f"corrupt image ({exc})"
        raise InvalidImage(reason) from None
    return AcceptedImage(
        name=name[-255:],
        data=data,
        checksum=hashlib.sha256(data).hexdigest(),
        extension=ALLOWED_FORMATS[fmt],
        width=width,
        height=height,
    )


def _expand_zip(name: str, data: bytes, limits: Limits) -> tuple[list[AcceptedImage], list[RejectedUpload]]:
    accepted: list[AcceptedImage] = []
    rejected: list[RejectedUpload] = []
    if len(data) > limits.max_zip_bytes:
        return [], [RejectedUpload(name, "archive too large")]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return [], [RejectedUpload(name, f"corrupt zip archive ({exc})")]
    total = 0
    for info in members:
        label = f"{name}/{info.filename}"
        if info.is_dir():
            continue
        if info.filename.startswith(("/", "\\")) or ".." in info.filename.replace("\\", "/").split("/"):
            rejected.append(RejectedUpload(label, "unsafe path in archive"))
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            rejected.append(RejectedUpload(label, "symbolic link in archive"))
            continue
        total += info.file_size
        if total > limits.max_zip_bytes:
            rejected.append(RejectedUpload(name, "archive expands beyond the size limit; remaining files skipped"))
            break
        if info.file_size > limits.max_file_bytes:
            rejected.append(RejectedUpload(label, f"file larger than {limits.max_file_bytes // 2**20} MiB"))
            continue
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
            rejected.append(RejectedUpload(label, "suspicious compression ratio (zip bomb guard)"))
            continue
        try:
            with archive.open(info) as fh:
                member = fh.read(limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
            rejected.append(RejectedUpload(label, f"unreadable archive member ({exc})"))
            continue
        if zipfile.is_zipfile(io.BytesIO(member)):
            rejected.append(RejectedUpload(label, "nested archives are not accepted"))
            continue
        _check_one(info.filename.rsplit("/", 1)[-1], member, limits, accepted, rejected)
    return accepted, rejected
