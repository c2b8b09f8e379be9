"""Fuzzing the upload check and image decoding (hypothesis): random bytes, mutated and truncated images of every
accepted format, huge declared dimensions, hostile zip archives. The only outcomes allowed: a clean refusal with
a reason, or an accepted image that the worker's decoder then reads. Any other exception is a finding.

Findings fixed, kept below as regression tests: a corrupt LZMA or deflate member of a zip raised LZMAError /
zlib.error out of the upload check (a 500 for the API); a member whose name starts with NUL (zipfile cuts names at
NUL) made ZipInfo.is_dir() raise IndexError; a TIFF whose StripOffsets tag is declared RATIONAL made Pillow's
load() raise TypeError (long run, 1500 examples). Long-run figures: README, "Security"."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from detection.images import load_rgb
from inspector.uploads import AcceptedImage, Limits, RejectedUpload, UploadTooLarge, iter_uploads

from .fuzzing import fuzz_settings

# Pillow and zipfile warn about the corrupt files they still read; the outcome, not the warning, is what is checked.
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::UserWarning")]

LIMITS = Limits(max_file_bytes=256 * 2**10, max_pixels=250_000, max_files=20, max_zip_bytes=2 * 2**20)


def _encode(fmt: str, mode: str = "RGB", size=(24, 16), **params) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


SEEDS = [
    _encode("PNG"),
    _encode("PNG", "L"),
    _encode("PNG", "RGBA"),
    _encode("PNG", "I;16"),
    _encode("PNG", "P"),
    _encode("JPEG", quality=80),
    _encode("JPEG", "L", progressive=True),
    _encode("BMP"),
    _encode("TIFF"),
    _encode("TIFF", compression="tiff_lzw"),
    _encode("TIFF", compression="tiff_adobe_deflate"),
    _encode("TIFF", "I;16"),
    _encode("WEBP", lossless=True),
    _encode("WEBP", quality=50),
]


def _check(files: list[tuple[str, bytes]]) -> list:
    """Run the upload check; every accepted image must then decode the way the worker decodes it."""
    try:
        results = list(iter_uploads([(name, io.BytesIO(data)) for name, data in files], LIMITS))
    except UploadTooLarge:
        return []
    for item in results:
        assert isinstance(item, AcceptedImage | RejectedUpload)
        if isinstance(item, RejectedUpload):
            assert item.reason and len(item.name) <= 255 + 260
            continue
        with Image.open(io.BytesIO(item.data)) as im:
            im.load()
            rgb = load_rgb(im, name=item.name)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and item.width * item.height <= LIMITS.max_pixels
    return results


@st.composite
def mutated(draw) -> bytes:
    """A valid image with a few byte-level edits: flips, overwrites with extreme integers, cuts, insertions."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "int", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "int":
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 65500, 100_000]))
            data[at : at + 4] = struct.pack(">I", value)
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def _png(width: int, height: int, idat: bytes, bit_depth: int = 8, colour: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@given(st.binary(max_size=4096))
@fuzz_settings(40)
def test_random_bytes_are_refused_cleanly(data):
    _check([("x.png", data)])


@given(mutated())
@example(SEEDS[0][:60])  # cut inside IHDR/IDAT
@example(_png(1, 1, b""))  # no pixel data at all
@fuzz_settings(80)
def test_mutated_and_truncated_images_never_raise(data):
    _check([("photo.jpg", data)])


@given(
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 2, 4, 8, 16]),
    st.sampled_from([0, 2, 3, 4, 6]),
    st.binary(max_size=256),
)
@example(100_000, 100_000, 8, 2, zlib.compress(b"\0" * 1000))  # a classic bomb header
@example(2**31 - 1, 1, 16, 6, b"")
@fuzz_settings(40)
def test_declared_dimensions_never_allocate_past_the_limit(width, height, depth, colour, payload):
    idat = zlib.compress(payload) if payload else b""
    for item in _check([("bomb.png", _png(width, height, idat, depth, colour))]):
        assert isinstance(item, RejectedUpload) or width * height <= LIMITS.max_pixels


_member_names = st.one_of(
    st.sampled_from(["a.png", "dir/b.png", "../up.png", "/abs.png", "C:\\win.png", "a/../../b.png", "", "x" * 300]),
    st.text(max_size=40),
)
_member_data = st.one_of(st.sampled_from(SEEDS), mutated(), st.binary(max_size=512))


@st.composite
def archives(draw) -> bytes:
    """A zip built from drawn members (names, contents, compression), sometimes mutated after writing."""
    buf = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in draw(st.lists(st.tuples(_member_names, _member_data), max_size=5)):
            info = zipfile.ZipInfo(name or "unnamed")
            info.compress_type = compression
            if draw(st.booleans()) and draw(st.booleans()):
                info.external_attr = 0o120777 << 16  # a symbolic link
            zf.writestr(info, data)
    data = bytearray(buf.getvalue())
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@given(archives())
@fuzz_settings(40)
def test_hostile_archives_are_refused_member_by_member_never_raise(data):
    _check([("lot.zip", data)])


@given(st.binary(max_size=600))
@example(b"PK\x05\x06" + b"\0" * 18)  # an empty archive's end record alone
@example(b"PK\x03\x04" + b"\xff" * 26)
@fuzz_settings(40)
def test_garbage_behind_a_zip_signature_never_raises(tail):
    _check([("lot.zip", b"PK\x03\x04" + tail)])


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_member_with_corrupt_compressed_data_is_refused_not_raised(compression):
    """Regression (found by test_hostile_archives...): the decompressors' own errors escaped."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("a.png", SEEDS[0])
    data = bytearray(buf.getvalue())
    start = 30 + len("a.png")  # the member's compressed data follows its local header
    for at in range(start + 2, start + 40, 3):
        data[at] ^= 0xA5
    results = _check([("lot.zip", bytes(data))])
    assert [type(r) for r in results] == [RejectedUpload]


def test_a_member_with_an_empty_name_is_refused_not_raised():
    """Regression (found by test_hostile_archives...): zipfile cuts a name at NUL; '' broke ZipInfo.is_dir()."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", SEEDS[0])
        zf.writestr("b.png", SEEDS[1])
        zf.filelist[0].filename = ""
    results = _check([("lot.zip", buf.getvalue())])
    assert [r.reason for r in results if isinstance(r, RejectedUpload)] == ["archive member without a name"]


def test_a_tiff_with_fractional_strip_offsets_is_refused_not_raised():
    """Regression (found by the long run of test_mutated...): Pillow's TIFF loader seeks to an IFDRational."""
    data = bytearray(_encode("TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]  # Pillow writes little-endian ("II")
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets, now one RATIONAL read at offset 8
            struct.pack_into("<HHII", data, entry, 273, 5, 1, 8)
    results = _check([("part.tif", bytes(data))])
    assert [type(r) for r in results] == [RejectedUpload] and results[0].reason.startswith("corrupt image")
