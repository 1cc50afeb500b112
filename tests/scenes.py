"""Small known scenes shared by tests."""

import math

import torch

from esd_gs.core.gaussians import rgb_to_sh0, splats_from_tensors


def small_scene(n=12, dtype=torch.float64, seed=0, sh_degree=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * 0.6,
        "scales": torch.log(0.05 + 0.1 * torch.rand(n, 3, generator=g)),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.logit(0.3 + 0.6 * torch.rand(n, generator=g)),
        "sh0": rgb_to_sh0(torch.rand(n, 3, generator=g))[:, None],
        "shN": 0.1 * torch.randn(n, (sh_degree + 1) ** 2 - 1, 3, generator=g),
    }
    return splats_from_tensors({k: v.to(dtype) for k, v in tensors.items()})


def colored_blob_scene(seed=0):
    """A known coloured object: red, green, blue and yellow lobes around a grey core."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.25, 0, 0], [-0.25, 0, 0], [0, 0.25, 0], [0, -0.25, 0], [0, 0, 0.2], [0, 0, 0]])
    colours = torch.tensor([[1, 0.1, 0.1], [0.1, 1, 0.1], [0.1, 0.2, 1], [1, 1, 0.1], [1, 0.5, 1], [0.6, 0.6, 0.6]])
    k = 40
    means = (centres[:, None] + 0.06 * torch.randn(len(centres), k, 3, generator=g)).reshape(-1, 3)
    n = len(means)
    tensors = {
        "means": means,
        "scales": torch.full((n, 3), math.log(0.05)),
        "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "opacities": torch.full((n,), 3.0),
        "sh0": rgb_to_sh0(colours.repeat_interleave(k, 0))[:, None],
        "shN": torch.zeros(n, 0, 3),
    }
    return splats_from_tensors(tensors)


def surface_sphere(n=16000, radius=0.4, scale=0.015, floaters=5, seed=0):
    """Flat opaque Gaussians tangent to a sphere, coloured 0.5 + 0.4 * normal, plus a few isolated
    floaters at distance 0.75 from the centre (what mesh cleanup must remove)."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    z = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)  # quaternion turning the flat z axis onto the normal
    quats = torch.cat([1 + (normal * z).sum(-1, keepdim=True), torch.linalg.cross(z, normal)], dim=-1)
    far = torch.nn.functional.normalize(torch.randn(floaters, 3, generator=g), dim=-1) * 0.75
    tensors = {
        "means": torch.cat([normal * radius, far]),
        "scales": torch.cat([torch.log(torch.tensor([scale, scale, scale / 10])).expand(n, 3),
                             torch.full((floaters, 3), math.log(0.03))]),
        "quats": torch.cat([torch.nn.functional.normalize(quats, dim=-1), torch.tensor([[1.0, 0, 0, 0]] * floaters)]),
        "opacities": torch.full((n + floaters,), 4.0),
        "sh0": rgb_to_sh0(torch.cat([0.5 + 0.4 * normal, torch.full((floaters, 3), 0.1)]))[:, None],
        "shN": torch.zeros(n + floaters, 0, 3),
    }
    return splats_from_tensors(tensors)
