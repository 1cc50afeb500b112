"""A world is where the prior comes from: real Stable Diffusion weights, or the synthetic world's exact
prior. It builds the objective (prior + variational estimator + rule) and supplies what differs
between worlds, so the training loop has no world-specific branches (esd_gs/worlds/base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import PriorWorld

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["PriorWorld", "make_world"]


def make_world(cfg: "TrainConfig", device: torch.device) -> PriorWorld:
    if cfg.world == "synthetic":
        from .synthetic import SyntheticWorld

        return SyntheticWorld(cfg, device)
    from .stable_diffusion import StableDiffusionWorld

    return StableDiffusionWorld(cfg, device)
