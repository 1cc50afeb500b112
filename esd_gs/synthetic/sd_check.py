"""Does a Stable Diffusion pipeline trained on the head's photos know the head? Checked with diffusers' own
sampler (`StableDiffusionPipeline`), independent of our distillation code.

Each sample is classified by the Janus metric's exact view classifier, widened to the photos' elevations:
the nearest (RMS) render of the true head on an azimuth x elevation grid gives its azimuth.
  view accuracy   per view prompt ("<prompt>, front view", ...): share of samples whose azimuth falls in
                  that view's range (the prior's own thresholds, cameras.view_direction)
  entropy ratio   plain prompt: entropy of the 8-bin azimuth histogram / log 8 (1 = as fair as the photos)
  front share     plain prompt: share of samples within 45 deg of the front (uniform azimuths: 0.25)
  face share      plain prompt: share within 90 deg of the front, where the face is in view
  nearest photo   RMS distance of each sample to its nearest training photo, against the same distance for
                  held-out photos (the photo set's own spacing) and for held-out photos through the VAE (the
                  closest a sample can come): near the latter means samples look like photos
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ..core.cameras import view_direction, wrap_deg
from .config import SyntheticConfig
from .janus import BINS, entropy
from .photos import cached_photos

REFERENCE_AZIMUTH_STEP_DEG = 5.0
REFERENCE_ELEVATIONS = 4
VIEWS = ("front", "side", "back")


def reference_views(cfg: SyntheticConfig) -> tuple[Tensor, Tensor]:
    """The true head every 5 deg in azimuth at 4 elevations spanning the photos': ([N,H,W,3], azimuths);
    288 renders, asked for by every check, so cached on disk with the photo sets."""
    az = torch.arange(-180.0, 180.0, REFERENCE_AZIMUTH_STEP_DEG)
    el = torch.linspace(*cfg.elevation_deg, REFERENCE_ELEVATIONS)
    az, el = torch.cartesian_prod(az, el).unbind(1)
    return cached_photos(az, el, cfg), az


def nearest(images: Tensor, bank: Tensor) -> tuple[Tensor, Tensor]:
    """Index of each image's nearest bank image and the RMS distance to it."""
    d = torch.cdist(images.reshape(len(images), -1), bank.reshape(len(bank), -1)) / images[0].numel() ** 0.5
    rms, index = d.min(dim=1)
    return index, rms


def classify_azimuths(images: Tensor, references: tuple[Tensor, Tensor]) -> Tensor:
    """Azimuth (deg) of each image [N,H,W,3] in [0,1]: that of its nearest reference view."""
    refs, ref_az = references
    return ref_az[nearest(images, refs)[0]]


def view_of(azimuth_deg: Tensor) -> list[str]:
    return view_direction(azimuth_deg, torch.zeros_like(azimuth_deg))


def azimuth_histogram(azimuth_deg: Tensor) -> Tensor:
    """Counts in the Janus metric's BINS azimuth bins, the first starting at -180 deg."""
    return torch.histc(wrap_deg(azimuth_deg) + 180.0, bins=BINS, min=0.0, max=360.0)


def azimuth_entropy_ratio(azimuth_deg: Tensor) -> float:
    hist = azimuth_histogram(azimuth_deg)
    return entropy(hist / hist.sum()).item() / math.log(BINS)


@torch.no_grad()
def sample(pipe, prompt: str, n: int, seed: int, steps: int = 25, guidance_scale: float = 7.5) -> Tensor:
    """n samples [n,H,W,3] in [0,1] from diffusers' pipeline (its own scheduler and CFG)."""
    g = torch.Generator().manual_seed(seed)
    out = pipe(prompt, num_images_per_prompt=n, num_inference_steps=steps, guidance_scale=guidance_scale,
               generator=g, output_type="pt")
    return out.images.permute(0, 2, 3, 1).float().clamp(0, 1)


@torch.no_grad()
def vae_round_trip(vae, images: Tensor) -> Tensor:
    """Images [N,H,W,3] encoded (posterior mean) and decoded: the best a sample can look, through this VAE."""
    x = images.permute(0, 3, 1, 2) * 2 - 1
    return ((vae.decode(vae.encode(x).latent_dist.mean).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def check_pipeline(pipe, prompt: str, n_view: int, n_plain: int, seed: int, cfg: SyntheticConfig,
                   steps: int = 25, photos: Tensor | None = None, held_out: Tensor | None = None) -> dict:
    """The module doc's figures; nearest-photo distances only when `photos` and `held_out` are given."""
    references = reference_views(cfg)
    report: dict = {"prompt": prompt, "samples_per_view": n_view, "samples_plain": n_plain, "steps": steps}
    samples = {}
    for i, view in enumerate(VIEWS):
        samples[view] = sample(pipe, f"{prompt}, {view} view", n_view, seed + i, steps)
        views = view_of(classify_azimuths(samples[view], references))
        report[f"{view}_accuracy"] = sum(v == view for v in views) / n_view
    report["view_accuracy"] = sum(report[f"{v}_accuracy"] for v in VIEWS) / len(VIEWS)
    samples["plain"] = sample(pipe, prompt, n_plain, seed + len(VIEWS), steps)
    azimuths = classify_azimuths(samples["plain"], references)
    report["plain_azimuth_hist"] = azimuth_histogram(azimuths).tolist()
    report["plain_entropy_ratio"] = azimuth_entropy_ratio(azimuths)
    report["plain_front_share"] = (wrap_deg(azimuths).abs() < 45.0).float().mean().item()
    report["plain_face_share"] = (wrap_deg(azimuths).abs() < 90.0).float().mean().item()
    if photos is not None and held_out is not None:
        report["sample_nearest_photo_rms"] = nearest(samples["plain"], photos)[1].median().item()
        report["held_out_nearest_photo_rms"] = nearest(held_out, photos)[1].median().item()
        report["vae_held_out_nearest_photo_rms"] = nearest(vae_round_trip(pipe.vae, held_out), photos)[1].median().item()
    report["samples"] = samples
    return report


def sampler_fairness(pipe, prompt: str, n: int, seed: int, cfg: SyntheticConfig, steps: int = 25) -> dict:
    """Azimuth entropy ratio of the plain prompt under diffusers' PNDM (SD's own), DDIM and Euler ancestral
    samplers: they target the same distribution, so a gap between them measures the score's error."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler

    references, original, out = reference_views(cfg), pipe.scheduler, {}
    try:
        with warnings.catch_warnings():  # diffusers' Euler scheduler makes np.array of a tensor: numpy 2 deprecates it
            warnings.simplefilter("ignore", DeprecationWarning)
            for name, kind in (("PNDM", PNDMScheduler), ("DDIM", DDIMScheduler),
                               ("Euler ancestral", EulerAncestralDiscreteScheduler)):
                pipe.scheduler = kind.from_config(original.config)
                azimuths = classify_azimuths(sample(pipe, prompt, n, seed, steps), references)
                out[name] = {"entropy_ratio": azimuth_entropy_ratio(azimuths),
                             "hist": azimuth_histogram(azimuths).tolist()}
    finally:
        pipe.scheduler = original
    return out
