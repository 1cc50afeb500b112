"""Score distillation rules (SDS, VSD, ESD) and the objective the training loop calls.

For rendered latents z, t ~ U[t_lo, t_hi], x_t = sqrt(ab) z + sqrt(1-ab) eps:
    grad_z = w(t) (eps_prior_cfg(x_t) - eps_q),   w(t) = 1 - ab_t
    SDS: eps_q = eps (the injected noise)
    VSD: eps_q = eps_lora(x_t, t, camera)                     (= ESD with lam = 0)
    ESD: eps_q = lam eps_lora(x_t, t, no camera) + (1 - lam) eps_lora(x_t, t, camera)
The loss 0.5 * ||z - sg(z - grad)||^2 / B has exactly grad_z / B as its gradient on each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import CameraConfig, Cameras, sample_orbit, view_direction
from ..timing import SectionTimer

Rule = Literal["sds", "vsd", "esd"]


@dataclass
class GuidanceConfig:
    guidance_scale: float | None = None
    """Classifier-free guidance scale; default 100 for SDS, 7.5 for VSD/ESD (DreamFusion/ProlificDreamer)."""
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float = 0.5
    """t_max drops to this value at `anneal_step` (ProlificDreamer's two-stage schedule)."""
    anneal_step: int | None = None
    """Step of the t_max drop; default: half of the run."""
    view_dependent_prompt: bool = True
    grad_clip: float | None = None
    """Clip |grad| element-wise to this value (None: no clipping)."""


def timestep_bounds(step: int, total_steps: int, cfg: GuidanceConfig) -> tuple[float, float]:
    anneal = total_steps // 2 if cfg.anneal_step is None else cfg.anneal_step
    return cfg.t_min, (cfg.t_max if step < anneal else cfg.t_max_final)


def esd_eps_q(rule: Rule, noise: Tensor, variational, x_t: Tensor, t: Tensor, cam16: Tensor, lam: float) -> Tensor:
    if rule == "sds":
        return noise
    return variational.esd_eps(x_t, t, cam16, 0.0 if rule == "vsd" else lam)


def distillation_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """Surrogate loss whose gradient on latents[b] is grad[b] / B."""
    grad = torch.nan_to_num(grad)
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents, target, reduction="sum") / len(latents)


class DistillationObjective:
    """Samples orbit views and turns their renders into a score-distillation loss."""

    def __init__(self, prior, variational, rule: Rule, lam: float, cfg: GuidanceConfig,
                 cameras: CameraConfig, resolution: int, batch_size: int, total_steps: int):
        self.prior, self.variational, self.rule, self.lam = prior, variational, rule, lam
        self.cfg, self.cameras, self.resolution, self.batch_size = cfg, cameras, resolution, batch_size
        self.total_steps = total_steps
        self.scale = cfg.guidance_scale if cfg.guidance_scale is not None else (100.0 if rule == "sds" else 7.5)
        self.timer = SectionTimer()

    def views(self, step: int, generator: torch.Generator) -> tuple[Cameras, Tensor]:
        cams = sample_orbit(self.cameras, self.batch_size, self.resolution, generator)
        return cams, torch.rand(self.batch_size, 3, generator=generator)

    def loss(self, rgb: Tensor, cams: Cameras, step: int) -> tuple[Tensor, dict]:
        prior, timer = self.prior, self.timer
        with timer("encode"):
            latents = prior.encode(rgb)
        B, T = len(latents), prior.scheduler.config.num_train_timesteps
        lo, hi = timestep_bounds(step, self.total_steps, self.cfg)
        t = torch.randint(int(lo * T), int(hi * T) + 1, (B,), device=latents.device)
        noise = torch.randn_like(latents)
        x_t = prior.scheduler.add_noise(latents.detach(), noise, t)
        directions = view_direction(cams.azimuth_deg, cams.elevation_deg) if self.cfg.view_dependent_prompt else None
        with timer("prior"):
            eps_prior = prior.guided_eps(x_t, t, directions, self.scale)
        cam16 = cams.camera_embedding_input().to(latents.device)
        with timer("variational"):
            eps_q = esd_eps_q(self.rule, noise, self.variational, x_t, t, cam16, self.lam)
        w = (1 - prior.scheduler.alphas_cumprod.to(latents.device)[t]).view(-1, 1, 1, 1)
        grad = w * (eps_prior - eps_q)
        if self.cfg.grad_clip is not None:
            grad = grad.clamp(-self.cfg.grad_clip, self.cfg.grad_clip)
        loss = distillation_loss(latents, grad)
        logs = {"t": t.float().mean().item(), "grad_norm": grad.norm().item() / B}
        if self.variational is not None:
            with timer("variational_training"):
                logs["variational_loss"] = self.variational.train_step(latents.detach(), cam16)
        return loss, logs

    def state_dict(self) -> dict:
        return {} if self.variational is None else self.variational.trainable_state()

    def load_state_dict(self, state: dict) -> None:
        if self.variational is not None and state:
            self.variational.load_trainable_state(state)
