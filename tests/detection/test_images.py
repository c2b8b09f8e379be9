from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detection.images import ImageError, load_rgb, to_model_input


def test_gray_rgba_palette_and_16bit_become_rgb(tmp_path):
    gray = Image.new("L", (5, 4), 100)
    assert load_rgb(gray).shape == (4, 5, 3)
    assert load_rgb(Image.new("RGBA", (3, 3), (1, 2, 3, 0)))[0, 0].tolist() == [1, 2, 3]
    assert load_rgb(Image.new("P", (3, 3))).shape == (3, 3, 3)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(deep)
    out = load_rgb(deep)
    # fixed 1/257 scale, not per-image stretching: 63000 -> 245, 0 -> 0
    assert out.shape == (8, 8, 3) and out.max() == 245 and out.min() == 0


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif)
    assert load_rgb(path).shape == (40, 20, 3)


def test_arrays_of_several_layouts_are_accepted():
    assert load_rgb(np.zeros((4, 6), np.uint8)).shape == (4, 6, 3)
    assert load_rgb(np.zeros((4, 6, 4), np.uint8)).shape == (4, 6, 3)
    assert load_rgb(np.ones((4, 6, 3), np.float32)).max() == 255
    assert load_rgb(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert load_rgb(np.ones((2, 2), bool)).min() == 255


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 5, 2), (2, 2, 2, 3)])
def test_bad_arrays_are_rejected(shape):
    with pytest.raises(ImageError):
        load_rgb(np.zeros(shape, np.uint8))


def test_truncated_and_non_image_files_are_rejected(tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (50, 50), (200, 10, 10)).save(good)
    truncated = tmp_path / "t.png"
    truncated.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "notes.png"
    text.write_text("hello")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (truncated, text, empty):
        with pytest.raises(ImageError, match=path.name):
            load_rgb(path)


def test_unsupported_type_is_rejected():
    with pytest.raises(ImageError, match="unsupported"):
        load_rgb(12345)  # type: ignore[arg-type]


def test_model_input_is_a_square_float_tensor_in_unit_range():
    x = to_model_input(np.full((30, 70, 3), 255, np.uint8), 32)
    assert x.shape == (3, 32, 32) and float(x.max()) == pytest.approx(1.0)
