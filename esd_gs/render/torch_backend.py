"""Differentiable reference rasterizer in plain torch, following gsplat 1.5.3's conventions exactly.

Projection (gsplat `ProjectionEWA3DGSFused.cu`): EWA with the clamped pinhole Jacobian, a 0.3 px
low-pass added to the 2D covariance, opacity-aware tight bounding boxes
(extend = min(3.33, sqrt(2 ln(opacity * 255)))), culling outside [near, far] and off-image.
Compositing (`RasterizeToPixels3DGSFwd.cu`): pixel centres at +0.5, alpha = min(0.999, o exp(-s)),
skip alpha < 1/255, front-to-back by depth, a pixel stops *before* the Gaussian that would bring
its transmittance to <= 1e-4. Output colour = sum(w c) + T bg, alpha = 1 - T.

Work is tile-based (16x16 like gsplat): Gaussian/tile pairs are found from the bounding boxes and
sorted by (tile, depth) here in torch; the per-pixel compositing and its backward pass are gsplat's
kernels compiled for the CPU (composite.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .composite import ALPHA_THRESHOLD, CompositeTiles

BBOX_EXTEND = 3.33


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances [N,3,3] = R S S^T R^T from wxyz quaternions (normalised here) and scales."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)
    M = R * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def project(means: Tensor, covars: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
            width: int, height: int, eps2d: float = 0.3, near_plane: float = 0.01,
            far_plane: float = 1e10, radius_clip: float = 0.0):
    """Returns radii [C,N,2] (int32, 0 = culled), means2d [C,N,2], depths [C,N], conics [C,N,3]."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)

    tx, ty, tz = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # gsplat clamps the Jacobian's x/z, y/z to 1.3x the frustum so off-screen splats stay bounded
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    jx = tz * torch.clamp(tx / tz, min=-lim_x_neg, max=lim_x_pos)
    jy = tz * torch.clamp(ty / tz, min=-lim_y_neg, max=lim_y_pos)
    zeros = torch.zeros_like(tz)
    J = torch.stack([fx / tz, zeros, -fx * jx / tz**2, zeros, fy / tz, -fy * jy / tz**2], dim=-1)
    J = J.reshape(*tz.shape, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)

    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)

    with torch.no_grad():
        opac = opacities.expand_as(tz)
        extend = torch.sqrt(2.0 * torch.log(torch.clamp(opac / ALPHA_THRESHOLD, min=1.0)))
        extend = torch.clamp(extend, max=BBOX_EXTEND)
        rx = torch.ceil(extend * torch.sqrt(torch.clamp(a, min=0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp(c, min=0)))
        valid = (det > 0) & (tz >= near_plane) & (tz <= far_plane) & (opac >= ALPHA_THRESHOLD)
        valid &= (rx > radius_clip) | (ry > radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = (torch.stack([rx, ry], dim=-1) * valid[..., None]).to(torch.int32)
    return radii, means2d, tz, conics


def _tile_intersections(means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int):
    """Gaussian/tile pairs sorted by (camera, tile, depth) as gsplat's isect_tiles + sort."""
    C, N = radii.shape[:2]
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    cam, gid = torch.nonzero((radii > 0).all(dim=-1), as_tuple=True)
    m = means2d.detach()[cam, gid] / tile_size
    r = radii[cam, gid].to(m.dtype) / tile_size
    x0 = torch.floor(m[:, 0] - r[:, 0]).clamp(0, tiles_x).long()
    x1 = torch.ceil(m[:, 0] + r[:, 0]).clamp(0, tiles_x).long()
    y0 = torch.floor(m[:, 1] - r[:, 1]).clamp(0, tiles_y).long()
    y1 = torch.ceil(m[:, 1] + r[:, 1]).clamp(0, tiles_y).long()
    nx = x1 - x0
    counts = nx * (y1 - y0)
    pair = torch.repeat_interleave(torch.arange(len(cam), device=cam.device), counts)
    local = torch.arange(len(pair), device=cam.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    tile = (y0[pair] + local // nx[pair]) * tiles_x + x0[pair] + local % nx[pair]
    flat_tile = cam[pair] * (tiles_x * tiles_y) + tile
    return flat_tile, cam[pair], gid[pair], tiles_x, tiles_y


def rasterize(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, depths: Tensor,
              radii: Tensor, width: int, height: int, backgrounds: Tensor | None = None, tile_size: int = 16):
    """Composites projected Gaussians. colors [C,N,D] (D may include depth). Returns colors [C,H,W,D],
    alphas [C,H,W,1]."""
    C = colors.shape[0]
    flat_tile, cam, gid, tiles_x, tiles_y = _tile_intersections(means2d, radii, width, height, tile_size)
    n_tiles = C * tiles_x * tiles_y

    # sort pairs by (tile, depth): stable sort on depth, then stable sort on tile
    order = torch.argsort(depths.detach()[cam, gid], stable=True)
    order = order[torch.argsort(flat_tile[order], stable=True)]
    flat_tile, cam, gid = flat_tile[order], cam[order], gid[order]
    ends = torch.cumsum(torch.bincount(flat_tile, minlength=n_tiles), 0)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])

    opac = opacities[gid] if opacities.dim() == 1 else opacities[cam, gid]
    grid = (C, tiles_x, tiles_y, tile_size, width, height)
    out_colors, out_trans = CompositeTiles.apply(means2d[cam, gid], conics[cam, gid], opac, colors[cam, gid],
                                                 starts, ends, grid)
    out_trans = out_trans[..., None]
    if backgrounds is not None:
        out_colors = out_colors + out_trans * backgrounds[:, None, None, :]
    return out_colors, 1.0 - out_trans
