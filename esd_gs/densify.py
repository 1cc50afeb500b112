"""Densification with gsplat's DefaultStrategy (clone / split / prune / opacity reset)."""

from __future__ import annotations

from dataclasses import dataclass

from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa


@dataclass
class DensifyConfig:
    enabled: bool = True
    refine_start_iter: int = 100
    refine_stop_iter: int = 1500
    refine_every: int = 100
    reset_every: int = 3000
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_opa: float = 0.005
    prune_scale3d: float = 0.1


class Densifier(DefaultStrategy):
    """DefaultStrategy with its opacity reset made to happen.

    gsplat 1.5.3 writes the reset test as `step % reset_every == 0 & step > 0`. `&` binds tighter than
    the comparisons, so it reads `(step % reset_every == 0) and (0 > 0)`: the reset never runs.
    We run it with the intended condition (a second reset would be a no-op, should gsplat fix it).
    """

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if step < self.refine_stop_iter and step > 0 and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)


def make_densifier(cfg: DensifyConfig) -> Densifier:
    return Densifier(
        refine_start_iter=cfg.refine_start_iter, refine_stop_iter=cfg.refine_stop_iter,
        refine_every=cfg.refine_every, reset_every=cfg.reset_every, grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d, prune_opa=cfg.prune_opa, prune_scale3d=cfg.prune_scale3d,
    )
