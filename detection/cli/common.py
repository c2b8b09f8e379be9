"""What the detection command-line tools share: support draws, --method / --set, JSON output, GPU sync."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detection import registry
from detection.config import DetectorConfig, legacy_fields, shared_fields


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_support(n_train: int, shots: int, seed: int) -> list[int]:
    if shots > n_train:
        raise ValueError(f"{shots} shots requested but train/good has only {n_train} images")
    return sorted(np.random.default_rng(seed).choice(n_train, size=shots, replace=False).tolist())


def add_method_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=registry.names(),
        default=registry.DEFAULT_METHOD,
        help="; ".join(f"{name}: {registry.describe(name)}" for name in registry.names()),
    )


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """--set FIELD=VALUE (repeatable) into args.overrides; apply_overrides turns them into config fields."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="any other DetectorConfig field, or a field of the method's config (e.g. --set max_steps=800 with "
        "--method dfd; the prefixed names of saved format 1 work too: --set dfd_max_steps=800) (repeatable)",
    )


def apply_overrides(config: DetectorConfig, items: list[str]) -> DetectorConfig:
    """["method=dfd", "window=32", "dfd_noise_std=0.2", ...] applied to `config`, each value converted to its
    field's type. FIELD is a DetectorConfig field, a field of the (resulting) method's config, or a flat key of
    format 1 ("<method>_<field>", which sets that method's field whichever method runs)."""
    parsed = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        parsed.append((name, value, item))
    for name, value, item in sorted(parsed, key=lambda p: p[0] != "method"):  # the method first
        config = _apply(config, name, value, item)
    return config


def _apply(config: DetectorConfig, name: str, value: str, item: str) -> DetectorConfig:
    if name in shared_fields():
        return replace(config, **{name: _typed(getattr(config, name), value, item)})
    own = config.method_config
    if name in {f.name for f in fields(own)}:
        return config.with_method_config(replace(own, **{name: _typed(getattr(own, name), value, item)}))
    if name not in legacy_fields():
        raise SystemExit(
            f"--set {item!r}: expected FIELD=VALUE with FIELD a DetectorConfig field or a field of the "
            f"{config.method} config"
        )
    for method, field in legacy_fields()[name]:
        target = config.config_for(method)
        config = config.with_method_config(replace(target, **{field: _typed(getattr(target, field), value, item)}))
    return config


def _typed(default: Any, value: str, item: str) -> Any:
    try:
        return type(default)(value)
    except ValueError:
        raise SystemExit(f"--set {item!r}: {value!r} is not a {type(default).__name__}") from None


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
