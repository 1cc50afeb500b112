"""User tools: render, export (mesh, .splat, PLY), view, clip, inception, bench."""

import json
import math
import time
import urllib.request

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from esd_gs.core.cameras import make_cameras
from esd_gs.io.ply import read_ply, write_ply
from esd_gs.render import render

from conftest import assert_clean_error, cli, free_port, load_script, run_cli
from scenes import colored_blob_scene, surface_sphere


@pytest.fixture
def blob_ply(tmp_path):
    path = tmp_path / "blob.ply"
    write_ply(path, colored_blob_scene())
    return path


def test_render_writes_requested_frames_rgb_and_depth(blob_ply, tmp_path):
    out = tmp_path / "tt.gif"
    r = run_cli("render", blob_ply, "--frames", "7", "--resolution", "48", "--depth", "--output", out)
    assert r.returncode == 0, r.stderr
    rgb, depth = iio.imread(out), iio.imread(tmp_path / "tt_depth.gif")
    assert rgb.shape[:3] == (7, 48, 48) and depth.shape[:3] == (7, 48, 48)
    assert not np.array_equal(rgb[0], rgb[2])  # it turns
    # frame 0 looks from +x at the red lobe: the centre pixel is red
    centre = rgb[0, 24, 24, :3].astype(int)
    assert centre[0] > 150 and centre[1] < 120 and centre[2] < 120, centre
    # depth: object grey, background white
    assert depth[0, 0, 0, :3].min() == 255 and depth[0, 24, 24, :3].max() < 255

    r = cli("render", blob_ply, "--frames", "3", "--resolution", "32", "--format", "png",
                "--output", tmp_path / "frames")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:04d}.png" for i in range(3)]


def test_render_bad_input(tmp_path, blob_ply):
    assert_clean_error(run_cli("render", tmp_path / "missing.ply"), "missing.ply")
    assert_clean_error(cli("render", blob_ply, "--frames", "0"), "--frames must be positive")


@pytest.mark.slow
def test_mesh_of_known_sphere(tmp_path):
    """Chamfer distance to the true sphere < 2% of its size, colours close, floaters gone."""
    import open3d as o3d

    ply = tmp_path / "sphere.ply"
    write_ply(ply, surface_sphere())
    r = cli("export", ply, "--mesh", tmp_path / "sphere.obj", "--views", "48", "--resolution", "192")
    assert r.returncode == 0, r.stderr
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "sphere.obj"))
    v, c = np.asarray(mesh.vertices), np.asarray(mesh.vertex_colors)
    assert len(mesh.triangles) > 1000
    samples = np.asarray(mesh.sample_points_uniformly(20000).points)
    mesh_to_true = np.abs(np.linalg.norm(samples, axis=1) - 0.4).mean()
    g = np.random.default_rng(0).normal(size=(20000, 3))
    truth = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(0.4 * g / np.linalg.norm(g, axis=1, keepdims=True)))
    true_to_mesh = np.mean(truth.compute_point_cloud_distance(o3d.geometry.PointCloud(
        o3d.utility.Vector3dVector(samples))))
    chamfer = 0.5 * (mesh_to_true + true_to_mesh)
    assert chamfer < 0.02 * 0.8, chamfer  # object size = diameter 0.8
    assert np.abs(np.linalg.norm(v, axis=1) - 0.4).max() < 0.05  # no floater survived cleanup
    true_colour = 0.5 + 0.4 * v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.abs(c - true_colour).mean() < 0.05

    r = cli("export", ply, "--mesh", tmp_path / "sphere.glb", "--views", "16", "--resolution", "96",
                "--voxel-size", "0.02", "--target-triangles", "2000")
    assert r.returncode == 0, r.stderr
    glb = o3d.io.read_triangle_mesh(str(tmp_path / "sphere.glb"))
    assert 0 < len(glb.triangles) <= 2000 and len(glb.vertex_colors) == len(glb.vertices)


def test_export_splat_and_truncated_ply(tmp_path):
    from scenes import small_scene

    ply = tmp_path / "deg2.ply"
    splats = small_scene(n=40, dtype=torch.float32, sh_degree=2)
    write_ply(ply, splats)
    r = cli("export", ply, "--splat", tmp_path / "x.splat", "--ply", tmp_path / "deg0.ply", "--sh-degree", "0")
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "x.splat").read_bytes()
    assert len(data) == 32 * 40
    positions = np.frombuffer(data, dtype=np.float32).reshape(40, 8)[:, :3]
    from esd_gs.io.orient import UP_ROTATIONS  # .splat's default frame: INRIA/COLMAP's, as its viewers assume

    expected = (splats["means"].detach() @ UP_ROTATIONS["-y"].T).numpy()
    assert np.allclose(np.sort(positions, axis=0), np.sort(expected, axis=0), atol=1e-6)
    back = read_ply(tmp_path / "deg0.ply")
    assert back["shN"].shape == (40, 0, 3)
    assert torch.equal(back["sh0"], splats["sh0"].detach())
    assert_clean_error(cli("export", ply), "nothing to export")
    assert_clean_error(cli("export", ply, "--ply", tmp_path / "y.ply", "--sh-degree", "3"), "--sh-degree")
    assert_clean_error(cli("export", ply, "--mesh", tmp_path / "m.stl"), "not supported")


@pytest.mark.parametrize("sh_degree", [0, 2])
def test_compressed_ply_has_an_sh_layout_web_viewers_read(tmp_path, sh_degree):
    """SuperSplat's compressed PLY: an `sh` element of 9, 24 or 45 bands, or none at degree 0 as SuperSplat writes
    it (PlayCanvas hangs on gsplat's empty one; zero degree-1 bands in its place read as +0.0156 everywhere)."""
    from plyfile import PlyData

    from scenes import small_scene

    ply = tmp_path / "in.ply"
    write_ply(ply, small_scene(n=300, dtype=torch.float32, sh_degree=sh_degree))
    r = cli("export", ply, "--ply", tmp_path / "c.ply", "--compressed")
    assert r.returncode == 0, r.stderr
    data = PlyData.read(str(tmp_path / "c.ply"))
    assert [e.name for e in data.elements] == ["chunk", "vertex"] + (["sh"] if sh_degree else [])
    assert data["vertex"].count == 300 and data["chunk"].count == 2
    if sh_degree:
        assert data["sh"].count == 300 and [p.name for p in data["sh"].properties] == [f"f_rest_{i}" for i in range(24)]


def test_viewer_serves_renders_and_stops():
    import viser.transforms as vtf

    from esd_gs.run.viewer import Viewer, camera_from_pose, render_image

    splats = colored_blob_scene()
    port = free_port()
    viewer = Viewer(splats, port=port)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10).read().decode()
        assert "<html" in page.lower()
        # a browser pose (OpenCV axes, camera-to-world) renders exactly what our own camera renders
        ours = make_cameras(torch.tensor([30.0]), torch.tensor([20.0]), 1.8, 50.0, 64, 48)
        c2w = ours.c2w[0].double().numpy()
        cams = camera_from_pose(vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3], np.radians(50.0), 64, 48)
        assert torch.allclose(cams.viewmats, ours.viewmats, atol=1e-5)
        image = render_image(splats, cams)
        expected = render(splats, ours, torch.ones(1, 3)).rgb[0].detach()
        assert image.shape == (48, 64, 3)
        assert np.abs(image.astype(float) - expected.numpy() * 255).max() <= 1.0
    finally:
        viewer.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=2)


def test_viewer_frames_the_object_on_load():
    """The initial camera looks at the object's centre from where its bounding sphere fills 60% of the view
    angle, whatever transparent splats lie far away: checked on a render from that pose."""
    import viser.transforms as vtf

    from esd_gs.render import render_frames
    from esd_gs.run.viewer import camera_from_pose, framing_pose

    sphere = surface_sphere(n=4000, floaters=0)
    center = torch.tensor([0.3, -0.2, 0.1])
    faint = 5.0 + torch.randn(400, 3)  # far away and nearly transparent: must not move the framing
    means = torch.cat([sphere["means"].detach() + center, faint])
    opacities = torch.cat([sphere["opacities"].detach(), torch.full((400,), -6.0)])
    fovy = math.radians(75.0)
    position, look_at = framing_pose(means, opacities, fovy)
    assert np.allclose(look_at, center.numpy(), atol=0.03)

    forward = (look_at - position) / np.linalg.norm(look_at - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward], axis=1)  # OpenCV: x right, y down, z ahead
    cams = camera_from_pose(vtf.SO3.from_matrix(rotation).wxyz, position, fovy, 64, 64)
    with torch.no_grad():
        sphere["means"] += center
    alpha = render_frames(sphere, cams, (1.0, 1.0, 1.0), depth=False)[2][0].squeeze(-1)
    rows = torch.nonzero(alpha.amax(dim=1) > 0.5).squeeze(-1)
    height = (rows.max() - rows.min() + 1).item() / 64
    expected = math.tan(0.6 * fovy / 2) / math.tan(fovy / 2)  # the sphere's silhouette, centred
    assert abs(height - expected) < 0.05
    ys, xs = torch.nonzero(alpha > 0.5, as_tuple=True)
    assert abs(ys.float().mean().item() - 31.5) < 1.5 and abs(xs.float().mean().item() - 31.5) < 1.5


def test_clip_score_of_a_run_matches_clip_by_hand(tmp_path):
    """`esd-gs clip RUN` scores the run's own prompt: per view 100 x cos(projected image, projected text
    embedding) clipped at 0, recomputed here through CLIP's vision and text towers."""
    from transformers import AutoTokenizer, CLIPModel

    from esd_gs.metrics.clip import load_clip
    from esd_gs.render.turntable import render_turntable
    from tiny_sd import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    run = tmp_path / "run"
    run.mkdir()
    splats = colored_blob_scene()
    write_ply(run / "splats.ply", splats)
    (run / "config.yaml").write_text("prompt: a red blob\nsteps: 3\n")
    r = cli("clip", run, "--model", clip, "--views", "3", "--resolution", "32")
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "clip.json").read_text())
    assert report["prompt"] == "a red blob" and len(report["per_view"]) == 3
    assert report["clip_score"] == pytest.approx(sum(report["per_view"]) / 3)

    model = CLIPModel.from_pretrained(clip).eval()
    frames = render_turntable(splats, 3, 32, depth=False)[0]
    pixels = load_clip(str(clip), torch.device("cpu"))[1](images=list((frames * 255 + 0.5).byte().numpy()),
                                                          return_tensors="pt")["pixel_values"]
    tokens = AutoTokenizer.from_pretrained(clip)(["a red blob"], return_tensors="pt")
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    expected = (100 * torch.nn.functional.cosine_similarity(image, text)).clamp_min(0)
    assert torch.allclose(torch.tensor(report["per_view"]), expected, atol=1e-3)

    plain = tmp_path / "blob.ply"
    write_ply(plain, splats)
    assert_clean_error(cli("clip", plain, "--model", clip), "no prompt to score against")
    assert_clean_error(cli("clip", plain, "--prompt", "x", "--model", "openai/clip-vit-base-patch32"),
                       "no CLIP weights for 'openai/clip-vit-base-patch32'")
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("clip", plain, "--prompt", "x", "--model", tmp_path / "empty"),
                       "not a CLIP folder (missing config.json)")
    (run / "config.yaml").write_text("prompt: [a red blob\n")  # a damaged run config: one line, not YAML's three
    assert_clean_error(cli("clip", run, "--model", clip), "config.yaml is not valid YAML (line 2)")


def test_bench_commands_print_json():
    r = cli("bench", "raster", "--num-gaussians", "500", "--resolution", "32", "--repeats", "2", "--json")
    assert r.returncode == 0, r.stderr
    raster = json.loads(r.stdout)
    assert raster["backend"] == "torch" and raster["num_gaussians"] == 500 and raster["resolution"] == 32
    assert 0 < raster["fwd_ms"] <= raster["fwd_bwd_ms"] and raster["visible_gaussians"] > 0

    r = cli("bench", "step", "--steps", "2", "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)
    assert {"render", "encode", "prior", "variational", "variational_training", "backward", "optimizer"} <= \
        set(step["components_ms"])
    assert step["it_s"] > 0 and sum(step["components_ms"].values()) <= step["step_ms_timed_components"] * 1.05

    counts = {}
    for eager in ([], ["--eager"]):
        r = cli("bench", "step", "--full-size", "--channel-scale", "0.25", "--resolution", "64", "--steps", "1",
                "--warmup", "1", "--count-ops", *eager, "--json")
        assert r.returncode == 0, r.stderr
        full = json.loads(r.stdout)
        assert full["tflop_per_step"] > 0 and full["floor_ratio"] > 1 and full["resolution"] == 64
        assert sum(full["operations_by_component"].values()) == full["operations"]
        counts[bool(eager)] = full["operations_by_component"]
    # one UNet call for the prior and the branches instead of two: fewer operations, the same training step
    assert "prior_and_variational" in counts[False] and {"prior", "variational"} <= set(counts[True])
    assert counts[False]["prior_and_variational"] < counts[True]["prior"] + counts[True]["variational"]
    assert counts[False]["variational_training"] == counts[True]["variational_training"]
    assert_clean_error(cli("bench", "nope"), "usage: esd-gs bench")


def test_gpu_check_dry_run_writes_the_report(tmp_path, repo):
    """The device check's CPU side: it lists its phases with budgets summing to <= 360 s (a GPU lease is 15
    minutes, the machine's start and a rerun included) and reports every phase as run or skipped, the phases
    issue 38 measures among them."""
    import os
    import subprocess
    import sys

    r = subprocess.run(["bash", str(repo / "benchmarks" / "gpu" / "check.sh"), "--dry-run"], capture_output=True,
                       text=True, env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    statuses = {name: s["status"] for name, s in report["phases"].items()}
    assert statuses["environment"] == "run" and set(statuses.values()) <= {"run", "skipped"}, statuses
    budgets = {name: s["budget_s"] for name, s in report["phases"].items()}
    assert report["budget_s"] == sum(budgets.values()) <= 360
    assert {"step_bf16_eager", "step_bf16", "step_bf16_captured", "step_bf16_graphed", "cli_train",
            "preview"} <= set(budgets)
    listed = r.stdout.splitlines()[0]
    assert all(f"{name} {budget}" in listed for name, budget in budgets.items()), listed
    assert (tmp_path / "gpu_check.log").exists()


def test_gpu_check_parity_keeps_what_pytest_printed_when_cut_off(monkeypatch):
    """A parity run that outlives its budget ends with pytest's own output in the error (the 2026-11-30 run
    lost it to the phase's alarm), and a finished one reports pytest's last line."""
    import subprocess

    check = load_script("benchmarks/gpu/check.py", "gpu_check")

    def cut_off(command, **kw):
        assert "--durations=0" in command and kw["timeout"] == 52
        raise subprocess.TimeoutExpired(command, kw["timeout"], output=b"test_cuda.py::a PASSED\n")

    monkeypatch.setattr(check.subprocess, "run", cut_off)
    with pytest.raises(RuntimeError, match=r"stopped after 52 s; it had printed:\ntest_cuda.py::a PASSED"):
        check.parity(52)
    monkeypatch.setattr(check.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 0, "x\n3 passed in 21.6s\n", ""))
    assert check.parity(52) == {"exit_code": 0, "summary": "3 passed in 21.6s", "output_tail": "x\n3 passed in 21.6s"}


def test_gpu_check_says_whether_gsplat_was_built_ahead_or_compiled(tmp_path):
    """The gsplat phase's report: the import's time, and prebuilt true only when gsplat took the extension of
    the wheel built ahead (gsplat.csrc), not its JIT module; a failed build keeps its output."""
    import subprocess

    check = load_script("benchmarks/gpu/check.py", "gpu_check")
    build = object.__new__(check.GsplatBuild)
    build.env, build.log, build.t0 = {"MAX_JOBS": "14", "TORCH_CUDA_ARCH_LIST": "9.0"}, tmp_path / "log", 0.0
    build.proc = subprocess.Popen(["true"])
    build.proc.wait()
    for line, prebuilt in (("GSPLAT_OK 0.9 gsplat.csrc", True), ("GSPLAT_OK 64.2 gsplat_cuda", False)):
        build.log.write_text(f"gsplat: Setting up CUDA\n{line}\n")
        result = build.wait()
        assert result["built"] and result["prebuilt"] is prebuilt and result["build_s"] == float(line.split()[1])
    build.log.write_text("error: nvcc failed\n")
    result = build.wait()
    assert not result["built"] and "prebuilt" not in result and result["error"] == "error: nvcc failed"


def test_gpu_wheel_list_resolves(tmp_path, repo):
    """Every wheel the GPU machine needs exists for its Python 3.12 (asks PyPI; skipped offline)."""
    import socket
    import subprocess
    import sys

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("PyPI is not reachable from here")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed",
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "--target", str(tmp_path / "t"), "--report", str(tmp_path / "report.json"),
                        "-r", str(repo / "benchmarks" / "gpu" / "wheels.txt")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {i["metadata"]["name"].lower().replace("_", "-")
             for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    wanted = {line.split("==")[0].lower().replace("_", "-") for line in
              (repo / "benchmarks" / "gpu" / "wheels.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert names == wanted


def test_inception_metrics_by_hand():
    """IQ = mean per-view entropy, IV = entropy of the mean posterior, IS = exp(IV - IQ)."""
    from esd_gs.metrics.inception import inception_metrics

    distinct = inception_metrics(torch.eye(4, 10))  # four views, four different sure classes
    assert distinct["inception_quality"] == pytest.approx(0, abs=1e-6)
    assert distinct["inception_variety"] == pytest.approx(math.log(4))
    assert distinct["inception_score"] == pytest.approx(4)
    half = inception_metrics(torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]))
    assert half["per_view_entropy"] == pytest.approx([math.log(2)] * 2)
    assert half["inception_variety"] == pytest.approx(1.5 * math.log(2))  # mean [1/4, 1/2, 1/4]
    assert half["inception_score"] == pytest.approx(math.sqrt(2))
    same = inception_metrics(torch.full((3, 5), 0.2))  # undecided and all alike
    assert same["inception_quality"] == pytest.approx(math.log(5)) and same["inception_score"] == pytest.approx(1)


def test_inception_without_torchvision_is_one_line(blob_ply, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # as where torchvision is absent or fails to import
    assert_clean_error(cli("inception", blob_ply, "--views", "2"), "esd-gs inception needs torchvision")


def test_inception_of_a_ply_matches_torchvision_by_hand(blob_ply, tmp_path):
    """`esd-gs inception PLY --weights FILE`: each view resized whole to 299, ImageNet-normalised, classified
    by torchvision's inception_v3 (random weights, classifier scaled so that posteriors are not one-hot)."""
    pytest.importorskip("torchvision.models", reason="torchvision does not import beside this torch build")
    from torchvision.models import inception_v3

    from esd_gs.render.turntable import render_turntable

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=True).eval()
    frames = render_turntable(colored_blob_scene(), 3, 64, depth=False)[0].permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(frames, size=(299, 299), mode="bilinear", antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        model.fc.bias.zero_()
        model.fc.weight /= model(x).std()  # logits of spread ~1
        p = model(x).softmax(-1)
    weights = tmp_path / "inception.pth"
    torch.save(model.state_dict(), weights)
    r = cli("inception", blob_ply, "--weights", weights, "--views", "3", "--resolution", "64")
    assert r.returncode == 0, r.stderr
    report = json.loads(blob_ply.with_suffix(".inception.json").read_text())

    entropies = -(p * p.log()).sum(-1)
    assert 0.5 < entropies.min() and torch.allclose(torch.tensor(report["per_view_entropy"]), entropies, atol=1e-3)
    assert report["inception_variety"] == pytest.approx(-(p.mean(0) * p.mean(0).log()).sum().item(), abs=1e-3)
    assert len(report["per_view_top_class"]) == 3

    assert_clean_error(cli("inception", blob_ply, "--weights", blob_ply), "cannot read Inception-v3 weights")
    assert_clean_error(cli("inception", blob_ply, "--weights", tmp_path / "nowhere.pth"),
                       "nowhere.pth: No such file or directory")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert_clean_error(cli("inception", blob_ply, "--weights", tmp_path / "other.pth"),
                       "is not an Inception-v3 state dict")


def test_train_viewer_sends_live_updates_and_pauses(tmp_path):
    """`train --viewer`: a client that connects while the run trains receives the status of each update and a
    fresh render of its view; the pause button holds training between steps until pressed again or stopped."""
    import multiprocessing
    import threading

    from esd_gs.run.trainer import Trainer
    from viser_client import ViserClient

    from conftest import tiny_synthetic

    port = free_port()
    trainer = Trainer(tiny_synthetic(tmp_path, run_name="live", steps=20, viewer=True, viewer_port=port,
                                     viewer_every=4))
    result = {}
    thread = threading.Thread(target=lambda: result.update(trainer.train()))
    thread.start()
    client = ViserClient(port)
    try:
        thread.join(timeout=300)
        time.sleep(0.5)
    finally:
        client.close()
    assert result["steps"] == 20
    statuses = [m["updates"]["_markdown"] for m in client.of_type("GuiUpdateMessage")
                if m["updates"].get("_markdown", "").startswith("step ")]
    steps = [int(s.split()[1]) for s in statuses]
    assert steps == sorted(steps) and len(steps) >= 3 and steps[-1] >= 16, statuses  # the last may not flush
    assert all(" of 20 · loss " in s and s.endswith(" Gaussians") for s in statuses), statuses
    images = client.of_type("BackgroundImageMessage")
    assert len(images) >= 2 and images[-1]["rgb_data"][:2] == b"\xff\xd8"  # re-rendered, as JPEG
    assert any(m["props"]["label"] == "Pause training" for m in client.of_type("GuiButtonMessage"))
    assert not multiprocessing.active_children()  # the viewer's process ended with the run


def test_live_viewer_start_failure_is_one_line_and_leaves_no_process():
    """The viewer's process fails to start (here: the CUDA-only backend on a CPU machine): the trainer gets its
    error as one line and no process is left behind."""
    import multiprocessing

    import torch

    from esd_gs.errors import UserError
    from esd_gs.run.viewer import LiveViewer

    if torch.cuda.is_available():
        pytest.skip("the gsplat backend starts on a CUDA machine")
    with pytest.raises(UserError, match=r"^--viewer: the gsplat backend needs a CUDA device"):
        LiveViewer(colored_blob_scene(), port=0, backend="gsplat")
    assert not multiprocessing.active_children()


def test_viewer_pause_holds_until_resumed_or_stopped():
    import threading

    from esd_gs.run.viewer import Viewer, wait_while_paused

    viewer = Viewer(colored_blob_scene(), port=free_port(), paused=threading.Event())
    try:
        stop, released = threading.Event(), threading.Event()
        viewer._toggle_pause()
        assert viewer.pause_button.label == "Resume training"
        waiter = threading.Thread(target=lambda: (wait_while_paused(viewer.paused, stop), released.set()))
        waiter.start()
        assert not released.wait(0.5)  # held
        viewer._toggle_pause()
        assert released.wait(2.0)  # resumed
        viewer._toggle_pause()
        released.clear()
        waiter = threading.Thread(target=lambda: (wait_while_paused(viewer.paused, stop), released.set()))
        waiter.start()
        assert not released.wait(0.3)
        stop.set()  # Ctrl-C while paused
        assert released.wait(2.0)
    finally:
        viewer.stop()
