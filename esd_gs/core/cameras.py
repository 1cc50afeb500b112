"""Orbit cameras around the origin.

World is z-up; azimuth 0 looks at the object's front from +x, azimuth grows counter-clockwise seen
from above. Cameras follow gsplat/OpenCV: x right, y down, z forward; `viewmats` are
world-to-camera [C,4,4], `Ks` pinhole intrinsics [C,3,3] with the principal point at the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .device import upload

# The orbit that previews, turntables, the viewer's start and the synthetic world's photos share.
ORBIT_RADIUS = 1.8
ORBIT_FOVY_DEG = 50.0
VIEW_ELEVATION_DEG = 15.0
OVERHEAD_DEG = 60.0  # cameras above this elevation get the "overhead view" prompt (threestudio's rule)


@dataclass
class CameraConfig:
    radius: tuple[float, float] = (1.5, 2.0)
    elevation_deg: tuple[float, float] = (-10.0, 45.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    fovy_deg: tuple[float, float] = (40.0, 70.0)


@dataclass
class Cameras:
    viewmats: Tensor  # [C,4,4] world-to-camera
    Ks: Tensor  # [C,3,3]
    width: int
    height: int
    azimuth_deg: Tensor  # [C]
    elevation_deg: Tensor  # [C]
    radius: Tensor  # [C]
    fovy_deg: Tensor  # [C]
    c2w: Tensor  # [C,4,4] camera-to-world, the inverse of viewmats
    _copies: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    TENSORS = ("viewmats", "Ks", "azimuth_deg", "elevation_deg", "radius", "fovy_deg", "c2w")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        idx = torch.arange(len(self))[idx]
        return self._with([getattr(self, name)[idx] for name in self.TENSORS])

    def _with(self, tensors: list[Tensor]) -> "Cameras":
        values = dict(zip(self.TENSORS, tensors))
        return Cameras(width=self.width, height=self.height, **values)

    def to(self, device) -> "Cameras":
        """These cameras on `device`; the copy is kept, so every later call for the same device returns it. To a
        GPU they go as one pinned tensor, asynchronously: a step's cameras cost one upload and no wait."""
        device = torch.device(device)
        if self.viewmats.device == device:
            return self
        if device not in self._copies:
            tensors = [getattr(self, name) for name in self.TENSORS]
            flat = upload(torch.cat([t.reshape(len(self), -1) for t in tensors], dim=1), device)
            sizes = [t[0].numel() for t in tensors]
            parts = [p.view(t.shape) for p, t in zip(flat.split(sizes, dim=1), tensors)]
            self._copies[device] = self._with(parts)
        return self._copies[device]

    def camera_embedding_input(self) -> Tensor:
        """Flattened 4x4 camera-to-world matrices [C,16]: the variational network's camera input."""
        return self.c2w.reshape(len(self), 16)


def fibonacci_lattice(n: int, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """(z, azimuth in radians, not wrapped) of n directions spread near-uniformly over the unit sphere."""
    i = torch.arange(n, dtype=dtype) + 0.5
    return 1 - 2 * i / n, i * (math.pi * (3 - math.sqrt(5)))


def look_at_origin(azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor) -> Tensor:
    """Camera-to-world matrices [C,4,4] for cameras on a sphere looking at the origin (z-up)."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    position = radius[:, None] * torch.stack(
        [torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=-1
    )
    forward = torch.nn.functional.normalize(-position, dim=-1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype).expand_as(forward)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=-1)
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4, dtype=position.dtype).repeat(len(az), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, position
    return c2w


def intrinsics(fovy_deg: Tensor, width: int, height: int) -> Tensor:
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy_deg))
    Ks = torch.zeros(len(fovy_deg), 3, 3, dtype=fovy_deg.dtype)
    Ks[:, 0, 0], Ks[:, 1, 1] = focal, focal
    Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = width / 2, height / 2, 1.0
    return Ks


def make_cameras(azimuth_deg, elevation_deg, radius, fovy_deg, width: int, height: int | None = None,
                 dtype=torch.float32) -> Cameras:
    height = width if height is None else height
    as_t = lambda v: torch.as_tensor(v, dtype=dtype).reshape(-1)  # noqa: E731
    az, el, r, fov = torch.broadcast_tensors(as_t(azimuth_deg), as_t(elevation_deg), as_t(radius), as_t(fovy_deg))
    c2w = look_at_origin(az, el, r)
    return Cameras(torch.linalg.inv(c2w), intrinsics(fov, width, height), width, height, az, el, r, fov, c2w)


def sample_orbit(cfg: CameraConfig, n: int, resolution: int, generator: torch.Generator) -> Cameras:
    def uniform(lo_hi):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    return make_cameras(uniform(cfg.azimuth_deg), uniform(cfg.elevation_deg), uniform(cfg.radius),
                        uniform(cfg.fovy_deg), resolution)


def turntable(n_frames: int, resolution: int, elevation_deg: float = VIEW_ELEVATION_DEG,
              radius: float = ORBIT_RADIUS, fovy_deg: float = ORBIT_FOVY_DEG, start_deg: float = 0.0) -> Cameras:
    az = start_deg + torch.arange(n_frames, dtype=torch.float32) * (360.0 / n_frames)
    az = torch.remainder(az + 180.0, 360.0) - 180.0
    return make_cameras(az, elevation_deg, radius, fovy_deg, resolution)


def view_direction(azimuth_deg: Tensor, elevation_deg: Tensor, front_deg: float = 45.0,
                   back_deg: float = 45.0, overhead_deg: float = OVERHEAD_DEG) -> list[str]:
    """threestudio's view-dependent prompt rule: 'front' | 'side' | 'back' | 'overhead' per camera."""
    names = []
    for az, el in zip(azimuth_deg.tolist(), elevation_deg.tolist()):
        az = wrap_deg(az)
        if el > overhead_deg:
            names.append("overhead")
        elif abs(az) < front_deg:
            names.append("front")
        elif abs(az) > 180.0 - back_deg:
            names.append("back")
        else:
            names.append("side")
    return names


def wrap_deg(angle):
    """Wraps degrees into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0
