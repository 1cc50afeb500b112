"""Turntable renders of a splat set: RGB and depth frames around the z axis, in chunks."""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras, turntable
from . import render


@torch.no_grad()
def render_frames(splats, cams: Cameras, background=(1.0, 1.0, 1.0), backend="auto", chunk: int = 12):
    """Renders [F,H,W,3] RGB, [F,H,W,1] depth and [F,H,W,1] alpha, `chunk` cameras at a time."""
    device = splats["means"].device
    bg = torch.tensor(background, dtype=torch.float32, device=device).expand(len(cams), 3)
    outs = [render(splats, cams[i:i + chunk], bg[i:i + chunk], backend=backend) for i in range(0, len(cams), chunk)]
    return (torch.cat([o.rgb for o in outs]), torch.cat([o.depth for o in outs]),
            torch.cat([o.alpha for o in outs]))


def render_turntable(splats, frames: int = 36, resolution: int = 256, elevation_deg: float = 15.0,
                     radius: float = 1.8, fovy_deg: float = 50.0, background=(1.0, 1.0, 1.0), backend="auto"):
    cams = turntable(frames, resolution, elevation_deg=elevation_deg, radius=radius, fovy_deg=fovy_deg)
    return render_frames(splats, cams, background, backend)


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
