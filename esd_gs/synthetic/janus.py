"""The Janus metric: which way does each view of a result face?

24 views at azimuths 7.5 + 15k deg are each matched (L2 on 32x32 renders, white background) to the
ground-truth head rendered every 5 deg. From the matched azimuths:
  front_share     fraction matched to a front view (|az| < 45); truth 6/24 = 0.25
  face_count      separate circular arcs of front-matched views
  view_error_deg  mean angular error after the best global rotation (orientation is arbitrary
                  without view prompts: a correct head facing backwards is not Janus)
  view_variety    entropy (nats) of the 8-bin histogram of matched azimuths; truth ~log 8 = 2.08
  janus           face_count >= 2 or front_share >= 0.5
"""

from __future__ import annotations

import math

import torch

from ..cameras import VIEW_ELEVATION_DEG, wrap_deg
from .config import SyntheticConfig
from .head import head_splats
from .photos import render_photos

NUM_VIEWS = 24
REFERENCE_STEP_DEG = 5.0
SUMMARY_KEYS = ("janus", "front_share", "face_count", "view_error_deg", "view_variety")


def view_azimuths() -> torch.Tensor:
    return 180.0 / NUM_VIEWS + 360.0 / NUM_VIEWS * torch.arange(NUM_VIEWS, dtype=torch.float32) - 180.0


def _arcs(flags: list[bool]) -> int:
    """Number of circular runs of True."""
    if all(flags):
        return 1
    return sum(1 for i, f in enumerate(flags) if f and not flags[i - 1])


def janus_report(splats, cfg: SyntheticConfig | None = None) -> dict:
    cfg = cfg or SyntheticConfig()
    ref_az = torch.arange(-180.0, 180.0, REFERENCE_STEP_DEG)
    refs = render_photos(head_splats(), ref_az, torch.full_like(ref_az, VIEW_ELEVATION_DEG), cfg)
    az = view_azimuths()
    views = render_photos(splats, az, torch.full_like(az, VIEW_ELEVATION_DEG), cfg)
    d = torch.cdist(views.reshape(NUM_VIEWS, -1), refs.reshape(len(refs), -1))
    matched = ref_az[d.argmin(dim=1)]
    front = (matched.abs() < 45.0).tolist()
    errors = []
    for shift in torch.arange(-180.0, 180.0, REFERENCE_STEP_DEG):
        errors.append(wrap_deg(matched - (az + shift)).abs().mean().item())
    hist = torch.histc(torch.remainder(matched + 180.0, 360.0), bins=8, min=0.0, max=360.0)
    p = hist / hist.sum()
    variety = -(p[p > 0] * p[p > 0].log()).sum().item()
    front_share = sum(front) / NUM_VIEWS
    face_count = _arcs(front) if any(front) else 0
    return {
        "front_share": front_share,
        "face_count": face_count,
        "view_error_deg": min(errors),
        "view_variety": variety,
        "janus": bool(face_count >= 2 or front_share >= 0.5),
        "matched_azimuth_deg": matched.tolist(),
        "view_azimuth_deg": az.tolist(),
        "true_view_variety": math.log(8),
    }
