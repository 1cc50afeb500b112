import json
import math

import pytest
import torch

from esd_gs.core.cameras import make_cameras
from esd_gs.guidance.distill import distillation_loss
from esd_gs.guidance.stable_diffusion import StableDiffusionPrior
from esd_gs.guidance.variational import UNetVariational, VariationalConfig
from esd_gs.io.ply import read_ply


@pytest.fixture
def prior(tiny_sd):
    return StableDiffusionPrior.load(str(tiny_sd), "a corgi", "")


def attach(prior, rank=4, lr=1e-3, camera_map=True):
    return UNetVariational(prior.unet, prior.cond[None], prior.scheduler,
                           VariationalConfig(lora_rank=rank, lr=lr, camera_map=camera_map))


def inputs(prior, B=2):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(B, 4, 8, 8, generator=g)
    noise = torch.randn(B, 4, 8, 8, generator=g)
    t = torch.tensor([700, 250])[:B]
    cams = make_cameras(torch.tensor([10.0, 150.0])[:B], 20.0, 1.8, 50.0, 16)
    return latents, noise, t, cams.camera_embedding_input()


def test_prior_loads_through_from_pretrained(prior):
    assert prior.resolution == 16
    rgb = torch.rand(2, 16, 16, 3)
    assert prior.encode(rgb).shape == (2, 4, 8, 8)


def test_prior_is_bit_identical_with_variational_attached(prior):
    latents, noise, t, c2w_flat = inputs(prior)
    x_t = prior.scheduler.add_noise(latents, noise, t)
    before = prior.guided_eps(x_t, t, ["front", "back"], 7.5)
    var = attach(prior)
    with torch.no_grad():  # make the camera embedding and map non-trivial, as after training
        for p in list(var.unet.class_embedding.parameters()) + list(var.unet.conv_in.mlp.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.equal(var.camera_eps(x_t, t, c2w_flat), var.camera_eps(x_t, t, None))
    after = prior.guided_eps(x_t, t, ["front", "back"], 7.5)
    assert torch.equal(before, after)


@pytest.mark.parametrize("pins", [0, 6])
def test_camera_map_starts_at_zero_and_trains(prior, pins):
    """The spatial camera input (an MLP's grid, or grids pinned to directions) leaves the base network
    unchanged until it has learned something."""
    latents, noise, t, c2w_flat = inputs(prior)
    x_t = prior.scheduler.add_noise(latents, noise, t)
    plain = attach(prior, camera_map=False)
    before, embedding = plain.camera_eps(x_t, t, c2w_flat), plain.unet.class_embedding.state_dict()
    var = UNetVariational(plain.unet, prior.cond[None], prior.scheduler,
                          VariationalConfig(lora_rank=0, camera_map=True, camera_map_grid=4, camera_map_pins=pins,
                                            camera_dropout=0.0))  # a dropped camera would train no map this step
    var.unet.class_embedding.load_state_dict(embedding)
    assert torch.equal(var.camera_eps(x_t, t, c2w_flat), before)
    map_params = var.unet.conv_in.pinned if pins else var.unet.conv_in.mlp[-1].weight
    channels = var.unet.conv_in.conv_in.out_channels
    assert map_params.shape == ((pins, channels, 4, 4) if pins else (channels * 4 * 4, 256)) and not map_params.any()
    assert any(p is map_params for p in var.optimizer.param_groups[1]["params"])
    var.update(latents, c2w_flat, snapshot=None)
    assert map_params.abs().sum() > 0 and not torch.equal(var.camera_eps(x_t, t, c2w_flat), before)


def test_pinned_camera_map_weights(prior):
    """Each camera weighs the pins by their angle to it; the camera-free branch gets no pinned grid."""
    from esd_gs.guidance.variational import fibonacci_sphere

    pins = fibonacci_sphere(16)
    assert torch.allclose(pins.norm(dim=-1), torch.ones(16)) and pins.mean(0).norm() < 0.05
    var = UNetVariational(prior.unet, prior.cond[None], prior.scheduler,
                          VariationalConfig(lora_rank=4, camera_map=True, camera_map_grid=4, camera_map_pins=16))
    conv_in, emb = var.unet.conv_in, var.unet.class_embedding
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[0, :3, 3] = 2.5 * pins[3]  # on pin 3, further out: only the direction counts
    near = int((pins[3] @ pins.T).topk(2).indices[1])  # pin 3's nearest neighbour
    c2w[1, :3, 3] = 1.5 * (pins[3] + pins[near]) / (pins[3] + pins[near]).norm()  # halfway between them
    labels = torch.cat([emb.labels(c2w.flatten(1), 2), emb.labels(None, 1)])
    w = conv_in.pin_weights(labels)
    cos = pins[3] @ pins.T
    expected = torch.softmax(20.0 * cos, dim=-1)
    assert torch.allclose(w[0], expected, atol=1e-6) and w[0].argmax() == 3
    assert torch.allclose(w[1, 3], w[1, near], atol=1e-6) and set(w[1].topk(2).indices.tolist()) == {3, near}
    assert torch.allclose(w[:2].sum(-1), torch.ones(2)) and not w[2].any()
    latents, noise, t, c2w_flat = inputs(prior)
    x_t = prior.scheduler.add_noise(latents, noise, t)
    free, cam = var.camera_eps(x_t, t, None), var.camera_eps(x_t, t, c2w_flat)
    with torch.no_grad():
        conv_in.pinned.normal_()
    assert torch.equal(var.camera_eps(x_t, t, None), free) and not torch.equal(var.camera_eps(x_t, t, c2w_flat), cam)


@pytest.mark.parametrize("rule,lam", [("sds", 0.0), ("vsd", 0.0), ("esd", 0.0), ("esd", 0.5), ("esd", 1.0)])
def test_loss_gradient_is_the_rule(prior, rule, lam):
    from esd_gs.guidance.distill import rule_eps_q

    var = attach(prior)
    latents, noise, t, c2w_flat = inputs(prior)
    latents.requires_grad_(True)
    x_t = prior.scheduler.add_noise(latents.detach(), noise, t)
    eps_prior = prior.guided_eps(x_t, t, None, 7.5)
    eps_q = rule_eps_q(rule, lam, noise, var, x_t, t, c2w_flat)
    w = (1 - prior.scheduler.alphas_cumprod[t]).view(-1, 1, 1, 1)
    distillation_loss(latents, w * (eps_prior - eps_q)).backward()
    # by hand, with separate UNet calls
    if rule == "sds":
        eps_hand = noise
    else:
        free, cam = var.camera_eps(x_t, t, None), var.camera_eps(x_t, t, c2w_flat)
        lam_eff = 0.0 if rule == "vsd" else lam
        eps_hand = lam_eff * free + (1 - lam_eff) * cam
        assert (free - cam).abs().max() > 0  # the camera really changes the prediction
    expected = w * (eps_prior - eps_hand) / len(latents)
    assert torch.allclose(latents.grad, expected, atol=1e-5, rtol=1e-4)


def test_lora_training_lowers_loss_and_keeps_base_weights(prior):
    base = {n: p.detach().clone() for n, p in prior.unet.named_parameters()}
    var = attach(prior, rank=8, lr=5e-3)
    latents, _, _, c2w_flat = inputs(prior)
    fixed_t = torch.tensor([300, 600])

    def eval_loss():
        g = torch.Generator().manual_seed(5)
        noise = torch.randn(latents.shape, generator=g)
        x_t = prior.scheduler.add_noise(latents, noise, fixed_t)
        return torch.nn.functional.mse_loss(var.camera_eps(x_t, fixed_t, c2w_flat), noise).item()

    before = eval_loss()
    drops = []
    original = var.unet.class_embedding.forward

    def spy(labels):
        drops.append(bool((labels[:, :16] == 0).all()))
        return original(labels)

    var.unet.class_embedding.forward = spy
    torch.manual_seed(0)
    for _ in range(150):
        var.update(latents, c2w_flat, snapshot=None)
    var.unet.class_embedding.forward = original
    after = eval_loss()
    print(f"LoRA denoising loss {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before
    for n, p in prior.unet.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
    assert 0.03 <= sum(drops) / len(drops) <= 0.2  # camera dropout ~0.1


@pytest.mark.parametrize("guidance", ["esd", "sds", "vsd"])
def test_training_with_tiny_pipeline(tiny_sd, tmp_path, guidance):
    """A short run with each rule: every step logged with t inside the annealed bounds, the LoRA (and
    only the LoRA and camera MLP) learns, and the PLY holds the trained Gaussians."""
    from esd_gs.config import TrainConfig
    from esd_gs.run.trainer import Trainer

    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance=guidance, steps=10, output_dir=tmp_path,
                      run_name="r")
    cfg.render.resolution, cfg.gaussians.num_points = 32, 500
    cfg.stage2_step = 5
    cfg.log.turntable_frames, cfg.log.turntable_resolution, cfg.log.progress = 4, 32, False
    trainer = Trainer(cfg)
    base = {n: p.detach().clone() for n, p in trainer.objective.prior.unet.named_parameters()
            if "lora_" not in n and "class_embedding" not in n}
    variational = trainer.objective.variational
    lora0 = None if variational is None else [p.detach().clone() for p in variational.trainable]
    means0 = trainer.splats["means"].detach().clone()
    trainer.train()
    logs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logs] == list(range(1, 11))
    T = 1000
    for m in logs:
        hi = cfg.prior.t_max if m["step"] <= 5 else cfg.prior.t_max_final
        assert cfg.prior.t_min * T <= m["t"] <= hi * T and math.isfinite(m["loss"])
    assert (variational is None) == (guidance == "sds")
    if variational is not None:
        assert all("variational_loss" in m for m in logs)
        assert any(not torch.equal(a, b) for a, b in zip(lora0, variational.trainable))
    for n, p in trainer.objective.prior.unet.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
    ply = read_ply(tmp_path / "r" / "splats.ply")
    assert torch.equal(ply["means"], trainer.splats["means"].detach())
    assert not torch.equal(ply["means"], means0)


@pytest.mark.parametrize("method,lam", [("sds", 0.0), ("vsd", 0.0), ("esd", 1.0)])
def test_gaussian_example_collapse_and_recovery(method, lam):
    """The paper's 2-D example through distillation_grad: SDS/VSD collapse q's covariance, ESD lam 1 recovers p."""
    from esd_gs.guidance.gaussian_example import GaussianExampleConfig, fit_gaussian

    r = fit_gaussian(GaussianExampleConfig(method=method, lam=lam, steps=1000, seed=2))
    if method == "esd":
        assert r["cov_rel_err"] < 0.05, r["cov_rel_err"]
    else:
        assert r["cov_norm_ratio"] < 0.05, r["cov_norm_ratio"]


def assert_trains_against_v(var, latents, c2w_flat):
    """One denoising step's loss, by hand with the same draws: target v = sqrt(ab) eps - sqrt(1 - ab) x0; and
    the noise prediction is the v output converted, eps = sqrt(ab) v + sqrt(1 - ab) x_t."""
    assert var.scheduler.config.prediction_type == "v_prediction"
    B = len(latents)
    torch.manual_seed(3)
    t = torch.randint(0, 1000, (B,))
    noise = torch.randn_like(latents)
    drop = torch.rand(()) < var.cfg.camera_dropout
    x_t = var.scheduler.add_noise(latents, noise, t)
    with torch.no_grad():
        pred = var.unet(x_t, t, encoder_hidden_states=var.text.expand(B, -1, -1),
                        class_labels=var.unet.class_embedding.labels(None if drop else c2w_flat, B)).sample
    ab = var.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = torch.nn.functional.mse_loss(pred, ab.sqrt() * noise - (1 - ab).sqrt() * latents).item()
    if not drop:
        assert torch.allclose(var.camera_eps(x_t, t, c2w_flat), ab.sqrt() * pred + (1 - ab).sqrt() * x_t, atol=1e-5)
    torch.manual_seed(3)
    assert var.denoising_step(latents, c2w_flat).item() == pytest.approx(expected, rel=1e-5)


def test_separate_v_prediction_base_trains_its_lora_against_v(tiny_sd, tmp_path):
    from esd_gs.config import TrainConfig
    from esd_gs.worlds.stable_diffusion import StableDiffusionWorld
    from tiny_sd import build_tiny_sd

    v_model = build_tiny_sd(tmp_path / "v", prediction_type="v_prediction")
    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance="vsd")
    cfg.variational.base_model, cfg.variational.lora_rank = str(v_model), 4
    objective = StableDiffusionWorld(cfg, torch.device("cpu")).objective()
    assert objective.prior.scheduler.config.prediction_type == "epsilon"
    assert objective.variational.unet is not objective.prior.unet
    latents, _, _, c2w_flat = inputs(objective.prior)
    assert_trains_against_v(objective.variational, latents, c2w_flat)


def test_synthetic_network_can_predict_v():
    """--synthetic.unet-prediction v_prediction: the synthetic world's network learns v, its prior stays eps."""
    from esd_gs.config import TrainConfig
    from esd_gs.worlds.synthetic import SyntheticWorld

    cfg = TrainConfig(guidance="esd")
    cfg.synthetic.num_images, cfg.synthetic.unet_prediction = 16, "v_prediction"
    objective = SyntheticWorld(cfg, torch.device("cpu")).objective()
    assert objective.prior.scheduler.config.prediction_type == "epsilon"
    cams = objective.prior.photo_cameras()[:2]
    assert_trains_against_v(objective.variational, objective.prior.images[:2], cams.camera_embedding_input())


def test_half_precision_prior_gives_float32_latents_and_noise(tiny_sd):
    prior = StableDiffusionPrior.load(str(tiny_sd), "a corgi", "", dtype=torch.bfloat16)
    latents = prior.encode(torch.rand(2, 16, 16, 3))
    assert latents.dtype == torch.float32
    t = torch.tensor([20, 900])
    eps = prior.guided_eps(prior.scheduler.add_noise(latents, torch.randn_like(latents), t), t, None, 7.5)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_densification_never_exceeds_the_cap_and_logs_its_gradients(tiny_sd, tmp_path):
    from esd_gs.config import load_preset
    from esd_gs.run.trainer import Trainer

    cfg = load_preset("sd21-esd")
    cfg.model_path, cfg.output_dir, cfg.run_name, cfg.steps = str(tiny_sd), tmp_path, "cap", 31
    cfg.render.resolution, cfg.gaussians.num_points = 32, 400
    cfg.densify.refine_start_iter, cfg.densify.refine_every, cfg.densify.grow_top = 5, 5, 0.5
    cfg.densify.max_gaussians = 450
    cfg.log.turntable_frames, cfg.log.turntable_resolution, cfg.log.progress = 2, 32, False
    Trainer(cfg).train()
    logs = [json.loads(line) for line in (tmp_path / "cap" / "metrics.jsonl").read_text().splitlines()]
    refines = [m for m in logs if "grad2d_q50" in m]
    assert len(refines) >= 5 and max(m["n_gaussians"] for m in logs) == 450
    assert all(m["grad2d_q50"] <= m["grad2d_q90"] <= m["grad2d_q99"] for m in refines)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("camera_map", ["none", "mlp", "pinned"])
@pytest.mark.parametrize("base", ["shared", "separate"])
def test_every_dtype_camera_map_and_base_trains(tiny_sd, dtype, camera_map, base):
    """Half-precision bases with every camera input: the distillation loss and the variational update run,
    LoRA and camera parameters stay float32 and learn, the base weights keep the asked dtype. (The pinned
    map's fp32 grids once became `unet.dtype` and crashed bf16/fp16.)"""
    from esd_gs.core.cameras import sample_orbit
    from esd_gs.config import TrainConfig
    from esd_gs.core.objective import Views, sample_backgrounds
    from esd_gs.worlds.stable_diffusion import StableDiffusionWorld

    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), guidance="esd", lam=0.5,
                      dtype=str(dtype).removeprefix("torch."))
    cfg.variational.lora_rank, cfg.variational.camera_map = 4, camera_map != "none"
    cfg.variational.camera_map_pins = 6 if camera_map == "pinned" else 0
    cfg.variational.base_model = "shared" if base == "shared" else str(tiny_sd)
    objective = StableDiffusionWorld(cfg, torch.device("cpu")).objective()
    variational = objective.variational
    assert variational.unet.time_embedding.linear_1.weight.dtype == dtype
    assert (variational.unet is objective.prior.unet) == (base == "shared")
    trainable0 = [p.detach().clone() for p in variational.trainable]
    assert all(p.dtype == torch.float32 for p in variational.trainable)
    g = torch.Generator().manual_seed(0)
    cams = sample_orbit(cfg.cameras, 2, 16, g)
    views = Views(cams, sample_backgrounds("random", 2, g))
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    for step in range(2):
        step_loss = objective.loss(rgb, views, step)
        step_loss.loss.backward()
        logs = variational.update(step_loss.latents, cams.camera_embedding_input(), None)
        assert math.isfinite(step_loss.loss.item()) and math.isfinite(logs["variational_loss"])
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    changed = [not torch.equal(a, b) for a, b in zip(trainable0, variational.trainable)]
    assert all(p.dtype == torch.float32 for p in variational.trainable) and all(changed)


def test_variational_train_steps_are_one_batched_forward(prior):
    """--variational.train-steps K: one UNet forward of K x B rows (fresh t and noise each, a camera dropout
    draw per copy), one optimiser step, and that batch's loss, as threestudio batches its LoRA timesteps."""
    var = attach(prior)
    var.cfg.train_steps, var.cfg.camera_dropout = 3, 0.5
    latents, _, _, c2w_flat = inputs(prior)
    torch.manual_seed(5)  # the expected loss by hand, with the draws update() will make
    t = torch.randint(0, 1000, (6,))
    noise = torch.randn(6, 4, 8, 8)
    drops = [bool(torch.rand(()) < 0.5) for _ in range(3)]
    emb = var.unet.class_embedding
    labels = torch.cat([emb.labels(None if d else c2w_flat, 2) for d in drops])
    with torch.no_grad():
        pred = var.unet(prior.scheduler.add_noise(latents.repeat(3, 1, 1, 1), noise, t), t,
                        encoder_hidden_states=var.text.expand(6, -1, -1), class_labels=labels).sample
    expected = torch.nn.functional.mse_loss(pred, noise).item()
    calls, steps = [], []
    hook = var.unet.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    step = var.optimizer.step
    var.optimizer.step = lambda *a, **k: steps.append(1) or step(*a, **k)
    torch.manual_seed(5)
    loss = var.update(latents, c2w_flat, None)["variational_loss"]
    hook.remove()
    assert calls == [6] and steps == [1]
    assert loss.item() == pytest.approx(expected, rel=1e-5) and True in drops and False in drops


# Perp-Neg and score debiasing (issue 25) -----------------------------------------------------------------
def test_perp_neg_prompts_follow_threestudios_interpolation_and_weights():
    from esd_gs.guidance.perp_neg import CONDITIONS, perp_neg_prompts

    def f(a, b, c, r):
        return a * math.exp(-b * r) + c

    k = {name: CONDITIONS.index(name) for name in ("front", "side", "back", "overhead", "uncond")}
    p = perp_neg_prompts(torch.tensor([0.0, 45.0, -90.0, 135.0, 180.0, 30.0]),
                         torch.tensor([10.0, 10.0, 0.0, 20.0, 10.0, 70.0]))
    # positives: front; half front half side; side; half side half back; back; overhead
    expected_pos = [{"front": 1}, {"front": 0.5, "side": 0.5}, {"side": 1}, {"side": 0.5, "back": 0.5}, {"back": 1},
                    {"overhead": 1}]
    for row, want in zip(p.positive, expected_pos):
        assert torch.allclose(row, torch.tensor([want.get(c, 0.0) for c in CONDITIONS]), atol=1e-6), (row, want)
    # negatives: front views push away from (front, side); back views (|az| >= 90, as threestudio's strict
    # |az| < 90 for the front half) from (side, front); overhead none
    assert [int(n.argmax()) for n in p.negatives[0]] == [k["front"], k["side"]]
    assert [int(n.argmax()) for n in p.negatives[3]] == [k["side"], k["front"]]
    assert [int(n.argmax()) for n in p.negatives[5]] == [k["uncond"], k["uncond"]]
    want = [[-f(4, .5, -2.426, 1.0), -f(4, .5, -2.426, 0.0)], [-f(4, .5, -2.426, .5), -f(4, .5, -2.426, .5)],
            [-f(1, .5, -.606, 1.0), -f(1, .5, .967, 1.0)], [-f(1, .5, -.606, .5), -f(1, .5, .967, .5)],
            [-f(1, .5, -.606, 0.0), -f(1, .5, .967, 0.0)], [0.0, 0.0]]
    assert torch.allclose(p.weights, torch.tensor(want), atol=1e-6)
    assert abs(p.weights[0, 0]) < 1e-3  # a view at the front has no negative for its own prompt


def test_perp_neg_eps_matches_a_hand_computation():
    """With a prior linear in its conditioning (eps = conds @ E), the combined direction is worked out by
    hand: e_pos = eps_pos - eps_u, each negative's part orthogonal to e_pos, weighted and added."""
    from esd_gs.guidance.perp_neg import CONDITIONS, PerpNegPrompts, perp_neg_eps

    g = torch.Generator().manual_seed(0)
    E = torch.randn(len(CONDITIONS), 2, 3, 3, generator=g, dtype=torch.float64)

    class LinearPrior:
        def eps_for(self, x_t, t, conds):
            return torch.einsum("rk,kchw->rchw", conds.double(), E)

    B, scale = 2, 7.5
    pos = torch.softmax(torch.randn(B, len(CONDITIONS), generator=g, dtype=torch.float64), dim=1)
    negs = torch.eye(len(CONDITIONS), dtype=torch.float64)[torch.tensor([[2, 3], [3, 4]])]
    weights = torch.tensor([[-1.5, -0.3], [-0.4, -2.0]], dtype=torch.float64)
    got = perp_neg_eps(LinearPrior(), torch.zeros(B, 2, 3, 3, dtype=torch.float64), torch.zeros(B, dtype=torch.long),
                       PerpNegPrompts(pos, negs, weights), scale)
    for b in range(B):
        u = E[0].flatten()
        e_pos = (pos[b] @ E.flatten(1)) - u
        total = e_pos.clone()
        for i in range(2):
            d = E[int(negs[b, i].argmax())].flatten() - u
            perp = d - (d @ e_pos) / (e_pos @ e_pos) * e_pos
            assert abs(float(perp @ e_pos)) < 1e-9  # orthogonal to the positive direction
            total += weights[b, i] * perp
        assert torch.allclose(got[b].flatten(), u + scale * total, atol=1e-10)


def test_sd_prior_mixes_text_embeddings_for_perp_neg(prior):
    """eps_for with a mixed conditioning row is the UNet on the mixed text embedding; a one-hot row is that
    prompt exactly (so guided_eps through it is unchanged)."""
    from esd_gs.guidance.perp_neg import CONDITIONS

    latents, noise, t, _ = inputs(prior)
    x_t = prior.scheduler.add_noise(latents, noise, t)
    conds = torch.zeros(2, len(CONDITIONS))
    conds[0, CONDITIONS.index("front")], conds[0, CONDITIONS.index("side")] = 0.25, 0.75
    conds[1, CONDITIONS.index("back")] = 1.0
    text = torch.stack([0.25 * prior.cond["front"][0] + 0.75 * prior.cond["side"][0], prior.cond["back"][0]])
    with torch.no_grad():
        direct = prior.unet(x_t, t, encoder_hidden_states=text).sample
    assert torch.allclose(prior.eps_for(x_t, t, conds), direct, atol=1e-6)
    uncond = prior.unet(x_t, t, encoder_hidden_states=prior.uncond.expand(2, -1, -1)).sample.detach()
    assert torch.allclose(prior.guided_eps(x_t, t, ["front", "back"], 7.5),
                          uncond + 7.5 * (prior.eps_for(x_t, t, torch.eye(len(CONDITIONS))[[2, 4]]) - uncond),
                          atol=1e-4)  # batches of 4 and 2 round differently, times the scale


def test_score_debiasing_clip_grows_linearly_and_clamps_the_gradient(monkeypatch, tmp_path):
    """Debiased-SDS: |grad| <= c(step) element-wise, c growing linearly from grad_clip (first step) to
    grad_clip_final (last step); checked through the objective's logged gradient norm."""
    from esd_gs.guidance import distill
    from esd_gs.worlds import make_world

    from conftest import tiny_synthetic

    cfg = tiny_synthetic(tmp_path, guidance="sds", steps=101)
    cfg.prior.grad_clip, cfg.prior.grad_clip_final = 0.5, 2.0
    objective = make_world(cfg, torch.device("cpu")).objective()
    assert [distill.clip_threshold(s, 101, cfg.prior) for s in (0, 50, 100)] == [0.5, 1.25, 2.0]
    views = objective.views(0, torch.Generator().manual_seed(0))
    rgb = torch.rand(len(views.cameras), cfg.render.resolution, cfg.render.resolution, 3)
    raw = torch.linspace(-3.0, 3.0, objective.prior.encode(rgb).numel()).reshape(objective.prior.encode(rgb).shape)
    monkeypatch.setattr(distill, "distillation_grad", lambda *a, **k: raw.clone())
    for step, c in ((0, 0.5), (50, 1.25), (100, 2.0)):
        logged = objective.loss(rgb, views, step).logs["grad_norm"]
        assert torch.allclose(logged, raw.clamp(-c, c).norm() / len(rgb)), (step, c)


def test_lam_final_takes_over_at_the_second_stage(monkeypatch, tmp_path):
    """ESD's lam schedule: lam before the prior's anneal step (where t_max drops), lam_final from it on; a run
    without lam_final keeps lam. Checked on the lam the objective hands to the rule."""
    from esd_gs.guidance import distill
    from esd_gs.worlds import make_world

    from conftest import tiny_synthetic

    used = []
    monkeypatch.setattr(distill, "distillation_grad", lambda prior, var, rule, lam, latents, *a, **k:
                        used.append(lam) or torch.zeros_like(latents))
    for lam_final, expected in ((0.25, [1.0, 1.0, 0.25, 0.25]), (None, [1.0] * 4)):
        cfg = tiny_synthetic(tmp_path, guidance="esd", lam=1.0, lam_final=lam_final, steps=20)
        cfg.stage2_step = 10
        objective = make_world(cfg, torch.device("cpu")).objective()
        views = objective.views(0, torch.Generator().manual_seed(0))
        rgb = torch.rand(len(views.cameras), cfg.render.resolution, cfg.render.resolution, 3)
        used.clear()
        for step in (0, 9, 10, 19):
            objective.loss(rgb, views, step)
        assert used == expected, (lam_final, used)


def perturbed(prior, pins=6):
    """A LoRA + pinned camera map that does something (trained networks do; fresh ones start at the base)."""
    var = UNetVariational(prior.unet, prior.cond[None], prior.scheduler,
                          VariationalConfig(lora_rank=4, lr=1e-3, camera_map=True, camera_map_pins=pins))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in var.unet.named_parameters():
            if "lora_B" in n or "pinned" in n or "class_embedding" in n:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return var


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_fused_call_is_the_prior_and_the_branches(prior, lam):
    """One UNet call for both: its prior rows are the plain UNet's (LoRA off, no camera term) on the same rows
    bit for bit, and its branches give today's two-call eps_q."""
    from esd_gs.guidance.distill import rule_eps_q
    from esd_gs.guidance.fused import fused_eps

    var = perturbed(prior)
    latents, noise, t, c2w_flat = inputs(prior)
    x_t = prior.scheduler.add_noise(latents, noise, t)
    call = {}
    hook = prior.unet.register_forward_hook(lambda m, a, k, o: call.update(a=a, k=k, out=o.sample.clone()),
                                            with_kwargs=True)
    eps_prior, eps_q = fused_eps(prior, var, x_t, t, ["front", "back"], 7.5, c2w_flat, lam)
    hook.remove()
    rows = 2 + (lam > 0) + (lam < 1)
    assert len(call["out"]) == rows * len(x_t)
    kwargs = call["k"] | {"class_labels": prior.unet.class_embedding.labels(None, rows * len(x_t), prior_rows=True)}
    prior.unet.disable_adapters()  # peft's own switch: the LoRA off for every row
    try:
        with torch.no_grad():
            plain = prior.unet(*call["a"], **kwargs).sample
    finally:
        prior.unet.enable_adapters()
    assert torch.equal(plain[:2 * len(x_t)], call["out"][:2 * len(x_t)])
    assert not torch.allclose(plain[2 * len(x_t):], call["out"][2 * len(x_t):], atol=1e-3)  # the LoRA rows differ
    torch.testing.assert_close(eps_prior, prior.guided_eps(x_t, t, ["front", "back"], 7.5), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(eps_q, rule_eps_q("esd", lam, noise, var, x_t, t, c2w_flat), rtol=1e-5, atol=1e-5)


def one_step(tiny_sd, tmp_path, **overrides):
    """The Gaussians' gradients and the variational update's gradients of a first training step."""
    from esd_gs.config import TrainConfig
    from esd_gs.render import render
    from esd_gs.run.trainer import Trainer

    cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), steps=4, output_dir=tmp_path, seed=3,
                      run_name="-".join(f"{k}{v}" for k, v in overrides.items()), **overrides)
    cfg.render.resolution, cfg.render.batch_size, cfg.gaussians.num_points = 32, 2, 300
    cfg.variational.camera_map, cfg.variational.camera_map_pins = True, 6
    with Trainer(cfg) as trainer:
        objective = trainer.objective
        objective.timer.enabled = True
        views = objective.views(0, trainer.generator)
        out = render(trainer.splats, views.cameras, views.backgrounds, backend="torch")
        step_loss = objective.loss(out.rgb, views, 0)
        step_loss.loss.backward()
        objective.update(trainer.splats, step_loss, views)
        return ({k: p.grad for k, p in trainer.splats.items()}, [p.grad for p in objective.variational.trainable],
                dict(objective.timer.ms))


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_fused_step_equals_the_eager_step(tiny_sd, tmp_path, lam):
    fast, fast_lora, fast_sections = one_step(tiny_sd, tmp_path, lam=lam)
    eager, eager_lora, eager_sections = one_step(tiny_sd, tmp_path, lam=lam, eager=True)
    assert "prior_and_variational" in fast_sections and "prior" not in fast_sections
    assert "prior" in eager_sections and "prior_and_variational" not in eager_sections
    # float32 rounding differs between a batch of 2B and one of 4B rows, and CFG multiplies it by 7.5: the same
    # step to ~1e-5 of each gradient's norm (a different step differs by its whole size)
    for name, a, b in [*((k, fast[k], eager[k]) for k in fast), *(("lora", a, b) for a, b in zip(fast_lora, eager_lora))]:
        assert (a is None) == (b is None), name
        if a is not None:
            assert (a - b).norm() <= 1e-4 * b.norm() + 1e-7, name
    assert sum(g.norm() for g in fast_lora if g is not None) > 0 and fast["means"].norm() > 0


def test_fused_path_resumes_as_a_straight_run(tiny_sd, tmp_path):
    from esd_gs.config import TrainConfig
    from esd_gs.run.trainer import Trainer

    def config(name, steps, **overrides):
        cfg = TrainConfig(prompt="a corgi", model_path=str(tiny_sd), steps=steps, output_dir=tmp_path, run_name=name,
                          **overrides)
        cfg.render.resolution, cfg.render.batch_size, cfg.gaussians.num_points = 32, 2, 300
        cfg.stage2_step = 3
        cfg.log.progress, cfg.log.checkpoint_every, cfg.log.turntable_frames, cfg.log.preview_every = False, 3, 0, 0
        return cfg

    straight = Trainer(config("straight", 6))
    straight.train()
    Trainer(config("split", 3)).train()
    resumed = Trainer(config("split", 6, resume=True))
    assert resumed.step == 3 and resumed.objective.fused
    resumed.train()
    for k in straight.splats.keys():
        assert torch.equal(straight.splats[k], resumed.splats[k]), k
    lora = lambda t: [p.detach() for p in t.objective.variational.trainable]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(lora(straight), lora(resumed)))


def test_the_capturable_step_draws_on_the_device_and_its_warm_up_is_undone(prior):
    """guidance/captured.py's step, run eagerly (a CPU has no graphs): the camera dropout drawn on the device
    keeps the eager step's distribution (a whole copy's camera zeroed with probability p), the weights move,
    and restoring a snapshot undoes the warm-up's steps, optimiser state included."""
    from esd_gs.guidance.captured import restore, snapshot

    var = UNetVariational(prior.unet, prior.cond[None], prior.scheduler,
                          VariationalConfig(lora_rank=4, lr=1e-3, camera_map=True, camera_dropout=0.3))
    latents, _, _, c2w_flat = inputs(prior)
    before = snapshot(var)
    assert before[1] == {}  # no optimiser state before the first step
    torch.manual_seed(0)
    dropped = []
    for _ in range(60):
        loss = var.denoising_step(latents, c2w_flat, repeats=4, device_draws=True)
        labels = var.unet.class_embedding.call_labels
        assert torch.isfinite(loss) and len(labels) == 4 * len(latents) and (labels[:, 16] == 1).all()
        per_copy = labels[:, :16].abs().sum(1).view(4, len(latents)) == 0
        assert (per_copy.all(1) | ~per_copy.any(1)).all()  # a copy's cameras go together
        dropped += per_copy[:, 0].tolist()
    assert 0.2 < sum(dropped) / len(dropped) < 0.4  # 240 copies, p = 0.3
    assert any(not torch.equal(a, b) for a, b in zip(before[0], var.trainable))
    restore(var, before)
    assert all(torch.equal(a, b) for a, b in zip(before[0], var.trainable))
    state = [t for p in var.trainable for t in var.optimizer.state[p].values() if torch.is_tensor(t)]
    assert state and all(not t.any() for t in state)  # as a fresh optimiser's


@pytest.mark.parametrize("flag", ["--variational.capture", "--prior.capture"])
def test_capture_needs_a_cuda_device(tmp_path, flag):
    from conftest import assert_clean_error, cli

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert_clean_error(cli("train", "--preset", "tiny-sd", flag, "--output-dir", tmp_path / "o"), flag, tmp_path / "o")


def test_prior_capture_needs_the_fused_call(monkeypatch):
    """--prior.capture graphs the one UNet call of VSD/ESD with the LoRA on the prior's UNet: where a run makes no
    such call (--eager, SDS, Perp-Neg, a LoRA on another base model, the synthetic world) it says so."""
    import esd_gs.config
    from esd_gs.commands.args import parse_train_args
    from esd_gs.errors import UserError

    monkeypatch.setattr(esd_gs.config, "pick_device", lambda name: torch.device("cuda"))  # as on a GPU machine
    esd_gs.config.check_combinations(parse_train_args(["--preset", "tiny-sd", "--prior.capture"]))
    for flags in (["--eager"], ["--guidance", "sds"], ["--prior.perp-neg"], ["--variational.base-model", "sd21"],
                  ["--world", "synthetic"]):
        cfg = parse_train_args(["--preset", "tiny-sd", "--prior.capture", *flags])
        with pytest.raises(UserError, match="--prior.capture graphs the one UNet call"):
            esd_gs.config.check_combinations(cfg)
