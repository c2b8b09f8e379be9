"""Review-loop test data: processed flagged inspections made with the ORM, with synthetic embeddings lying near
one direction per defect type (so the classifier's answers are known); the fixtures built on them are in conftest.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inspector import ml
from inspector.inspections.models import Inspection

D = 24
TYPES = ("crack", "scratch", "stain")


def direction(k: int) -> torch.Tensor:
    return F.normalize(torch.randn(D, generator=torch.Generator().manual_seed(100 + k)), dim=0)


def embedding(k: int, seed: int, noise: float = 0.15) -> bytes:
    v = direction(k) + noise * torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return ml.embedding_to_bytes(F.normalize(v, dim=0))


def fresh(row):
    return type(row).objects.get(pk=row.pk)


def flagged(batch, k: int, seed: int, *, verdict: str = "defective") -> Inspection:
    """A processed flagged image whose embedding lies near type k's direction (k = -1: no embedding)."""
    return Inspection.objects.create(
        batch=batch,
        support_set=batch.support_set,
        image=f"inspections/{seed}.png",
        original_name=f"img{seed}.png",
        checksum=f"{seed:064x}",
        width=64,
        height=64,
        status="done",
        verdict=verdict,
        score=1.0,
        embedding=embedding(k, seed) if k >= 0 else None,
    )
