"""A fitted support set: what predict needs about one set of good images, saved as tensors and plain values.

Format 2 (this code): the memory bank, descriptors and normal scores every method has, the method's own state
tensors beside them, and the config as DetectorConfig.to_dict. Format 1 (saved before the method registry)
kept one flat config and every method's tensors side by side; `load` converts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from detection import registry
from detection.config import DetectorConfig
from detection.method import MethodState
from detection.thresholds import Thresholds

FORMAT_VERSION = 2
_COMMON = ("memory_bank", "bank_source", "descriptors", "normal_scores")


@dataclass(eq=False)
class FittedSupport:
    """Everything predict needs about one support set; saved as tensors + plain config, no pickles."""

    config: DetectorConfig
    grid: tuple[int, int]  # (h, w) feature grid
    memory_bank: torch.Tensor  # (M, D) PatchCore coreset of the support patches (every method keeps one)
    bank_source: torch.Tensor  # (M,) support image index of each bank row
    descriptors: torch.Tensor  # (k, D) mean patch feature of each support image
    normal_scores: torch.Tensor  # (n,) image scores of good images used for the thresholds
    thresholds: Thresholds
    state: MethodState  # the method's own fitted state (detection/<method>.py)
    _moved: dict[str, FittedSupport] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_support(self) -> int:
        return int(self.descriptors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.memory_bank.shape[1])

    def to(self, device: torch.device | str) -> FittedSupport:
        """A copy on `device`, made once and kept (a worker moves each support set to its GPU only once)."""
        device = torch.device(device)
        if self.memory_bank.device == device:
            return self
        key = str(device)
        if key not in self._moved:
            self._moved[key] = FittedSupport(
                self.config,
                self.grid,
                memory_bank=self.memory_bank.to(device),
                bank_source=self.bank_source.to(device),
                descriptors=self.descriptors.to(device),
                normal_scores=self.normal_scores,
                thresholds=self.thresholds,
                state=self.state.to(device),
            )
        return self._moved[key]

    def _payload(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "grid": list(self.grid),
            "thresholds": self.thresholds.to_dict(),
            "tensors": {k: getattr(self, k).detach().cpu().contiguous() for k in _COMMON},
            "state": self.state.tensors(),
        }

    def save(self, path: str | Path) -> None:
        """Write atomically to a local path (tensors and plain values only: loadable with weights_only)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self._payload(), tmp)
        tmp.replace(path)

    def save_to(self, fh: BinaryIO) -> None:
        """Write into an open binary file (for storage backends that are not a local disk)."""
        torch.save(self._payload(), fh)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, map_location: str | torch.device = "cpu") -> FittedSupport:
        payload: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
        version = payload.get("format_version")
        if version == 1:
            payload = upgrade_v1(payload)
        elif version != FORMAT_VERSION:
            raise ValueError(f"{path}: fitted support format {version!r}, this code reads 1 and {FORMAT_VERSION}")
        config = DetectorConfig.from_dict(payload["config"])
        t = payload["tensors"]
        return cls(
            config=config,
            grid=(int(payload["grid"][0]), int(payload["grid"][1])),
            thresholds=Thresholds.from_dict(payload["thresholds"]),
            state=registry.get(config.method).load_state(config.method_config, payload["state"]),
            **{k: t[k] for k in _COMMON},
        )


def upgrade_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2. Format 1 had one flat config of every method's fields and kept the method tensors beside
    the common ones: "mu" (saved for every method, read by FastRecon only), "coreset" (FastRecon) and
    "dfd.<name>" (the DFD model)."""
    config = DetectorConfig.from_flat_dict(payload["config"])
    tensors = payload["tensors"]
    state = {
        "fastrecon": lambda: {"coreset": tensors["coreset"], "mu": tensors["mu"]},
        "dfd": lambda: {k.removeprefix("dfd."): v for k, v in tensors.items() if k.startswith("dfd.")},
    }.get(config.method, dict)()
    return {
        **payload,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "tensors": {k: tensors[k] for k in _COMMON},
        "state": state,
    }
