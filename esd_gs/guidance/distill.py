"""Score distillation rules (SDS, VSD, ESD) and the objective the training loop calls.

For rendered latents z, t ~ U[t_lo, t_hi], x_t = sqrt(ab) z + sqrt(1-ab) eps:
    grad_z = w(t) (eps_prior_cfg(x_t) - eps_q),   w(t) = 1 - ab_t
    SDS: eps_q = eps (the injected noise)
    VSD: eps_q = eps_lora(x_t, t, camera)                     (= ESD with lam = 0)
    ESD: eps_q = lam eps_lora(x_t, t, no camera) + (1 - lam) eps_lora(x_t, t, camera)
The loss 0.5 * ||z - sg(z - grad)||^2 / B has exactly grad_z / B as its gradient on each row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.cameras import CameraConfig, Cameras, sample_orbit, view_direction
from ..core.objective import Background, StepLoss, Views, sample_backgrounds
from ..core.timing import SectionTimer
from ..render import render_frames
from .fused import fusable, fused_eps
from .graphed import GraphedForward
from .perp_neg import PerpNegPrompts, perp_neg_eps, perp_neg_prompts
from .prior import Prior, alphabar
from .variational import Variational, mix_branches

Rule = Literal["sds", "vsd", "esd"]


@dataclass
class PriorConfig:
    """How the prior is asked: its guidance scale, the timesteps, the prompts (`--prior.*`)."""

    guidance_scale: float | None = None
    """Classifier-free guidance scale; default 100 for SDS, 7.5 for VSD/ESD (DreamFusion/ProlificDreamer)."""
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_final: float = 0.5
    """t_max drops to this value in the run's second stage (`--stage2-step`; ProlificDreamer's two stages)."""
    view_dependent_prompt: bool = True
    front_deg: float = 45.0
    """View prompts: |azimuth| below this is 'front view' (ProlificDreamer uses 30)."""
    back_deg: float = 45.0
    """View prompts: |azimuth| above 180 minus this is 'back view' (ProlificDreamer uses 30)."""
    perp_neg: bool = False
    """Perp-Neg (Armandpour et al. 2023) on the view prompts, as threestudio's use_perp_neg: the positive prompt
    interpolated by azimuth, the other views' prompts as negatives taken perpendicular to it (needs
    view_dependent_prompt; 4 prior evaluations a view instead of 2)."""
    grad_clip: float | None = None
    """Clip the gradient w(t) (eps_prior - eps_q) element-wise to this value (None: no clipping)."""
    grad_clip_final: float | None = None
    """Debiased-SDS's score debiasing (Hong et al. 2023; threestudio's grad_clip=[0, 0.5, 2.0, 10000]): the
    clip threshold grows linearly from grad_clip at the first step to this value at the last."""
    capture: bool = False
    """CUDA only: the one UNet call for the prior's rows and ESD's branches (VSD/ESD with the LoRA on the
    prior's UNet) replayed from CUDA graphs (guidance/graphed.py). Not yet measured on a GPU: off by default."""


def clip_threshold(step: int, total_steps: int, cfg: PriorConfig) -> float | None:
    """The gradient clip at this step: constant, or growing linearly to grad_clip_final (score debiasing)."""
    if cfg.grad_clip is None or cfg.grad_clip_final is None:
        return cfg.grad_clip
    return cfg.grad_clip + (cfg.grad_clip_final - cfg.grad_clip) * step / max(total_steps - 1, 1)


def timestep_bounds(step: int, stage2_step: int, cfg: PriorConfig) -> tuple[float, float]:
    return cfg.t_min, (cfg.t_max if step < stage2_step else cfg.t_max_final)


def rule_eps_q(rule: Rule, lam: float, noise: Tensor, variational: Variational | None, x_t: Tensor, t: Tensor,
              c2w_flat: Tensor) -> Tensor:
    """The rule's eps_q: the injected noise (SDS), or lam * eps(no camera) + (1 - lam) * eps(camera)."""
    if rule == "sds":
        return noise
    lam = 0.0 if rule == "vsd" else lam
    return mix_branches(lam, *variational.eps_branches(x_t, t, c2w_flat, noise, lam))


def distillation_loss(latents: Tensor, grad: Tensor) -> Tensor:
    """Surrogate loss whose gradient on latents[b] is grad[b] / B."""
    grad = torch.nan_to_num(grad)
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents, target, reduction="sum") / len(latents)


def distillation_grad(prior: Prior, variational: Variational | None, rule: Rule, lam: float, latents: Tensor,
                      t: Tensor, noise: Tensor, c2w_flat: Tensor, prompts: list[str] | PerpNegPrompts | None,
                      scale: float, timer: SectionTimer | None = None, fused: bool = False,
                      forward: GraphedForward | None = None) -> Tensor:
    """w(t) (eps_prior_cfg(x_t) - eps_q) for latents noised to t with `noise` (no autograd). `prompts`: None
    (the plain prompt), a view direction per row, or Perp-Neg's conditionings. fused: one UNet call for the
    prior and the variational branches where they share it (guidance/fused.py); forward: that call's graphs."""
    timer = timer or SectionTimer()
    x_t = prior.scheduler.add_noise(latents.detach(), noise, t)
    w = 1 - alphabar(prior.scheduler, t, latents)
    if fused and rule != "sds" and not isinstance(prompts, PerpNegPrompts) and fusable(prior, variational):
        with timer("prior_and_variational"):
            eps_prior, eps_q = fused_eps(prior, variational, x_t, t, prompts, scale, c2w_flat,
                                         0.0 if rule == "vsd" else lam, forward)
        return w * (eps_prior - eps_q)
    with timer("prior"):
        if isinstance(prompts, PerpNegPrompts):
            eps_prior = perp_neg_eps(prior, x_t, t, prompts, scale)
        else:
            eps_prior = prior.guided_eps(x_t, t, prompts, scale)
    with timer("variational"):
        eps_q = rule_eps_q(rule, lam, noise, variational, x_t, t, c2w_flat)
    return w * (eps_prior - eps_q)


class DistillationObjective:
    """Samples orbit views and turns their renders into a score-distillation loss."""

    def __init__(self, prior: Prior, variational: Variational | None, rule: Rule, lam: float, cfg: PriorConfig,
                 cameras: CameraConfig, resolution: int, batch_size: int, total_steps: int, stage2_step: int,
                 background: Background = "random", lam_final: float | None = None, fused: bool = True):
        """stage2_step: where t_max drops to t_max_final and ESD's lam to lam_final (None: lam throughout);
        fused: distillation_grad's."""
        if rule != "sds" and variational is None:
            raise ValueError(f"the {rule} rule needs a variational estimator")
        self.prior, self.variational, self.rule, self.lam, self.lam_final = prior, variational, rule, lam, lam_final
        self.cfg, self.cameras, self.resolution, self.batch_size = cfg, cameras, resolution, batch_size
        self.total_steps, self.stage2_step, self.background, self.fused = total_steps, stage2_step, background, fused
        self.scale = cfg.guidance_scale if cfg.guidance_scale is not None else (100.0 if rule == "sds" else 7.5)
        self.timer = SectionTimer()
        self.forward = GraphedForward(prior.unet) if cfg.capture and fused else None

    def views(self, step: int, generator: torch.Generator) -> Views:
        cams = sample_orbit(self.cameras, self.batch_size, self.resolution, generator)
        return Views(cams, sample_backgrounds(self.background, self.batch_size, generator))

    def prompts(self, cams: Cameras) -> list[str] | PerpNegPrompts | None:
        """What the prior is conditioned on for these views (distillation_grad's `prompts`)."""
        if not self.cfg.view_dependent_prompt:
            return None
        if self.cfg.perp_neg:
            return perp_neg_prompts(cams.azimuth_deg, cams.elevation_deg)
        return view_direction(cams.azimuth_deg, cams.elevation_deg, self.cfg.front_deg, self.cfg.back_deg)

    def loss(self, rgb: Tensor, views: Views, step: int) -> StepLoss:
        prior = self.prior
        with self.timer("encode"):
            latents = prior.encode(rgb)
        B, T = len(latents), prior.scheduler.config.num_train_timesteps
        lo, hi = timestep_bounds(step, self.stage2_step, self.cfg)
        t = torch.randint(int(lo * T), int(hi * T) + 1, (B,), device=latents.device)
        noise = torch.randn_like(latents)
        c2w_flat = views.cameras.to(latents.device).camera_embedding_input()  # uploaded once a step
        lam = self.lam if self.lam_final is None or step < self.stage2_step else self.lam_final
        grad = distillation_grad(prior, self.variational, self.rule, lam, latents, t, noise, c2w_flat,
                                 self.prompts(views.cameras), self.scale, self.timer, self.fused, self.forward)
        clip = clip_threshold(step, self.total_steps, self.cfg)
        if clip is not None:
            grad = grad.clamp(-clip, clip)
        logs = {"t": t.float().mean(), "grad_norm": grad.norm() / B}  # read later, with other steps' logs
        return StepLoss(distillation_loss(latents, grad), logs, latents.detach())

    def update(self, splats, step_loss: StepLoss, views: Views) -> dict[str, float]:
        """Trains the variational estimator on this step's renders."""
        if self.variational is None:
            return {}

        def snapshot(cams: Cameras) -> Tensor:  # random backgrounds get a neutral grey here
            bg = {"white": 1.0, "black": 0.0}.get(self.background, 0.5)
            return self.prior.encode(render_frames(splats, cams, (bg,) * 3, depth=False)[0])

        c2w_flat = views.cameras.to(step_loss.latents.device).camera_embedding_input()
        with self.timer("variational_training"):
            return self.variational.update(step_loss.latents, c2w_flat, snapshot)

    def state_dict(self) -> dict:
        return {} if self.variational is None else self.variational.trainable_state()

    def load_state_dict(self, state: dict) -> None:
        if self.variational is not None and state:
            self.variational.load_trainable_state(state)
        elif self.variational is not None:
            warnings.warn(f"the checkpoint holds no variational network (an SDS run's?): {self.rule.upper()}'s "
                          "starts afresh")
        elif state:
            warnings.warn("the checkpoint's variational network is left unused: SDS has none")
