"""Every detection method by name: the one list that the config, the Detector, the evaluators and the app
(inspector/ml.py: product page, API) read.

To add a method: write its module (a frozen config dataclass with a bank_ratio, a state, and an object with
name, label, description, fit, score and load_state: see detection/method.py) and add its object here.
"""

from __future__ import annotations

from typing import Any

from detection import dfd, fastrecon, patchcore, patchcore_plus
from detection.method import Method

# Insertion order is the order people see (the product page's choices, --help).
METHODS: dict[str, Method[Any]] = {
    m.name: m for m in (fastrecon.METHOD, patchcore.METHOD, patchcore_plus.METHOD, dfd.METHOD)
}
DEFAULT_METHOD = "fastrecon"
BASELINE = "patchcore"  # what every other method is compared against (first in the evaluators' tables)


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str) -> Method[Any]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {names()}, got {name!r}") from None


def label(name: str) -> str:
    """The name people read ("PatchCore+"); an unknown name is shown as it is."""
    method = METHODS.get(name)
    return method.label if method is not None else name


def describe(name: str) -> str:
    """Label and one-line description: "PatchCore (nearest good patch)"."""
    method = get(name)
    return f"{method.label} ({method.description})"


def method_of_config(config: object) -> str:
    """The name of the method whose config dataclass `config` is."""
    for name, method in METHODS.items():
        if type(config) is method.config_type:
            return name
    raise ValueError(f"{type(config).__name__} is not the config of a registered method")
