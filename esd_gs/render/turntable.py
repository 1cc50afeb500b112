"""Turntables: frames around the z axis, and depth shown as grey."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG, turntable
from . import render_frames


def render_turntable(splats, frames: int = 36, resolution: int = 256, elevation_deg: float = VIEW_ELEVATION_DEG,
                     radius: float = ORBIT_RADIUS, fovy_deg: float = ORBIT_FOVY_DEG, background=(1.0, 1.0, 1.0),
                     backend="auto", depth: bool = True):
    cams = turntable(frames, resolution, elevation_deg=elevation_deg, radius=radius, fovy_deg=fovy_deg)
    return render_frames(splats, cams, background, backend, depth=depth)


def depth_to_rgb(depth: Tensor, alpha: Tensor, background=(1.0, 1.0, 1.0)) -> Tensor:
    """Grey-scale depth (near = dark), normalised over the covered pixels of all frames together so a
    video does not flicker; uncovered pixels get the background."""
    covered = alpha > 0.5
    if not covered.any():
        return torch.tensor(background).expand(*depth.shape[:-1], 3).clone()
    near, far = depth[covered].min(), depth[covered].max()
    grey = ((depth - near) / (far - near).clamp(min=1e-8)).clamp(0, 1) * 0.85
    bg = torch.tensor(background, dtype=depth.dtype, device=depth.device)
    return torch.where(covered, grey.expand(*depth.shape[:-1], 3), bg)
