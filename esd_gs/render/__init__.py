"""`render()`: one call, two backends (gsplat on CUDA, our torch reference on CPU), same outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..core.cameras import Cameras
from ..core.gaussians import activated, sh_degree_of
from ..errors import UserError

Backend = Literal["auto", "torch", "gsplat"]


@dataclass
class RenderOutput:
    rgb: Tensor  # [C,H,W,3]
    alpha: Tensor  # [C,H,W,1]
    depth: Tensor | None  # [C,H,W,1] expected z-depth (0 where empty); None unless asked for
    info: dict  # what gsplat's strategies need: means2d (grad), radii, width, height, n_cameras


def resolve_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise UserError("the gsplat backend needs a CUDA device; use --backend torch on CPU")
    return backend


def sh_colors(means: Tensor, sh: Tensor, sh_degree: int, c2w: Tensor) -> Tensor:
    """Per-camera colours [C,N,3] from SH coefficients, exactly as gsplat's rasterization()."""
    from gsplat.cuda._torch_impl import _spherical_harmonics  # pure torch reference

    dirs = means[None, :, :] - c2w[:, None, :3, 3]
    coeffs = sh[None].expand(len(c2w), *sh.shape)
    return torch.clamp_min(_spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)


def render(splats, cameras: Cameras, backgrounds: Tensor | None = None, backend: Backend = "auto",
           sh_degree: int | None = None, depth: bool = False, eps2d: float = 0.3,
           near_plane: float = 0.01) -> RenderOutput:
    """Renders raw splats (ParameterDict as in core/gaussians.py) from `cameras`. backgrounds: [C,3].
    depth: also composite the expected depth (gsplat's "RGB+ED"; training does not need it)."""
    p = activated(splats)
    device = p["means"].device
    sh_degree = sh_degree_of(splats) if sh_degree is None else sh_degree
    cameras = cameras.to(device)
    viewmats, Ks = cameras.viewmats.to(p["means"].dtype), cameras.Ks.to(p["means"].dtype)
    W, H = cameras.width, cameras.height
    if resolve_backend(backend, device) == "gsplat":
        from gsplat import rasterization

        out, alphas, info = rasterization(
            p["means"], p["quats"], p["scales"], p["opacities"], p["sh"], viewmats, Ks, W, H,
            sh_degree=sh_degree, backgrounds=backgrounds, render_mode="RGB+ED" if depth else "RGB", packed=False,
            eps2d=eps2d, near_plane=near_plane,
        )
        return RenderOutput(out[..., :3], alphas, out[..., 3:] if depth else None, info)

    from .torch_backend import project, quat_scale_to_covar, rasterize

    covars = quat_scale_to_covar(p["quats"], p["scales"])
    radii, means2d, depths, conics = project(p["means"], covars, p["opacities"], viewmats, Ks, W, H,
                                             eps2d=eps2d, near_plane=near_plane)
    colors = sh_colors(p["means"], p["sh"], sh_degree, torch.linalg.inv(viewmats))
    if depth:  # composited as a fourth channel with a zero background, as gsplat does
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], dim=-1)
    out, alphas = rasterize(means2d, conics, colors, p["opacities"], depths, radii, W, H, backgrounds)
    expected_depth = out[..., 3:] / alphas.clamp(min=1e-10) if depth else None
    info = {"means2d": means2d, "radii": radii, "depths": depths, "conics": conics, "width": W,
            "height": H, "n_cameras": len(cameras), "gaussian_ids": None}
    return RenderOutput(out[..., :3], alphas, expected_depth, info)


@torch.no_grad()
def render_frames(splats, cams: Cameras, background=(1.0, 1.0, 1.0), backend: Backend = "auto",
                  chunk: int = 12, depth: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Renders many views without gradients, `chunk` cameras at a time, on one plain background:
    RGB [F,H,W,3], depth [F,H,W,1] (None unless `depth`) and alpha [F,H,W,1]."""
    device = splats["means"].device
    bg = torch.tensor(background, dtype=torch.float32, device=device).expand(len(cams), 3)
    outs = [render(splats, cams[i:i + chunk], bg[i:i + chunk], backend=backend, depth=depth)
            for i in range(0, len(cams), chunk)]
    return (torch.cat([o.rgb for o in outs]), torch.cat([o.depth for o in outs]) if depth else None,
            torch.cat([o.alpha for o in outs]))
