"""The Janus metric: which way does each view of a result face?

24 views at azimuths 7.5 + 15k deg are each matched (L2 on 32x32 renders, white background) to the
ground-truth head rendered every 5 deg. From the matched azimuths:
  front_share     fraction matched to a front view (|az| < 45); truth 6/24 = 0.25
  face_count      separate circular arcs of front-matched views
  front_azimuth_deg  the azimuth the result's front is seen from, by that best rotation (the truth: 0)
  view_error_deg  mean angular error after the best global rotation (orientation is arbitrary
                  without view prompts: a correct head facing backwards is not Janus)
  view_variety    entropy (nats) of the 8-bin histogram of matched azimuths; truth ~log 8 = 2.08
  janus           face_count >= 2 or front_share >= 0.5
The paper's Inception metrics, with an exact view classifier in place of Inception: each view's
posterior over the 8 azimuth bins (45 deg each) is softmax_k(-d_k / T), d_k its RMS distance to the
nearest reference render in bin k, T = VIEW_TEMPERATURE:
  iv              entropy of the mean posterior over the views (Inception Variety; higher = more
                  kinds of views; truth ~log 8)
  iq              mean entropy of the per-view posteriors (Inception Quality as the paper defines it;
                  lower = each view is more clearly one view of the head)
match_rms (mean RMS distance of the views to their matched references) tells whether the PLY looks like
the head at all: the metric means nothing for other objects (looks_like_head = match_rms <= MATCH_RMS_LIMIT).
Fidelity, where each view is compared with the truth at its own azimuth rather than its best match:
  psnr            mean PSNR (dB) of the views against the truth seen from the same azimuths turned by
                  the best global rotation (2.5 deg steps); a Janus head or speckle lowers it
  no_face         no view matches a front view: the object faces nowhere (hair all round), an outcome
                  the janus flag does not count
"""

from __future__ import annotations

import math

import torch

from ..core.cameras import VIEW_ELEVATION_DEG, wrap_deg
from .config import SyntheticConfig
from .photos import cached_photos, render_photos

NUM_VIEWS = 24
REFERENCE_STEP_DEG = 5.0
ALIGN_STEP_DEG = 2.5  # a divisor of REFERENCE_STEP_DEG and of the views' 7.5 deg offset
SUMMARY_KEYS = ("janus", "no_face", "front_share", "face_count", "view_error_deg", "view_variety", "iv", "iq",
                "match_rms", "psnr")
BINS = 8
VIEW_TEMPERATURE = 0.02  # RMS units (pixels in [0,1]); trained heads match their references at 0.01-0.06
MATCH_RMS_LIMIT = 0.12  # true head 0.012, trained results 0.04-0.06, a two-faced head 0.07


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) along the last axis."""
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def view_azimuths() -> torch.Tensor:
    return 180.0 / NUM_VIEWS + 360.0 / NUM_VIEWS * torch.arange(NUM_VIEWS, dtype=torch.float32) - 180.0


def _arcs(flags: list[bool]) -> int:
    """Number of circular runs of True."""
    if all(flags):
        return 1
    return sum(1 for i, f in enumerate(flags) if f and not flags[i - 1])


def truth_views(cfg: SyntheticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The true head seen from every ALIGN_STEP_DEG of azimuth at the report's elevation: (azimuths, images),
    rendered once into the photo cache."""
    fine_az = torch.arange(-180.0, 180.0, ALIGN_STEP_DEG)
    return fine_az, cached_photos(fine_az, torch.full_like(fine_az, VIEW_ELEVATION_DEG), cfg)


def janus_report(splats, cfg: SyntheticConfig | None = None) -> dict:
    cfg = cfg or SyntheticConfig()
    fine_az, fine = truth_views(cfg)
    every = round(REFERENCE_STEP_DEG / ALIGN_STEP_DEG)
    ref_az, refs = fine_az[::every], fine[::every]
    az = view_azimuths()
    views = render_photos(splats, az, torch.full_like(az, VIEW_ELEVATION_DEG), cfg)
    pixels = refs[0].numel()
    d = torch.cdist(views.reshape(NUM_VIEWS, -1), refs.reshape(len(refs), -1)) / pixels ** 0.5
    # psnr: view i against the truth at az_i + shift, for every shift on the fine grid
    mse = torch.cdist(views.reshape(NUM_VIEWS, -1), fine.reshape(len(fine), -1)).square() / pixels
    first = torch.round((az + 180.0) / ALIGN_STEP_DEG).long()
    shifted = (first[:, None] + torch.arange(len(fine))[None, :]) % len(fine)  # [views, shifts]
    psnr = (-10.0 * torch.log10(mse.gather(1, shifted).clamp_min(1e-10))).mean(0).max().item()
    matched = ref_az[d.argmin(dim=1)]
    bins = torch.div(ref_az + 180.0, 360.0 / BINS, rounding_mode="floor").long()
    d_bin = torch.stack([d[:, bins == k].min(dim=1).values for k in range(BINS)], dim=1)
    posterior = torch.softmax(-d_bin / VIEW_TEMPERATURE, dim=1)
    match_rms = d.min(dim=1).values.mean().item()
    front = (matched.abs() < 45.0).tolist()
    shifts = torch.arange(-180.0, 180.0, REFERENCE_STEP_DEG)
    errors = [wrap_deg(matched - (az + shift)).abs().mean().item() for shift in shifts]
    hist = torch.histc(torch.remainder(matched + 180.0, 360.0), bins=BINS, min=0.0, max=360.0)
    variety = entropy(hist / hist.sum()).item()
    front_share = sum(front) / NUM_VIEWS
    face_count = _arcs(front) if any(front) else 0
    return {
        "front_share": front_share,
        "face_count": face_count,
        "view_error_deg": min(errors),
        # the view at azimuth a shows the truth's a + shift: the front is seen from -shift
        "front_azimuth_deg": float(wrap_deg(-shifts[int(torch.tensor(errors).argmin())])),
        "view_variety": variety,
        "janus": bool(face_count >= 2 or front_share >= 0.5),
        "no_face": face_count == 0,
        "iv": entropy(posterior.mean(0)).item(),
        "iq": entropy(posterior).mean().item(),
        "match_rms": match_rms,
        "match_rms_limit": MATCH_RMS_LIMIT,
        "looks_like_head": match_rms <= MATCH_RMS_LIMIT,
        "psnr": psnr,
        "matched_azimuth_deg": matched.tolist(),
        "view_azimuth_deg": az.tolist(),
        "true_view_variety": math.log(BINS),
    }
