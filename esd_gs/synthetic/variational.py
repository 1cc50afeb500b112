"""The synthetic world's variational estimators: a small learned UNet, and the exact one.

The learned network is a small diffusers UNet2DConditionModel wrapped in the same `UNetVariational`
(camera embedding, camera dropout, online denoising) as Stable Diffusion's LoRA, trained fully.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.cameras import sample_orbit
from ..guidance.variational import Snapshot, branches_needed
from .config import SyntheticConfig
from .prior import ideal_eps


def small_unet(cfg: SyntheticConfig):
    """The synthetic world's variational network (same code path as SD's)."""
    from diffusers import UNet2DConditionModel

    c = cfg.unet_channels
    return UNet2DConditionModel(
        sample_size=cfg.resolution, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(c, 2 * c, 2 * c), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift" if cfg.unet_film else "default",
    )


class ExactVariational:
    """Exact scores of the distribution of the current object's renders, by definition.

    camera-free: the ideal denoiser of K renders of the current splats at cameras drawn from the training
    orbit (no gradient), re-rendered every `bank_refresh_every` steps. Camera-conditioned: 'dirac', the
    render itself (eps = the injected noise, so VSD with it is SDS), or 'kernel', the bank weighted by a
    Gaussian kernel on the angle between camera positions. Before the first bank exists (the first step)
    the camera-free branch is the Dirac too."""

    def __init__(self, cfg: SyntheticConfig, scheduler):
        self.cfg, self.scheduler = cfg, scheduler
        self.bank: Tensor | None = None  # [K,C,H,W]
        self.bank_cams: Tensor | None = None  # [K,16]
        self.updates = 0

    def _kernel_log_weights(self, c2w_flat: Tensor) -> Tensor:
        sigma = math.radians(self.cfg.camera_kernel_deg)
        pos = F.normalize(c2w_flat.view(-1, 4, 4)[:, :3, 3], dim=-1)
        bank = F.normalize(self.bank_cams.view(-1, 4, 4)[:, :3, 3], dim=-1)
        return ((pos @ bank.T) - 1) / sigma**2

    @torch.no_grad()
    def eps_branches(self, x_t: Tensor, t: Tensor, c2w_flat: Tensor, noise: Tensor,
                     lam: float) -> tuple[Tensor | None, Tensor | None]:
        eps_free = eps_cam = None
        free, camera = branches_needed(lam)
        if free:
            eps_free = noise if self.bank is None else \
                ideal_eps(x_t, t, self.bank, torch.zeros(len(self.bank), device=x_t.device), self.scheduler)
        if camera:
            if self.cfg.camera_branch == "dirac" or self.bank is None:
                eps_cam = noise
            else:
                eps_cam = ideal_eps(x_t, t, self.bank, self._kernel_log_weights(c2w_flat), self.scheduler)
        return eps_free, eps_cam

    @torch.no_grad()
    def update(self, latents: Tensor, c2w_flat: Tensor, snapshot: Snapshot) -> dict[str, float]:
        """Re-renders the bank when due (cameras from the global RNG, which checkpoints keep)."""
        if self.updates % self.cfg.bank_refresh_every == 0:
            cams = sample_orbit(self.cfg.camera_config(), self.cfg.bank_size, self.cfg.resolution,
                                torch.default_generator)
            self.bank = snapshot(cams).float()
            self.bank_cams = cams.camera_embedding_input().to(self.bank.device)
        self.updates += 1
        return {}

    def trainable_state(self) -> dict:
        state = {"updates": self.updates}
        if self.bank is not None:
            state |= {"bank": self.bank, "bank_cams": self.bank_cams}
        return state

    def load_trainable_state(self, state: dict) -> None:
        self.bank, self.bank_cams = state.get("bank"), state.get("bank_cams")
        self.updates = state.get("updates", 0)
