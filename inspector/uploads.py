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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

# MPO: a JPEG with extra frames (many cameras and phones write it); its first frame is the photo.
ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
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


def iter_uploads(files: Iterable[tuple[str, BinaryIO]], limits: Limits) -> Iterator[AcceptedImage | RejectedUpload]:
    """(name, file) pairs -> one AcceptedImage or RejectedUpload per file or .zip member, as a stream, so a
    large upload is never held in memory at once. A .zip is recognised by content and read from its file
    (Django keeps large uploads in temporary files), member by member."""
    n_accepted = 0
    for name, fh in files:
        items = (
            _iter_zip(name, fh, limits)
            if _is_zip(fh)
            else [_check_one(name, fh.read(limits.max_file_bytes + 1), limits)]
        )
        for item in items:
            if isinstance(item, AcceptedImage):
                n_accepted += 1
                if n_accepted > limits.max_files:
                    raise UploadTooLarge(f"more than {limits.max_files} images in one upload")
            yield item


def validate_uploads(
    files: Iterable[tuple[str, BinaryIO]], limits: Limits
) -> tuple[list[AcceptedImage], list[RejectedUpload]]:
    """All of iter_uploads at once: accepted images and rejected files."""
    accepted: list[AcceptedImage] = []
    rejected: list[RejectedUpload] = []
    for item in iter_uploads(files, limits):
        (accepted if isinstance(item, AcceptedImage) else rejected).append(item)
    return accepted, rejected


class UploadTooLarge(ValueError):
    """The upload as a whole exceeds a limit; nothing of it is accepted."""


def _is_zip(fh: BinaryIO) -> bool:
    head = fh.read(4)
    fh.seek(0)
    return head == b"PK\x03\x04"


def _check_one(name: str, data: bytes, limits: Limits) -> AcceptedImage | RejectedUpload:
    try:
        return validate_image(name, data, limits)
    except InvalidImage as exc:
        return RejectedUpload(name, str(exc))


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


def _iter_zip(name: str, fh: BinaryIO, limits: Limits) -> Iterator[AcceptedImage | RejectedUpload]:
    try:
        archive = zipfile.ZipFile(fh)
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        yield RejectedUpload(name, f"corrupt zip archive ({exc})")
        return
    if len(members) > 2 * limits.max_files + 100:
        yield RejectedUpload(name, f"archive has {len(members)} entries, more than this upload may hold")
        return
    total = 0
    for info in members:
        label = f"{name}/{info.filename}"
        if info.is_dir():
            continue
        if info.filename.startswith(("/", "\\")) or ".." in info.filename.replace("\\", "/").split("/"):
            yield RejectedUpload(label, "unsafe path in archive")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            yield RejectedUpload(label, "symbolic link in archive")
            continue
        total += info.file_size
        if total > limits.max_zip_bytes:
            yield RejectedUpload(name, "archive expands beyond the size limit; remaining files skipped")
            return
        if info.file_size > limits.max_file_bytes:
            yield RejectedUpload(label, f"file larger than {limits.max_file_bytes // 2**20} MiB")
            continue
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
            yield RejectedUpload(label, "suspicious compression ratio (zip bomb guard)")
            continue
        try:
            with archive.open(info) as member_fh:
                # The header's sizes can lie: never read more than the per-file limit.
                member = member_fh.read(limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
            yield RejectedUpload(label, f"unreadable archive member ({exc})")
            continue
        if member[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(member)):
            yield RejectedUpload(label, "nested archives are not accepted")
            continue
        yield _check_one(info.filename.rsplit("/", 1)[-1], member, limits)
