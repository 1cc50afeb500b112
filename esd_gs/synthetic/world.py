"""The synthetic world: a procedural head, its front-biased photo set, and an exact diffusion prior.

The prior is the ideal denoiser of the photo set (pixel space, identity "VAE"):
    E[x0 | x_t] = sum_i softmax_i(log pi_i - |x_t - sqrt(ab) x_i|^2 / (2 (1 - ab))) x_i
    eps = (x_t - sqrt(ab) E[x0 | x_t]) / sqrt(1 - ab)
with pi uniform (the prompt "a head") or, for view-dependent prompts, a weak smooth reweighting of
all photos by azimuth (exp(kappa cos(az_i)) for "front view", ...). Hard subsets would make CFG so
sharp that Janus vanishes even for SDS (DESIGN.md section 4), unlike Stable Diffusion.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import make_cameras
from ..gaussians import rgb_to_sh0, splats_from_tensors
from ..io.atomic import atomic_path
from ..render.turntable import render_frames

PHOTOS_VERSION = 1  # bump when head_splats or the renderer changes what photos look like
SKIN, HAIR, EYE, NOSE, MOUTH, EAR = (0.92, 0.72, 0.58), (0.22, 0.13, 0.07), (0.05, 0.05, 0.12), \
    (0.85, 0.3, 0.25), (0.65, 0.08, 0.1), (0.8, 0.55, 0.42)


@dataclass
class SyntheticConfig:
    resolution: int = 32
    num_images: int = 1024
    front_share: float = 0.4
    """Fraction of photos within 45 deg of the front (0.25 would be uniform)."""
    elevation_deg: tuple[float, float] = (0.0, 30.0)
    radius: float = 1.8
    fovy_deg: float = 50.0
    view_kappa: float = 0.12
    """Strength of the smooth view reweighting behind 'front/side/back view' prompts."""
    variational: str = "learned"
    """'learned': small UNet2DConditionModel with the camera embedding; 'exact': kernel over a render bank."""
    bank_size: int = 32
    camera_kernel_deg: float = 30.0
    """Exact estimator: width (std) of the camera kernel over the render bank."""
    unet_channels: int = 32
    data_seed: int = 1234


def _ellipsoid_points(n: int, axes, g: torch.Generator) -> tuple[Tensor, Tensor]:
    d = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return d * torch.tensor(axes), d


def head_splats(seed: int = 0, two_faced: bool = False, yaw_deg: float = 0.0):
    """A head facing +x: skin ellipsoid, hair on the back and top, ears, eyes, nose and mouth on the front.

    two_faced puts a second face on the back (the Janus artifact, for testing the metric)."""
    g = torch.Generator().manual_seed(seed)
    axes = (0.30, 0.26, 0.34)
    pts, normal = _ellipsoid_points(1400, axes, g)
    hair = (pts[:, 0] < -0.05) | ((pts[:, 2] > 0.18) & (pts[:, 0] < 0.12))
    colour = torch.where(hair[:, None], torch.tensor(HAIR), torch.tensor(SKIN))
    parts = [(pts, colour, 0.045)]

    def blob(centre, radius, rgb, n=40):
        c = torch.tensor(centre) + radius * torch.randn(n, 3, generator=g).clamp(-2, 2) * 0.5
        return c, torch.tensor(rgb).expand(n, 3), radius * 0.6

    features = []
    for side in (1.0, -1.0):
        features.append(blob((0.27, 0.09 * side, 0.07), 0.035, EYE))
        features.append(blob((0.0, 0.27 * side, 0.0), 0.05, EAR))
    features.append(blob((0.32, 0.0, -0.03), 0.04, NOSE))
    mouth = blob((0.27, 0.0, -0.15), 0.03, MOUTH, n=60)
    mouth[0][:, 1] *= 3.0  # wide
    features.append(mouth)
    if two_faced:  # mirror the facial features (not the ears) onto the back
        face = [f for f in features if f[1][0].tolist() != list(EAR)]
        features += [(f[0] * torch.tensor([-1.0, 1.0, 1.0]), f[1], f[2]) for f in face]
        parts[0] = (pts, torch.where((hair & (pts[:, 2] > 0.18))[:, None], torch.tensor(HAIR),
                                     torch.tensor(SKIN)), 0.045)
    parts += features
    means = torch.cat([p[0] for p in parts])
    if yaw_deg:
        a = math.radians(yaw_deg)
        rot = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
        means = means @ rot.T
    colours = torch.cat([p[1] for p in parts])
    scales = torch.cat([torch.full((len(p[0]), 3), math.log(p[2])) for p in parts])
    n = len(means)
    return splats_from_tensors({
        "means": means, "scales": scales, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "opacities": torch.full((n,), 4.0), "sh0": rgb_to_sh0(colours)[:, None], "shN": torch.zeros(n, 0, 3),
    })


def sample_front_biased_azimuths(n: int, front_share: float, g: torch.Generator) -> Tensor:
    """Mixture: uniform in [-45, 45] with prob q, uniform on the circle otherwise; q + (1-q)/4 = front_share."""
    q = max(0.0, (front_share - 0.25) / 0.75)
    front = torch.rand(n, generator=g) < q
    return torch.where(front, -45 + 90 * torch.rand(n, generator=g), -180 + 360 * torch.rand(n, generator=g))


def make_scheduler():
    from diffusers import DDPMScheduler

    # Stable Diffusion's schedule, so timestep ranges and weights mean the same in both worlds
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="epsilon")


def render_photos(splats, azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig,
                  background: float = 1.0, chunk: int = 64) -> Tensor:
    """Renders [N,H,W,3] in [0,1] on a plain background."""
    cams = make_cameras(azimuth_deg, elevation_deg, cfg.radius, cfg.fovy_deg, cfg.resolution)
    return render_frames(splats, cams, (background,) * 3, backend="torch", chunk=chunk)[0].clamp(0, 1)


def cached_photos(azimuth_deg: Tensor, elevation_deg: Tensor, cfg: SyntheticConfig) -> Tensor:
    """render_photos, cached under $ESD_GS_CACHE (default ~/.cache/esd-gs): the photo set is a pure
    function of the dataset settings, and rendering ~1000 views costs tens of seconds on a CPU."""
    key = hashlib.sha256(repr((PHOTOS_VERSION, azimuth_deg.tolist(), elevation_deg.tolist(), cfg.resolution,
                               cfg.radius, cfg.fovy_deg)).encode()).hexdigest()[:16]
    path = Path(os.environ.get("ESD_GS_CACHE", Path.home() / ".cache" / "esd-gs")) / f"photos-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            pass  # unreadable cache: render again
    photos = render_photos(head_splats(), azimuth_deg, elevation_deg, cfg)
    try:
        with atomic_path(path) as tmp:
            torch.save(photos, tmp)
    except OSError:
        pass  # a read-only home only costs time
    return photos


def ideal_denoiser(x_t: Tensor, t: Tensor, images: Tensor, log_weights: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """E[x0 | x_t] for the empirical distribution sum_i pi_i delta(x_i). x_t [B,D], images [N,D],
    log_weights [B,N] or [N]."""
    ab = alphas_cumprod.to(x_t.device)[t].to(x_t.dtype)[:, None]
    d2 = (x_t * x_t).sum(-1, keepdim=True) - 2 * ab.sqrt() * x_t @ images.T + ab * (images * images).sum(-1)[None]
    posterior = torch.softmax(log_weights - d2 / (2 * (1 - ab)), dim=-1)
    return posterior @ images


class SyntheticPrior:
    """Exact prior of the synthetic photo set; same interface as StableDiffusionPrior."""

    unet = None

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.scheduler = make_scheduler()
        g = torch.Generator().manual_seed(cfg.data_seed)
        self.azimuth_deg = sample_front_biased_azimuths(cfg.num_images, cfg.front_share, g)
        lo, hi = cfg.elevation_deg
        self.elevation_deg = lo + (hi - lo) * torch.rand(cfg.num_images, generator=g)
        self.photos = cached_photos(self.azimuth_deg, self.elevation_deg, cfg)
        self.images = (self.photos.permute(0, 3, 1, 2) * 2 - 1).reshape(cfg.num_images, -1)

    def encode(self, rgb: Tensor) -> Tensor:
        x = rgb.permute(0, 3, 1, 2)
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, (self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x * 2 - 1

    def view_log_weights(self, direction: str | None) -> Tensor:
        az = torch.deg2rad(self.azimuth_deg)
        k = self.cfg.view_kappa
        return {None: torch.zeros_like(az), "overhead": torch.zeros_like(az), "front": k * torch.cos(az),
                "back": -k * torch.cos(az), "side": k * torch.sin(az).abs()}[direction]

    def eps(self, x_t: Tensor, t: Tensor, log_weights: Tensor) -> Tensor:
        flat = x_t.reshape(len(x_t), -1)
        x0 = ideal_denoiser(flat, t, self.images.to(x_t.device), log_weights, self.scheduler.alphas_cumprod)
        ab = self.scheduler.alphas_cumprod.to(x_t.device)[t].view(-1, 1)
        return ((flat - ab.sqrt() * x0) / (1 - ab).sqrt()).reshape(x_t.shape)

    @torch.no_grad()
    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        eps_uncond = self.eps(x_t, t, torch.zeros(len(self.images)))
        if directions is None:  # "a head" weighs all photos alike: CFG changes nothing
            return eps_uncond
        cond = torch.stack([self.view_log_weights(d) for d in directions]).to(x_t.device)
        eps_cond = self.eps(x_t, t, cond)
        return eps_uncond + scale * (eps_cond - eps_uncond)


def small_unet(cfg: SyntheticConfig):
    """The synthetic world's variational network: a small UNet2DConditionModel (same code path as SD's)."""
    from diffusers import UNet2DConditionModel

    c = cfg.unet_channels
    return UNet2DConditionModel(
        sample_size=cfg.resolution, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(c, 2 * c, 2 * c), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


class ExactVariational:
    """Exact-kernel variational score: the ideal denoiser of a bank of recent renders.

    camera-free branch: all renders in the bank alike; camera branch: renders weighted by a Gaussian
    kernel on the angle between camera positions. Before the first render is banked it returns 0."""

    def __init__(self, cfg: SyntheticConfig, scheduler):
        self.cfg, self.scheduler = cfg, scheduler
        self.latents: Tensor | None = None
        self.cams: Tensor | None = None

    def _log_weights(self, cam16: Tensor) -> Tensor:
        sigma = math.radians(self.cfg.camera_kernel_deg)
        pos = F.normalize(cam16.view(-1, 4, 4)[:, :3, 3], dim=-1)
        bank = F.normalize(self.cams.view(-1, 4, 4)[:, :3, 3], dim=-1)
        return ((pos @ bank.T) - 1) / sigma**2

    @torch.no_grad()
    def esd_eps(self, x_t: Tensor, t: Tensor, cam16: Tensor, lam: float) -> Tensor:
        if self.latents is None:
            return torch.zeros_like(x_t)
        ab = self.scheduler.alphas_cumprod.to(x_t.device)[t].view(-1, 1)
        bank = self.latents.reshape(len(self.latents), -1)
        flat = x_t.reshape(len(x_t), -1)

        def eps(log_w):
            x0 = ideal_denoiser(flat, t, bank, log_w, self.scheduler.alphas_cumprod)
            return (flat - ab.sqrt() * x0) / (1 - ab).sqrt()

        mix = lam * eps(torch.zeros(len(bank))) + (1 - lam) * eps(self._log_weights(cam16))
        return mix.reshape(x_t.shape)

    def train_step(self, latents: Tensor, cam16: Tensor) -> float:
        """Pushes the current renders into the bank (FIFO)."""
        lat, cams = latents.detach(), cam16.detach()
        self.latents = lat if self.latents is None else torch.cat([self.latents, lat])[-self.cfg.bank_size:]
        self.cams = cams if self.cams is None else torch.cat([self.cams, cams])[-self.cfg.bank_size:]
        return 0.0

    def trainable_state(self) -> dict:
        return {} if self.latents is None else {"latents": self.latents, "cams": self.cams}

    def load_trainable_state(self, state: dict) -> None:
        self.latents, self.cams = state.get("latents"), state.get("cams")
