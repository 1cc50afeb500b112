"""Front-to-back alpha compositing on the CPU: gsplat's per-pixel kernels, compiled with numba.

`RasterizeToPixels3DGSFwd.cu` / `...Bwd.cu` in gsplat 1.5.3, one tile per parallel task instead of one
CUDA block: each pixel walks its tile's depth-sorted Gaussian list, skips alpha < 1/255 (without an exp
where the Mahalanobis term alone says so), stops before
the Gaussian that would bring transmittance to <= 1e-4 and remembers the last one it used; the backward
pass walks the same list back to front from there. A tile owns its slice of the pair list, so per-pair
gradients are written without races; autograd scatters them back to the Gaussians.
"""

from __future__ import annotations

import os

import numpy as np
import torch

# numba's thread pool starts with NUMBA_NUM_THREADS workers (default: every core), whatever torch uses. A
# pool larger than torch's thread count (OMP_NUM_THREADS=1, Ray workers) spin-waits on the cores of other
# processes: two single-threaded runs side by side on 2 cores went from 9 to 0.1 steps/s. Size it as torch.
os.environ.setdefault("NUMBA_NUM_THREADS", str(torch.get_num_threads()))
import numba  # noqa: E402  (after the line above)

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4

# OpenMP first: an older TBB shipped by other wheels (open3d) would only earn a warning
numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


@numba.njit(parallel=True, cache=True)
def _forward(mu, con, opac, col, reach, tile_start, tile_end, tiles_x, tiles_y, tile_size, width, height,
             out_col, out_trans, last):
    D = col.shape[1]
    per_cam = tiles_x * tiles_y
    for tile in numba.prange(len(tile_start)):
        cam, local = tile // per_cam, tile % per_cam
        x0, y0 = (local % tiles_x) * tile_size, (local // tiles_x) * tile_size
        acc = np.zeros(D, dtype=col.dtype)
        for py in range(y0, min(y0 + tile_size, height)):
            for px in range(x0, min(x0 + tile_size, width)):
                cx, cy = px + 0.5, py + 0.5
                T = 1.0
                acc[:] = 0.0
                cur = tile_start[tile] - 1
                for i in range(tile_start[tile], tile_end[tile]):
                    dx, dy = mu[i, 0] - cx, mu[i, 1] - cy
                    sigma = 0.5 * (con[i, 0] * dx * dx + con[i, 2] * dy * dy) + con[i, 1] * dx * dy
                    if sigma < 0.0 or sigma > reach[i]:  # alpha < 1/255 for sure: no exp
                        continue
                    alpha = min(MAX_ALPHA, opac[i] * np.exp(-sigma))
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    next_T = T * (1.0 - alpha)
                    if next_T <= TRANSMITTANCE_STOP:
                        break
                    w = alpha * T
                    for d in range(D):
                        acc[d] += w * col[i, d]
                    cur = i
                    T = next_T
                for d in range(D):
                    out_col[cam, py, px, d] = acc[d]
                out_trans[cam, py, px] = T
                last[cam, py, px] = cur


@numba.njit(parallel=True, cache=True)
def _backward(mu, con, opac, col, reach, tile_start, tiles_x, tiles_y, tile_size, width, height,
              out_trans, last, v_col_out, v_trans_out, v_mu, v_con, v_opac, v_col):
    D = col.shape[1]
    per_cam = tiles_x * tiles_y
    for tile in numba.prange(len(tile_start)):
        cam, local = tile // per_cam, tile % per_cam
        x0, y0 = (local % tiles_x) * tile_size, (local // tiles_x) * tile_size
        behind = np.zeros(D, dtype=col.dtype)  # sum of w_j c_j over Gaussians behind the current one
        for py in range(y0, min(y0 + tile_size, height)):
            for px in range(x0, min(x0 + tile_size, width)):
                cx, cy = px + 0.5, py + 0.5
                T_final = out_trans[cam, py, px]
                T = T_final
                behind[:] = 0.0
                v_T = v_trans_out[cam, py, px]
                for i in range(last[cam, py, px], tile_start[tile] - 1, -1):
                    dx, dy = mu[i, 0] - cx, mu[i, 1] - cy
                    sigma = 0.5 * (con[i, 0] * dx * dx + con[i, 2] * dy * dy) + con[i, 1] * dx * dy
                    if sigma < 0.0 or sigma > reach[i]:
                        continue
                    vis = np.exp(-sigma)
                    alpha = min(MAX_ALPHA, opac[i] * vis)
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    ra = 1.0 / (1.0 - alpha)
                    T *= ra  # transmittance in front of Gaussian i
                    w = alpha * T
                    v_alpha = -v_T * T_final * ra
                    for d in range(D):
                        g = v_col_out[cam, py, px, d]
                        v_col[i, d] += w * g
                        v_alpha += (col[i, d] * T - behind[d] * ra) * g
                        behind[d] += w * col[i, d]
                    if opac[i] * vis <= MAX_ALPHA:  # the clamp passes no gradient, as in gsplat
                        v_sigma = -opac[i] * vis * v_alpha
                        v_con[i, 0] += 0.5 * v_sigma * dx * dx
                        v_con[i, 1] += v_sigma * dx * dy
                        v_con[i, 2] += 0.5 * v_sigma * dy * dy
                        v_mu[i, 0] += v_sigma * (con[i, 0] * dx + con[i, 1] * dy)
                        v_mu[i, 1] += v_sigma * (con[i, 1] * dx + con[i, 2] * dy)
                        v_opac[i] += vis * v_alpha


def sigma_reach(opac: np.ndarray) -> np.ndarray:
    """The Mahalanobis term beyond which a Gaussian's alpha is below 1/255 whatever rounding does: the kernels
    skip such pairs (most of a tile's list for each pixel) without computing exp; the alpha test decides the
    rest, so the result is the one of testing every pair."""
    with np.errstate(divide="ignore"):
        return np.log(opac.astype(np.float64) / ALPHA_THRESHOLD) + 1e-4


def follow_torch_threads() -> None:
    """Use as many numba threads as torch does now (torch.set_num_threads may have changed it)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


class CompositeTiles(torch.autograd.Function):
    """Per-pair inputs (sorted by tile, then depth) -> colours [C,H,W,D] (no background), transmittance
    [C,H,W]. Tile t covers pairs tile_start[t] .. tile_end[t]-1."""

    @staticmethod
    def forward(ctx, mu, con, opac, col, tile_start, tile_end, grid):
        C, tiles_x, tiles_y, tile_size, width, height = grid
        arrays = [x.detach().cpu().contiguous().numpy() for x in (mu, con, opac, col)]
        dtype = arrays[0].dtype
        out_col = np.zeros((C, height, width, col.shape[1]), dtype=dtype)
        out_trans = np.ones((C, height, width), dtype=dtype)
        last = np.empty((C, height, width), dtype=np.int64)
        starts, ends = tile_start.cpu().numpy(), tile_end.cpu().numpy()
        reach = sigma_reach(arrays[2])
        follow_torch_threads()
        _forward(*arrays, reach, starts, ends, tiles_x, tiles_y, tile_size, width, height, out_col, out_trans, last)
        ctx.arrays, ctx.reach, ctx.starts, ctx.grid = arrays, reach, starts, grid
        ctx.out_trans, ctx.last, ctx.device, ctx.dtype = out_trans, last, mu.device, mu.dtype
        return torch.from_numpy(out_col).to(mu.device), torch.from_numpy(out_trans).to(mu.device)

    @staticmethod
    def backward(ctx, v_col_out, v_trans_out):
        C, tiles_x, tiles_y, tile_size, width, height = ctx.grid
        mu, con, opac, col = ctx.arrays
        grads = [np.zeros_like(x) for x in ctx.arrays]
        v_col_out, v_trans_out = (g.detach().cpu().to(ctx.dtype).contiguous().numpy() for g in (v_col_out, v_trans_out))
        follow_torch_threads()
        _backward(mu, con, opac, col, ctx.reach, ctx.starts, tiles_x, tiles_y, tile_size, width, height,
                  ctx.out_trans, ctx.last, v_col_out, v_trans_out, *grads)
        return (*(torch.from_numpy(g).to(ctx.device) for g in grads), None, None, None)
