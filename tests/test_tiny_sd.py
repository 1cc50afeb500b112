"""tiny-sd, the small Stable Diffusion shipped with esd-gs: it loads as users load SD, diffusers' own sampler
shows it knows the head, and the product's real path turns it into the head (the first behaviour test of
that path; the random-weight pipelines of test_guidance check shapes only)."""

import json

import pytest
import torch

from conftest import cli, load_script
from esd_gs.guidance.weights import SHIPPED_MODELS

TINY_SD = SHIPPED_MODELS["tiny-sd"]


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(TINY_SD)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_folder_has_sd21_base_layout_and_size(name):
    folder = SHIPPED_MODELS[name]
    index = json.loads((folder / "model_index.json").read_text())
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert index[part][0] is not None and (folder / part).is_dir(), part
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_schedule"], scheduler["beta_start"], scheduler["beta_end"]) == ("scaled_linear", 0.00085,
                                                                                             0.012)
    assert (scheduler["num_train_timesteps"], scheduler["prediction_type"]) == (1000, "epsilon")
    assert scheduler["clip_sample"] is False
    assert not list(folder.rglob("*.bin"))
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 20 * 2**20
    assert (folder / "samples.png").is_file() and "samples.png" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_ddim_from_the_shipped_config_samples_heads(pipe):
    """The scheduler config says clip_sample false, as SD 2.1-base's does: diffusers' DDIM built from it samples
    heads spread round the circle (without the key it clipped the unit-variance latents and sampled faceless
    blobs: nearest true view at RMS ~0.08, azimuth entropy ~0.3 of uniform's). 64 samples read ~0.03 low (the
    plug-in estimate's bias); 512 read 0.94-0.95 (results.md section 7)."""
    from diffusers import DDIMScheduler

    from esd_gs.synthetic.config import SyntheticConfig
    from esd_gs.synthetic.sd_check import azimuth_entropy_ratio, classify_azimuths, nearest, reference_views, sample

    assert json.loads((TINY_SD / "scheduler" / "scheduler_config.json").read_text())["clip_sample"] is False
    references, original = reference_views(SyntheticConfig()), pipe.scheduler
    try:
        pipe.scheduler = DDIMScheduler.from_config(original.config)
        images = sample(pipe, "a head", 64, seed=202, steps=20)
    finally:
        pipe.scheduler = original
    assert nearest(images, references[0])[1].median() < 0.04  # a head's views, not blobs
    assert azimuth_entropy_ratio(classify_azimuths(images, references)) >= 0.8


def test_loads_through_model_path_alias():
    from esd_gs.guidance.stable_diffusion import StableDiffusionPrior
    from esd_gs.worlds.stable_diffusion import knows_synthetic_head

    prior = StableDiffusionPrior.load("tiny-sd", "a head")
    assert prior.resolution == 32 and prior.vae.config.latent_channels == 4
    assert prior.unet.config.sample_size >= 16  # latents of at least 16x16, 2x downsampling
    assert knows_synthetic_head("tiny-sd") and not knows_synthetic_head("sd21-base")
    # the view prompts embed differently: the captions it was trained with
    assert (prior.cond["front"] - prior.cond["back"]).abs().max() > 1e-3


@pytest.mark.slow
def test_diffusers_sampler_knows_the_views_and_is_fair(pipe):
    """Fresh sampler seeds (the model card used seed 0): view prompts land in their azimuth range, and the
    plain prompt's azimuths are spread over the circle. Issue 24 asks >= 0.9 of uniform's entropy; the
    shipped model gives 0.94 [0.91, 0.95] with diffusers' PNDM over 512 samples (benchmarks/
    tiny_sd_fairness.py), but 48 samples read ~0.035 lower (the plug-in estimate's bias) and spread by
    ~0.03, so this guards 0.8, below which the prior's front bias would dominate a Janus table (a
    front-collapsed model: 0.3-0.5)."""
    from esd_gs.synthetic.config import SyntheticConfig
    from esd_gs.synthetic.sd_check import check_pipeline

    report = check_pipeline(pipe, "a head", n_view=8, n_plain=48, seed=101, cfg=SyntheticConfig(), steps=20)
    for view in ("front", "side", "back"):
        assert report[f"{view}_accuracy"] >= 0.8, report
    assert report["plain_entropy_ratio"] >= 0.8, report


@pytest.mark.slow
def test_web_model_faces_the_front_and_its_view_words_only_nudge():
    """tiny-sd-web (issue 39) through diffusers' own pipeline and PNDM at 25 steps, on sampler seeds neither its
    card nor results.md used: the plain prompt's heads face the front (card 0.84 within 45 deg over 256 samples,
    0.79 over 512 fresh ones) and "back view" rarely lands in the back range (card 0.12), yet more often than the
    plain prompt does. The bounds are the targets committed before it was trained."""
    from diffusers import StableDiffusionPipeline

    from esd_gs.core.cameras import wrap_deg
    from esd_gs.synthetic.config import SyntheticConfig
    from esd_gs.synthetic.sd_check import classify_azimuths, reference_views, sample

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_MODELS["tiny-sd-web"])
    pipe.set_progress_bar_config(disable=True)
    references = reference_views(SyntheticConfig())
    plain, back = (wrap_deg(classify_azimuths(sample(pipe, prompt, 48, seed=seed), references)).abs()
                   for prompt, seed in (("a head", 7001), ("a head, back view", 7002)))
    assert (plain < 45).float().mean() >= 0.6
    assert (plain > 135).float().mean() < (back > 135).float().mean() <= 0.7


@pytest.mark.slow
def test_sds_through_the_real_path_moves_renders_to_the_head(tmp_path):
    """`esd-gs train --preset tiny-sd --guidance sds`: the VAE, CLIP text, view prompts and CFG of the real
    path turn a random blob (the run's own init) into the head: its 24 views match the true head's views at
    their own azimuths (view error, deg) and look like them (match_rms: RMS to the nearest true view)."""
    from esd_gs.config import load_preset
    from esd_gs.core.gaussians import init_sphere
    from esd_gs.io.ply import load_splats
    from esd_gs.synthetic.janus import janus_report

    r = cli("train", "--preset", "tiny-sd", "--guidance", "sds", "--steps", "120", "--stage2-step", "60",
            "--densify.refine-stop-iter", "100", "--output-dir", tmp_path, "--run-name", "sds",
            "--log.turntable-frames", "0", "--log.preview-every", "0", "--log.no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    before = janus_report(init_sphere(load_preset("tiny-sd").gaussians, torch.Generator().manual_seed(0)))
    after = json.loads((tmp_path / "sds" / "janus.json").read_text())
    saved = janus_report(load_splats(tmp_path / "sds" / "splats.ply", "cpu"))
    assert after["match_rms"] == pytest.approx(saved["match_rms"], abs=1e-4)  # janus.json is the saved PLY's
    # measured 2026-11-29: blob 0.137 -> 0.095 (120 steps), 0.083 (240); the ESD preset 0.054 (400)
    assert after["match_rms"] < 0.75 * before["match_rms"], (before["match_rms"], after["match_rms"])
    assert after["view_error_deg"] < 15 < before["view_error_deg"], (before["view_error_deg"], after)
    assert not after["janus"]


@pytest.mark.slow
def test_train_tiny_sd_is_deterministic_and_loads(tmp_path):
    """The rebuild script, cut to a few steps, twice with one seed: identical weights, a folder the prior
    loads, marked as knowing the head; --check-only rewrites the card from the folder's own record."""
    from safetensors.torch import load_file

    from esd_gs.guidance.stable_diffusion import StableDiffusionPrior
    from esd_gs.worlds.stable_diffusion import knows_synthetic_head

    tool = load_script("tools/train_tiny_sd.py", "train_tiny_sd")
    small = dict(photos=32, vae_steps=2, vae_batch=4, unet_steps=2, unet_batch=4, check_samples=2, check_steps=3)
    tool.main(tool.Args(out=tmp_path / "a", **small))
    cfg = tool.SyntheticConfig(num_images=small["photos"], front_share=0.25)  # the run's photo set
    tool.train(tool.Args(out=tmp_path / "b", **small), tmp_path / "b", tool.cached_photos(*tool.photo_angles(cfg), cfg),
               cfg)
    weights = [load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors") for name in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert knows_synthetic_head(str(tmp_path / "a"))
    assert StableDiffusionPrior.load(str(tmp_path / "a"), "a head").resolution == 32
    (tmp_path / "a" / "README.md").unlink()
    tool.main(tool.Args(out=tmp_path / "a", check_only=True))  # the card again, from training.json's settings
    card = (tmp_path / "a" / "README.md").read_text()
    assert "python tools/train_tiny_sd.py" in card and "--unet-steps 2 " in card and "| DDIM |" in card


def test_web_captions_are_wrong_in_the_share_asked_and_name_another_view():
    """tiny-sd-web's caption noise: the asked share of photos (fixed by the seed) gets the caption of one of the
    two other views, each about half the time; the others keep their own."""
    tool = load_script("tools/train_tiny_sd.py", "train_tiny_sd")
    truth = torch.tensor([2, 3, 4] * 4000)  # caption indices: 2 + the view (front, side, back)
    noisy = tool.mislabel(truth, 0.5, torch.Generator().manual_seed(0))
    wrong = noisy != truth
    assert 0.48 < wrong.float().mean() < 0.52 and ((noisy >= 2) & (noisy <= 4)).all()
    moved = (noisy - truth) % 3  # 1 or 2 steps round the three views
    assert 0.45 < (moved[wrong] == 1).float().mean() < 0.55
    assert torch.equal(noisy, tool.mislabel(truth, 0.5, torch.Generator().manual_seed(0)))
    assert torch.equal(tool.mislabel(truth, 0.0, torch.Generator().manual_seed(0)), truth)
