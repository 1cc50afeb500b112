"""How much the camera moves a variational estimator's prediction, relative to the distillation gradient:

    gap(t) = |eps(x_t, t, camera) - eps(x_t, t, no camera)| / |eps_prior(x_t, t) - eps(x_t, t, camera)|

(Frobenius norms over a batch of views and noise draws). ESD changes VSD's update by lam times the
numerator, so a gap near 0 means lam does nothing. Measured for the learned network and for the exact
estimator (its camera-free branch: the ideal denoiser of fresh renders; its camera branch: the Dirac)
on the same renders, noise and timesteps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import partial

import torch

from ..core.cameras import sample_orbit
from ..guidance.prior import Prior
from ..guidance.variational import Variational
from ..render import render_frames
from .config import SyntheticConfig
from .variational import ExactVariational

TIMESTEPS = (200, 500, 800)


@torch.no_grad()
def branch_norms(prior: Prior, variational: Variational, latents: torch.Tensor, c2w_flat: torch.Tensor,
                 noise: torch.Tensor, timesteps=TIMESTEPS) -> dict[str, dict[str, float]]:
    """Frobenius norms per t over the views and noise draws (latents/c2w_flat [V,...], noise [D,V,...]) of
    gap = eps_cam - eps_free, distill = eps_prior - eps_cam, and the distances to the Dirac (the injected
    noise, the exact camera branch): camera = eps_cam - noise, free = eps_free - noise, prior = eps_prior -
    noise."""
    norms = {}
    for t_value in timesteps:
        sq = dict.fromkeys(("gap", "distill", "camera", "free", "prior"), 0.0)
        for eps in noise:
            t = torch.full((len(latents),), t_value, dtype=torch.long)
            x_t = prior.scheduler.add_noise(latents, eps, t)
            eps_free, eps_cam = variational.eps_branches(x_t, t, c2w_flat, eps, 0.5)
            eps_prior = prior.guided_eps(x_t, t, None, 1.0)
            for key, diff in (("gap", eps_cam - eps_free), ("distill", eps_prior - eps_cam),
                              ("camera", eps_cam - eps), ("free", eps_free - eps), ("prior", eps_prior - eps)):
                sq[key] += float((diff**2).sum())
        norms[str(t_value)] = {k: v**0.5 for k, v in sq.items()}
    return norms


def gaps_from_norms(norms: dict[str, dict[str, float]]) -> dict[str, float]:
    return {t: n["gap"] / n["distill"] for t, n in norms.items()}


def dirac_distances(norms: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each branch's distance to the Dirac relative to the prior's, per t: how well an estimator knows the
    current renders (0 for the exact camera branch; the prior's distance is the scale of the update)."""
    return {t: {"camera": n["camera"] / n["prior"], "free": n["free"] / n["prior"]} for t, n in norms.items()}


def render_latents(prior: Prior, splats, cams) -> torch.Tensor:
    """The prior's latents of `splats` rendered at `cams` on white (no gradient): a variational `Snapshot`."""
    return prior.encode(render_frames(splats, cams, depth=False)[0])


@torch.no_grad()
def evaluation_views(prior: Prior, splats, cfg: SyntheticConfig, views: int, draws: int,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents [V,...], c2w_flat [V,16], noise [D,V,...]): `views` orbit renders of `splats` and their noise."""
    g = torch.Generator().manual_seed(seed)
    cams = sample_orbit(cfg.camera_config(), views, cfg.resolution, g)
    latents = render_latents(prior, splats, cams)
    return latents, cams.camera_embedding_input(), torch.randn(draws, *latents.shape, generator=g)


def gap_report(prior, learned: Variational, splats, cfg: SyntheticConfig, views: int = 16, draws: int = 4,
               banks: int = 4, seed: int = 0, more_bank_sizes: tuple[int, ...] = ()) -> dict:
    """{"learned": {t: gap}, "exact": {t: gap}, ...} for `views` orbit renders of `splats`; the exact gap is
    the mean over `banks` independent banks of K = cfg.bank_size renders (one bank's value varies by about
    10%), under "exact_by_bank_size" the same with each of `more_bank_sizes` renders, and under
    "distance_to_dirac" each branch's `dirac_distances` (the exact one's with K = cfg.bank_size)."""
    latents, c2w_flat, noise = evaluation_views(prior, splats, cfg, views, draws, seed)

    def exact_norms(bank_size: int) -> list[dict]:
        norms = []
        for b in range(banks):
            # the exact estimator draws its bank cameras from the global RNG: seeded apart from the views'
            # cameras above, or the bank would hold the evaluated renders themselves (a Dirac in disguise)
            torch.manual_seed(seed + 1 + b)
            exact = ExactVariational(dataclasses.replace(cfg, bank_size=bank_size), prior.scheduler)
            exact.update(latents, c2w_flat, partial(render_latents, prior, splats))
            norms.append(branch_norms(prior, exact, latents, c2w_flat, noise))
        return norms

    def mean(per_bank: list[dict]) -> dict:
        """Mean over banks of {t: value} or {t: {key: value}}."""
        first = per_bank[0]
        return {k: mean([e[k] for e in per_bank]) if isinstance(first[k], dict) else
                sum(e[k] for e in per_bank) / len(per_bank) for k in first}

    exact = exact_norms(cfg.bank_size)
    exact_gaps = mean([gaps_from_norms(norms) for norms in exact])
    learned = branch_norms(prior, learned, latents, c2w_flat, noise)
    learned_gaps = gaps_from_norms(learned)
    return {"learned": learned_gaps, "exact": exact_gaps,
            "ratio": {t: learned_gaps[t] / exact_gaps[t] for t in exact_gaps},
            "views": views, "noise_draws": draws, "bank_size": cfg.bank_size, "banks": banks,
            "exact_by_bank_size": {str(k): mean([gaps_from_norms(norms) for norms in exact_norms(k)])
                                   for k in more_bank_sizes},
            "distance_to_dirac": {"learned": dirac_distances(learned),
                                  "exact": mean([dirac_distances(norms) for norms in exact])}}


def refit(prior: Prior, learned: Variational, splats, cfg: SyntheticConfig, steps: int, batch: int,
          reports: int = 4, views: int = 16, draws: int = 4, seed: int = 0) -> Iterator[dict]:
    """Freezes the object and keeps training `learned` on it (`batch` fresh renders at training-orbit
    cameras a step, `steps` steps); yields the learned gaps and Dirac distances on gap_report's views at
    the start and `reports` times on the way. Tells whether a network's small-t accuracy is capped by its
    form or by how much training it got on the object it ends with (docs/results.md section 5)."""
    latents, c2w_flat, noise = evaluation_views(prior, splats, cfg, views, draws, seed)
    g = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)  # the network's own draws (t, noise, camera dropout) come from the global RNG

    def entry(step: int) -> dict:
        norms = branch_norms(prior, learned, latents, c2w_flat, noise)
        return {"step": step, "learned": gaps_from_norms(norms), "distance_to_dirac": dirac_distances(norms)}

    snapshot = partial(render_latents, prior, splats)
    yield entry(0)
    for step in range(1, steps + 1):
        cams = sample_orbit(cfg.camera_config(), batch, cfg.resolution, g)
        learned.update(snapshot(cams), cams.camera_embedding_input(), snapshot)
        if step % max(1, steps // reports) == 0:
            yield entry(step)
