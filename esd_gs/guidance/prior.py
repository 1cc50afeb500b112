"""What a diffusion prior is to score distillation, and the noise-schedule algebra every prior shares.

A prior turns rendered RGB into its latent space (`encode`), owns the DDPM noise schedule (`scheduler`)
and predicts classifier-free-guided noise for the prompt it was built with (`guided_eps`), optionally
with a view-dependent suffix per row ("front" / "side" / "back" / "overhead"), or unguided noise for any
mix of those conditionings (`eps_for`, which Perp-Neg combines: guidance/perp_neg.py). Two priors implement it:
Stable Diffusion (guidance/stable_diffusion.py) and the synthetic world's exact one (synthetic/prior.py).
"""

from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError


class Prior(Protocol):
    resolution: int
    """Image side the prior works at."""
    scheduler: object
    """diffusers DDPMScheduler: config.num_train_timesteps, alphas_cumprod, add_noise, get_velocity."""

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb [B,H,W,3] in [0,1] -> latents [B,C,h,w] (float32), differentiable."""

    def guided_eps(self, x_t: Tensor, t: Tensor, directions: list[str] | None, scale: float) -> Tensor:
        """uncond + scale * (cond - uncond) as float32, without autograd."""

    def eps_for(self, x_t: Tensor, t: Tensor, conds: Tensor) -> Tensor:
        """Noise predictions (float32, no autograd) for conditioning weights [R, len(perp_neg.CONDITIONS)]."""


def to_model_images(rgb: Tensor, resolution: int) -> Tensor:
    """rgb [B,H,W,3] in [0,1] -> [B,3,R,R] in [-1,1], resized (bilinear) to the model's resolution."""
    x = rgb.permute(0, 3, 1, 2)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, (resolution, resolution), mode="bilinear", align_corners=False)
    return x * 2 - 1


def alphabar(scheduler, t: Tensor, like: Tensor) -> Tensor:
    """alphas_cumprod[t] in float32, shaped to broadcast against `like` ([B, ...])."""
    ab = scheduler.alphas_cumprod.to(like.device)[t].float()
    return ab.view(-1, *([1] * (like.dim() - 1)))


def eps_from_x0(x_t: Tensor, x0: Tensor, ab: Tensor) -> Tensor:
    """The noise that takes x0 to x_t: (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def eps_from_prediction(pred: Tensor, x_t: Tensor, t: Tensor, scheduler) -> Tensor:
    """UNet output -> epsilon in float32, for epsilon- and v-prediction models."""
    pred, x_t = pred.float(), x_t.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return pred
    if kind != "v_prediction":
        raise UserError(f"unsupported prediction type {kind!r}")
    ab = alphabar(scheduler, t, x_t)
    return ab.sqrt() * pred + (1 - ab).sqrt() * x_t


def denoising_target(latents: Tensor, noise: Tensor, t: Tensor, scheduler) -> Tensor:
    """What a UNet trained with this scheduler predicts: eps, or v = sqrt(ab) eps - sqrt(1-ab) x0."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(latents, noise, t)
