"""Uploaded files: validation before anything is stored or queued, then storage of the accepted ones.

Type by content, never by name; size and pixel-count limits (decompression bombs); a full decode so a
truncated file is refused here and not in the worker; .zip archives expanded in memory with guards against
path traversal, symlinks, nested archives, encrypted members, overlapping entries and zip bombs. Every refused
file comes back with a reason. Only Pillow's decoders for the accepted formats ever see the bytes, and
names are only labels (control characters and folders stripped): storage names are random (see stored_uploads).

Ground floor: imports no app. `stored_uploads` is the entry point of the apps (support sets, batches);
`iter_uploads` is the validation it streams through.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import stat
import struct
import unicodedata
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, UnidentifiedImageError

# MPO: a JPEG with extra frames (many cameras and phones write it); its first frame is the photo.
ALLOWED_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
# The parsers Image.open may try (an MPO is opened by the JPEG parser); no other format's parser sees the bytes.
OPEN_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]
MAX_ZIP_RATIO = 200  # uncompressed / compressed per member: beyond this it is treated as a zip bomb
MAX_NAME_CHARS = 255
MAX_REJECTED_LISTED = 500  # past this, refused files are summarised in one line
# Formats refused with their name rather than "not an image" (first bytes -> name); archives get their own reason.
_OTHER_IMAGE_MAGIC = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"%PDF": "PDF", b"\x00\x00\x01\x00": "ICO"}
_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"\x1f\x8b": "gzip",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!": "rar",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}
# Everything a decoder or the zip reader may raise on hostile bytes (found by tests/app/test_fuzz.py); anything else
# is a bug to fix, not a file to refuse.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombWarning,
    TypeError,  # a TIFF whose StripOffsets are declared RATIONAL: Pillow seeks to a fraction (found by fuzzing)
)
_ZIP_ERRORS = (
    zlib.error,  # a corrupt deflated member (found by the fuzz test: it was a 500)
    lzma.LZMAError,  # a corrupt LZMA member (found by the fuzz test: it was a 500)
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    ValueError,
    EOFError,
    struct.error,
    RuntimeError,
    NotImplementedError,
    UnicodeDecodeError,
)


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


class UploadTooLarge(ValueError):
    """The upload as a whole exceeds a limit; nothing of it is accepted."""


# ------------------------------------------------------------------------------------------------- storage


def upload_limits() -> Limits:
    """The limits of one upload, from the settings."""
    return Limits(
        max_file_bytes=settings.INSPECTOR_MAX_FILE_BYTES,
        max_pixels=settings.INSPECTOR_MAX_PIXELS,
        max_files=settings.INSPECTOR_MAX_FILES_PER_UPLOAD,
        max_zip_bytes=settings.INSPECTOR_MAX_ZIP_BYTES,
    )


@dataclass(frozen=True)
class StoredImage:
    name: str  # storage name: random, never the uploaded name
    original_name: str
    checksum: str
    width: int
    height: int


@dataclass
class StoredUpload:
    images: list[StoredImage]
    rejected: list[RejectedUpload]
    n_rejected: int  # may exceed len(rejected): only the first MAX_REJECTED_LISTED are kept

    def rejected_for_display(self) -> list[RejectedUpload]:
        extra = self.n_rejected - len(self.rejected)
        more = [RejectedUpload("…", f"{extra} more files refused")] if extra > 0 else []
        return self.rejected + more


@contextmanager
def stored_uploads(*, files: Iterable[tuple[str, BinaryIO]], prefix: str) -> Iterator[StoredUpload]:
    """Validate the uploads one file at a time and write the accepted ones to storage, before any database
    transaction is opened (a long upload must not hold a write lock). If the block that then creates the
    rows fails, the files written here are deleted again: nothing is left half-stored."""
    result = StoredUpload([], [], 0)
    try:
        for item in iter_uploads(files, upload_limits()):
            if isinstance(item, AcceptedImage):
                name = default_storage.save(f"{prefix}/{uuid.uuid4().hex}{item.extension}", ContentFile(item.data))
                result.images.append(StoredImage(name, item.name, item.checksum, item.width, item.height))
            else:
                result.n_rejected += 1
                if len(result.rejected) < MAX_REJECTED_LISTED:
                    result.rejected.append(item)
        yield result
    except UploadTooLarge as exc:
        _delete(result.images)
        raise ValidationError(str(exc)) from None
    except BaseException:
        _delete(result.images)
        raise


def _delete(images: list[StoredImage]) -> None:
    for image in images:
        default_storage.delete(image.name)


# ---------------------------------------------------------------------------------------------- validation


def _is_zip(fh: BinaryIO) -> bool:
    head = fh.read(4)
    fh.seek(0)
    return head in (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive


def _archive_kind(data: bytes) -> str | None:
    if data[257:262] == b"ustar":
        return "tar"
    return next((kind for magic, kind in _ARCHIVE_MAGIC.items() if data.startswith(magic)), None)


def safe_name(name: str) -> str:
    """The name shown for an upload: its last path component, control and format characters dropped, at most
    255 characters. Only ever a label; never a path (storage names are random)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return name.strip()[-MAX_NAME_CHARS:] or "unnamed"


def _check_one(name: str, data: bytes, limits: Limits) -> AcceptedImage | RejectedUpload:
    try:
        return validate_image(name, data, limits)
    except InvalidImage as exc:
        return RejectedUpload(safe_name(name), str(exc))


class InvalidImage(ValueError):
    pass


def validate_image(name: str, data: bytes, limits: Limits) -> AcceptedImage:
    if not data:
        raise InvalidImage("empty file")
    if len(data) > limits.max_file_bytes:
        raise InvalidImage(f"file larger than {limits.max_file_bytes // 2**20} MiB")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit: here any excess is refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fmt, width, height = _decode(data, limits)
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("too many pixels (decompression bomb guard)") from None
    except UnidentifiedImageError:
        kind = _archive_kind(data)
        if kind:
            raise InvalidImage(f"{kind} archive: only .zip archives of images are accepted") from None
        other = next((f for magic, f in _OTHER_IMAGE_MAGIC.items() if data.startswith(magic)), None)
        if other:
            raise InvalidImage(f"unsupported image format {other} (use PNG, JPEG, BMP, TIFF or WebP)") from None
        raise InvalidImage("not an image") from None
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"corrupt image ({str(exc)[:200]})") from None
    return AcceptedImage(
        name=safe_name(name),
        data=data,
        checksum=hashlib.sha256(data).hexdigest(),
        extension=ALLOWED_FORMATS[fmt],
        width=width,
        height=height,
    )


def _decode(data: bytes, limits: Limits) -> tuple[str, int, int]:
    """Identify (only the accepted formats' parsers are tried), check the size, verify and fully decode."""
    formats = OPEN_FORMATS
    with Image.open(io.BytesIO(data), formats=formats) as im:
        fmt = im.format
        width, height = im.size
        if fmt not in ALLOWED_FORMATS:  # the formats= filter already ensures it; kept as the guard it states
            raise InvalidImage(f"unsupported image format {fmt or 'unknown'} (use PNG, JPEG, BMP, TIFF or WebP)")
        if width * height > limits.max_pixels:
            raise InvalidImage(f"{width}x{height} pixels exceeds the limit of {limits.max_pixels:,}")
        if width == 0 or height == 0:
            raise InvalidImage("image has no pixels")
        im.verify()
    with Image.open(io.BytesIO(data), formats=formats) as im:
        im.load()  # verify() does not decode pixel data: a truncated file fails only here
    return fmt, width, height


def _unsafe_member_path(filename: str) -> bool:
    path = filename.replace("\\", "/")
    parts = path.split("/")
    return (
        path.startswith("/")
        or ".." in parts
        or (len(path) > 1 and path[1] == ":")  # a Windows drive: C:/ or C:name
        or "\x00" in path
    )


def _overlapping(members: list[zipfile.ZipInfo]) -> bool:
    """True if two members' data overlap: the trick of zip bombs that reuse one compressed block for many files
    (each member looks harmless, together they expand without bound)."""
    spans = sorted(
        (m.header_offset, m.header_offset + 30 + len(m.orig_filename.encode()) + m.compress_size) for m in members
    )
    return any(end > next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))


def _iter_zip(name: str, fh: BinaryIO, limits: Limits) -> Iterator[AcceptedImage | RejectedUpload]:
    name = safe_name(name)
    try:
        archive = zipfile.ZipFile(fh)
        members = archive.infolist()
    except _ZIP_ERRORS as exc:
        yield RejectedUpload(name, f"corrupt zip archive ({str(exc)[:200]})")
        return
    if len(members) > 2 * limits.max_files + 100:
        yield RejectedUpload(name, f"archive has {len(members)} entries, more than this upload may hold")
        return
    if _overlapping(members):
        yield RejectedUpload(name, "archive members overlap (zip bomb guard)")
        return
    total = 0
    for info in members:
        label = f"{name}/{_label(info.filename)}"
        if not info.filename:  # a NUL-led name ends up empty (found by the fuzz test: is_dir() raised)
            yield RejectedUpload(label, "archive member without a name")
            continue
        if info.is_dir():
            continue
        if _unsafe_member_path(info.filename):
            yield RejectedUpload(label, "unsafe path in archive")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            yield RejectedUpload(label, "symbolic link in archive")
            continue
        if info.flag_bits & 0x1:
            yield RejectedUpload(label, "encrypted archive member")
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
        except _ZIP_ERRORS as exc:
            yield RejectedUpload(label, f"unreadable archive member ({str(exc)[:200]})")
            continue
        if _archive_kind(member) or zipfile.is_zipfile(io.BytesIO(member)):
            yield RejectedUpload(label, "nested archives are not accepted")
            continue
        yield _check_one(info.filename, member, limits)


def _label(filename: str) -> str:
    """A member's path for messages: control characters dropped, at most 255 characters."""
    return "".join(ch for ch in filename if unicodedata.category(ch)[0] != "C")[-MAX_NAME_CHARS:]
