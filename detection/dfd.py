"""DFD: dual-path frequency discriminators (Bai et al. 2024), a trained few-shot detector.

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
grid that holds the pseudo-defect (DetectorConfig.dfd_*). A GPU, when present, runs the same steps faster.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classification.synthetic import TextureBank, defect_mask, foreground_mask, make_pseudo_defect

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
MAP_NAMES = ("gaussian_low", "gaussian_high", "perlin_low", "perlin_high")  # the order of DFDModel.maps
N_MAPS = len(MAP_NAMES)

# 5-tap binomial kernel of cv2.pyrDown / pyrUp.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur5(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5x5 binomial blur, reflect-101 border (OpenCV's BORDER_DEFAULT), (B, C, H, W)."""
    c = x.shape[1]
    k = (_BINOMIAL * math.sqrt(gain)).to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: blur, keep every second row and column. (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
    return _blur5(x)[..., ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.pyrUp: zeros between samples, blur with 4x the kernel. (B, C, h, w) -> (B, C, *size)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur5(up, gain=4.0)[..., : size[0], : size[1]]


def frequency_split(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> (low, high): low = Up(Down(x)), high = x - low, so low + high == x."""
    if images.ndim != 4:
        raise ValueError(f"frequency_split expects (B, C, H, W), got {tuple(images.shape)}")
    low = pyr_up(pyr_down(images), images.shape[-2:])
    return low, images - low


def path_inputs(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (2B, 3, S, S) backbone inputs: the B low images, then the B high images.

    The high-frequency image is centred on mid-grey (0.5 + high): it is signed, and the backbone's input
    normalisation expects images around the ImageNet mean, not around black.
    """
    low, high = frequency_split(images)
    return torch.cat([low, high + 0.5])


# ------------------------------------------------------------------------------------------------ model


class GaussianDiscriminator(nn.Module):
    """2-layer MLP: (N, A) adapted features -> (N,) normality."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class PerlinDiscriminator(nn.Module):
    """1-layer MLP, then one transformer layer over an image's patches: (B, R, A) -> (B, R) normality.

    The transformer lets a patch be judged against the rest of the same image (a texture that fits the part
    elsewhere is not an anomaly). No positional encoding: the judgement is about content, not place.
    """

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2))
        self.mix = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.embed(x))).squeeze(-1)


class DFDModel(nn.Module):
    """Adaptor + both discriminators; `maps` gives the four raw anomaly maps (-normality)."""

    def __init__(self, in_dim: int, adaptor_dim: int, hidden: int, perlin_dim: int, heads: int) -> None:
        super().__init__()
        self.adaptor = nn.Linear(in_dim, adaptor_dim)
        self.gaussian = GaussianDiscriminator(adaptor_dim, hidden)
        self.perlin = PerlinDiscriminator(adaptor_dim, perlin_dim, heads)
        # Per-map (offset, scale) of the min-max normalisation, measured on good images after training.
        self.register_buffer("norm", torch.tensor([[0.0, 1.0]] * N_MAPS))

    def maps(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) patch features of both paths -> (B, 4, R) raw anomaly scores (-normality)."""
        out = []
        for feats in (low, high):
            a = self.adaptor(feats)  # (B, R, A)
            out += [-self.gaussian(a), -self.perlin(a)]
        return torch.stack([out[0], out[2], out[1], out[3]], 1)  # Gaussian low/high, Perlin low/high

    def normalised_maps(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) x 2 -> (B, 4, R): the four maps min-max normalised by the fitted constants (MAP_NAMES order)."""
        raw = self.maps(low, high)
        return (raw - self.norm[:, 0, None]) / self.norm[:, 1, None]

    def scores(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """(B, R, D) x 2 -> (B, R) patch scores: the four normalised maps averaged."""
        return self.normalised_maps(low, high).mean(1)


@dataclass(frozen=True)
class DFDSettings:
    """The DFD part of DetectorConfig, unpacked (see DetectorConfig for the meaning of each)."""

    augmentations: int
    max_augmented: int
    epochs: int
    max_steps: int
    batch: int
    adaptor_dim: int
    hidden: int
    perlin_dim: int
    heads: int
    noise_std: float
    theta: float
    lambda_per: float
    lambda_sim: float
    lr_adaptor: float
    lr_gaussian: float
    lr_perlin: float
    calibration_images: int
    window: int


def build_model(in_dim: int, s: DFDSettings) -> DFDModel:
    return DFDModel(in_dim, s.adaptor_dim, s.hidden, s.perlin_dim, s.heads)


def state_of(model: DFDModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def model_from_state(state: dict[str, torch.Tensor], s: DFDSettings) -> DFDModel:
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
    s: DFDSettings,
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


FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) in [0, 1] -> (B, D, h, w) frozen features


def path_features(features: FeatureFn, images: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) -> low and high path patch features, each (B, R, D) float32."""
    low, high = [], []
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        f = features(path_inputs(part))  # (2b, D, h, w)
        f = f.permute(0, 2, 3, 1).flatten(1, 2).float()  # (2b, R, D)
        low.append(f[: part.shape[0]])
        high.append(f[part.shape[0] :])
    return torch.cat(low), torch.cat(high)


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
    s: DFDSettings,
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
    n = views.shape[0]

    # 1. Pseudo-anomalies and cached frozen features (the backbone never runs again in training).
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
    device = feats["low"].device
    n_pos, dim = feats["low"].shape[1:]
    h = w = math.isqrt(n_pos)
    labels = grid_labels(torch.stack(masks), (h, w)).to(device)  # (N, R)

    # 2. Training on the cached features.
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
    model.eval().requires_grad_(False)

    # 3. Normalisation constants: min and max of each raw map over the good training views.
    with torch.no_grad():
        raw = torch.cat(
            [
                model.maps(feats["low"][i : i + batch].float(), feats["high"][i : i + batch].float())
                for i in range(0, n, batch)
            ]
        )  # (N, 4, R)
        lo = raw.amin((0, 2))
        hi = raw.amax((0, 2))
        model.norm.copy_(torch.stack([lo, (hi - lo).clamp_min(1e-6)], 1))
    del feats

    # 4. Threshold calibration on fresh views training never saw (a different stream of augmentations).
    report(0.92, "calibrating thresholds on fresh augmented views")
    cal_gen = torch.Generator().manual_seed(seed + 1)
    n_cal = max(1, math.ceil(s.calibration_images / k))
    fresh = torch.stack([augment(image, cal_gen) for image in support.cpu().float() for _ in range(n_cal)])
    with torch.no_grad():
        lo_f, hi_f = path_features(features, fresh, chunk)
        cal_scores = model.scores(lo_f, hi_f).amax(1).tolist()
    report(1.0, "trained")
    return model, cal_scores
