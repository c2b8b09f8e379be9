"""The detector's configuration: the method's name, the settings every method shares, and the configs of
methods (each method's own frozen dataclass, in its module) that differ from their defaults. Validated,
saved as a plain dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from detection import registry


@dataclass(frozen=True)
class DetectorConfig:
    method: str = registry.DEFAULT_METHOD
    # Every image is resized to image_size x image_size (aspect ratio not kept; maps are resized back).
    image_size: int = 256
    # Random projection used only to choose coreset points (approximate greedy k-center).
    coreset_projection_dim: int = 128
    gaussian_sigma: float = 4.0
    # Thresholds from good images only, under a fitted model of normal scores: a good part exceeds
    # good_max with probability review_rate, and defective_min with probability false_reject_rate.
    review_rate: float = 0.05
    false_reject_rate: float = 0.005
    # Floors on the log-spread of normal scores (detection/thresholds.py): a handful of scores
    # underestimates it, and jittered copies of a single image (k = 1) even more so.
    min_log_spread: float = 0.1
    single_image_log_spread: float = 0.25
    batch_size: int = 8
    seed: int = 0
    # Configs of any registered methods (at most one each) that differ from their defaults; every other
    # method runs with its defaults. Kept across with_method, so one backbone serves each method as configured.
    method_configs: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        registry.get(self.method)  # ValueError naming the registered methods
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        if not 0 < self.false_reject_rate < self.review_rate < 1:
            raise ValueError("need 0 < false_reject_rate < review_rate < 1")
        if 4 * self.gaussian_sigma >= self.image_size:
            raise ValueError(f"gaussian_sigma {self.gaussian_sigma} is too large for image_size {self.image_size}")
        if self.min_log_spread <= 0 or self.single_image_log_spread <= 0:
            raise ValueError("log-spread floors must be > 0")
        if self.batch_size < 1 or self.coreset_projection_dim < 1 or self.gaussian_sigma < 0:
            raise ValueError("batch_size and coreset_projection_dim must be >= 1, gaussian_sigma >= 0")
        object.__setattr__(self, "method_configs", _normalised(self.method_configs))

    @property
    def method_config(self) -> Any:
        """The configured method's own config."""
        return self.config_for(self.method)

    def config_for(self, method: str) -> Any:
        config_type = registry.get(method).config_type
        return next((c for c in self.method_configs if type(c) is config_type), config_type())

    def with_method_config(self, config: Any) -> DetectorConfig:
        """A copy with `config` as its method's config (any registered method, not only the configured one)."""
        others = tuple(c for c in self.method_configs if type(c) is not type(config))
        return replace(self, method_configs=(*others, config))

    @property
    def feature_grid(self) -> int:
        """Side of the patch grid: layer2 has stride 8."""
        return self.image_size // 8

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in shared_fields()}
        data["method_configs"] = {registry.method_of_config(c): asdict(c) for c in self.method_configs}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        data = dict(data)
        configs = data.pop("method_configs", {})
        unknown = set(data) - set(shared_fields())
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        built = []
        for name, values in configs.items():
            config_type = registry.get(name).config_type
            unknown = set(values) - {f.name for f in fields(config_type)}
            if unknown:
                raise ValueError(f"unknown {name} config keys: {sorted(unknown)}")
            built.append(config_type(**values))
        return cls(**data, method_configs=tuple(built))

    @classmethod
    def from_flat_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """The layout of fitted-support format 1: shared fields and every method's fields side by side."""
        shared = {k: v for k, v in data.items() if k in shared_fields()}
        flat = {k: v for k, v in data.items() if k not in shared}
        unknown = set(flat) - set(legacy_fields())
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        values: dict[str, dict[str, Any]] = {name: {} for name in registry.names()}
        for key, value in flat.items():
            for method, field in legacy_fields()[key]:
                values[method][field] = value
        configs = tuple(registry.get(name).config_type(**v) for name, v in values.items())
        return cls(**shared, method_configs=configs)


def shared_fields() -> tuple[str, ...]:
    """DetectorConfig's own fields: the method's name and the settings every method shares."""
    return tuple(f.name for f in fields(DetectorConfig) if f.name != "method_configs")


def legacy_fields() -> dict[str, list[tuple[str, str]]]:
    """Format 1's flat keys -> the (method, field) pairs each one set: "<method>_<field>" unless the config's
    LEGACY_KEYS says otherwise ("patchcore_coreset_ratio" was the memory-bank ratio of every method but
    PatchCore+, which had its own)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, method in registry.METHODS.items():
        for f in fields(method.config_type):
            key = method.config_type.LEGACY_KEYS.get(f.name, f"{name}_{f.name}")
            out.setdefault(key, []).append((name, f.name))
    return out


def _normalised(configs: tuple[Any, ...]) -> tuple[Any, ...]:
    """At most one config per method, in registry order, defaults left out (so equal configs compare equal)."""
    by_name: dict[str, Any] = {}
    for config in configs:
        name = registry.method_of_config(config)
        if name in by_name:
            raise ValueError(f"two configs for method {name!r}")
        by_name[name] = config
    return tuple(c for name, c in ((n, by_name.get(n)) for n in registry.names()) if c is not None and c != type(c)())
