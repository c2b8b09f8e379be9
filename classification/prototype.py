"""Training-free defect-type classifier: nearest class prototype on pooled residual embeddings.

Embedding of one flagged image: the anomaly-weighted mean of its rectified residual vectors (`pooled_residual`,
rectify=True), L2-normalised. Centred (`center=True`, SimpleShot's "CL2N", Wang et al. 2019): a centre is
subtracted and the result L2-normalised again, so what every defect's residual has in common ("something is
there that the normal part lacks") drops out and the direction that tells the types apart is what the cosine
compares.

The centre. With only the labelled examples (1 per type at 1 shot) their mean is a noisy estimate of "the
average defect". A product has many more flagged images than labelled ones: every image the detector sent to
review or rejected. Their embeddings need no label, so `fit_embeddings(..., unlabelled=pool)` takes them and the
centre becomes the mean of the pool and the labelled examples together (`centre_rule` "pool"); with fewer than
`min_pool` pooled images it falls back to the mean of the per-type means ("labelled"). No label of a pooled
image is used. The evaluator keeps every query out of the pool its own centre was computed from (cross-fitting),
so the figures do not rest on seeing the query.

Class prototype = mean of the embeddings of that type's labelled examples (embeddings of residual features,
never pixels). Prediction = cosine similarity to every prototype; confidence = softmax over the similarities
divided by `temperature`.

Unknown type. A query whose best similarity is below `threshold` is "unknown" (label None: it goes to a human).
Rule for the threshold, from the labelled examples only:
- leave-one-out (at least `min_calibration` examples can be held out): each example of a type with >= 2
  examples is held out in turn, the classifier is fitted on the others, and the held-out example's best
  similarity is recorded; these are similarities of known-type queries. threshold = their `reject_rate` quantile
  (linear interpolation), i.e. about `reject_rate` of known-type queries would go to a human. Examples of types
  with a single example cannot be held out (their type would vanish) and are not used. With fewer than
  `min_calibration` such similarities the 5 % quantile is just their minimum, a noisy estimate that sent most
  known-type images to a human (2 examples per type on mvtec_bottle: 23.6 % in the evaluator, 12 of 14 in a demo
  product); the rule below is used instead.
- between-types (too few held-out similarities, >= 2 types): nothing reliable says how close a known query
  comes to its prototype. The threshold is then the largest similarity between two different
  prototypes: a query is accepted only if it is closer to its best type than the two most alike known types are
  a known query comes to its prototype. The threshold is then the largest similarity between two different
  prototypes: a query is accepted only if it is closer to its best type than the two most alike known types are
  to each other. A weak rule, and it says so in `threshold_rule`; with centring and 2 types it can never reject
  (the two centred prototypes are opposite).
- none (a single type with a single example): threshold -1, nothing is rejected.

Saved as data: {"format_version", "config", "types", "threshold_rule", "state": {tensors}}, loaded with
torch.load(weights_only=True).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch
import torch.nn.functional as F

from classification.residuals import SOURCES, WEIGHTINGS, ResidualSample, pooled_residual

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: config gained rectify and min_pool, state the centre rule


@dataclass(frozen=True)
class PrototypeConfig:
    # What is pooled and how (see classification/residuals.py).
    source: str = "residual"
    weighting: str = "softmax"
    # Relative to each image's (max - median) patch-score spread. 0.5 rather than 0.1: the pooled region then
    # takes in the defect's whole extent and some surroundings, which carries its size (broken_large vs
    # broken_small differ mostly by size). The defaults below were chosen on mvtec_bottle with episode seeds
    # 100-119, disjoint from the evaluator's reported seeds 0-4 (same images: there is no second labelled set);
    # sweep: `python -m classification.cli.evaluate DATA --weight-temperature T --no-rectify --centre labelled`.
    weight_temperature: float = 0.5
    top_fraction: float = 0.05  # for weighting="top"
    # Pool max(residual, 0) (see pooled_residual).
    rectify: bool = True
    # Subtract a centre before the cosine (SimpleShot CL2N; module docstring).
    center: bool = True
    # Fewest unlabelled flagged images for the centre to be taken from them rather than the labelled examples.
    min_pool: int = 8
    # Fewest leave-one-out similarities for the unknown-type threshold to be their quantile (module docstring).
    min_calibration: int = 9
    # Confidence = softmax(cosine / temperature); 0.1 turns a 0.2 cosine gap into e^2 = 7x odds.
    temperature: float = 0.1
    # Fraction of known-type queries the leave-one-out threshold is set to send to a human.
    reject_rate: float = 0.05

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.weight_temperature <= 0 or self.temperature <= 0:
            raise ValueError("temperatures must be > 0")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if not 0 <= self.reject_rate < 1:
            raise ValueError(f"reject_rate must be in [0, 1), got {self.reject_rate}")
        if self.min_pool < 1 or self.min_calibration < 1:
            raise ValueError("min_pool and min_calibration must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrototypeConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)


class TypePrediction(NamedTuple):
    label: str | None  # predicted defect type; None = unknown type (send to a human)
    best: str  # the most similar type, also when the query is rejected as unknown
    confidence: float  # softmax probability of `best`
    similarity: float  # cosine similarity to the best prototype
    ranking: tuple[tuple[str, float], ...]  # (type, cosine similarity) for every type, most similar first


def _centre_and_prototypes(
    embeddings: torch.Tensor, labels: torch.Tensor, n_types: int, center: bool, centre: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (N, D) embeddings, (N,) type indices -> centre (D,) and prototypes (K, D).

    centre: a fixed centre (from the unlabelled pool); None = the mean of the per-type means.
    """
    means = torch.stack([embeddings[labels == k].mean(0) for k in range(n_types)])  # (K, D)
    if not center:
        return torch.zeros(embeddings.shape[1], dtype=embeddings.dtype), means
    if centre is None:
        centre = means.mean(0)  # every type counts equally, however many examples it has
    centred = F.normalize(embeddings - centre, dim=1)
    return centre, torch.stack([centred[labels == k].mean(0) for k in range(n_types)])


def _similarities(
    embeddings: torch.Tensor, centre: torch.Tensor, prototypes: torch.Tensor, center: bool
) -> torch.Tensor:
    """(N, D) L2-normalised embeddings -> (N, K) cosine similarities to the prototypes."""
    x = F.normalize(embeddings - centre, dim=1) if center else embeddings
    return x @ F.normalize(prototypes, dim=1).T


def _replace_own_column(sims: torch.Tensor, held_types: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    sims[torch.arange(len(held_types)), held_types] = own
    return sims


def leave_one_out(
    embeddings: torch.Tensor, labels: torch.Tensor, *, center: bool, centre: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the examples that can be held out, (m, K) similarities of each to a classifier fitted without it).

    Only types with >= 2 examples can lose one. Closed form, not m refits: removing example i changes only its own
    type's sum, so its prototype is (sum_t - z_i) / (n_t - 1). A pool centre (`centre`) stays fixed: the held-out
    example stays in the pool as one unlabelled image among many. Without one, the centre is the mean of the type
    means and moves with the held-out example: every example is re-centred, O(N D) per held-out example.
    """
    n_types = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=n_types)
    held = torch.nonzero(counts[labels] >= 2).flatten()
    if held.numel() == 0:
        return held, torch.empty(0, n_types)
    x = embeddings.float()
    t = labels[held]
    rest = (counts[t] - 1).unsqueeze(1).float()
    if not center or centre is not None:
        z = x if not center else F.normalize(x - centre, dim=1)
        sums = torch.zeros(n_types, x.shape[1]).index_add_(0, labels, z)
        protos = sums / counts.unsqueeze(1)
        sims = z[held] @ F.normalize(protos, dim=1).T
        own = F.normalize((sums[t] - z[held]) / rest, dim=1)
        return held, _replace_own_column(sims, t, (z[held] * own).sum(1))
    sums = torch.zeros(n_types, x.shape[1]).index_add_(0, labels, x)
    means = sums / counts.unsqueeze(1)
    out = []
    for i, ti in zip(held.tolist(), t.tolist(), strict=True):
        m = means.clone()
        m[ti] = (sums[ti] - x[i]) / (counts[ti] - 1)
        z = F.normalize(x - m.mean(0), dim=1)
        zsums = torch.zeros_like(sums).index_add_(0, labels, z)
        zsums[ti] -= z[i]
        k = counts.clone()
        k[ti] -= 1
        out.append(z[i] @ F.normalize(zsums / k.unsqueeze(1), dim=1).T)
    return held, torch.stack(out)


def leave_one_out_similarities(
    embeddings: torch.Tensor, labels: torch.Tensor, *, center: bool, centre: torch.Tensor | None = None
) -> torch.Tensor:
    """Best similarity of each held-out example (of a type with >= 2 examples) to a classifier fitted without it."""
    _, sims = leave_one_out(embeddings, labels, center=center, centre=centre)
    return sims.max(1).values if len(sims) else torch.empty(0)


def calibrate_threshold(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    center: bool,
    reject_rate: float,
    centre: torch.Tensor | None = None,
    min_calibration: int = 1,
) -> tuple[float, str]:
    """The unknown-type threshold and the rule that gave it (see the module docstring)."""
    loo = leave_one_out_similarities(embeddings, labels, center=center, centre=centre)
    if loo.numel() >= max(1, min_calibration):
        return float(torch.quantile(loo, reject_rate)), "leave-one-out"
    n_types = int(labels.max()) + 1
    if n_types >= 2:
        _, protos = _centre_and_prototypes(embeddings, labels, n_types, center, centre)
        p = F.normalize(protos, dim=1)  # prototypes already live in the (centred, if so) comparison space
        sims = p @ p.T
        off = sims.masked_fill(torch.eye(n_types, dtype=torch.bool), -2.0)
        return float(off.max()), "between-types"
    return -1.0, "none"


class PrototypeClassifier:
    """fit(examples per type) once; predict(sample) for each flagged image. Pure CPU tensor maths."""

    def __init__(self, config: PrototypeConfig | None = None) -> None:
        self.config = config if config is not None else PrototypeConfig()
        self.types: list[str] = []
        self.prototypes = torch.empty(0)  # (K, D)
        self.centre = torch.empty(0)  # (D,) zeros unless config.center
        self.threshold = -1.0
        self.threshold_rule = "unfitted"
        self.centre_rule = "unfitted"  # "pool" (unlabelled flagged images + examples), "labelled", or "none"

    @property
    def is_fitted(self) -> bool:
        return bool(self.types)

    # -- embedding --------------------------------------------------------------------------------------

    def embed(self, samples: Sequence[ResidualSample]) -> torch.Tensor:
        """Samples -> (N, D) L2-normalised pooled embeddings (before any centring)."""
        if len(samples) == 0:
            raise ValueError("no samples to embed")
        c = self.config
        pooled = [
            pooled_residual(
                s,
                source=c.source,
                weighting=c.weighting,
                temperature=c.weight_temperature,
                top_fraction=c.top_fraction,
                rectify=c.rectify,
            )
            for s in samples
        ]
        return F.normalize(torch.stack(pooled), dim=1)

    # -- fit --------------------------------------------------------------------------------------------

    def fit(
        self,
        examples: Mapping[str, Sequence[ResidualSample]],
        unlabelled: Sequence[ResidualSample] = (),
    ) -> PrototypeClassifier:
        """Labelled examples per defect type (+ unlabelled flagged images) -> prototypes and the unknown threshold."""
        pool = self.embed(list(unlabelled)) if len(unlabelled) else None
        return self.fit_embeddings(
            {name: self.embed(list(samples)) for name, samples in examples.items() if samples}, unlabelled=pool
        )

    def fit_embeddings(
        self, embeddings: Mapping[str, torch.Tensor], unlabelled: torch.Tensor | None = None
    ) -> PrototypeClassifier:
        """As fit, from (n_type, D) embeddings made by `embed` (the evaluator embeds every image once).

        unlabelled: (P, D) embeddings of flagged images without a label, for the centre (module docstring).
        """
        if not embeddings:
            raise ValueError("no defect types to fit: give at least one labelled example")
        types = sorted(embeddings)
        dims = {int(embeddings[t].shape[-1]) for t in types}
        for t in types:
            if embeddings[t].ndim != 2 or embeddings[t].shape[0] == 0:
                raise ValueError(f"type {t!r}: expected (n >= 1, D) embeddings, got {tuple(embeddings[t].shape)}")
        if len(dims) != 1:
            raise ValueError(f"embeddings of different dimensions: {sorted(dims)}")
        x = torch.cat([embeddings[t].float() for t in types])
        labels = torch.cat([torch.full((len(embeddings[t]),), k, dtype=torch.long) for k, t in enumerate(types)])
        pool_centre, centre_rule = None, "labelled" if self.config.center else "none"
        if self.config.center and unlabelled is not None and len(unlabelled) >= self.config.min_pool:
            if unlabelled.ndim != 2 or unlabelled.shape[1] != x.shape[1]:
                raise ValueError(f"unlabelled: expected (P, {x.shape[1]}) embeddings, got {tuple(unlabelled.shape)}")
            pool_centre, centre_rule = torch.cat([unlabelled.float(), x]).mean(0), "pool"
        centre, protos = _centre_and_prototypes(x, labels, len(types), self.config.center, pool_centre)
        threshold, rule = calibrate_threshold(
            x,
            labels,
            center=self.config.center,
            reject_rate=self.config.reject_rate,
            centre=pool_centre,
            min_calibration=self.config.min_calibration,
        )
        self.types, self.centre, self.prototypes = types, centre, protos
        self.threshold, self.threshold_rule, self.centre_rule = threshold, rule, centre_rule
        log.debug("prototypes for %d types (%d examples); unknown below %.3f (%s)", len(types), len(x), threshold, rule)
        return self

    # -- predict ----------------------------------------------------------------------------------------

    def similarities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings from `embed` -> (N, K) cosine similarities, columns in `self.types` order."""
        if not self.is_fitted:
            raise ValueError("the classifier is not fitted")
        if embeddings.ndim != 2 or embeddings.shape[1] != self.prototypes.shape[1]:
            raise ValueError(f"expected (N, {self.prototypes.shape[1]}) embeddings, got {tuple(embeddings.shape)}")
        return _similarities(embeddings.float(), self.centre, self.prototypes, self.config.center)

    def predict_embeddings(self, embeddings: torch.Tensor) -> list[TypePrediction]:
        sims = self.similarities(embeddings)  # (N, K)
        probs = torch.softmax(sims / self.config.temperature, dim=1)
        out = []
        for row, p in zip(sims.tolist(), probs, strict=True):
            order = sorted(range(len(row)), key=lambda k: -row[k])
            best = order[0]
            out.append(
                TypePrediction(
                    label=self.types[best] if row[best] >= self.threshold else None,
                    best=self.types[best],
                    confidence=float(p[best]),
                    similarity=row[best],
                    ranking=tuple((self.types[k], row[k]) for k in order),
                )
            )
        return out

    def predict(self, sample: ResidualSample) -> TypePrediction:
        return self.predict_embeddings(self.embed([sample]))[0]

    def predict_many(self, samples: Sequence[ResidualSample]) -> list[TypePrediction]:
        return self.predict_embeddings(self.embed(samples))

    # -- save / load ------------------------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """Config, types and prototype state as tensors and plain values (weights_only loadable); a larger
        checkpoint (the contrastive classifier's) embeds it whole."""
        if not self.is_fitted:
            raise ValueError("cannot save an unfitted classifier")
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "types": list(self.types),
            "threshold_rule": self.threshold_rule,
            "centre_rule": self.centre_rule,
            "state": {
                "prototypes": self.prototypes.detach().cpu().contiguous(),
                "centre": self.centre.detach().cpu().contiguous(),
                "threshold": torch.tensor(self.threshold, dtype=torch.float64),
            },
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PrototypeClassifier:
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"prototype classifier format {version!r}, this code reads {FORMAT_VERSION}")
        clf = cls(PrototypeConfig.from_dict(payload["config"]))
        state = payload["state"]
        types = [str(t) for t in payload["types"]]
        if state["prototypes"].ndim != 2 or state["prototypes"].shape[0] != len(types):
            raise ValueError(f"{len(types)} types but prototypes of shape {tuple(state['prototypes'].shape)}")
        clf.types = types
        clf.prototypes = state["prototypes"]
        clf.centre = state["centre"]
        clf.threshold = float(state["threshold"])
        clf.threshold_rule = str(payload["threshold_rule"])
        clf.centre_rule = str(payload["centre_rule"])
        return clf

    def save(self, path: str | Path | BinaryIO) -> None:
        save_payload(self.to_payload(), path)

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> PrototypeClassifier:
        return cls.from_payload(torch.load(path, map_location="cpu", weights_only=True))


def save_payload(payload: dict[str, Any], path: str | Path | BinaryIO) -> None:
    """Tensors and plain values only (loadable with weights_only=True); atomic for a local path."""
    if isinstance(path, str | Path):
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
    else:
        torch.save(payload, path)


class HeldOutPrediction(NamedTuple):
    true: str
    best: str  # the most similar type
    label: str | None  # best, or None when rejected as unknown


def leave_one_out_predictions(
    embeddings: Mapping[str, torch.Tensor],
    config: PrototypeConfig | None = None,
    unlabelled: torch.Tensor | None = None,
) -> list[HeldOutPrediction]:
    """Each labelled example of a type with >= 2 examples, predicted by a classifier fitted without it.

    How a new classifier version is judged before use: on its own labels, none ever scored by prototypes it
    helped make (`leave_one_out`, closed form: the cost grows as N^2 D, not N^3). "Unknown" uses the full fit's
    threshold. `unlabelled` (the centre's pool) must not contain the labelled examples.
    """
    clf = PrototypeClassifier(config).fit_embeddings(embeddings, unlabelled=unlabelled)
    types = clf.types
    x = torch.cat([embeddings[t].float() for t in types])
    labels = torch.cat([torch.full((len(embeddings[t]),), k, dtype=torch.long) for k, t in enumerate(types)])
    pool_centre = clf.centre if clf.centre_rule == "pool" else None
    held, sims = leave_one_out(x, labels, center=clf.config.center, centre=pool_centre)
    out = []
    for i, row in zip(held.tolist(), sims, strict=True):
        best = types[int(row.argmax())]
        label = best if float(row.max()) >= clf.threshold else None
        out.append(HeldOutPrediction(types[int(labels[i])], best, label))
    return out
