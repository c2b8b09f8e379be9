"""DFD: dual-path frequency discriminators (Bai et al. 2024), a trained few-shot detector.

Its networks and frequency paths are in detection/dfd_model.py; its config, training and fit/score here.

Pipeline. Each support image is augmented (rotation, crop, brightness/contrast); each augmented image is
split into a low-frequency image (Gaussian pyramid Down then Up) and a high-frequency image (the image minus
its low part); the frozen backbone gives layer2+3 patch features of both paths. A pseudo-anomalous twin of
every augmented image is made DRAEM-style (a Perlin blob inside the part's foreground, a texture blended in
with opacity 1 - beta) and goes through the same paths. Trained on these cached features:

- a feature adaptor A (linear) shared by both paths;
- a Gaussian discriminator Dg (2-layer MLP): adapted normal features vs the same plus Gaussian noise;
- a Perlin discriminator Dp (1-layer MLP + 1 transformer layer over the image's patches): adapted normal
  features vs the pseudo-anomaly's features inside its mask.

Discriminators output "normality" d; the truncated-L1 loss is relu(theta - d) on normal and relu(theta + d)
on anomalous features (theta 0.8), so training stops pushing once a feature is on the right side by theta.
Two more terms: a cosine-similarity loss between normal and pseudo-anomalous adapted features inside the
mask (minimised: the adaptor must map a defect away from the normal feature it replaced) and an image-level
L2 term (sigmoid of the image's highest anomaly score against 0 for normal, 1 for pseudo-anomalous).
Total: L_gau + lambda_per L_per + lambda_sim L_sim + L_img.

Inference: both discriminators on both paths give four maps of -d. The paper min-max normalises each map
before averaging; done per image, that maps every image's maximum to 1 and the image score (the max)
carries no information. Here the min and max are constants of the fitted model, measured once on the good
training augmentations, so the four maps are brought to a common scale without erasing how anomalous an
image is; a defect scores above 1.

CPU budget (training is a background job): the backbone runs once per augmented image and path, then
training reads cached features. The paper's 80 augmentations per image x 80 epochs is ~800 steps of batch 8
per support image, hours on a 2-core CPU; the defaults cap the augmented pool and the number of steps, use a
narrower adaptor (256) than the features (1536), and train each step on a 16 x 16 window of the 32 x 32 patch
grid that holds the pseudo-defect (DFDConfig). A GPU, when present, runs the same steps faster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from detection.dfd_model import DFDModel, FeatureFn, path_features
from detection.method import Backbone, FitOutcome, Progress, Query, Support, check_fraction
from detection.synthetic import TextureBank, defect_mask, foreground_mask, make_pseudo_defect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DFDConfig:
    """Paper: 80 augmentations per image, 80 epochs, batch 8, Adam 5e-4 / 2e-4 / 1e-4 (adaptor / Gaussian /
    Perlin), theta 0.8, lambda_per 2, lambda_sim 0.02. The CPU budget caps the augmented pool (max_augmented
    over all k images) and the optimiser steps."""

    augmentations: int = 80
    max_augmented: int = 48
    epochs: int = 80
    max_steps: int = 150
    batch: int = 8
    adaptor_dim: int = 256
    hidden: int = 256
    perlin_dim: int = 128
    heads: int = 4
    noise_std: float = 0.1  # Gaussian noise, relative to the adapted features' standard deviation
    theta: float = 0.8
    lambda_per: float = 2.0
    lambda_sim: float = 0.02
    lr_adaptor: float = 5e-4
    lr_gaussian: float = 2e-4
    lr_perlin: float = 1e-4
    calibration_images: int = 8
    # Training sees a window of window x window patches of each image (containing its pseudo-defect), not the
    # whole 32 x 32 grid: a quarter of the cost per step. Scoring always sees the whole image.
    window: int = 16
    # PatchCore's memory bank, kept for the nearest normal patch that defect-type residuals need.
    bank_ratio: float = 0.1

    LEGACY_KEYS: ClassVar[dict[str, str]] = {"bank_ratio": "patchcore_coreset_ratio"}

    def __post_init__(self) -> None:
        counts = ("augmentations", "max_augmented", "epochs", "max_steps", "batch", "adaptor_dim", "hidden")
        for name in (*counts, "perlin_dim", "heads", "calibration_images", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.perlin_dim % self.heads:
            raise ValueError("perlin_dim must be a multiple of heads")
        check_fraction(self, "bank_ratio")


def build_model(in_dim: int, s: DFDConfig) -> DFDModel:
    return DFDModel(in_dim, s.adaptor_dim, s.hidden, s.perlin_dim, s.heads)


def state_of(model: DFDModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def model_from_state(state: dict[str, torch.Tensor], s: DFDConfig) -> DFDModel:
    in_dim = int(state["adaptor.weight"].shape[1])
    model = build_model(in_dim, s)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------- training data


def augment(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A plausible re-shot of a good part: rotation within +-10 degrees, crop of 85-100 % at a random
    offset, brightness and contrast within +-10 %. (3, S, S) in [0, 1] -> same."""
    u = torch.rand(5, generator=gen).tolist()
    angle = math.radians(20 * u[0] - 10)
    scale = 0.85 + 0.15 * u[1]
    tx, ty = (1 - scale) * (2 * u[2] - 1), (1 - scale) * (2 * u[3] - 1)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=image.dtype)[None]
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    brightness, contrast = 0.9 + 0.2 * u[4], 0.9 + 0.2 * float(torch.rand((), generator=gen))
    mean = out.mean()
    return ((out - mean) * contrast + mean * brightness).clamp_(0, 1)


def pseudo_anomaly(
    image: torch.Tensor, textures: TextureBank, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """DRAEM-style pseudo-anomaly: a Perlin blob inside the part's foreground, a texture blended in with
    beta ~ U[0, 0.8] (opacity 1 - beta). (3, S, S) in [0, 1] -> (image, (S, S) float mask)."""
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    mask = defect_mask(foreground_mask(rgb), rng, min_area=0.01, max_area=0.25)
    texture = textures.sample(textures.classes[int(rng.integers(len(textures)))], rgb.shape[0], rng)
    blended = make_pseudo_defect(rgb, texture, mask, float(rng.uniform(0.0, 0.8)))
    return torch.from_numpy(blended).permute(2, 0, 1).float() / 255, torch.from_numpy(mask.astype(np.float32))


def training_window(labels: torch.Tensor, grid: tuple[int, int], window: int, gen: torch.Generator) -> torch.Tensor:
    """Flat patch indices (B, window * window) of one square window of the (h, w) patch grid per image.

    CPU budget: a training step on a quarter of the grid costs a quarter. The window contains a random patch of
    the image's pseudo-defect (labels 1) when it has one, at a random place inside the window, so every step
    still sees anomalies; otherwise it is anywhere. window >= the grid side: the whole grid.
    """
    h, w = grid
    if window >= min(h, w):
        return torch.arange(h * w).expand(labels.shape[0], h * w)
    out = []
    for row in labels.cpu():
        hits = torch.nonzero(row == 1).flatten()
        if hits.numel():
            centre = int(hits[torch.randint(hits.numel(), (1,), generator=gen)])
            cy, cx = divmod(centre, w)
            oy, ox = torch.randint(window, (2,), generator=gen).tolist()
            top, left = min(max(cy - oy, 0), h - window), min(max(cx - ox, 0), w - window)
        else:
            top = int(torch.randint(h - window + 1, (1,), generator=gen))
            left = int(torch.randint(w - window + 1, (1,), generator=gen))
        ys, xs = torch.arange(top, top + window), torch.arange(left, left + window)
        out.append((ys[:, None] * w + xs[None, :]).flatten())
    return torch.stack(out)


def grid_labels(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, S, S) pixel masks -> (B, h*w) patch labels: 1 anomalous (>= 25 % of the patch), 0 normal (none of
    it), -1 ignored (a sliver: neither a clean normal nor a clear anomaly)."""
    frac = F.adaptive_avg_pool2d(masks[:, None], grid)[:, 0].flatten(1)
    labels = torch.full_like(frac, -1.0)
    labels[frac == 0] = 0.0
    labels[frac >= 0.25] = 1.0
    return labels


# -------------------------------------------------------------------------------------------- training


def truncated_l1(normality: torch.Tensor, anomalous: torch.Tensor, theta: float) -> torch.Tensor:
    """relu(theta - d) on normal entries, relu(theta + d) on anomalous ones (bool mask), mean of each side
    (so a small mask is not drowned by the many normal patches)."""
    loss = normality.new_zeros(())
    if (~anomalous).any():
        loss = loss + F.relu(theta - normality[~anomalous]).mean()
    if anomalous.any():
        loss = loss + F.relu(theta + normality[anomalous]).mean()
    return loss


def dfd_loss(
    model: DFDModel,
    normal: torch.Tensor,
    anomaly: torch.Tensor,
    labels: torch.Tensor,
    s: DFDConfig,
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One path's loss. normal, anomaly: (B, R, D) features of good images and of their pseudo-anomalous
    twins; labels (B, R) from grid_labels."""
    a_n, a_a = model.adaptor(normal), model.adaptor(anomaly)  # (B, R, A)
    # Gaussian: normal adapted features vs the same plus noise, the noise relative to the features' spread.
    noise = torch.randn(a_n.shape, generator=gen, device=a_n.device) * (s.noise_std * a_n.detach().std())
    d_clean, d_noisy = model.gaussian(a_n), model.gaussian(a_n + noise)
    l_gau = F.relu(s.theta - d_clean).mean() + F.relu(s.theta + d_noisy).mean()
    # Perlin: every patch of the good image is normal; in the twin, masked patches are anomalous.
    p_n, p_a = model.perlin(a_n), model.perlin(a_a)  # (B, R)
    normal_patches = torch.cat([p_n.flatten(), p_a[labels == 0]])
    l_per = truncated_l1(torch.cat([normal_patches, p_a[labels > 0]]), _flags(normal_patches, p_a[labels > 0]), s.theta)
    inside = labels > 0
    l_sim = F.cosine_similarity(a_n[inside], a_a[inside], dim=-1).mean() if inside.any() else a_n.new_zeros(())
    # Image level: the highest anomaly score of each image, squashed, against 0 (good) / 1 (has a defect).
    has_defect = inside.any(1).float()
    l_img = (torch.sigmoid((-p_n).amax(1)) ** 2).mean() + ((torch.sigmoid((-p_a).amax(1)) - has_defect) ** 2).mean()
    total = l_gau + s.lambda_per * l_per + s.lambda_sim * l_sim + l_img
    parts = {name: float(v.detach()) for name, v in (("gau", l_gau), ("per", l_per), ("sim", l_sim), ("img", l_img))}
    return total, parts


def _flags(normal: torch.Tensor, anomalous: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [normal.new_zeros(normal.shape, dtype=torch.bool), anomalous.new_ones(anomalous.shape, dtype=torch.bool)]
    )


def _augmented(support: torch.Tensor, n_per: int, gen: torch.Generator) -> torch.Tensor:
    """n_per views of each support image, the first the image itself: (k * n_per, 3, S, S)."""
    views = []
    for image in support:
        views.append(image)
        views += [augment(image, gen) for _ in range(n_per - 1)]
    return torch.stack(views)


def train(
    features: FeatureFn,
    support: torch.Tensor,
    s: DFDConfig,
    *,
    seed: int = 0,
    chunk: int = 1,
    progress: Progress | None = None,
) -> tuple[DFDModel, list[float]]:
    """Train DFD on k support images (k, 3, S, S) in [0, 1] on the device `features` runs on.

    Returns the model (normalisation fitted) and the image scores of fresh augmented good views that training
    never saw, for the thresholds. `progress(fraction, message)` is called as the work advances.
    """
    if support.ndim != 4 or support.shape[0] == 0:
        raise ValueError(f"support must be (k, 3, S, S) with k >= 1, got {tuple(support.shape)}")
    report = progress or (lambda fraction, message: None)
    k = support.shape[0]
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    textures = TextureBank(seed=seed)
    n_per = max(1, min(s.augmentations, s.max_augmented // k))
    views = _augmented(support.cpu().float(), n_per, gen)  # (N, 3, S, S)
    feats, labels = _training_features(features, views, textures, rng, chunk, report)
    model = _optimise(feats, labels, s, seed, gen, report)
    _fit_normalisation(model, feats, min(s.batch, views.shape[0]))
    del feats

    # Threshold calibration on fresh views training never saw (a different stream of augmentations).
    report(0.92, "calibrating thresholds on fresh augmented views")
    cal_gen = torch.Generator().manual_seed(seed + 1)
    n_cal = max(1, math.ceil(s.calibration_images / k))
    fresh = torch.stack([augment(image, cal_gen) for image in support.cpu().float() for _ in range(n_cal)])
    with torch.no_grad():
        lo_f, hi_f = path_features(features, fresh, chunk)
        cal_scores = model.scores(lo_f, hi_f).amax(1).tolist()
    report(1.0, "trained")
    return model, cal_scores


def _training_features(
    features: FeatureFn,
    views: torch.Tensor,
    textures: TextureBank,
    rng: np.random.Generator,
    chunk: int,
    report: Progress,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pseudo-anomalies of the N views and the cached frozen features of both (the backbone never runs again in
    training): low/high paths of the views and of their twins (a_low/a_high), each (N, R, D) half, and the
    (N, R) patch labels."""
    n = views.shape[0]
    report(0.0, f"preparing {n} augmented views and their pseudo-anomalies")
    twins, masks = zip(*(pseudo_anomaly(v, textures, rng) for v in views), strict=True)
    cache: dict[str, list[torch.Tensor]] = {"low": [], "high": [], "a_low": [], "a_high": []}
    for start in range(0, n, max(1, chunk)):
        sl = slice(start, start + max(1, chunk))
        lo, hi = path_features(features, views[sl], chunk)
        a_lo, a_hi = path_features(features, torch.stack(twins[sl]), chunk)
        for key, t in zip(cache, (lo, hi, a_lo, a_hi), strict=True):
            cache[key].append(t.half())  # half storage: 4 x N x R x D floats would not fit otherwise
        report(0.3 * min(n, start + chunk) / n, f"features of {min(n, start + chunk)}/{n} views")
    feats = {key: torch.cat(v) for key, v in cache.items()}
    side = math.isqrt(feats["low"].shape[1])
    return feats, grid_labels(torch.stack(masks), (side, side)).to(feats["low"].device)


def _optimise(
    feats: dict[str, torch.Tensor],
    labels: torch.Tensor,
    s: DFDConfig,
    seed: int,
    gen: torch.Generator,
    report: Progress,
) -> DFDModel:
    """Adam on the cached features, each step on a window of the grid of a batch of views."""
    device = feats["low"].device
    n, n_pos, dim = feats["low"].shape
    h = w = math.isqrt(n_pos)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(dim, s).to(device)
    optimiser = torch.optim.Adam(
        [
            {"params": model.adaptor.parameters(), "lr": s.lr_adaptor},
            {"params": model.gaussian.parameters(), "lr": s.lr_gaussian},
            {"params": model.perlin.parameters(), "lr": s.lr_perlin},
        ]
    )
    batch = min(s.batch, n)
    steps = max(1, min(s.epochs * math.ceil(n / batch), s.max_steps))
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    model.train()
    for step in range(steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + batch].to(device)
        cursor += batch
        rows, cols = idx[:, None], training_window(labels[idx], (h, w), s.window, gen).to(device)  # (b, 1), (b, W)
        loss = feats["low"].new_zeros((), dtype=torch.float32)
        for path in ("low", "high"):
            normal, anomaly = feats[path][rows, cols].float(), feats["a_" + path][rows, cols].float()
            part, _ = dfd_loss(model, normal, anomaly, labels[rows, cols], s, noise_gen)
            loss = loss + part
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == steps - 1:
            log.debug("dfd step %d/%d loss %.4f", step + 1, steps, float(loss.detach()))
            report(0.3 + 0.6 * (step + 1) / steps, f"training step {step + 1}/{steps}")
    return model.eval().requires_grad_(False)


def _fit_normalisation(model: DFDModel, feats: dict[str, torch.Tensor], batch: int) -> None:
    """Normalisation constants: min and max of each raw map over the good training views."""
    with torch.no_grad():
        raw = torch.cat(
            [
                model.maps(feats["low"][i : i + batch].float(), feats["high"][i : i + batch].float())
                for i in range(0, feats["low"].shape[0], batch)
            ]
        )  # (N, 4, R)
        lo = raw.amin((0, 2))
        hi = raw.amax((0, 2))
        model.norm.copy_(torch.stack([lo, (hi - lo).clamp_min(1e-6)], 1))


# ------------------------------------------------------------------------------------- the method's contract


@dataclass(eq=False)
class DFDState:
    weights: dict[str, torch.Tensor]  # the trained DFDModel's state_dict, on the CPU
    config: DFDConfig  # the model's shape
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where the model runs
    _model: DFDModel | None = field(default=None, repr=False)

    def model(self) -> DFDModel:
        """The trained model on this state's device (built once)."""
        if self._model is None:
            with torch.inference_mode(False):  # a plain module, even when first asked for inside predict
                self._model = model_from_state(self.weights, self.config).to(self.device)
        return self._model

    def to(self, device: torch.device) -> DFDState:
        device = torch.device(device)
        return self if device == self.device else DFDState(self.weights, self.config, device)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    def summary(self) -> str:
        return f"adaptor {self.weights['adaptor.weight'].shape[0]} wide"


def four_maps(state: DFDState, backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) images -> (B, 4, R): DFD's four normalised maps (dfd_model.MAP_NAMES) before averaging."""
    low, high = path_features(backbone.frozen, images.to(backbone.device), backbone.forward_batch)
    with torch.no_grad():
        return state.to(backbone.device).model().normalised_maps(low, high)


class DFD:
    name = "dfd"
    label = "DFD"
    description = "trained frequency discriminators; the fit trains for minutes on a CPU"
    config_type = DFDConfig
    scores_with_bank = False

    def coreset_size(self, config: DFDConfig, n_patches: int, dim: int) -> int:
        return 0

    def fit(self, config: DFDConfig, support: Support) -> FitOutcome[DFDState]:
        """Train on the support images. Leave-one-out would mean k more trainings: the held-out scores are those
        of fresh augmented views of the support images that training never saw."""
        backbone = support.backbone
        model, scores = train(
            backbone.frozen,
            support.images,
            config,
            seed=support.seed,
            chunk=backbone.forward_batch,
            progress=support.progress,
        )
        return FitOutcome(DFDState(state_of(model), config, backbone.device), held_out=scores)

    def score(self, config: DFDConfig, state: DFDState, bank: torch.Tensor | None, query: Query) -> torch.Tensor:
        if query.images is None:
            raise ValueError("DFD scores the images' frequency paths: pass images to patch_scores")
        return four_maps(state, query.backbone, query.images).mean(1)

    def load_state(self, config: DFDConfig, tensors: dict[str, torch.Tensor]) -> DFDState:
        return DFDState(dict(tensors), config)


METHOD = DFD()
