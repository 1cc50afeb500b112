"""Gaussian parameters, their activations and optimisers, laid out as gsplat's simple_trainer.

`splats` is a ParameterDict with keys means, scales (log), quats (wxyz, unnormalised),
opacities (logit), sh0 [N,1,3] and shN [N,K,3]. `optimizers` holds one Adam per key with exactly
one param group: the contract gsplat's strategies check and mutate when they densify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError

SH_C0 = 0.28209479177387814


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


@dataclass
class GaussianConfig:
    """Initialisation, SH degree and learning rates (simple_trainer's defaults, scaled by scene_scale)."""

    num_points: int = 4096
    """Random points initialised inside a sphere."""
    init_radius: float = 0.5
    """Radius of the init sphere (scene lives in the unit cube)."""
    init_scale: float = 0.03
    """Initial Gaussian size (world units)."""
    init_opacity: float = 0.1
    sh_degree: int = 0
    """Spherical-harmonics degree 0..3 (text-to-3D usually keeps 0: view-dependent colour hides Janus)."""
    scene_scale: float = 1.0
    lr_means: float = 1.6e-4
    lr_means_final: float | None = None
    """Means learning rate decays exponentially from lr_means to this (None: constant), as threestudio-3dgs
    (1e-3 -> 2e-5) and gsplat's simple_trainer do."""
    lr_means_decay_steps: int = 1000
    """Steps over which the means learning rate reaches lr_means_final (it stays there after)."""
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20


def splats_from_tensors(tensors: dict[str, Tensor], device: torch.device | str = "cpu") -> torch.nn.ParameterDict:
    """Wrap raw (pre-activation) tensors as trainable parameters."""
    keys = ("means", "scales", "quats", "opacities", "sh0", "shN")
    return torch.nn.ParameterDict(
        {k: torch.nn.Parameter(tensors[k].detach().clone().to(device)) for k in keys}
    )


def points_in_ball(n: int, radius: float, generator: torch.Generator) -> Tensor:
    """n points [n,3] uniformly inside a ball about the origin."""
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return direction * (radius * torch.rand(n, 1, generator=generator) ** (1 / 3))


def init_sphere(cfg: GaussianConfig, generator: torch.Generator, device="cpu") -> torch.nn.ParameterDict:
    """Random points uniformly inside a sphere with random colours (as text-to-3D GS pipelines do)."""
    n = cfg.num_points
    means = points_in_ball(n, cfg.init_radius, generator)
    rgb = torch.rand(n, 3, generator=generator)
    tensors = {
        "means": means,
        "scales": torch.full((n, 3), math.log(cfg.init_scale)),
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=-1),
        "opacities": torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity))),
        "sh0": rgb_to_sh0(rgb)[:, None, :],
        "shN": torch.zeros(n, num_sh_bases(cfg.sh_degree) - 1, 3),
    }
    return splats_from_tensors(tensors, device)


def learning_rates(cfg: GaussianConfig, step: int = 0) -> dict[str, float]:
    """Each parameter's learning rate at `step` (only the means' changes, when lr_means_final is set)."""
    return {
        "means": cfg.lr_means * cfg.scene_scale * means_lr_factor(step, cfg),
        "scales": cfg.lr_scales,
        "quats": cfg.lr_quats,
        "opacities": cfg.lr_opacities,
        "sh0": cfg.lr_sh0,
        "shN": cfg.lr_shN,
    }


def make_optimizers(splats: torch.nn.ParameterDict, cfg: GaussianConfig) -> dict[str, torch.optim.Adam]:
    lrs = learning_rates(cfg)
    return {
        k: torch.optim.Adam([{"params": splats[k], "lr": lrs[k], "name": k}], eps=1e-15)
        for k in splats.keys()
    }


def means_lr_factor(step: int, cfg: GaussianConfig) -> float:
    """Multiplier of lr_means at `step` (exponential decay, then flat)."""
    if cfg.lr_means_final is None:
        return 1.0
    progress = min(step, cfg.lr_means_decay_steps) / max(1, cfg.lr_means_decay_steps)
    return (cfg.lr_means_final / cfg.lr_means) ** progress


def activated(splats: torch.nn.ParameterDict | dict[str, Tensor]) -> dict[str, Tensor]:
    """The one place where raw parameters become renderable quantities."""
    return {
        "means": splats["means"],
        "quats": splats["quats"],  # normalised inside the rasterizers, as gsplat does
        "scales": torch.exp(splats["scales"]),
        "opacities": torch.sigmoid(splats["opacities"]),
        "sh": torch.cat([splats["sh0"], splats["shN"]], dim=1),
    }


def sh_degree_of(splats) -> int:
    return int(math.isqrt(splats["sh0"].shape[1] + splats["shN"].shape[1])) - 1


def truncate_sh(splats, degree: int | None) -> dict[str, Tensor]:
    """The same splats with SH bands above `degree` dropped (None: unchanged)."""
    out = dict(splats.items())
    if degree is not None:
        if not 0 <= degree <= sh_degree_of(splats):
            raise UserError(f"--sh-degree must lie in 0..{sh_degree_of(splats)} for this PLY (got {degree})")
        out["shN"] = splats["shN"][:, : num_sh_bases(degree) - 1]
    return out
