"""Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm"), as threestudio applies it
to view prompts (`prompt_processor.use_perp_neg`):

  positive   the view's prompt, interpolated by azimuth between the view prompts' conditionings:
             |az| < 90: r = 1 - |az|/90, r front + (1 - r) side;  else r = 2 - |az|/90, r side + (1 - r) back
  negatives  front: the front and side prompts, weights -f_fs(r), -f_sf(1 - r)
             back:  the side and front prompts, weights -f_sb(r), -f_fsb(r)
             overhead views (elevation > 60): the overhead prompt, no negatives
  eps        eps_u + scale (e_pos + sum_i w_i perp(e_neg_i, e_pos)),  e_x = eps(x) - eps_u,
             perp(x, y) = x - (<x, y> / <y, y>) y per row
with f(r) = a exp(-b r) + c and threestudio's (a, b, c) below (f_fs(1) = f_sf(1) = 0: a view exactly at
the front or side has no negative for itself). A conditioning is a row of weights over the prior's
CONDITIONS; Stable Diffusion mixes text embeddings with it, the synthetic prior its photo log-weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.cameras import OVERHEAD_DEG, wrap_deg

CONDITIONS = ("uncond", None, "front", "side", "back", "overhead")
"""What a prior can be conditioned on: the negative prompt, the plain prompt, and the view prompts."""
F_SB = (1.0, 0.5, -0.606)
F_FSB = (1.0, 0.5, 0.967)
F_FS = (4.0, 0.5, -2.426)
F_SF = (4.0, 0.5, -2.426)


def one_hot(names: list) -> Tensor:
    """[len(names), len(CONDITIONS)] conditioning weights selecting one condition per row."""
    out = torch.zeros(len(names), len(CONDITIONS))
    out[torch.arange(len(names)), torch.tensor([CONDITIONS.index(n) for n in names])] = 1.0
    return out


def shifted_exp_decay(abc: tuple[float, float, float], r: float) -> float:
    a, b, c = abc
    return a * math.exp(-b * r) + c


@dataclass
class PerpNegPrompts:
    positive: Tensor  # [B, len(CONDITIONS)]
    negatives: Tensor  # [B, 2, len(CONDITIONS)]
    weights: Tensor  # [B, 2], <= 0 where a negative is used


def perp_neg_prompts(azimuth_deg: Tensor, elevation_deg: Tensor) -> PerpNegPrompts:
    """The positive conditioning, two negative ones and their weights for each camera."""
    front, side, back, overhead, uncond = (one_hot([n])[0] for n in ("front", "side", "back", "overhead", "uncond"))
    positive, negatives, weights = [], [], []
    for az, el in zip(wrap_deg(azimuth_deg).tolist(), elevation_deg.tolist()):
        if el > OVERHEAD_DEG:
            positive.append(overhead)
            negatives.append(torch.stack([uncond, uncond]))
            weights.append([0.0, 0.0])
        elif abs(az) < 90.0:
            r = 1.0 - abs(az) / 90.0  # 1: the front, 0: a side
            positive.append(r * front + (1 - r) * side)
            negatives.append(torch.stack([front, side]))
            weights.append([-shifted_exp_decay(F_FS, r), -shifted_exp_decay(F_SF, 1.0 - r)])
        else:
            r = 2.0 - abs(az) / 90.0  # 1: a side, 0: the back
            positive.append(r * side + (1 - r) * back)
            negatives.append(torch.stack([side, front]))
            weights.append([-shifted_exp_decay(F_SB, r), -shifted_exp_decay(F_FSB, r)])
    return PerpNegPrompts(torch.stack(positive), torch.stack(negatives), torch.tensor(weights))


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """The part of each row of x orthogonal to the same row of y."""
    dims = tuple(range(1, x.dim()))
    dot = (x * y).sum(dims, keepdim=True)
    return x - dot / (y * y).sum(dims, keepdim=True).clamp_min(1e-6) * y


def perp_neg_eps(prior, x_t: Tensor, t: Tensor, prompts: PerpNegPrompts, scale: float) -> Tensor:
    """The prior's Perp-Neg-guided noise prediction: one batched evaluation of 4 conditionings a row."""
    B = len(x_t)
    conds = torch.cat([one_hot(["uncond"] * B).to(prompts.positive), prompts.positive, prompts.negatives[:, 0], prompts.negatives[:, 1]])
    eps = prior.eps_for(x_t.repeat(4, *[1] * (x_t.dim() - 1)), t.repeat(4), conds)
    eps_u, eps_pos, *eps_neg = eps.split(B)
    e_pos = eps_pos - eps_u
    w = prompts.weights.to(x_t).view(B, 2, *[1] * (x_t.dim() - 1))
    negative = sum(w[:, i] * perpendicular_component(eps_neg[i] - eps_u, e_pos) for i in range(2))
    return eps_u + scale * (e_pos + negative)
