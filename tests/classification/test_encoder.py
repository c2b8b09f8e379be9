"""Residual encoder: shapes, L2 norm, anomaly-guided attention pooling. CPU, tiny random tensors."""

from __future__ import annotations

import pytest
import torch

from classification.encoder import EncoderConfig, ResidualEncoder, defect_extent, log_anomaly_weights
from classification.residuals import anomaly_weights

D, H, W = 16, 4, 4
CONFIG = EncoderConfig(in_dim=D, hidden=8, embed=6)


def inputs(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, H, W, generator=gen), torch.rand(b, H, W, generator=gen)


def test_encoder_output_is_l2_normalised_with_the_configured_width():
    torch.manual_seed(0)
    enc = ResidualEncoder(CONFIG).eval()
    out = enc(*inputs(3))
    assert out.shape == (3, 6)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_encoder_rejects_residuals_of_the_wrong_shape():
    enc = ResidualEncoder(CONFIG).eval()
    x, a = inputs(2)
    with pytest.raises(ValueError, match="residual must be"):
        enc(x[:, :8], a)
    with pytest.raises(ValueError, match="residual must be"):
        enc(x[0], a[0])
    with pytest.raises(ValueError, match="does not match"):
        enc(x, a[:, :3])


def test_training_mode_refuses_a_single_image_batch():
    enc = ResidualEncoder(CONFIG).train()
    x, a = inputs(1)
    with pytest.raises(ValueError, match="batch"):
        enc(x, a)


def test_log_anomaly_weights_match_the_baseline_softmax_weights():
    _, a = inputs(3)
    log_w = log_anomaly_weights(a, 0.1)
    for i in range(3):
        torch.testing.assert_close(log_w[i].exp(), anomaly_weights(a[i], temperature=0.1).flatten())


def test_attention_pooling_concentrates_on_the_anomalous_patches():
    torch.manual_seed(0)
    enc = ResidualEncoder(CONFIG).eval()
    x, _ = inputs(2)
    anomaly = torch.full((2, H, W), 0.1)
    anomaly[:, 1:3, 1:3] = 1.0  # 4 of 16 patches are the defect
    with torch.no_grad():
        weights = enc.attention_weights(x, anomaly)
    assert weights.shape == (2, H, W)
    torch.testing.assert_close(weights.sum((1, 2)), torch.ones(2))
    assert (weights[:, 1:3, 1:3].sum((1, 2)) > 0.99).all()


def test_pooled_embedding_ignores_changes_to_normal_patches_but_not_to_the_defect():
    torch.manual_seed(0)
    enc = ResidualEncoder(CONFIG).eval()
    x, _ = inputs(1)
    anomaly = torch.full((1, H, W), 0.1)
    anomaly[:, 0, 0] = 1.0
    background, defect = x.clone(), x.clone()
    background[:, :, 3, 3] += 5.0
    defect[:, :, 0, 0] += 5.0
    with torch.no_grad():
        base, bg, df = enc(x, anomaly), enc(background, anomaly), enc(defect, anomaly)
    assert (base - bg).abs().max() < 1e-4
    assert (base - df).abs().max() > 1e-2


def test_defect_extent_is_larger_for_a_larger_defect():
    small = torch.full((1, 8, 8), 0.1)
    small[:, 0, 0] = 1.0
    large = torch.full((1, 8, 8), 0.1)
    large[:, :4, :4] = 1.0
    ext_small = defect_extent(log_anomaly_weights(small, 0.1))
    ext_large = defect_extent(log_anomaly_weights(large, 0.1))
    assert ext_large > ext_small + 1.0  # log(16) - log(1) = 2.8


def test_flat_anomaly_map_gives_uniform_attention_prior():
    log_w = log_anomaly_weights(torch.ones(1, H, W), 0.1)
    torch.testing.assert_close(log_w.exp(), torch.full((1, H * W), 1.0 / (H * W)))


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    assert EncoderConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(ValueError, match="unknown"):
        EncoderConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        EncoderConfig(temperature=0.0)
