"""The ESD paper's own sanity check (VITA-Group/3D-Mode-Collapse, gaussian_example.py), run through our
distillation code.

A 2-D Gaussian q = N(mu_q, L_q L_q^T) is fitted to p = N(mu_p, L_p L_p^T) by score distillation.
Each "render" is a sample x = mu_q + L_q c with its own "camera" c ~ N(0, I) (the particle's noise seed),
so q(x | c) is a Dirac and q(x) is the fitted Gaussian. Every score is exact:
  prior              eps_p(x_t)     of p diffused to t
  camera-conditioned eps_q(x_t | c) = the injected noise (the "centering trick": Dirac at x)
  camera-free        eps_q(x_t)     of q diffused to t (no gradient)
and the update is `guidance.distill.distillation_grad` + `distillation_loss`, the functions the 3D trainer
calls, with these estimators behind the `Prior` / `Variational` interfaces. SDS and VSD (lam = 0) seek
p's mode and collapse q's covariance; ESD with lam = 1 minimises KL(q || p) and recovers p.

Differences from the authors' script: our noise schedule is DDPM's (linear betas 1e-4..0.02 over 1000
steps, variance preserving, t ~ U[20, 980]) and w(t) = 1 - alphabar_t, as in the 3D trainer; theirs
draws its own alphas per sample. Optimiser, learning-rate schedule, batch, steps and initialisation are
theirs: AdamW lr 1e-2, linear warm-up 100 steps then cosine over 1.5x the steps, batch 256, 2000 steps,
mu_p ~ U[0,1]^d, L_p = U[0,1]^{dxd} + I, mu_q = mu_p + 10 U[0,1]^d, L_q ~ U[0,1]^{dxd}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .distill import distillation_grad, distillation_loss
from .prior import alphabar
from .variational import branches_needed


def linear_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def gaussian_eps(x_t: Tensor, t: Tensor, mu: Tensor, cov: Tensor, scheduler) -> Tensor:
    """Exact noise prediction of N(mu, cov) diffused to t: sqrt(1-ab) (ab cov + (1-ab) I)^-1 (x_t - sqrt(ab) mu)."""
    ab = alphabar(scheduler, t, x_t)  # [B,1]
    eye = torch.eye(len(mu), dtype=x_t.dtype, device=x_t.device)
    cov_t = ab[..., None] * cov + (1 - ab)[..., None] * eye
    return (1 - ab).sqrt() * torch.linalg.solve(cov_t, (x_t - ab.sqrt() * mu)[..., None])[..., 0]


class GaussianPrior:
    """p = N(mu, L L^T) behind the `Prior` interface (identity encoding, no text: CFG changes nothing)."""

    resolution = 0

    def __init__(self, mu: Tensor, L: Tensor, scheduler):
        self.mu, self.cov, self.scheduler = mu, L @ L.T, scheduler

    def encode(self, x: Tensor) -> Tensor:
        return x

    @torch.no_grad()
    def guided_eps(self, x_t: Tensor, t: Tensor, directions, scale: float) -> Tensor:
        return gaussian_eps(x_t, t, self.mu, self.cov, self.scheduler)


class GaussianVariational:
    """q's exact scores behind the `Variational` interface: Dirac per camera, the fitted Gaussian without."""

    def __init__(self, mu: Tensor, L: Tensor, scheduler):
        self.mu, self.L, self.scheduler = mu, L, scheduler

    @torch.no_grad()
    def eps_branches(self, x_t, t, c2w_flat, noise, lam):
        free, camera = branches_needed(lam)
        eps_free = gaussian_eps(x_t, t, self.mu.detach(), self.L.detach() @ self.L.detach().T, self.scheduler) \
            if free else None
        return eps_free, (noise if camera else None)

    def update(self, latents, c2w_flat, snapshot) -> dict:
        return {}  # exact: q's parameters are read directly


@dataclass
class GaussianExampleConfig:
    method: str = "esd"
    """sds | vsd | esd"""
    lam: float = 1.0
    ndim: int = 2
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-2
    warmup_steps: int = 100
    dist_0: float = 10.0
    """Distance scale of q's initial mean from p's."""
    seed: int = 0


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """The authors' learning-rate factor: linear warm-up, then half a cosine over `total` steps."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def fit_gaussian(cfg: GaussianExampleConfig, record_every: int = 0) -> dict:
    """Runs the fit; returns the metrics, p and q's parameters and (if record_every) q's path."""
    g = torch.manual_seed(cfg.seed)
    d = cfg.ndim
    mu_p, L_p = torch.rand(d), torch.rand(d, d) + torch.eye(d)
    mu_q = torch.nn.Parameter(torch.rand(d) * cfg.dist_0 + mu_p)
    L_q = torch.nn.Parameter(torch.rand(d, d))
    scheduler = linear_scheduler()
    prior, variational = GaussianPrior(mu_p, L_p, scheduler), GaussianVariational(mu_q, L_q, scheduler)
    optimizer = torch.optim.AdamW([mu_q, L_q], lr=cfg.lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, cfg.warmup_steps, int(1.5 * cfg.steps)))
    path = []
    for step in range(cfg.steps + 1):
        c = torch.randn(cfg.batch_size, d, generator=g)  # the cameras
        x = mu_q + c @ L_q.T  # the renders
        latents = prior.encode(x)
        t = torch.randint(20, 981, (cfg.batch_size,), generator=g)
        noise = torch.randn(cfg.batch_size, d, generator=g)
        grad = distillation_grad(prior, variational, cfg.method, cfg.lam, latents, t, noise, c, None, 1.0)
        optimizer.zero_grad()
        distillation_loss(latents, grad).backward()
        optimizer.step()
        lr_schedule.step()
        if record_every and step % record_every == 0:
            path.append((step, mu_q.detach().clone(), L_q.detach().clone()))
    cov_p, cov_q = L_p @ L_p.T, (L_q @ L_q.T).detach()
    return {
        "method": cfg.method, "lam": cfg.lam if cfg.method == "esd" else 0.0, "seed": cfg.seed,
        "mean_err": float((mu_q.detach() - mu_p).norm()),
        "cov_rel_err": float((cov_q - cov_p).norm() / cov_p.norm()),
        "cov_norm_ratio": float(cov_q.norm() / cov_p.norm()),
        "p": (mu_p, L_p), "q": (mu_q.detach(), L_q.detach()), "path": path,
    }
