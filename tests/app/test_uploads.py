from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest
from PIL import Image

from inspector.uploads import AcceptedImage, Limits, UploadTooLarge, iter_uploads

from .factories import png_bytes

LIMITS = Limits(max_file_bytes=2**20, max_pixels=10_000, max_files=50, max_zip_bytes=4 * 2**20)


def _files(*pairs):
    return [(name, io.BytesIO(data)) for name, data in pairs]


def validate_uploads(files, limits: Limits):
    """The whole stream of iter_uploads (what stored_uploads stores): (accepted images, rejected files)."""
    accepted, rejected = [], []
    for item in iter_uploads(files, limits):
        (accepted if isinstance(item, AcceptedImage) else rejected).append(item)
    return accepted, rejected


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_good_images_are_accepted_with_checksum_and_type_by_content():
    accepted, rejected = validate_uploads(_files(("part.jpeg", png_bytes(1))), LIMITS)
    assert not rejected
    assert accepted[0].extension == ".png"  # content decides, not the name
    assert len(accepted[0].checksum) == 64 and accepted[0].width == 64


def test_each_bad_file_gets_a_reason_and_does_not_block_the_rest():
    truncated = png_bytes(2)[:100]
    big = io.BytesIO()
    Image.new("L", (200, 200)).save(big, format="PNG")
    accepted, rejected = validate_uploads(
        _files(
            ("ok.png", png_bytes(3)),
            ("empty.png", b""),
            ("notes.png", b"hello"),
            ("cut.png", truncated),
            ("huge.png", big.getvalue()),
            ("icon.gif", _gif()),
        ),
        LIMITS,
    )
    assert [a.name for a in accepted] == ["ok.png"]
    reasons = {r.name: r.reason for r in rejected}
    assert reasons["empty.png"] == "empty file"
    assert reasons["notes.png"] == "not an image"
    assert "corrupt" in reasons["cut.png"]
    assert "exceeds the limit" in reasons["huge.png"]
    assert "unsupported image format GIF" in reasons["icon.gif"]


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (4, 4)).save(buf, format="GIF")
    return buf.getvalue()


def test_a_file_over_the_byte_limit_is_refused():
    limits = Limits(max_file_bytes=100, max_pixels=10**6, max_files=5, max_zip_bytes=10**6)
    _, rejected = validate_uploads(_files(("a.png", png_bytes(1))), limits)
    assert "larger than" in rejected[0].reason


def test_zip_is_expanded_and_unsafe_members_are_refused():
    data = _zip(
        {
            "good/a.png": png_bytes(1),
            "b.png": png_bytes(2),
            "../evil.png": png_bytes(3),
            "inner.zip": _zip({"x.png": png_bytes(4)}),
        },
        symlink="link.png",
    )
    accepted, rejected = validate_uploads(_files(("lot7.zip", data)), LIMITS)
    assert sorted(a.name for a in accepted) == ["a.png", "b.png"]
    reasons = {r.name: r.reason for r in rejected}
    assert reasons["lot7.zip/../evil.png"] == "unsafe path in archive"
    assert reasons["lot7.zip/inner.zip"] == "nested archives are not accepted"
    assert reasons["lot7.zip/link.png"] == "symbolic link in archive"


def test_zip_bomb_members_are_refused_by_compression_ratio():
    data = _zip({"bomb.png": b"\0" * (900 * 2**10)})  # under the size limit, ratio ~1000
    accepted, rejected = validate_uploads(_files(("z.zip", data)), LIMITS)
    assert not accepted
    assert "zip bomb" in rejected[0].reason


def test_oversized_zip_members_are_refused():
    data = _zip({"big.png": os.urandom(2 * 2**20)})  # 2 MiB of noise: over the 1 MiB limit, ratio ~1
    _, rejected = validate_uploads(_files(("z.zip", data)), LIMITS)
    assert "larger than" in rejected[0].reason


def test_a_zip_with_too_many_entries_is_refused_whole():
    limits = Limits(max_file_bytes=2**20, max_pixels=10**6, max_files=2, max_zip_bytes=10**7)
    data = _zip({f"{i}.txt": b"" for i in range(200)})
    accepted, rejected = validate_uploads(_files(("many.zip", data)), limits)
    assert not accepted and "200 entries" in rejected[0].reason


def test_camera_jpegs_with_extra_frames_are_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (9, 9, 9)).save(
        buf, format="MPO", save_all=True, append_images=[Image.new("RGB", (32, 24))]
    )
    accepted, rejected = validate_uploads(_files(("phone.jpg", buf.getvalue())), LIMITS)
    assert not rejected and accepted[0].extension == ".jpg"


def test_too_many_images_refuses_the_whole_upload():
    limits = Limits(max_file_bytes=2**20, max_pixels=10**6, max_files=2, max_zip_bytes=10**7)
    with pytest.raises(UploadTooLarge):
        validate_uploads(_files(*[(f"{i}.png", png_bytes(i)) for i in range(3)]), limits)


# --------------------------------------------------------------------------------------------- hardening


def _png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height with almost no pixel data: a decompression bomb's header."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_declared_dimensions_are_refused_before_decoding():
    limits = Limits(max_file_bytes=2**20, max_pixels=40_000_000, max_files=5, max_zip_bytes=10**7)
    _, rejected = validate_uploads(_files(("bomb.png", _png_header(100_000, 100_000))), limits)
    assert "decompression bomb" in rejected[0].reason or "exceeds the limit" in rejected[0].reason
    _, rejected = validate_uploads(_files(("between.png", _png_header(20_000, 3_000))), limits)  # 1.5x the limit
    assert "decompression bomb" in rejected[0].reason or "exceeds the limit" in rejected[0].reason
    _, rejected = validate_uploads(_files(("wide.png", _png_header(200, 100))), LIMITS)
    assert rejected[0].reason == "200x100 pixels exceeds the limit of 10,000"


def test_pillows_own_bomb_limit_is_the_apps_pixel_limit(settings):
    assert Image.MAX_IMAGE_PIXELS == settings.INSPECTOR_MAX_PIXELS


def test_only_the_accepted_formats_parsers_see_the_bytes():
    pcx = io.BytesIO()
    Image.new("RGB", (8, 8)).save(pcx, format="PCX")  # Pillow reads PCX, the upload must not even try
    _, rejected = validate_uploads(_files(("a.png", pcx.getvalue())), LIMITS)
    assert rejected[0].reason == "not an image"


def test_other_archives_are_named_in_the_reason():
    import gzip

    _, rejected = validate_uploads(_files(("lot.tar.gz", gzip.compress(png_bytes(1)))), LIMITS)
    assert rejected[0].reason == "gzip archive: only .zip archives of images are accepted"
    inner = _zip({"a.png.gz": gzip.compress(png_bytes(1))})
    _, rejected = validate_uploads(_files(("lot.zip", inner)), LIMITS)
    assert rejected[0].reason == "nested archives are not accepted"


def test_encrypted_members_are_refused_without_trying_a_password():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("secret.png", png_bytes(1))
        zf.writestr("plain.png", png_bytes(2))
        zf.filelist[0].flag_bits |= 0x1  # the central directory says: encrypted
    accepted, rejected = validate_uploads(_files(("z.zip", buf.getvalue())), LIMITS)
    assert [a.name for a in accepted] == ["plain.png"]
    assert rejected[0].reason == "encrypted archive member"


def test_members_sharing_compressed_data_are_refused_as_a_zip_bomb():
    import copy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", png_bytes(1))
        for i in range(3):  # more central-directory entries pointing at the same local data
            twin = copy.copy(zf.filelist[0])
            twin.filename = twin.orig_filename = f"twin{i}.png"
            zf.filelist.append(twin)
    accepted, rejected = validate_uploads(_files(("overlap.zip", buf.getvalue())), LIMITS)
    assert not accepted and rejected[0].reason == "archive members overlap (zip bomb guard)"


@pytest.mark.parametrize("path", ["C:/evil.png", "C:evil.png", "a/../../b.png", "\\\\server\\share\\x.png"])
def test_windows_and_relative_escapes_in_member_paths_are_refused(path):
    _, rejected = validate_uploads(_files(("z.zip", _zip({path: png_bytes(1)}))), LIMITS)
    assert rejected[0].reason == "unsafe path in archive"


def test_names_are_labels_without_folders_or_control_characters():
    accepted, _ = validate_uploads(_files(("../../etc/pa\x1bss\u202ewd.png", png_bytes(1))), LIMITS)
    assert accepted[0].name == "passwd.png"
    accepted, _ = validate_uploads(_files(("lot.zip", _zip({"deep/er/x\ty.png": png_bytes(1)}))), LIMITS)
    assert accepted[0].name == "xy.png"


def test_an_empty_zip_and_garbage_after_a_zip_signature_are_clean_refusals():
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    accepted, rejected = validate_uploads(_files(("empty.zip", empty.getvalue())), LIMITS)
    assert not accepted and not rejected  # nothing in it: nothing to accept or refuse
    _, rejected = validate_uploads(_files(("bad.zip", b"PK\x03\x04" + os.urandom(200))), LIMITS)
    assert rejected[0].reason.startswith("corrupt zip archive")
