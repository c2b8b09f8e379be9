"""The contract every detection method implements, and what its fit and its score are given.

A method is one module (detection/patchcore.py, fastrecon.py, patchcore_plus.py, dfd.py) with its own frozen
config dataclass, its own fitted state and one object that satisfies `Method`; detection/registry.py maps
names to these objects. Per support set and query:

    outcome = method.fit(config, support)                          # Support: k good images, their patches
    scores = method.score(config, outcome.state, bank, query)      # Query: B images -> (B, R) patch scores

The Detector does everything around that, the same way for every method: the backbone and patch features,
the memory bank (every support set has one: defect-type residuals need the nearest normal patch, and
PatchCore scores with it), the thresholds from normal image scores (by refitting on k-1 images through
`fit` again, unless the fit measured held-out scores itself, as DFD's training does), the anomaly maps and
saving (a state's tensors are saved next to the bank; `load_state` rebuilds the state from them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import torch

from detection.backbone import PatchFeatures

Progress = Callable[[float, str], None]  # (fraction done, message)


class Backbone(Protocol):
    """What a method may ask of the detector's frozen backbone (the Detector is one)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def forward_batch(self) -> int: ...

    def features(self, batch: torch.Tensor) -> PatchFeatures:
        """(B, 3, S, S) in [0, 1] -> patch features on the backbone's device."""
        ...

    def frozen(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, D, h, w) frozen features without autograd, usable as training data."""
        ...


class MethodConfig(Protocol):
    """A method's frozen config dataclass. Every method keeps a memory bank of this fraction of the support
    patches. Format 1 of saved support sets kept every method's fields in one flat config, as
    "<method name>_<field>"; LEGACY_KEYS names the fields whose flat key was another."""

    bank_ratio: float
    LEGACY_KEYS: dict[str, str]


class MethodState(Protocol):
    """What a fit keeps about one support set, beyond the memory bank."""

    def to(self, device: torch.device) -> Self:
        """The state on `device` (self when already there)."""
        ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """Plain CPU tensors to save (the method's load_state rebuilds the state from them)."""
        ...

    def summary(self) -> str:
        """A few words on what was kept, for logs and the benchmark ('' when nothing worth saying)."""
        ...


def to_patches(features: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h*w, D), row-major over positions (permute before reshape keeps space intact)."""
    b, d, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(b, h * w, d)


@dataclass(frozen=True)
class Support:
    """The support set as a fit sees it."""

    images: torch.Tensor  # (k, 3, S, S) in [0, 1], on the CPU
    patches: torch.Tensor  # (k, R, D) frozen patch features on the backbone's device
    grid: tuple[int, int]  # (h, w), R = h * w
    # (c, D): the first c picks of the greedy k-center selection over the k*R patches, c = the method's
    # coreset_size. The detector selects once for this and the memory bank: the first n picks of one greedy
    # run are the n-point coreset, so one run of max(c, bank size) serves both.
    coreset: torch.Tensor
    backbone: Backbone
    seed: int
    progress: Progress | None = None


class Query:
    """B query images as a score may want them: patch features (computed once, when first asked for), the
    two-part features when the caller has them, or the images themselves."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        features: PatchFeatures | None = None,
        patches: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        batch: int = 8,
    ) -> None:
        if features is None and patches is None and images is None:
            raise ValueError("a query needs features, patches or images")
        self.backbone = backbone
        self.batch = batch  # queries a method may process at once (the fitted config's batch_size)
        self.features = features  # the two-part features, only when the caller had them (predict does)
        self.images = images  # (B, 3, S, S) in [0, 1] or None
        self._patches = patches

    @property
    def patches(self) -> torch.Tensor:
        """(B, R, D) patch features."""
        if self._patches is None:
            features = self.features
            if features is None:
                assert self.images is not None  # checked in __init__
                features = self.backbone.features(self.images)
            self._patches = to_patches(features.full())
        return self._patches


StateT = TypeVar("StateT", bound=MethodState)
ConfigT = TypeVar("ConfigT", bound=MethodConfig, contravariant=True)


@dataclass(frozen=True)
class FitOutcome(Generic[StateT]):
    state: StateT
    # Image scores of good images the fit held out itself (DFD: fresh augmented views training never saw);
    # None: the detector measures them by leave-one-out, refitting on k-1 support images.
    held_out: list[float] | None = None


@runtime_checkable
class Method(Protocol[ConfigT]):
    """A detection method: what detection/registry.py maps a name to."""

    name: str  # registry key, saved with every fitted support set
    label: str  # for people: "PatchCore"
    description: str  # one line: what it does and, where it matters, what it costs
    config_type: type[Any]  # its frozen config dataclass (a MethodConfig)
    scores_with_bank: bool  # leave-one-out refits need a memory bank of their own

    def coreset_size(self, config: ConfigT, n_patches: int, dim: int) -> int:
        """How many greedy k-center picks of the n_patches support patches the fit takes (Support.coreset)."""
        ...

    def fit(self, config: ConfigT, support: Support) -> FitOutcome[Any]: ...

    def score(self, config: ConfigT, state: Any, bank: torch.Tensor | None, query: Query) -> torch.Tensor:
        """(B, R) patch scores of the query images, higher = more anomalous. `bank` (M, D) is the support set's
        memory bank (None in leave-one-out refits of methods that do not score with it)."""
        ...

    def load_state(self, config: ConfigT, tensors: dict[str, torch.Tensor]) -> MethodState: ...


@dataclass(frozen=True)
class BankOnly:
    """The state of methods that score with the memory bank alone: nothing beyond it."""

    def to(self, device: torch.device) -> BankOnly:
        return self

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def summary(self) -> str:
        return ""


class BankScoredMethod:
    """Fit and load of the methods that score with the memory bank alone (PatchCore, PatchCore+)."""

    scores_with_bank = True

    def coreset_size(self, config: Any, n_patches: int, dim: int) -> int:
        return 0

    def fit(self, config: Any, support: Support) -> FitOutcome[BankOnly]:
        return FitOutcome(BankOnly())

    def load_state(self, config: Any, tensors: dict[str, torch.Tensor]) -> BankOnly:
        if tensors:
            raise ValueError(f"unexpected state tensors {sorted(tensors)}")
        return BankOnly()


def require_bank(bank: torch.Tensor | None, label: str) -> torch.Tensor:
    if bank is None:
        raise ValueError(f"{label} scores against the memory bank: none was given")
    return bank


def check_fraction(owner: object, *names: str) -> None:
    """ValueError unless every named field of `owner` is in (0, 1]."""
    for name in names:
        value = getattr(owner, name)
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
