import math
import os
import subprocess
import sys

import pytest
import torch

from esd_gs.core.cameras import make_cameras
from esd_gs.core.gaussians import activated
from esd_gs.render import render
from esd_gs.render.composite import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_STOP
from esd_gs.render.torch_backend import project, quat_scale_to_covar

from scenes import small_scene


def cams64(width=20, height=16, n=2):
    az = torch.linspace(10, 200, n)
    return make_cameras(az, 20.0, 1.6, 50.0, width, height, dtype=torch.float64)


@torch.no_grad()
def brute_force(splats, cams, bg):
    """Per-pixel loop over all visible Gaussians in depth order, gsplat's rule written plainly."""
    p = activated(splats)
    covars = quat_scale_to_covar(p["quats"], p["scales"])
    radii, means2d, depths, conics = project(p["means"], covars, p["opacities"], cams.viewmats, cams.Ks,
                                             cams.width, cams.height)
    from gsplat.cuda._torch_impl import _spherical_harmonics
    C = len(cams)
    img = torch.zeros(C, cams.height, cams.width, 3, dtype=torch.float64)
    for c in range(C):
        campos = torch.linalg.inv(cams.viewmats[c])[:3, 3]
        cols = torch.clamp_min(_spherical_harmonics(0, p["means"] - campos, p["sh"]) + 0.5, 0)
        vis = torch.nonzero((radii[c] > 0).all(-1)).flatten().tolist()
        vis.sort(key=lambda i: depths[c, i].item())
        for y in range(cams.height):
            for x in range(cams.width):
                T, acc = 1.0, torch.zeros(3, dtype=torch.float64)
                for i in vis:
                    dx, dy = means2d[c, i, 0] - (x + 0.5), means2d[c, i, 1] - (y + 0.5)
                    a, b, cc = conics[c, i]
                    s = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    alpha = min(MAX_ALPHA, float(p["opacities"][i] * torch.exp(-s)))
                    if s < 0 or alpha < ALPHA_THRESHOLD:
                        continue
                    if T * (1 - alpha) <= TRANSMITTANCE_STOP:
                        break
                    acc = acc + alpha * T * cols[i]
                    T *= 1 - alpha
                img[c, y, x] = acc + T * bg[c]
    return img


def test_image_matches_brute_force():
    splats = small_scene(n=15)
    cams = cams64()
    bg = torch.tensor([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        fast = render(splats, cams, bg, backend="torch").rgb
    ref = brute_force(splats, cams, bg)
    assert (fast - ref).abs().max() < 1e-5
    assert fast.std() > 0.05  # the scene is actually visible


def test_stack_stops_at_transmittance_limit():
    # 5 coincident identical Gaussians: each has alpha a at a pixel, so k of them are composited where
    # k is the largest count with (1-a)^k > 1e-4 (gsplat stops before the one that would cross it).
    splats = small_scene(n=5)
    with torch.no_grad():
        splats["means"].zero_()
        splats["scales"].fill_(math.log(0.2))
        splats["opacities"].fill_(10.0)
    cams = cams64(n=1)
    out = render(splats, cams, torch.zeros(1, 3, dtype=torch.float64), backend="torch")
    (mx, my), (ca, cb, cc) = out.info["means2d"][0, 0].tolist(), out.info["conics"][0, 0].tolist()
    stopped = 0
    for y, x in [(8, 10), (6, 8), (9, 13), (3, 4)]:
        dx, dy = mx - (x + 0.5), my - (y + 0.5)
        a = min(MAX_ALPHA, torch.sigmoid(torch.tensor(10.0)).item() * math.exp(-(0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy)))
        k = max(k for k in range(0, 6) if k == 0 or (1 - a) ** k > TRANSMITTANCE_STOP)
        assert abs(out.alpha[0, y, x, 0].item() - (1 - (1 - a) ** k)) < 1e-7
        stopped += k < 5
    assert stopped >= 1  # the rule really cut a pixel short


@pytest.mark.parametrize("key", ["means", "scales", "quats", "opacities", "sh0"])
def test_gradients_match_finite_differences(key):
    splats = small_scene(n=8, seed=3)
    cams = cams64()
    bg = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3]], dtype=torch.float64)
    w = torch.randn(2, 16, 20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss():
        out = render(splats, cams, bg, backend="torch", depth=True)
        return (out.rgb * w).sum() + (out.depth * w[..., :1]).sum() + out.alpha.sum()

    loss().backward()
    analytic = splats[key].grad.clone().flatten()
    param = splats[key].data.view(-1)
    numeric = torch.zeros_like(analytic)
    eps = 1e-6
    with torch.no_grad():
        for i in range(len(param)):
            orig = param[i].item()
            param[i] = orig + eps
            lp = loss().item()
            param[i] = orig - eps
            lm = loss().item()
            param[i] = orig
            numeric[i] = (lp - lm) / (2 * eps)
    rel = (analytic - numeric).norm() / numeric.norm().clamp(min=1e-12)
    assert numeric.norm() > 1e-3
    assert rel < 1e-4, f"{key}: relative error {rel:.2e}"


def test_projection_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    splats = small_scene(n=30, dtype=torch.float32, seed=5)
    p = activated(splats)
    cams = make_cameras(torch.tensor([0.0, 120.0]), 30.0, 1.5, 60.0, 64)
    covars = quat_scale_to_covar(p["quats"], p["scales"])
    ones = torch.ones_like(p["opacities"])  # opacity 1: gsplat's reference has no opacity-aware box
    radii, means2d, depths, conics = project(p["means"], covars, ones, cams.viewmats, cams.Ks, 64, 64)
    r_ref, m_ref, d_ref, c_ref, _ = _fully_fused_projection(p["means"], covars, cams.viewmats, cams.Ks, 64, 64)
    vis = (r_ref > 0).all(-1)
    assert vis.sum() > 20
    assert torch.allclose(means2d[vis], m_ref[vis], atol=1e-4)
    assert torch.allclose(depths[vis], d_ref[vis], atol=1e-6)
    assert torch.allclose(conics[vis], c_ref[vis], rtol=1e-4, atol=1e-5)
    # gsplat's CUDA kernel uses extend = min(3.33, sqrt(2 ln(255 o))) = 3.329 at o = 1 (as we do);
    # its torch reference uses 3.33, so boxes agree to within the final ceil
    assert torch.equal(radii > 0, r_ref > 0)
    assert (radii - r_ref).abs().max() <= 1


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_threads_follow_torch(threads):
    """numba's pool is sized by torch's thread count at import (a larger pool spin-waits on other processes'
    cores), and follow_torch_threads tracks torch.set_num_threads afterwards."""
    code = ("import torch; from esd_gs.render import composite; import numba; print(numba.config.NUMBA_NUM_THREADS);"
            "torch.set_num_threads(1); composite.follow_torch_threads(); print(numba.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": str(threads)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(threads), "1"]


def test_pairs_skipped_without_exp_are_below_the_alpha_threshold():
    """The kernels skip a pair when its Mahalanobis term exceeds sigma_reach, before any exp: every such pair
    has alpha < 1/255 in float32 (so the image is the one of testing every pair), and the reach is not loose
    (a pair just inside it can still pass the alpha test)."""
    import numpy as np

    from esd_gs.render.composite import ALPHA_THRESHOLD, sigma_reach

    opac = np.random.default_rng(0).uniform(0.0, 1.0, 100_000).astype(np.float32)
    opac[:3] = [0.0, ALPHA_THRESHOLD, 1.0]
    reach = sigma_reach(opac)
    # the smallest float32 sigma skipped (a negative sigma is skipped anyway: a reach below 0 skips every pair)
    beyond = np.maximum(np.nextafter(reach.astype(np.float32), np.float32(np.inf)), np.float32(0.0))
    assert np.all(opac * np.exp(-beyond) < np.float32(ALPHA_THRESHOLD))
    inside = opac > 2 * ALPHA_THRESHOLD
    assert np.all(opac[inside] * np.exp(-(reach[inside] - 2e-4).astype(np.float32)) >= np.float32(ALPHA_THRESHOLD))
