"""Densification: gsplat's DefaultStrategy (clone / split / prune / opacity reset), configured for score
distillation, with a hard cap on the Gaussian count and a record of the gradients it decided on.

The strategy object is the config (as in gsplat's simple_trainer): `--densify.grow-grad2d` etc. set its
fields directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import duplicate, remove, reset_opa, split

NEVER = 1_000_000_000


@dataclass
class Densifier(DefaultStrategy):
    """DefaultStrategy with distillation defaults, `max_gaussians` and its opacity reset made to happen.

    gsplat 1.5.3 writes the reset test as `step % reset_every == 0 & step > 0`. `&` binds tighter than
    the comparisons, so it reads `(step % reset_every == 0) and (0 > 0)`: the reset never runs.
    We run it with the intended condition (a second reset would be a no-op, should gsplat fix it).
    Under score distillation a reset wipes the asset, so the default period is NEVER (threestudio-3dgs
    effectively disables it too).
    """

    enabled: bool = True
    max_gaussians: int = 500_000
    """Growth stops at this many Gaussians (the highest gradients are grown first); never exceeded."""
    refine_start_iter: int = 100
    refine_stop_iter: int = 1500
    refine_every: int = 100
    reset_every: int = NEVER
    """Opacity reset period (default: never)."""
    grow_top: float = 0.2
    """0: grow the Gaussians whose mean 2D gradient exceeds `grow_grad2d` (gsplat's rule, in the gradient's
    units). > 0: grow this share of the visible Gaussians, those with the highest mean 2D gradient, at each
    refine: the same growth whatever the gradient's scale (Stable Diffusion's has a scale no CPU test can
    calibrate)."""
    prune_large: bool = True
    """Prune Gaussians larger than `prune_scale3d` x the scene scale at every refine. gsplat does so only
    after an opacity reset, which distillation runs switch off, so without this oversized blobs stay."""

    @torch.no_grad()
    def _update_state(self, params, state, info, packed=False):
        """gsplat's running statistics (per Gaussian: summed screen-space gradient norms and view counts) with
        masks instead of its nonzero and boolean indexing, each of which makes the CPU wait for the GPU every
        step. Adds in gsplat's order (camera by camera), so the sums are the same. (Its 2D radii statistic is
        for refine_scale2d_stop_iter, which config validation refuses.)"""
        if packed:
            return super()._update_state(params, state, info, packed=packed)
        grads = (info[self.key_for_gradient].absgrad if self.absgrad else info[self.key_for_gradient].grad).clone()
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        n = len(params["means"])
        for key in ("grad2d", "count"):
            if state[key] is None:
                state[key] = torch.zeros(n, device=grads.device)
        visible = (info["radii"] > 0.0).all(dim=-1)  # [C, N]
        norms = torch.where(visible, grads.norm(dim=-1), 0.0)
        for c in range(len(visible)):
            state["grad2d"] += norms[c]
            state["count"] += visible[c]

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if step < self.refine_stop_iter and step > 0 and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step) -> tuple[int, int]:
        """gsplat's rule (duplicate small, split large Gaussians whose mean 2D gradient > grow_grad2d), or
        the top `grow_top` share of the visible ones, limited to the highest gradients that fit under
        max_gaussians. Leaves the gradient quantiles of the visible Gaussians and the share grown in
        state["refine_log"]."""
        count = state["count"]
        grads = state["grad2d"] / count.clamp_min(1)
        if self.grow_top > 0:
            grow = torch.zeros_like(count, dtype=torch.bool)
            n_top = int(self.grow_top * int((count > 0).sum()))
            grow[torch.topk(torch.where(count > 0, grads, -1.0), n_top).indices] = True
        else:
            grow = grads > self.grow_grad2d
        n = len(grads)
        budget = max(0, self.max_gaussians - n)  # duplicate and split each add one Gaussian
        if int(grow.sum()) > budget:
            keep = torch.zeros_like(grow)
            keep[torch.topk(torch.where(grow, grads, -1.0), budget).indices] = True
            grow &= keep
        visible = grads[count > 0]
        q = torch.quantile(visible.float(), torch.tensor([0.5, 0.9, 0.99], device=grads.device)).tolist() \
            if len(visible) else [0.0, 0.0, 0.0]
        state["refine_log"] = {"grad2d_q50": q[0], "grad2d_q90": q[1], "grad2d_q99": q[2],
                               "grown_share": float(grow.sum()) / max(1, len(visible))}
        is_small = torch.exp(params["scales"]).max(dim=-1).values <= self.grow_scale3d * state["scene_scale"]
        is_dupli, is_split = grow & is_small, grow & ~is_small
        n_dupli, n_split = int(is_dupli.sum()), int(is_split.sum())
        if n_dupli:
            duplicate(params=params, optimizers=optimizers, state=state, mask=is_dupli)
        if n_split:  # the new duplicates are not split
            split(params=params, optimizers=optimizers, state=state, revised_opacity=self.revised_opacity,
                  mask=torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=grads.device)]))
        return n_dupli, n_split

    @torch.no_grad()
    def _prune_gs(self, params, optimizers, state, step) -> int:
        n_prune = super()._prune_gs(params, optimizers, state, step)
        if self.prune_large and step <= self.reset_every:  # after a reset gsplat prunes by size itself
            too_big = torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
            n_big = int(too_big.sum())
            if n_big:
                remove(params=params, optimizers=optimizers, state=state, mask=too_big)
            state.setdefault("refine_log", {})["pruned_large"] = n_big
            n_prune += n_big
        return n_prune
