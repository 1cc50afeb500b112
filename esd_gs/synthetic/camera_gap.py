"""How much the camera moves a variational estimator's prediction, relative to the distillation gradient:

    gap(t) = |eps(x_t, t, camera) - eps(x_t, t, no camera)| / |eps_prior(x_t, t) - eps(x_t, t, camera)|

(Frobenius norms over a batch of views and noise draws). ESD changes VSD's update by lam times the
numerator, so a gap near 0 means lam does nothing. Measured for the learned network and for the exact
estimator (its camera-free branch: the ideal denoiser of fresh renders; its camera branch: the Dirac)
on the same renders, noise and timesteps.
"""

from __future__ import annotations

import dataclasses

import torch

from ..cameras import sample_orbit
from ..guidance.prior import Prior
from ..guidance.variational import Variational
from ..render import render_frames
from .config import SyntheticConfig
from .variational import ExactVariational

TIMESTEPS = (200, 500, 800)


@torch.no_grad()
def camera_gaps(prior: Prior, variational: Variational, latents: torch.Tensor, cam16: torch.Tensor,
                noise: torch.Tensor, timesteps=TIMESTEPS) -> dict[str, float]:
    """gap(t) for each t; latents/cam16 [V,...] views, noise [D,V,...] draws per view."""
    gaps = {}
    for t_value in timesteps:
        num = den = 0.0
        for eps in noise:
            t = torch.full((len(latents),), t_value, dtype=torch.long)
            x_t = prior.scheduler.add_noise(latents, eps, t)
            eps_free, eps_cam = variational.eps_branches(x_t, t, cam16, eps, 0.5)
            eps_prior = prior.guided_eps(x_t, t, None, 1.0)
            num += float(((eps_cam - eps_free) ** 2).sum())
            den += float(((eps_prior - eps_cam) ** 2).sum())
        gaps[str(t_value)] = (num / den) ** 0.5
    return gaps


def gap_report(prior, learned: Variational, splats, cfg: SyntheticConfig, views: int = 16, draws: int = 4,
               banks: int = 4, seed: int = 0, more_bank_sizes: tuple[int, ...] = ()) -> dict:
    """{"learned": {t: gap}, "exact": {t: gap}, ...} for `views` orbit renders of `splats`; the exact gap is
    the mean over `banks` independent banks of K = cfg.bank_size renders (one bank's value varies by about
    10%), and under "exact_by_bank_size" the same with each of `more_bank_sizes` renders."""
    g = torch.Generator().manual_seed(seed)
    cams = sample_orbit(cfg.camera_config(), views, cfg.resolution, g)
    latents = prior.encode(render_frames(splats, cams, depth=False)[0])
    cam16 = cams.camera_embedding_input()
    noise = torch.randn(draws, *latents.shape, generator=g)

    def exact_gap(bank_size: int) -> dict[str, float]:
        gaps = []
        for b in range(banks):
            # the exact estimator draws its bank cameras from the global RNG: seeded apart from the views'
            # cameras above, or the bank would hold the evaluated renders themselves (a Dirac in disguise)
            torch.manual_seed(seed + 1 + b)
            exact = ExactVariational(dataclasses.replace(cfg, bank_size=bank_size), prior.scheduler)
            exact.update(latents, cam16, lambda c: prior.encode(render_frames(splats, c, depth=False)[0]))
            gaps.append(camera_gaps(prior, exact, latents, cam16, noise))
        return {t: sum(e[t] for e in gaps) / banks for t in gaps[0]}

    exact_mean = exact_gap(cfg.bank_size)
    learned_gaps = camera_gaps(prior, learned, latents, cam16, noise)
    return {"learned": learned_gaps, "exact": exact_mean,
            "ratio": {t: learned_gaps[t] / exact_mean[t] for t in exact_mean},
            "views": views, "noise_draws": draws, "bank_size": cfg.bank_size, "banks": banks,
            "exact_by_bank_size": {str(k): exact_gap(k) for k in more_bank_sizes}}
