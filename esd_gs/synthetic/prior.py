"""The synthetic world's exact prior: the ideal denoiser of its photo set (pixel space, identity "VAE").

    E[x0 | x_t] = sum_i softmax_i(log pi_i - |x_t - sqrt(ab) x_i|^2 / (2 (1 - ab))) x_i
    eps = (x_t - sqrt(ab) E[x0 | x_t]) / sqrt(1 - ab)
with pi uniform (the prompt "a head") or, for view-dependent prompts, a weak smooth reweighting of
all photos by azimuth (exp(kappa cos(az_i)) for "front view", ...). Hard subsets would make CFG so
sharp that Janus vanishes even for SDS (measured in a 1-D prototype), unlike Stable Diffusion.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..guidance.perp_neg import CONDITIONS, one_hot
from ..guidance.prior import alphabar, eps_from_x0, to_model_images
from ..guidance.stable_diffusion import sd_scheduler
from .config import SyntheticConfig
from .photos import cached_photos, photo_angles, photo_cameras


def ideal_denoiser(x_t: Tensor, t: Tensor, images: Tensor, log_weights: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """E[x0 | x_t] for the empirical distribution sum_i pi_i delta(x_i). x_t [B,D], images [N,D],
    log_weights [B,N] or [N]."""
    ab = alphas_cumprod.to(x_t.device)[t].to(x_t.dtype)[:, None]
    d2 = (x_t * x_t).sum(-1, keepdim=True) - 2 * ab.sqrt() * x_t @ images.T + ab * (images * images).sum(-1)[None]
    posterior = torch.softmax(log_weights - d2 / (2 * (1 - ab)), dim=-1)
    return posterior @ images


def ideal_eps(x_t: Tensor, t: Tensor, images: Tensor, log_weights: Tensor, scheduler) -> Tensor:
    """The exact noise prediction for the empirical distribution of `images` [N,...] (x_t [B,...])."""
    flat = x_t.reshape(len(x_t), -1)
    x0 = ideal_denoiser(flat, t, images.reshape(len(images), -1), log_weights, scheduler.alphas_cumprod)
    return eps_from_x0(flat, x0, alphabar(scheduler, t, flat)).reshape(x_t.shape)


class SyntheticPrior:
    """Exact prior of the synthetic photo set; the same interface as StableDiffusionPrior."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.scheduler = sd_scheduler()  # SD's schedule: timestep ranges and weights mean the same in both worlds
        self.azimuth_deg, self.elevation_deg = photo_angles(cfg)
        self.photos = cached_photos(self.azimuth_deg, self.elevation_deg, cfg)
        self.images = to_model_images(self.photos, cfg.resolution)  # [N,3,R,R] in [-1,1]

    def photo_cameras(self):
        return photo_cameras(self.azimuth_deg, self.elevation_deg, self.cfg)

    def encode(self, rgb: Tensor) -> Tensor:
        return to_model_images(rgb, self.resolution)

    def view_log_weights(self, direction: str | None) -> Tensor:
        az = torch.deg2rad(self.azimuth_deg)
        k = self.cfg.view_kappa
        return {None: torch.zeros_like(az), "uncond": torch.zeros_like(az), "overhead": torch.zeros_like(az),
                "front": k * torch.cos(az), "back": -k * torch.cos(az), "side": k * torch.sin(az).abs()}[direction]

    @torch.no_grad()
    def eps_for(self, x_t: Tensor, t: Tensor, conds: Tensor) -> Tensor:
        """The exact noise prediction for each row's conditioning weights [R, len(CONDITIONS)]: a mix of view
        prompts is the same mix of their photo log-weights."""
        table = torch.stack([self.view_log_weights(c) for c in CONDITIONS]).to(x_t.device)
        return ideal_eps(x_t, t, self.images.to(x_t.device), conds.to(table) @ table, self.scheduler)

    @torch.no_grad()
    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        images = self.images.to(x_t.device)
        eps_uncond = ideal_eps(x_t, t, images, torch.zeros(len(images), device=x_t.device), self.scheduler)
        if directions is None:  # "a head" weighs all photos alike: CFG changes nothing
            return eps_uncond
        eps_cond = self.eps_for(x_t, t, one_hot(directions))
        return eps_uncond + scale * (eps_cond - eps_uncond)
