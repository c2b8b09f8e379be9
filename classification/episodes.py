"""Few-shot episodes: the one runner both classification evaluators use, and its two methods.

An episode (`episode_split`): for shots n and a seed, n labelled examples per defect type drawn with that seed;
every other image is a query. `run_episodes` runs every shots/seed episode through a method's episode function
(fit on the labelled examples, predict the queries) and computes the figures of classification.metrics:
closed-set accuracy (argmax type; percent; mean and sample std over seeds), macro-F1, per-type accuracy, the
confusion matrix summed over seeds, and an open-set check (`open_set_check`: each type in turn held out of the
labelled set: how many of its images are rejected as "unknown type", and how many known-type queries are
rejected too). The methods: `evaluate_prototype` (training-free prototypes, centred on an unlabelled pool) and
`evaluate_contrastive` (the residual encoder, fine-tuned per episode). Timing: finetune_s (fitting on the
labelled examples, mean), predict_ms (per query, beyond the detector's own work).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from classification.classifier import ContrastiveClassifier
from classification.contrastive import FinetuneConfig
from classification.encoder import ResidualEncoder
from classification.metrics import confusion_matrix, seed_result, shots_row
from classification.prototype import PrototypeClassifier, PrototypeConfig
from classification.residuals import ResidualSample

log = logging.getLogger(__name__)

CENTRES = ("pool", "labelled")
POOL_FOLDS = 2

Folds = list[tuple[list[int], list[int]]]
"""[(queries of the fold, unlabelled pool for its centre)]"""


def episode_split(labels: Sequence[str], shots: int, seed: int) -> tuple[dict[str, list[int]], list[int]]:
    """Labelled examples and queries for one episode.

    labels: the defect type of each image. Returns ({type: indices of its `shots` labelled examples}, sorted
    indices of every other image, the queries). Each type's examples are drawn without replacement from that
    type's own images with np.random.default_rng(seed), types in sorted order, so a split is reproducible.
    A type needs more than `shots` images, else it would have no query.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(seed)
    support: dict[str, list[int]] = {}
    for name in sorted(set(labels)):
        idx = [i for i, label in enumerate(labels) if label == name]
        if len(idx) <= shots:
            raise ValueError(f"type {name!r} has {len(idx)} images: {shots} shots would leave it no query")
        support[name] = sorted(int(i) for i in rng.choice(idx, size=shots, replace=False))
    chosen = {i for idx in support.values() for i in idx}
    return support, [i for i in range(len(labels)) if i not in chosen]


def query_folds(queries: Sequence[int], centre: str, seed: int) -> Folds:
    """[(queries of the fold, unlabelled pool for its centre)] for one episode.

    centre="pool": the queries are split in POOL_FOLDS seeded folds; a fold's pool is every query outside it
    (cross-fitting: no query is ever in the pool its own centre comes from). The pool stands in for the
    product's other flagged images; their labels are never read. centre="labelled": one fold, no pool.
    """
    if centre == "labelled":
        return [(list(queries), [])]
    if centre != "pool":
        raise ValueError(f"centre must be one of {CENTRES}, got {centre!r}")
    order = np.random.default_rng([seed, 1]).permutation(len(queries))
    folds = [sorted(int(queries[i]) for i in order[f::POOL_FOLDS]) for f in range(POOL_FOLDS)]
    return [(fold, [q for q in queries if q not in set(fold)]) for fold in folds]


def open_set_check(
    clf: PrototypeClassifier,
    embeddings: torch.Tensor,
    y: list[int],
    support: dict[str, list[int]],
    folds: Folds,
    types: list[str],
) -> dict[str, float]:
    """Hold each type out of the labelled set in turn: rejection rates of its images and of known queries.

    Its images among the queries are the "new kind of defect"; the known queries are the other types'. Each
    fold is scored with the centre of its own pool (`query_folds`). Refits `clf`; the caller has already used it
    for this episode's closed-set predictions.
    """
    unknown, known = [], []
    for held, name in enumerate(types):
        rejected_unknown = rejected_known = n_unknown = n_known = 0
        for fold, pool in folds:
            clf.fit_embeddings(
                {t: embeddings[idx] for t, idx in support.items() if t != name},
                unlabelled=embeddings[pool] if pool else None,
            )
            rejected = (clf.similarities(embeddings[fold]).max(1).values < clf.threshold).tolist()
            for i, r in zip(fold, rejected, strict=True):
                if y[i] == held:
                    n_unknown, rejected_unknown = n_unknown + 1, rejected_unknown + r
                else:
                    n_known, rejected_known = n_known + 1, rejected_known + r
        unknown.append(rejected_unknown / max(n_unknown, 1))
        known.append(rejected_known / max(n_known, 1))
    return {"unknown_rejected": 100.0 * statistics.fmean(unknown), "known_rejected": 100.0 * statistics.fmean(known)}


# ------------------------------------------------------------------------------------------------- the runner


class EpisodeOutcome(NamedTuple):
    """What a method's episode function hands back to `run_episodes`."""

    queries: list[int]  # the queries, in the order of `predicted`
    predicted: list[str]  # best type of each
    prototypes: PrototypeClassifier  # as fitted for the episode: refitted by the open-set check, then its rule read
    embeddings: torch.Tensor  # (N, D) of every image, for the open-set check
    folds: Folds  # how the queries were scored (one fold without a pool when nothing is centred)
    fit_s: list[float]  # seconds of each fit on the labelled examples
    predict_ms: list[float]  # per query, of each predict call


EpisodeFn = Callable[[int, dict[str, list[int]], list[int]], EpisodeOutcome]
"""(seed, {type: labelled example indices}, query indices) -> EpisodeOutcome"""


@dataclass
class EpisodeRun:
    """Every shots/seed episode of one method: a row of figures per shot count, and the raw timings."""

    labels: Sequence[str]
    types: list[str]
    results: list[dict]
    fit_s: list[float]
    predict_ms: list[float]

    def figures(self, **between: object) -> dict:
        """types, n_images, images_per_type, then `between`, then results (the evaluators' JSON layout)."""
        return {
            "types": self.types,
            "n_images": len(self.labels),
            "images_per_type": {name: self.labels.count(name) for name in self.types},
            **between,
            "results": self.results,
        }


def run_episodes(labels: Sequence[str], shots: Sequence[int], seeds: int, episode: EpisodeFn) -> EpisodeRun:
    """For each shots n and seed 0..seeds-1: split (`episode_split`), run `episode`, figures as in the docstring."""
    types = sorted(set(labels))
    k_types = len(types)
    type_index = {t: k for k, t in enumerate(types)}
    y = [type_index[label] for label in labels]
    run = EpisodeRun(labels, types, [], [], [])
    for n in shots:
        per_seed: list[dict] = []
        total = np.zeros((k_types, k_types), dtype=np.int64)
        for seed in range(seeds):
            support, queries = episode_split(labels, n, seed)
            out = episode(seed, support, queries)
            run.fit_s += out.fit_s
            run.predict_ms += out.predict_ms
            cm = confusion_matrix([y[i] for i in out.queries], [type_index[p] for p in out.predicted], k_types)
            total += cm
            open_set = (
                open_set_check(out.prototypes, out.embeddings, y, support, out.folds, types) if k_types >= 2 else {}
            )
            per_seed.append(seed_result(cm, len(queries), types, out.prototypes.threshold_rule, open_set))
            log.info("shots=%d seed=%d accuracy %.1f%%", n, seed, per_seed[-1]["accuracy"])
        run.results.append(shots_row(n, per_seed, types, total))
    return run


# ------------------------------------------------------------------------------------------------ the methods


def evaluate_prototype(
    samples: Sequence[ResidualSample],
    labels: Sequence[str],
    config: PrototypeConfig,
    shots: list[int],
    seeds: int,
    *,
    centre: str = "pool",
) -> dict:
    """Every shots/seed episode of the prototype classifier on precomputed residual samples.

    Each episode's queries are scored fold by fold (`query_folds`), each fold centred on its own unlabelled pool
    (centre="pool", the product's way) or on the labelled examples only. pretrain_s is 0: nothing is trained;
    embed_ms is the pooling of one image, done once for all episodes.
    """
    clf = PrototypeClassifier(config)
    t = time.perf_counter()
    embeddings = clf.embed(samples)  # (N, D): independent of the split, computed once
    embed_ms = (time.perf_counter() - t) / len(samples) * 1e3

    def episode(seed: int, support: dict[str, list[int]], queries: list[int]) -> EpisodeOutcome:
        folds = query_folds(queries, centre, seed)
        out = EpisodeOutcome([], [], clf, embeddings, folds, [], [])
        for fold, pool in folds:
            t = time.perf_counter()
            # the labelled examples' pooling counted as fine-tuning work: it is done when a user labels them
            clf.fit_embeddings(
                {name: clf.embed([samples[i] for i in idx]) for name, idx in support.items()},
                unlabelled=embeddings[pool] if pool else None,
            )
            out.fit_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            preds = clf.predict_many([samples[i] for i in fold])
            out.predict_ms.append((time.perf_counter() - t) / len(fold) * 1e3)
            out.queries.extend(fold)
            out.predicted.extend(p.best for p in preds)
        return out

    run = run_episodes(labels, shots, seeds, episode)
    timing = {
        "pretrain_s": 0.0,
        "finetune_s": round(statistics.fmean(run.fit_s), 4),
        "predict_ms": round(statistics.fmean(run.predict_ms), 2),
        "embed_ms": round(embed_ms, 2),
    }
    return {**run.figures(centre=centre), "timing": timing}


def evaluate_contrastive(
    samples: Sequence[ResidualSample],
    labels: Sequence[str],
    encoder: ResidualEncoder,
    *,
    pretrained: bool,
    finetune_config: FinetuneConfig,
    prototype_config: PrototypeConfig,
    shots: list[int],
    seeds: int,
) -> dict:
    """Every shots/seed episode of the contrastive classifier on precomputed residual samples.

    Per episode: a copy of the (pre-trained or, with pretrained=False, freshly initialised with torch seed =
    episode seed) encoder is fine-tuned on the labelled examples, prototypes from its embeddings, every query
    predicted. Nothing is centred on a pool: one fold.
    """

    def episode(seed: int, support: dict[str, list[int]], queries: list[int]) -> EpisodeOutcome:
        if pretrained:
            enc = copy.deepcopy(encoder)
        else:
            torch.manual_seed(seed)
            enc = ResidualEncoder(encoder.config)
        clf = ContrastiveClassifier(enc, prototype_config)
        t = time.perf_counter()
        clf.fit({name: [samples[i] for i in idx] for name, idx in support.items()}, finetune_config)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        preds = clf.predict_many([samples[i] for i in queries])
        predict_ms = (time.perf_counter() - t) / len(queries) * 1e3
        embeddings = clf.embed(samples)  # for the open-set check only
        folds = [(list(queries), [])]
        return EpisodeOutcome(
            queries, [p.best for p in preds], clf.prototypes, embeddings, folds, [fit_s], [predict_ms]
        )

    run = run_episodes(labels, shots, seeds, episode)
    timing = {
        "finetune_s": round(statistics.fmean(run.fit_s), 3),
        "predict_ms": round(statistics.fmean(run.predict_ms), 2),
    }
    return {**run.figures(), "timing": timing}
