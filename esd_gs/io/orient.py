"""Up axes of exported files. esd-gs trains z-up with the object's front towards +x (esd_gs/core/cameras.py).
  y    glTF's frame (its specification): y up, the front towards +z; our (x, y, z) -> (y, z, x)
  -y   the frame of INRIA/COLMAP-trained PLY files, y down, that SuperSplat/PlayCanvas and mkkellogg's
       viewer assume for .ply and .splat (PlayCanvas turns them 180 deg about z on load, so they show
       upright with the front towards the default camera); our (x, y, z) -> (-y, -z, x)

A rotation moves the means, turns the quaternions and rotates the SH bands of degree >= 1 (colour is a
function of the view direction, so its coefficients must turn with the scene).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..core.gaussians import num_sh_bases, sh_degree_of

Up = Literal["z", "y", "-y"]
UP_ROTATIONS = {"z": torch.eye(3), "y": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
                "-y": torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])}  # file = R @ ours


def quat_from_matrix(r: Tensor) -> Tensor:
    """wxyz unit quaternion of a 3x3 rotation (Shepperd's method, the numerically safe branch)."""
    m = r.double()
    trace = m.diagonal().sum()
    candidates = torch.stack([trace, m[0, 0], m[1, 1], m[2, 2]])
    i = int(candidates.argmax())
    if i == 0:
        w = (1.0 + trace).sqrt() / 2
        q = [w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)]
    else:
        j, k = (i % 3) + 1, ((i + 1) % 3) + 1  # the axes after i, cyclically (1-based like q's xyz)
        a, b, c = i - 1, j - 1, k - 1
        s = (1.0 + m[a, a] - m[b, b] - m[c, c]).sqrt() * 2
        q = [None] * 4
        q[0] = (m[c, b] - m[b, c]) / s
        q[i] = s / 4
        q[j] = (m[b, a] + m[a, b]) / s
        q[k] = (m[c, a] + m[a, c]) / s
    return torch.stack(q).to(r.dtype)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of wxyz quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def sh_rotation(r: Tensor, degree: int) -> Tensor:
    """[K,K] matrix A with Y(R^T d) = Y(d) A for gsplat's (INRIA's, glTF's) real SH basis Y, K = (degree+1)^2:
    the coefficients of the turned scene are A @ c. Fitted by least squares on spread directions, where
    it is exact (each degree is an invariant subspace)."""
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast  # gsplat's pure torch reference basis

    k = num_sh_bases(degree)
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(8 * k + 64, 3, generator=g, dtype=torch.float64), dim=-1)
    return torch.linalg.lstsq(_eval_sh_bases_fast(k, dirs), _eval_sh_bases_fast(k, dirs @ r.double())).solution


def rotate_splats(splats, r: Tensor) -> dict[str, Tensor]:
    """The splats turned by the rotation matrix r (about the origin)."""
    out = {k: v.detach() for k, v in splats.items()}
    r = r.to(out["means"])
    out["means"] = out["means"] @ r.T
    out["quats"] = quat_multiply(quat_from_matrix(r), out["quats"])
    degree = sh_degree_of(splats)
    if degree > 0:
        a = sh_rotation(r, degree)[1:, 1:].to(out["shN"])  # degree 0 is invariant
        out["shN"] = torch.einsum("kj,njc->nkc", a, out["shN"])
    return out


def yaw_rotation(deg: float) -> Tensor:
    """The rotation by `deg` about esd-gs's vertical axis z, counter-clockwise seen from above (a feature at
    azimuth a moves to a + deg)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def to_up(splats, up: Up) -> dict[str, Tensor]:
    """The splats as a file with this up axis stores them (z: ours, unchanged)."""
    return rotate_splats(splats, UP_ROTATIONS[up]) if up != "z" else {k: v.detach() for k, v in splats.items()}


def from_up(splats, up: Up) -> dict[str, Tensor]:
    """Back from a file's frame to ours."""
    return rotate_splats(splats, UP_ROTATIONS[up].T) if up != "z" else {k: v.detach() for k, v in splats.items()}
