"""The synthetic world's object: a procedural head facing +x, built from Gaussians."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.gaussians import rgb_to_sh0, splats_from_tensors

SKIN, HAIR, EYE, NOSE, MOUTH, EAR = (0.92, 0.72, 0.58), (0.22, 0.13, 0.07), (0.05, 0.05, 0.12), \
    (0.85, 0.3, 0.25), (0.65, 0.08, 0.1), (0.8, 0.55, 0.42)


def _ellipsoid_points(n: int, axes, g: torch.Generator) -> tuple[Tensor, Tensor]:
    d = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return d * torch.tensor(axes), d


def head_splats(seed: int = 0, two_faced: bool = False, yaw_deg: float = 0.0):
    """A head facing +x: skin ellipsoid, hair on the back and top, ears, eyes, nose and mouth on the front.

    two_faced puts a second face on the back (the Janus artifact, for testing the metric)."""
    g = torch.Generator().manual_seed(seed)
    axes = (0.30, 0.26, 0.34)
    pts, normal = _ellipsoid_points(1400, axes, g)
    hair = (pts[:, 0] < -0.05) | ((pts[:, 2] > 0.18) & (pts[:, 0] < 0.12))
    colour = torch.where(hair[:, None], torch.tensor(HAIR), torch.tensor(SKIN))
    parts = [(pts, colour, 0.045)]

    def blob(centre, radius, rgb, n=40):
        c = torch.tensor(centre) + radius * torch.randn(n, 3, generator=g).clamp(-2, 2) * 0.5
        return c, torch.tensor(rgb).expand(n, 3), radius * 0.6

    features = []
    for side in (1.0, -1.0):
        features.append(blob((0.27, 0.09 * side, 0.07), 0.035, EYE))
        features.append(blob((0.0, 0.27 * side, 0.0), 0.05, EAR))
    features.append(blob((0.32, 0.0, -0.03), 0.04, NOSE))
    mouth = blob((0.27, 0.0, -0.15), 0.03, MOUTH, n=60)
    mouth[0][:, 1] *= 3.0  # wide
    features.append(mouth)
    if two_faced:  # mirror the facial features (not the ears) onto the back
        face = [f for f in features if f[1][0].tolist() != list(EAR)]
        features += [(f[0] * torch.tensor([-1.0, 1.0, 1.0]), f[1], f[2]) for f in face]
        parts[0] = (pts, torch.where((hair & (pts[:, 2] > 0.18))[:, None], torch.tensor(HAIR),
                                     torch.tensor(SKIN)), 0.045)
    parts += features
    means = torch.cat([p[0] for p in parts])
    if yaw_deg:
        a = math.radians(yaw_deg)
        rot = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
        means = means @ rot.T
    colours = torch.cat([p[1] for p in parts])
    scales = torch.cat([torch.full((len(p[0]), 3), math.log(p[2])) for p in parts])
    n = len(means)
    return splats_from_tensors({
        "means": means, "scales": scales, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "opacities": torch.full((n,), 4.0), "sh0": rgb_to_sh0(colours)[:, None], "shN": torch.zeros(n, 0, 3),
    })
