"""CUDA checks (run by benchmarks/gpu/check.sh on the GPU machine; skipped elsewhere): gsplat's
rasterizer against our torch reference on the same scenes, and a training step on the GPU."""

import json
import math

import pytest
import torch

from esd_gs.core.cameras import make_cameras
from esd_gs.render import render

from scenes import colored_blob_scene, small_scene

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def scenes():
    return {"small": small_scene(n=40, dtype=torch.float32, sh_degree=1), "blob": colored_blob_scene()}


@pytest.mark.parametrize("name", ["small", "blob"])
def test_gsplat_matches_torch_backend_forward_and_backward(name):
    cams = make_cameras(torch.tensor([20.0, 140.0, -100.0]), torch.tensor([10.0, 30.0, -5.0]), 1.7, 50.0, 64, 48)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.3, 0.4], [0.0, 0.0, 0.0]], device="cuda")
    w = torch.randn(3, 48, 64, 3, generator=torch.Generator().manual_seed(0)).cuda()
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        splats = scenes()[name].cuda()
        out = render(splats, cams, bg, backend=backend, depth=True)
        ((out.rgb * w).sum() + out.alpha.sum() + (out.depth * out.alpha).mean()).backward()
        outs[backend] = {k: getattr(out, k).detach() for k in ("rgb", "alpha", "depth")}
        grads[backend] = {k: v.grad.detach() for k, v in splats.items() if v.grad is not None}
    for k in ("rgb", "alpha"):
        assert (outs["gsplat"][k] - outs["torch"][k]).abs().max() < 2e-3, k
    covered = outs["torch"]["alpha"] > 0.5
    assert (outs["gsplat"]["depth"] - outs["torch"]["depth"])[covered].abs().max() < 1e-2
    for k, g in grads["torch"].items():
        rel = (grads["gsplat"][k] - g).norm() / g.norm().clamp_min(1e-12)
        assert rel < 2e-2, (k, float(rel))


def test_training_steps_on_cuda_with_tiny_pipeline(tiny_sd, tmp_path):
    from esd_gs.config import TrainConfig
    from esd_gs.io.ply import read_ply
    from esd_gs.run.trainer import Trainer

    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance="esd", steps=6, output_dir=tmp_path,
                      run_name="cuda", device="cuda")
    cfg.render.resolution, cfg.gaussians.num_points = 64, 2000
    cfg.densify.refine_start_iter, cfg.densify.refine_every = 2, 2
    cfg.log.turntable_frames, cfg.log.turntable_resolution, cfg.log.progress = 4, 64, False
    trainer = Trainer(cfg)
    assert trainer.objective.prior.dtype == torch.bfloat16 and trainer.objective.fused
    lora0 = [p.detach().clone() for p in trainer.objective.variational.trainable]
    trainer.train()
    logs = [json.loads(line) for line in (tmp_path / "cuda" / "metrics.jsonl").read_text().splitlines()]
    assert len(logs) == 6 and all(torch.isfinite(torch.tensor(m["loss"])) for m in logs)
    assert any(not torch.equal(a, b) for a, b in zip(lora0, trainer.objective.variational.trainable))
    assert len({m["loss"] for m in logs}) > 1  # the steps changed something
    assert any("grad2d_q50" in m for m in logs)
    assert len(read_ply(tmp_path / "cuda" / "splats.ply")["means"]) == logs[-1]["n_gaussians"]


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_fused_step_equals_the_eager_step_on_cuda(tiny_sd, tmp_path, lam):
    """The default fast path (one UNet call for the prior and the branches) computes the eager path's step on a
    GPU too: the Gaussians' gradients and the variational update's, fp32, to ~1e-4 of each gradient's norm."""
    from test_guidance import one_step

    fast, fast_lora, _ = one_step(tiny_sd, tmp_path, lam=lam, device="cuda", dtype="float32")
    eager, eager_lora, _ = one_step(tiny_sd, tmp_path, lam=lam, eager=True, device="cuda", dtype="float32")
    for a, b in [*zip(fast.values(), eager.values()), *zip(fast_lora, eager_lora)]:
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).norm() <= 1e-4 * b.norm() + 1e-6


def test_captured_variational_step_trains_and_is_captured_again_after_a_resume(tiny_sd, tmp_path):
    """--variational.capture: the LoRA's step as a CUDA graph learns (its weights move, its losses finite and in
    the eager step's range), and a resume, which replaces the optimiser's state, captures it again."""
    from esd_gs.config import TrainConfig
    from esd_gs.run.trainer import Trainer

    def config(name, steps, **overrides):
        cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance="esd", steps=steps, output_dir=tmp_path,
                          run_name=name, device="cuda", dtype="float32", **overrides)
        cfg.render.resolution, cfg.gaussians.num_points = 64, 2000
        cfg.log.turntable_frames, cfg.log.progress, cfg.log.checkpoint_every, cfg.log.metrics_every = 0, False, 4, 1
        return cfg

    losses = {}
    for capture in (False, True):
        cfg = config(f"capture{capture}", 8)
        cfg.variational.capture = capture
        trainer = Trainer(cfg)
        lora0 = [p.detach().clone() for p in trainer.objective.variational.trainable]
        trainer.train()
        losses[capture] = [json.loads(line)["variational_loss"] for line in
                           (tmp_path / f"capture{capture}" / "metrics.jsonl").read_text().splitlines()]
        assert any(not torch.equal(a, b) for a, b in zip(lora0, trainer.objective.variational.trainable))
    assert all(math.isfinite(x) for x in losses[True])
    assert 0.2 < sum(losses[True]) / sum(losses[False]) < 5  # the same loss, other draws
    cfg = config("captureTrue", 12, resume=True)
    cfg.variational.capture = True
    resumed = Trainer(cfg)
    assert resumed.objective.variational.captured.graph is None  # the resume's optimiser state: capture again
    resumed.train()
    assert resumed.objective.variational.captured.graph is not None


def test_graphed_fused_call_equals_the_fused_call_and_follows_the_lora(tiny_sd, tmp_path):
    """--prior.capture: the fused UNet call replayed from its CUDA graph gives the eager call's (eps_prior, eps_q),
    and still does after the LoRA's weights change in place (the graph reads them where they lie: no capture
    again after an update or a resume); lam's other row count gets a graph of its own."""
    from esd_gs.config import TrainConfig
    from esd_gs.guidance.fused import fused_eps
    from esd_gs.guidance.graphed import GraphedForward
    from esd_gs.run.trainer import Trainer

    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance="esd", steps=2, output_dir=tmp_path,
                      run_name="graphed", device="cuda", dtype="float32")
    cfg.render.resolution, cfg.render.batch_size, cfg.gaussians.num_points, cfg.log.progress = 64, 2, 300, False
    with Trainer(cfg) as trainer:
        prior, var = trainer.objective.prior, trainer.objective.variational
        unet_cfg = prior.unet.config
        g = torch.Generator(device="cuda").manual_seed(0)
        x_t = torch.randn(2, unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size, device="cuda",
                          generator=g)
        t = torch.tensor([150, 700], device="cuda")
        c2w_flat = trainer.objective.views(0, trainer.generator).cameras.to("cuda").camera_embedding_input()
        graphed = GraphedForward(prior.unet)

        def both(lam):
            args = (prior, var, x_t, t, ["front", "back"], 7.5, c2w_flat, lam)
            return fused_eps(*args), fused_eps(*args, forward=graphed)

        (eager, replayed) = both(0.5)
        for a, b in zip(eager, replayed):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # an optimiser step's in-place update of the LoRA
            for p in var.trainable:
                p.add_(0.05 * torch.randn(p.shape, device="cuda", generator=g))
        (moved, moved_replayed) = both(0.5)
        assert not torch.allclose(moved[1], eager[1], atol=1e-4)  # the update reached the branches
        for a, b in zip(moved, moved_replayed):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert len(graphed.graphs) == 1
        for a, b in zip(*both(1.0)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert len(graphed.graphs) == 2
