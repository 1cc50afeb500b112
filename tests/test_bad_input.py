"""Every bad input: one line on stderr, exit code 2, no traceback, nothing written."""

import pytest
import torch

from esd_gs.io.ply import write_ply

from conftest import run_cli
from scenes import small_scene

SYNTH = ["--preset", "demo", "--steps", "1"]


def assert_clean_error(r, fragment, out_dir=None):
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("args,fragment", [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "   "], "prompt is empty"),
    (["--steps", "0"], "--steps must be positive"),
    (["--lam", "1.5"], "--lam must lie in [0, 1]"),
    (["--render.resolution", "64"], "not valid for the synthetic prior"),
    (["--gaussians.lr-means", "-0.1"], "must not be negative"),
    (["--init-ply", "nowhere.ply"], "PLY file not found"),
])
def test_train_rejects_bad_values(tmp_path, args, fragment):
    out = tmp_path / "out"
    r = run_cli("train", *SYNTH, "--output-dir", out, *args)
    assert_clean_error(r, fragment, out)


def test_unknown_preset(tmp_path):
    assert_clean_error(run_cli("train", "--preset", "nope", "--output-dir", tmp_path / "o"), "unknown preset 'nope'",
                       tmp_path / "o")


def test_unknown_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nrender:\n  resolutoin: 32\n")
    assert_clean_error(run_cli("train", "--preset", bad, "--output-dir", tmp_path / "o"),
                       "unknown config key 'render.resolutoin'", tmp_path / "o")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_error(run_cli("train", *SYNTH, "--output-dir", blocker / "sub"), "cannot create the run folder")


@pytest.mark.parametrize("content,fragment", [
    (None, "not found"), (b"", "empty"), (b"PK\x03\x04 zip", "not a PLY"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\nend_header\n",
     "claims 1000000000000"),
])
def test_janus_rejects_bad_ply(tmp_path, content, fragment):
    path = tmp_path / "x.ply"
    if content is not None:
        path.write_bytes(content)
    assert_clean_error(run_cli("janus", path), fragment)
    assert not (tmp_path / "janus.json").exists()


@pytest.mark.parametrize("damage,fragment", [
    (lambda b: b[:-40], "truncated"),
    (lambda b: b.replace(b"property float scale_1", b"property float scale_9"), "missing fields: scale_1"),
])
def test_train_rejects_damaged_init_ply(tmp_path, damage, fragment):
    write_ply(tmp_path / "ok.ply", small_scene(n=4, dtype=torch.float32))
    (tmp_path / "bad.ply").write_bytes(damage((tmp_path / "ok.ply").read_bytes()))
    out = tmp_path / "out"
    assert_clean_error(run_cli("train", *SYNTH, "--output-dir", out, "--init-ply", tmp_path / "bad.ply"), fragment, out)


def test_init_ply_with_nan_is_refused(tmp_path):
    splats = small_scene(n=4, dtype=torch.float32)
    write_ply(tmp_path / "ok.ply", splats)
    data = (tmp_path / "ok.ply").read_bytes()
    header_end = data.index(b"end_header\n") + len(b"end_header\n")
    nan = torch.tensor([float("nan")]).numpy().tobytes()
    (tmp_path / "nan.ply").write_bytes(data[:header_end] + nan + data[header_end + 4:])
    out = tmp_path / "out"
    assert_clean_error(run_cli("train", *SYNTH, "--output-dir", out, "--init-ply", tmp_path / "nan.ply"), "NaN", out)
