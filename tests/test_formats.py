"""Export formats and their frames: up-axis turns (renders unchanged), glTF KHR_gaussian_splatting and SPZ round
trips through our readers and, where node and @playcanvas/splat-transform are installed, an independent one."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from esd_gs.core.cameras import make_cameras
from esd_gs.core.gaussians import splats_from_tensors
from esd_gs.io.gltf import EXT, read_glb
from esd_gs.io.orient import UP_ROTATIONS, from_up, rotate_splats, to_up
from esd_gs.io.ply import read_ply, write_ply
from esd_gs.io.spz import read_spz
from esd_gs.render import render

from conftest import assert_clean_error, cli
from scenes import small_scene

REPO = Path(__file__).resolve().parents[1]


def unit_quats(q: torch.Tensor) -> torch.Tensor:
    """Normalised, sign fixed (q and -q are one rotation)."""
    q = torch.nn.functional.normalize(q, dim=-1)
    return q * torch.where(q[:, :1] < 0, -1.0, 1.0)


def assert_same_splats(a, b, tol: dict[str, float]) -> None:
    for k, t in tol.items():
        x, y = (unit_quats(a[k]), unit_quats(b[k])) if k == "quats" else (a[k], b[k])
        assert x.shape == y.shape, (k, x.shape, y.shape)
        err = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
        assert err <= t, (k, err, t)


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


@pytest.mark.parametrize("rotation", ["y", "-y", "random"])
def test_turned_splats_render_the_same_from_turned_cameras(rotation):
    """Positions, quaternions and SH bands (degree 3) turn together: the turned scene seen from the turned
    camera is the same image, colour included (the SH would show a wrong turn of the bands)."""
    scene = small_scene(n=60, sh_degree=3)
    scene["shN"].data *= 8.0  # strong view dependence
    r = random_rotation(3) if rotation == "random" else UP_ROTATIONS[rotation].double()
    turned = splats_from_tensors(rotate_splats(scene, r))
    cams = make_cameras(torch.tensor([20.0, 140.0, -100.0]), torch.tensor([10.0, 35.0, -20.0]), 1.5, 50.0, 40)
    cams.viewmats = cams.viewmats.double()
    cams.Ks = cams.Ks.double()
    before = render(scene, cams, backend="torch").rgb
    turned_cams = make_cameras(torch.tensor([20.0, 140.0, -100.0]), torch.tensor([10.0, 35.0, -20.0]), 1.5, 50.0, 40)
    world_to_cam = cams.viewmats.clone()
    world_to_cam[:, :3, :3] = cams.viewmats[:, :3, :3] @ r.T  # x_cam = V x_old = V R^T x_new
    turned_cams.viewmats, turned_cams.Ks = world_to_cam, cams.Ks
    after = render(turned, turned_cams, backend="torch").rgb
    assert before.std() > 0.05
    assert (before - after).abs().max() < 1e-6
    back = from_up(to_up(scene, "y"), "y")
    assert_same_splats(scene, back, {"means": 1e-12, "quats": 1e-12, "shN": 1e-12})


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_glb_is_khr_gaussian_splatting_y_up_and_reads_back(tmp_path, sh_degree):
    scene = small_scene(n=80, dtype=torch.float32, sh_degree=sh_degree)
    ply = tmp_path / "s.ply"
    write_ply(ply, scene)
    r = cli("export", ply, "--glb", tmp_path / "s.glb", "--spz", tmp_path / "s.spz")
    assert r.returncode == 0, r.stderr
    assert "s.glb (80 Gaussians, glTF KHR_gaussian_splatting, y-up)" in r.stdout
    # the JSON chunk: the ratified extension's names, a point primitive, every band of the degree
    raw = (tmp_path / "s.glb").read_bytes()
    doc = json.loads(raw[20:20 + int.from_bytes(raw[12:16], "little")])
    primitive = doc["meshes"][0]["primitives"][0]
    assert doc["extensionsUsed"] == [EXT] and primitive["mode"] == 0
    assert primitive["extensions"][EXT] == {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}
    bands = [a for a in primitive["attributes"] if a.startswith(f"{EXT}:SH_DEGREE_")]
    assert len(bands) == (sh_degree + 1) ** 2
    position = doc["accessors"][primitive["attributes"]["POSITION"]]
    assert position["count"] == 80 and len(position["min"]) == 3
    # activated values in the file, our layout back after undoing the y-up turn
    glb = read_glb(tmp_path / "s.glb")
    back = from_up(glb, "y")
    truth = read_ply(ply)
    assert_same_splats(truth, back, {"means": 1e-6, "quats": 1e-6, "scales": 1e-5, "opacities": 1e-4, "sh0": 0,
                                     "shN": 1e-6})
    assert torch.allclose(glb["means"], truth["means"] @ UP_ROTATIONS["y"].T)
    # SPZ: its quantisation (12 fractional bits, 8-bit log scales / opacity / colour / SH, smallest-three quats)
    # (an SH band's rounding error, 1/256 per coefficient, is turned back with the band: up to sqrt(7)x)
    spz = from_up(read_spz(tmp_path / "s.spz"), "y")
    assert_same_splats(truth, spz, {"means": 2 ** -12, "quats": 0.01, "scales": 1 / 32 + 1e-6, "sh0": 0.02,
                                    "shN": 7 ** 0.5 / 256})
    alpha = torch.sigmoid
    assert (alpha(spz["opacities"]) - alpha(truth["opacities"])).abs().max() <= 1 / 510 + 1e-6


def test_export_up_flag_and_bad_files(tmp_path):
    scene = small_scene(n=30, dtype=torch.float32, sh_degree=1)
    ply = tmp_path / "s.ply"
    write_ply(ply, scene)
    assert cli("export", ply, "--glb", tmp_path / "z.glb", "--up", "z").returncode == 0
    assert torch.allclose(read_glb(tmp_path / "z.glb")["means"], scene["means"].detach())
    assert cli("export", ply, "--ply", tmp_path / "down.ply", "--up", "-y").returncode == 0
    assert torch.allclose(raw_means(tmp_path / "down.ply"), scene["means"].detach() @ UP_ROTATIONS["-y"].T, atol=1e-6)
    back = read_ply(tmp_path / "down.ply")  # the header names the frame: our reader turns it back
    assert_same_splats(scene, back, {"means": 1e-6, "quats": 1e-6, "sh0": 0, "shN": 1e-5})
    assert_clean_error(cli("export", ply, "--glb", tmp_path / "x.glb", "--up", "x"), "--up")
    (tmp_path / "bad.glb").write_bytes(b"glTF" + os.urandom(200))
    with pytest.raises(Exception, match="not a readable .glb"):
        read_glb(tmp_path / "bad.glb")
    (tmp_path / "bad.spz").write_bytes(os.urandom(200))
    with pytest.raises(Exception, match="not a readable .spz"):
        read_spz(tmp_path / "bad.spz")


def raw_means(path: Path) -> torch.Tensor:
    """x y z as stored in a PLY, in whatever frame it was written (plyfile, no turning back)."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"]
    return torch.stack([torch.as_tensor(v[k].copy()) for k in "xyz"], dim=1)


def test_a_runs_splats_ply_is_upright_in_superSplats_frame_and_reads_back(tmp_path):
    """splats.ply is written in INRIA/COLMAP's frame (y down, the front towards +z), which SuperSplat shows
    upright, and says so in its header; every esd-gs reader turns it back into training's z-up frame."""
    from esd_gs.run.trainer import Trainer

    from conftest import tiny_synthetic

    trainer = Trainer(tiny_synthetic(tmp_path, run_name="r", steps=2))
    trainer.train()
    path = tmp_path / "r" / "splats.ply"
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "comment esd-gs up -y" in header and "upright in SuperSplat" in header
    ours = {k: v.detach() for k, v in trainer.splats.items()}
    assert torch.allclose(raw_means(path), ours["means"] @ UP_ROTATIONS["-y"].T, atol=1e-6)
    assert_same_splats(ours, read_ply(path), {"means": 1e-6, "quats": 1e-6, "scales": 0, "opacities": 0, "sh0": 0})
    # the truth's head, written so, stands upright: its top (our +z) is SuperSplat's up, the file's -y
    up_in_file = torch.tensor([0.0, 0.0, 1.0]) @ UP_ROTATIONS["-y"].T
    assert torch.equal(up_in_file, torch.tensor([0.0, -1.0, 0.0]))


def splat_transform() -> str | None:
    """@playcanvas/splat-transform's CLI: on PATH, or installed under benchmarks/interop/ (.ci/run does so
    when npm exists)."""
    local = REPO / "benchmarks" / "interop" / "node_modules" / ".bin" / "splat-transform"
    return shutil.which("splat-transform") or (str(local) if local.is_file() and shutil.which("node") else None)


@pytest.mark.skipif(splat_transform() is None, reason="node with @playcanvas/splat-transform is not installed "
                                                     "(npm install --prefix benchmarks/interop)")
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_independent_reader_and_writer_agree(tmp_path, sh_degree):
    """PlayCanvas's converter reads our SPZ and compressed PLY (degree 0 without an SH element) back to PLY, and
    writes a glb from our PLY that our reader reads (splat-transform turns PLY's frame 180 deg about z for glTF)."""
    scene = small_scene(n=200, dtype=torch.float32, sh_degree=sh_degree)
    ply = tmp_path / "s.ply"
    write_ply(ply, scene)
    assert cli("export", ply, "--spz", tmp_path / "s.spz", "--up", "z", "--ply", tmp_path / "s.compressed.ply",
               "--compressed").returncode == 0
    truth = read_ply(ply)

    def convert(src: Path, dst: Path) -> None:
        subprocess.run([splat_transform(), "-q", "-w", str(src), str(dst)], check=True, timeout=120,
                       capture_output=True)

    convert(tmp_path / "s.spz", tmp_path / "from_spz.ply")
    assert_same_splats(truth, read_ply(tmp_path / "from_spz.ply"),
                       {"means": 2 ** -12, "quats": 0.01, "scales": 1 / 32 + 1e-6, "shN": 1 / 256 + 1e-6})
    convert(tmp_path / "s.compressed.ply", tmp_path / "from_compressed.ply")
    decoded = read_ply(tmp_path / "from_compressed.ply")  # in gsplat's chunk order: match splats by position
    match = torch.cdist(truth["means"], decoded["means"]).argmin(dim=1)
    assert len(set(match.tolist())) == len(match)
    assert_same_splats(truth, {k: v[match] for k, v in decoded.items()}, {"means": 0.01, "quats": 0.01, "sh0": 0.05})
    convert(ply, tmp_path / "theirs.glb")
    theirs = rotate_splats(read_glb(tmp_path / "theirs.glb"), torch.diag(torch.tensor([-1.0, -1.0, 1.0])))
    assert_same_splats(truth, theirs, {"means": 1e-6, "quats": 1e-6, "scales": 1e-5, "sh0": 1e-6, "shN": 1e-5})


VALIDATOR = REPO / "benchmarks" / "interop" / "validate_gltf.mjs"


@pytest.mark.skipif(not (shutil.which("node") and (REPO / "benchmarks" / "interop" / "node_modules" /
                                                  "gltf-validator").is_dir()),
                    reason="node with gltf-validator is not installed (npm install --prefix benchmarks/interop)")
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_khronos_validator_finds_nothing_but_the_extension(tmp_path, sh_degree):
    """The Khronos glTF validator does not know KHR_gaussian_splatting yet: it may say so and call the
    extension's attributes unknown; anything else (a bufferView without its target, ...) is a defect."""
    from esd_gs.io.gltf import write_glb

    write_glb(tmp_path / "s.glb", small_scene(n=40, dtype=torch.float32, sh_degree=sh_degree))
    done = subprocess.run(["node", str(VALIDATOR), str(tmp_path / "s.glb")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout)["messages"]
    unexpected = [m for m in messages if not (
        (m["code"] == "UNSUPPORTED_EXTENSION" and EXT in m["message"])
        or (m["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE" and m["pointer"].split("/")[-1].startswith(f"{EXT}:")))]
    assert not unexpected, unexpected
    assert any(m["code"] == "UNSUPPORTED_EXTENSION" for m in messages)  # the validator did read the file


@pytest.mark.parametrize("sh_degree", [0, 2])
def test_compressed_ply_says_what_it_leaves_out_and_reads_back(tmp_path, sh_degree):
    """The compressed layout drops splats with opacity <= 1/255: the printed count is the written count, a
    line says how many were left out, our reader gives the kept splats back (within the format's quantisation)
    and a degree-0 file has no SH element (no phantom degree-1 bands)."""
    scene = small_scene(n=300, dtype=torch.float32, sh_degree=sh_degree)
    with torch.no_grad():
        scene["opacities"][:7] = -8.0  # alpha 0.0003
    write_ply(tmp_path / "s.ply", scene)
    r = cli("export", tmp_path / "s.ply", "--ply", tmp_path / "c.ply", "--compressed", "--up", "z")
    assert r.returncode == 0, r.stderr
    assert "(293 Gaussians" in r.stdout and "7 with opacity <= 1/255 left out" in r.stdout, r.stdout
    header = (tmp_path / "c.ply").read_bytes().split(b"end_header")[0].decode()
    assert "element vertex 293" in header and ("element sh" in header) == (sh_degree > 0)
    decoded = read_ply(tmp_path / "c.ply")
    assert decoded["shN"].shape == (293, (sh_degree + 1) ** 2 - 1, 3)
    kept = {k: v.detach()[7:] for k, v in scene.items()}
    match = torch.cdist(kept["means"], decoded["means"]).argmin(dim=1)
    assert sorted(match.tolist()) == list(range(293))
    assert_same_splats(kept, {k: v[match] for k, v in decoded.items()},
                       {"means": 0.002, "quats": 0.004, "scales": 0.02, "sh0": 0.03, "shN": 8 / 256 + 1e-6})
    alpha = lambda o: torch.sigmoid(o)  # noqa: E731
    assert (alpha(decoded["opacities"][match]) - alpha(kept["opacities"])).abs().max() <= 1 / 255


def test_compressed_export_of_transparent_splats_is_one_line(tmp_path):
    scene = small_scene(n=20, dtype=torch.float32)
    with torch.no_grad():
        scene["opacities"][:] = -9.0
    write_ply(tmp_path / "s.ply", scene)
    assert_clean_error(cli("export", tmp_path / "s.ply", "--ply", tmp_path / "c.ply", "--compressed"), "transparent")
    assert not (tmp_path / "c.ply").exists()


def test_export_yaw_turns_the_object_and_front_finds_the_synthetic_heads_face(tmp_path):
    from esd_gs.io.orient import yaw_rotation
    from esd_gs.synthetic.head import head_splats
    from esd_gs.synthetic.janus import janus_report

    scene = small_scene(n=30, dtype=torch.float32, sh_degree=1)
    write_ply(tmp_path / "s.ply", scene)
    assert cli("export", tmp_path / "s.ply", "--ply", tmp_path / "t.ply", "--up", "z", "--yaw", "90").returncode == 0
    turned = read_ply(tmp_path / "t.ply")
    assert torch.allclose(turned["means"], scene["means"].detach() @ yaw_rotation(90.0).T, atol=1e-6)
    assert torch.allclose(turned["means"][:, 0], -scene["means"].detach()[:, 1], atol=1e-6)  # +y went to -x

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("world: synthetic\n")
    head = head_splats()
    write_ply(run / "splats.ply", rotate_splats(head, yaw_rotation(60.0)))  # its face now seen from +60 deg
    assert janus_report(read_ply(run / "splats.ply"))["front_azimuth_deg"] == pytest.approx(60.0, abs=5.0)
    r = cli("export", run, "--ply", tmp_path / "front.ply", "--up", "z", "--yaw", "front")
    assert r.returncode == 0, r.stderr
    assert janus_report(read_ply(tmp_path / "front.ply"))["front_azimuth_deg"] == pytest.approx(0.0, abs=5.0)
    assert_clean_error(cli("export", tmp_path / "s.ply", "--ply", tmp_path / "x.ply", "--yaw", "front"), "run folder")
    assert_clean_error(cli("export", tmp_path / "s.ply", "--ply", tmp_path / "x.ply", "--yaw", "left"), "--yaw")


def test_spz_refuses_positions_it_cannot_hold(tmp_path):
    scene = small_scene(n=10, dtype=torch.float32)
    with torch.no_grad():
        scene["means"][3, 1] = 1e30
    write_ply(tmp_path / "s.ply", scene)
    assert_clean_error(cli("export", tmp_path / "s.ply", "--spz", tmp_path / "s.spz"), "SPZ holds positions")
    assert not (tmp_path / "s.spz").exists()
