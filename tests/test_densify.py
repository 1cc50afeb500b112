"""Densification on the Stable Diffusion path: growth that does not depend on the gradient's units, and
oversized Gaussians pruned without opacity resets."""

import json

import pytest
import torch

from esd_gs.core.densify import NEVER, Densifier
from esd_gs.core.gaussians import GaussianConfig, init_sphere, make_optimizers


def growth_per_refine(tiny_sd, tmp_path, loss_scale: float, grow_top: float) -> list[int]:
    """Gaussians added at each refine of a short ESD run on the tiny pipeline whose loss is multiplied by
    loss_scale (Adam's steps barely change with it; the 2D gradients it accumulates scale with it)."""
    from esd_gs.config import load_preset
    from esd_gs.run.trainer import Trainer

    cfg = load_preset("sd21-esd")
    cfg.model_path, cfg.output_dir, cfg.run_name, cfg.steps = str(tiny_sd), tmp_path, f"x{loss_scale}", 13
    cfg.render.resolution, cfg.gaussians.num_points = 16, 300
    cfg.densify.refine_start_iter, cfg.densify.refine_every, cfg.densify.refine_stop_iter = 4, 4, 100
    cfg.densify.grow_top, cfg.densify.grow_grad2d = grow_top, 0.01  # median grad2d here: 0.003-0.03 at x1
    cfg.log.turntable_frames, cfg.log.progress, cfg.log.checkpoint_every = 0, False, 0
    trainer = Trainer(cfg)
    loss = trainer.objective.loss

    def scaled(*args, **kwargs):
        out = loss(*args, **kwargs)
        out.loss = out.loss * loss_scale
        return out

    trainer.objective.loss = scaled
    counts = [len(trainer.splats["means"])]
    while trainer.step < cfg.steps:
        logs = trainer.train_step()
        if "grown_share" in logs:
            counts.append(logs["n_gaussians"])
    return [b - a for a, b in zip(counts, counts[1:])]


def test_growth_does_not_depend_on_the_gradient_scale(tiny_sd, tmp_path):
    """The top-share rule grows the same number (+-10%) at each refine whether the loss is x100 or x0.01;
    gsplat's fixed threshold grows everything in one case and nothing in the other (why it is not the
    Stable Diffusion path's default)."""
    big = growth_per_refine(tiny_sd, tmp_path, 100.0, grow_top=0.2)
    small = growth_per_refine(tiny_sd, tmp_path, 0.01, grow_top=0.2)
    assert len(big) == len(small) == 2 and all(n > 0 for n in big), (big, small)
    for a, b in zip(big, small):
        assert abs(a - b) <= 0.1 * max(a, b), (big, small)
    fixed_big = growth_per_refine(tiny_sd, tmp_path, 100.0, grow_top=0.0)
    fixed_small = growth_per_refine(tiny_sd, tmp_path, 0.01, grow_top=0.0)
    assert sum(fixed_big) > 5 * max(1, sum(fixed_small)), (fixed_big, fixed_small)


def refine_state(n: int, big: list[int]):
    """n Gaussians of size 0.02 (those in `big` of size 0.5), visible with small gradients."""
    cfg = GaussianConfig(num_points=n, init_scale=0.02)
    splats = init_sphere(cfg, torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        splats["scales"][big] = torch.log(torch.tensor(0.5))
        splats["opacities"].fill_(2.0)  # well above the opacity pruning threshold
    return splats, make_optimizers(splats, cfg)


@pytest.mark.parametrize("prune_large", [True, False])
def test_large_gaussians_are_pruned_without_opacity_resets(prune_large):
    big = [3, 10, 17]
    splats, optimizers = refine_state(60, big)
    strategy = Densifier(refine_start_iter=0, refine_every=10, reset_every=NEVER, grow_top=0.0, grow_grad2d=1e9,
                         prune_large=prune_large)
    state = strategy.initialize_state(1.0)
    state["grad2d"], state["count"] = torch.zeros(60), torch.ones(60)
    state["radii"] = torch.zeros(60)
    keep = torch.ones(60, dtype=torch.bool)
    keep[big] = False
    kept_means = splats["means"][keep].detach().clone()
    strategy._grow_gs(splats, optimizers, state, 10)
    n_pruned = strategy._prune_gs(splats, optimizers, state, 10)
    if prune_large:
        assert n_pruned == 3 and state["refine_log"]["pruned_large"] == 3
        assert torch.equal(splats["means"].detach(), kept_means)
        assert all(o.param_groups[0]["params"][0] is splats[k] and len(splats[k]) == 57
                   for k, o in optimizers.items())
    else:
        assert n_pruned == 0 and len(splats["means"]) == 60


def test_runs_saved_before_the_scale_free_rule_resume_with_the_old_one(tmp_path):
    """A run whose config.yaml predates densify.grow_top / prune_large was trained with the threshold and
    no size pruning: resuming it with those values is allowed, with today's defaults it is refused."""
    from esd_gs.config import TrainConfig, config_changes, resumable, to_dict

    saved = to_dict(TrainConfig())
    del saved["densify"]["grow_top"], saved["densify"]["prune_large"]
    old = TrainConfig()
    old.densify.grow_top, old.densify.prune_large = 0.0, False
    assert config_changes(json.loads(json.dumps(saved)), old) == {}
    refused = {k for k in config_changes(saved, TrainConfig()) if not resumable(k)}
    assert refused == {"densify.grow_top", "densify.prune_large"}


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_grow_top_is_a_share(tmp_path, share):
    from conftest import assert_clean_error, cli

    assert_clean_error(cli("train", "--preset", "demo", "--output-dir", tmp_path / "o", "--densify.grow-top", share),
                       "densify.grow_top is a share", tmp_path / "o")


def test_running_statistics_equal_gsplats_without_indexing():
    """Densifier._update_state (masks, no nonzero) against gsplat's own (nonzero and boolean indexing): the same
    sums and counts, bit for bit, over three steps of three cameras with Gaussians out of view."""
    from gsplat.strategy import DefaultStrategy

    g = torch.Generator().manual_seed(0)
    params = {"means": torch.zeros(50, 3)}
    ours, theirs = Densifier(), DefaultStrategy()
    state_ours, state_theirs = ours.initialize_state(), theirs.initialize_state()
    for _ in range(3):
        means2d = torch.zeros(3, 50, 2, requires_grad=True)
        means2d.grad = torch.randn(3, 50, 2, generator=g)
        radii = torch.randint(0, 4, (3, 50, 2), generator=g).float()
        info = {"width": 64, "height": 48, "n_cameras": 3, "radii": radii, "gaussian_ids": None, "means2d": means2d}
        ours._update_state(params, state_ours, info)
        DefaultStrategy._update_state(theirs, params, state_theirs, info)
    assert state_ours["count"].sum() > 0 and (state_ours["count"] < 9).any()  # some out of view
    for key in ("grad2d", "count"):
        assert torch.equal(state_ours[key], state_theirs[key]), key
