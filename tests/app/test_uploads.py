from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest
from PIL import Image

from inspector.uploads import Limits, UploadTooLarge, validate_uploads

from .factories import png_bytes

LIMITS = Limits(max_file_bytes=2**20, max_pixels=10_000, max_files=50, max_zip_bytes=4 * 2**20)


def _files(*pairs):
    return [(name, io.BytesIO(data)) for name, data in pairs]


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
