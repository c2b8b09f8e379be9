"""Contrastive training of the residual encoder: InfoNCE over few-shot episodes, synthetic pre-training, fine-tuning.

Pre-training (per product). A pool of synthetic defective images is made once: `pool_classes` pseudo types (texture
classes and variants, drawn from the generator's classes) x `pool_per_class` images. Their residual samples are
computed by the product's own detector against its memory bank, exactly like real defects (`detector.predict(
fitted, images, return_features=True)`), never against the clean source image. Each step then draws an episode:
`n_way` pseudo types drawn anew from a Generator that is never reseeded (the research code reseeded and saw the same
10 classes every step), `k_shot` support + `n_query` query samples each, no query in its own support.

Fine-tuning on the confirmed real examples: every step embeds all of them and applies InfoNCE with every example as
the anchor against all the others (leave-one-out: an example is never its own positive). Skipped when every type has
a single example (no positive pair exists): prototypes of the pre-trained embeddings are used as they are.

Train / eval mode is set explicitly: `model.train()` for every optimisation step, `model.eval()` for every
embedding (the research code left BatchNorm in eval mode after the first evaluation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from classification.encoder import ResidualEncoder
from classification.residuals import ResidualSample

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ loss


def info_nce(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    *,
    anchors: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised InfoNCE: for each anchor, positives = other samples of its type, negatives = the other types.

    embeddings (N, E) L2-normalised, labels (N,). `anchors` / `candidates` (bool (N,) masks or index tensors)
    restrict who is an anchor (default: everyone) and whom an anchor is compared with (default: everyone but
    itself). Loss of an anchor a = -mean over its positives p of log(exp(s_ap / T) / sum_{c != a} exp(s_ac / T)),
    averaged over the anchors that have at least one positive.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings (N, E) and labels (N,) expected, got {tuple(embeddings.shape)}, {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = embeddings.shape[0]
    idx = torch.arange(n)
    a_idx = idx if anchors is None else idx[anchors] if anchors.dtype == torch.bool else anchors
    c_mask = torch.ones(n, dtype=torch.bool)
    if candidates is not None:
        c_mask = torch.zeros(n, dtype=torch.bool)
        c_mask[candidates] = True
    logits = embeddings[a_idx] @ embeddings.T / temperature  # (A, N)
    valid = c_mask.unsqueeze(0).expand_as(logits).clone()  # (A, N)
    valid[torch.arange(len(a_idx)), a_idx] = False  # an anchor is never its own candidate
    logits = logits.masked_fill(~valid, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (A, N)
    positive = (labels[a_idx].unsqueeze(1) == labels.unsqueeze(0)) & valid  # (A, N)
    n_pos = positive.sum(1)
    has = n_pos > 0
    if not has.any():
        raise ValueError("no anchor has a positive: every type needs >= 2 samples among the candidates")
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1)[has] / n_pos[has]
    return per_anchor.mean()


# --------------------------------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class Episode:
    support: tuple[int, ...]  # pool indices
    query: tuple[int, ...]  # pool indices, disjoint from support
    labels: tuple[int, ...] = field(default=())  # episode-local type of support + query, in that order

    @property
    def indices(self) -> list[int]:
        return [*self.support, *self.query]


def make_episode(labels: Sequence[int], n_way: int, k_shot: int, n_query: int, rng: np.random.Generator) -> Episode:
    """n_way types drawn from `rng` (fresh each call), k_shot support + n_query queries each, sampled without
    replacement within the type, so no query is in its own support. Types with too few samples are not drawn."""
    labels_arr = np.asarray(labels)
    types = np.unique(labels_arr)
    eligible = [t for t in types if (labels_arr == t).sum() >= k_shot + n_query]
    if len(eligible) < n_way:
        raise ValueError(f"{len(eligible)} types have >= {k_shot + n_query} samples; {n_way}-way episodes need more")
    chosen = rng.choice(np.asarray(eligible), size=n_way, replace=False)
    support: list[int] = []
    query: list[int] = []
    s_lab: list[int] = []
    q_lab: list[int] = []
    for local, t in enumerate(chosen):
        idx = rng.permutation(np.flatnonzero(labels_arr == t))[: k_shot + n_query]
        support += idx[:k_shot].tolist()
        query += idx[k_shot:].tolist()
        s_lab += [local] * k_shot
        q_lab += [local] * n_query
    return Episode(tuple(support), tuple(query), tuple(s_lab + q_lab))


def episode_loss(encoder: ResidualEncoder, pool: Sequence[ResidualSample], episode: Episode) -> torch.Tensor:
    """InfoNCE of the episode: every sample (support and query) is an anchor against all others of the episode.

    One forward pass over support + queries, so BatchNorm sees the whole episode."""
    emb = encoder(*batch([pool[i] for i in episode.indices]))
    return info_nce(emb, torch.tensor(episode.labels), encoder.config.temperature)


# ----------------------------------------------------------------------------------------------------- batches


def batch(samples: Sequence[ResidualSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples -> (B, D, h, w) residuals, (B, h, w) anomaly maps."""
    if not samples:
        raise ValueError("no samples")
    return torch.stack([s.residual for s in samples]), torch.stack([s.anomaly for s in samples])


@torch.no_grad()
def embed(encoder: ResidualEncoder, samples: Sequence[ResidualSample], batch_size: int = 16) -> torch.Tensor:
    """(N, E) embeddings with the encoder in eval mode (BatchNorm uses its running statistics)."""
    encoder.eval()
    out = [encoder(*batch(samples[i : i + batch_size])) for i in range(0, len(samples), batch_size)]
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ pretraining


@dataclass(frozen=True)
class PretrainConfig:
    pool_classes: int = 24
    pool_per_class: int = 8
    steps: int = 150
    n_way: int = 5
    k_shot: int = 2
    n_query: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    predict_chunk: int = 8


def synthetic_pool(
    generator: object, detector: object, fitted: object, config: PretrainConfig, rng: np.random.Generator
) -> tuple[list[ResidualSample], list[int], list[str]]:
    """Synthetic defective images -> residual samples against the product's memory bank, with pseudo-type labels.

    generator: a detection.synthetic.SyntheticDefectGenerator; detector/fitted: detection.Detector and its
    FittedSupport (duck-typed: classification does not import detection).
    """
    classes = generator.episode_classes(min(config.pool_classes, len(generator.classes)), rng)
    images, labels = [], []
    for k, name in enumerate(classes):
        for _ in range(config.pool_per_class):
            img, _mask = generator.sample(name, rng)
            images.append(img)
            labels.append(k)
    samples: list[ResidualSample] = []
    for start in range(0, len(images), config.predict_chunk):
        preds = detector.predict(fitted, images[start : start + config.predict_chunk], return_features=True)
        samples += [ResidualSample.from_prediction(p) for p in preds]
    return samples, labels, list(classes)


def train_steps(
    encoder: ResidualEncoder,
    pool: Sequence[ResidualSample],
    labels: Sequence[int],
    *,
    steps: int,
    n_way: int,
    k_shot: int,
    n_query: int,
    lr: float,
    weight_decay: float,
    rng: np.random.Generator,
) -> list[float]:
    """`steps` Adam steps on episodes drawn from the pool; returns the loss of every step."""
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        episode = make_episode(labels, n_way, k_shot, n_query, rng)  # fresh types every step: rng never reseeded
        encoder.train()
        loss = episode_loss(encoder, pool, episode)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def pretrain(
    encoder: ResidualEncoder,
    generator: object,
    detector: object,
    fitted: object,
    config: PretrainConfig | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Pre-train `encoder` in place on the product's synthetic defects; returns timing and loss figures."""
    config = config if config is not None else PretrainConfig()
    rng = rng if rng is not None else np.random.default_rng()
    t0 = time.perf_counter()
    pool, labels, classes = synthetic_pool(generator, detector, fitted, config, rng)
    t1 = time.perf_counter()
    n_way = min(config.n_way, len(classes))
    losses = train_steps(
        encoder,
        pool,
        labels,
        steps=config.steps,
        n_way=n_way,
        k_shot=config.k_shot,
        n_query=config.n_query,
        lr=config.lr,
        weight_decay=config.weight_decay,
        rng=rng,
    )
    t2 = time.perf_counter()
    encoder.eval()
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    log.info(
        "pretrain: %d pseudo types x %d images in %.1f s; %d steps in %.1f s, loss %.3f -> %.3f",
        len(classes),
        config.pool_per_class,
        t1 - t0,
        config.steps,
        t2 - t1,
        first,
        last,
    )
    return {"pool_s": t1 - t0, "train_s": t2 - t1, "loss_first": first, "loss_last": last}


# ------------------------------------------------------------------------------------------------ fine-tuning


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 30
    lr: float = 3e-4
    weight_decay: float = 1e-4


def finetune(
    encoder: ResidualEncoder, examples: Mapping[str, Sequence[ResidualSample]], config: FinetuneConfig | None = None
) -> list[float]:
    """Fine-tune in place on the real labelled examples (leave-one-out InfoNCE); [] when it is skipped.

    Skipped when no type has 2 examples (no positive pair) or fewer than 2 types (no negatives)."""
    config = config if config is not None else FinetuneConfig()
    types = sorted(t for t, s in examples.items() if s)
    if len(types) < 2 or all(len(examples[t]) < 2 for t in types) or config.steps < 1:
        encoder.eval()
        return []
    samples = [s for t in types for s in examples[t]]
    labels = torch.tensor([k for k, t in enumerate(types) for _ in examples[t]])
    residual, anomaly = batch(samples)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    for _ in range(config.steps):
        encoder.train()
        loss = info_nce(encoder(residual, anomaly), labels, encoder.config.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    return losses
