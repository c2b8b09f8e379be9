"""ContrastiveClassifier: the learned residual encoder + nearest-prototype prediction on its embeddings.

Prototypes, confidence and the "unknown type" threshold are PrototypeClassifier's (fit_embeddings on the encoder's
embeddings, leave-one-out threshold rule); only the embedding differs from the training-free baseline.

Saved as data: {"format_version", "config" (encoder), "prototype_config", "state_dict" (encoder tensors), "types",
"threshold_rule", "prototypes": {tensors}}, loaded with torch.load(weights_only=True) and rebuilt from the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from classification.contrastive import FinetuneConfig, embed, finetune
from classification.encoder import EncoderConfig, ResidualEncoder
from classification.prototype import PrototypeClassifier, PrototypeConfig, TypePrediction, save_payload
from classification.residuals import ResidualSample

FORMAT_VERSION = 2  # 2: prototypes stored as an embedded PrototypeClassifier payload


class ContrastiveClassifier:
    def __init__(self, encoder: ResidualEncoder, prototype_config: PrototypeConfig | None = None) -> None:
        self.encoder = encoder
        # No centring by default: InfoNCE already trains the cosine between raw embeddings to separate types.
        self.prototypes = PrototypeClassifier(
            prototype_config if prototype_config is not None else PrototypeConfig(center=False)
        )

    @property
    def types(self) -> list[str]:
        return self.prototypes.types

    def embed(self, samples: Sequence[ResidualSample]) -> torch.Tensor:
        return embed(self.encoder, samples)  # eval mode, no grad

    def fit(
        self, examples: Mapping[str, Sequence[ResidualSample]], finetune_config: FinetuneConfig | None = None
    ) -> ContrastiveClassifier:
        """Fine-tune the encoder on the examples (skipped with 1 example per type), then prototypes + threshold."""
        examples = {t: list(s) for t, s in examples.items() if s}
        if finetune_config is not None:
            finetune(self.encoder, examples, finetune_config)
        self.prototypes.fit_embeddings({t: self.embed(s) for t, s in examples.items()})
        return self

    def predict_many(self, samples: Sequence[ResidualSample]) -> list[TypePrediction]:
        return self.prototypes.predict_embeddings(self.embed(samples))

    def predict(self, sample: ResidualSample) -> TypePrediction:
        return self.predict_many([sample])[0]

    # -- save / load ------------------------------------------------------------------------------------

    def save(self, path: str | Path | BinaryIO) -> None:
        """Encoder config + state_dict and the fitted prototypes, as data (weights_only loadable)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "config": self.encoder.config.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()},
            "prototypes": self.prototypes.to_payload(),
        }
        save_payload(payload, path)

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> ContrastiveClassifier:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"contrastive classifier format {version!r}, this code reads {FORMAT_VERSION}")
        encoder = ResidualEncoder(EncoderConfig.from_dict(payload["config"]))
        encoder.load_state_dict(payload["state_dict"])
        encoder.eval()
        prototypes = PrototypeClassifier.from_payload(payload["prototypes"])
        clf = cls(encoder, prototypes.config)
        clf.prototypes = prototypes
        return clf
