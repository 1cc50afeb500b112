"""Every bad input: one line on stderr, exit code 2, no traceback, nothing written.

Most cases run the CLI in this process (`cli`); one per command runs the installed console script."""

import pytest
import torch

from esd_gs.io.ply import write_ply

from conftest import assert_clean_error, cli, run_cli
from scenes import small_scene

SYNTH = ["--preset", "demo", "--steps", "1"]


@pytest.mark.parametrize("args,fragment", [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "   "], "prompt is empty"),
    (["--steps", "0"], "--steps must be positive"),
    (["--lam", "1.5"], "--lam and --lam-final must lie in [0, 1]"),
    (["--lam-final", "-0.5"], "--lam and --lam-final must lie in [0, 1]"),
    (["--render.resolution", "64"], "not valid for the synthetic prior"),
    (["--gaussians.lr-means", "-0.1"], "must not be negative"),
    (["--cameras.radius", "1.5", "1.5"], "synthetic world trains on its photos' orbit"),
    (["--init-ply", "nowhere.ply"], "PLY file not found"),
    (["--gaussians.num-points", "0"], "num_points must be positive"),
    (["--gaussians.num-points", "-3"], "num_points must be positive"),
    (["--run-name", "../../x"], "plain folder name"),
    (["--steps", "1.5"], "--steps"),
    (["--guidance", "foo"], "invalid choice 'foo'"),
    (["--stepz", "3"], "did you mean --steps"),
    (["--log.turntable-frames", "-1"], "log.turntable_frames must be >= 0"),
    (["--log.keep-checkpoints", "0"], "log.keep_checkpoints must be >= 1"),
    (["--variational.camera-map-pins", "-1"], "camera_map_pins must be >= 0"),
    (["--variational.camera-map-sharpness", "0"], "camera_map_sharpness positive"),
    (["--variational.no-camera-map", "--variational.camera-map-pins", "8"], "add --variational.camera-map"),
])
def test_train_rejects_bad_values(tmp_path, args, fragment):
    out = tmp_path / "out"
    assert_clean_error(cli("train", *SYNTH, "--output-dir", out, *args), fragment, out)


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_tyro_errors_condense_to_one_line_in_either_box_style(encoding):
    """tyro draws its error box with Unicode lines on a UTF-8 stdout (a user's terminal) and with ASCII
    otherwise (the in-process `cli` above): both give the same line."""
    import contextlib
    import io

    from esd_gs.args import parse
    from esd_gs.config import TrainConfig
    from esd_gs.errors import UserError

    stdout = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    for argv, expected in [(["--lamm", "2"], "esd-gs train: Unrecognized options: --lamm, 2; did you mean --lam?"),
                           (["--world", "sd"], "esd-gs train: invalid choice 'sd' for argument '--world'.")]:
        with contextlib.redirect_stdout(stdout), pytest.raises(UserError) as err:
            parse(TrainConfig, argv, "esd-gs train")
        assert str(err.value).startswith(expected) and str(err.value).count("--help") == 1, str(err.value)


def test_train_console_script_reports_one_line(tmp_path):
    out = tmp_path / "out"
    assert_clean_error(run_cli("train", *SYNTH, "--output-dir", out, "--steps", "-1"), "--steps must be positive", out)


def test_unknown_preset(tmp_path):
    assert_clean_error(cli("train", "--preset", "nope", "--output-dir", tmp_path / "o"), "unknown preset 'nope'",
                       tmp_path / "o")


def test_unknown_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nrender:\n  resolutoin: 32\n")
    assert_clean_error(cli("train", "--preset", bad, "--output-dir", tmp_path / "o"),
                       "unknown config key 'render.resolutoin'", tmp_path / "o")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_error(cli("train", *SYNTH, "--output-dir", blocker / "sub"), "cannot create the run folder")


def test_janus_console_script_rejects_bad_ply(tmp_path):
    path = tmp_path / "x.ply"
    path.write_bytes(b"PK\x03\x04 zip")
    assert_clean_error(run_cli("janus", path), "not a PLY")
    assert not (tmp_path / "janus.json").exists()


@pytest.mark.parametrize("damage,fragment", [
    (lambda b: b[:-40], "truncated"),
    (lambda b: b.replace(b"property float scale_1", b"property float scale_9"), "missing fields: scale_1"),
    (lambda b: b[:b.index(b"end_header\n") + 11] + torch.tensor([float("nan")]).numpy().tobytes()
     + b[b.index(b"end_header\n") + 15:], "NaN"),
])
def test_train_rejects_damaged_init_ply(tmp_path, damage, fragment):
    write_ply(tmp_path / "ok.ply", small_scene(n=4, dtype=torch.float32))
    (tmp_path / "bad.ply").write_bytes(damage((tmp_path / "ok.ply").read_bytes()))
    out = tmp_path / "out"
    assert_clean_error(cli("train", *SYNTH, "--output-dir", out, "--init-ply", tmp_path / "bad.ply"), fragment, out)
