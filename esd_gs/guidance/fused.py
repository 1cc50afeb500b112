"""One UNet call for the prior's guidance rows and the variational score's branches.

With the LoRA on the prior's own UNet (`variational.base_model: shared`, the default), the prior's
classifier-free-guidance rows (negative prompt, prompt) and ESD's branches (camera-free, camera) take the
same x_t and t. One batch of up to 4B rows then replaces two UNet calls and the adapter switching between
them (on a GPU every UNet call is hundreds of kernel launches, and the launches are the step's cost:
DESIGN.md section 7):

    rows      text               camera term            weights
    prior     negative, prompt   none (mask 0)          base only (the mask gates the LoRA off)
    branches  prompt             zero camera, camera    base + LoRA

The prior's rows are computed exactly as the plain UNet computes them in a batch of the same rows, and the
branches exactly as `UNetVariational.eps_branches` (tests/test_guidance.py). `--eager` keeps the two calls.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from .prior import eps_from_prediction
from .variational import UNetVariational, mix_branches, split_branches, unet_forward


def fusable(prior, variational) -> bool:
    """Whether the variational score is a LoRA on this prior's UNet (then one call serves both)."""
    return (isinstance(variational, UNetVariational) and variational.cfg.lora_rank > 0
            and variational.unet is getattr(prior, "unet", None))


@torch.no_grad()
def fused_eps(prior, variational: UNetVariational, x_t: Tensor, t: Tensor, directions: list[str] | None,
              scale: float, c2w_flat: Tensor, lam: float, forward=None) -> tuple[Tensor, Tensor]:
    """(eps_prior_cfg, eps_q) for x_t [B,...] at t, from one UNet call; directions: a view per row or None;
    forward: how the UNet is called (unet_forward, or its CUDA graphs: graphed.GraphedForward)."""
    B = len(x_t)
    branches = variational.branch_labels(c2w_flat, B, lam)
    rows = 2 + len(branches)
    text = torch.cat([prior.text_rows(["uncond"] * B + (directions or [None] * B)),
                      variational.text.to(prior.dtype).expand(B * len(branches), -1, -1)])
    labels = torch.cat([variational.unet.class_embedding.labels(None, 2 * B, prior_rows=True), *branches])
    x, tt = x_t.repeat(rows, 1, 1, 1), t.repeat(rows)
    pred = (forward or partial(unet_forward, prior.unet))(x.to(prior.dtype), tt, text, labels)
    eps = eps_from_prediction(pred, x, tt, prior.scheduler).chunk(rows)
    eps_uncond, eps_cond = eps[:2]
    return eps_uncond + scale * (eps_cond - eps_uncond), mix_branches(lam, *split_branches(eps[2:], lam))
