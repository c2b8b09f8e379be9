"""The converted npm weights classify natural photos correctly (runs when `make setup` has converted them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detection.backbone import FeatureExtractor, ImageNetClassifier, load_resnet50

skimage_data = pytest.importorskip("skimage.data")

EGYPTIAN_CAT, TABBY, ESPRESSO = 285, 281, 967


@pytest.fixture(scope="module")
def resnet(weights_path):
    return load_resnet50(weights_path)


def _top1(model, rgb: np.ndarray) -> int:
    im = Image.fromarray(rgb).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(im, dtype=np.float32)).permute(2, 0, 1)[None] / 255
    with torch.inference_mode():
        return int(model(x).argmax())


@pytest.mark.backbone
def test_converted_backbone_recognises_the_cat_and_the_espresso(resnet):
    model = ImageNetClassifier(resnet).eval()
    assert _top1(model, skimage_data.chelsea()) in (EGYPTIAN_CAT, TABBY)
    assert _top1(model, skimage_data.coffee()) == ESPRESSO


@pytest.mark.backbone
def test_feature_extractor_gives_1536_channels_at_stride_8(resnet):
    ext = FeatureExtractor(resnet)
    with torch.inference_mode():
        f = ext(torch.rand(2, 3, 256, 256))
    assert f.shape == (2, 1536, 32, 32)
    assert ext.dim == 1536
