"""Where the converted backbone lives by default, and the shared --weights option of the command-line tools."""

from __future__ import annotations

import argparse
from pathlib import Path

from detection.convert import WEIGHTS_NAME

DEFAULT_CACHE = Path.home() / ".cache" / "inspector"
DEFAULT_WEIGHTS = DEFAULT_CACHE / WEIGHTS_NAME


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help=f"converted ResNet-50 safetensors (default {DEFAULT_WEIGHTS}; created by make setup)",
    )
