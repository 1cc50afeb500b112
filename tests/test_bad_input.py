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
    # issue 41's testers: each once a traceback, a "training diverged" or a silent degenerate run
    (["--device", "potato"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device cuda"),
    (["--seed", str(2**64 + 1)], "'seed' must be in 0 .. 2**63 - 1"),
    (["--gaussians.init-opacity", "2"], "'gaussians.init_opacity' must be an opacity in (0, 1)"),
    (["--gaussians.init-scale", "-1"], "'gaussians.init_scale' must be positive"),
    (["--synthetic.num-images", "0"], "'synthetic.num_images' must be at least 1"),
    (["--synthetic.unet-channels", "3"], "'synthetic.unet_channels' must be a multiple of 8"),
    (["--synthetic.radius", "0"], "'synthetic.radius' must be positive"),
    (["--synthetic.fovy-deg", "0"], "'synthetic.fovy_deg' must be an angle in (0, 180)"),
    (["--gaussians.lr-means", "nan"], "'gaussians.lr_means' must be a finite number"),
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

    from esd_gs.commands.args import parse
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


@pytest.mark.parametrize("args,fragment", [
    (["bench", "raster", "--cameras", "0"], "--cameras"),  # a segfault (exit 139) once
    (["bench", "raster", "--num-gaussians", "-1"], "--num-gaussians"),
    (["bench", "raster", "--repeats", "0"], "--repeats"),
    (["bench", "step", "--steps", "0"], "--steps"),
    (["render", "PLY", "--fps", "0"], "--fps"),
    (["render", "PLY", "--radius", "0"], "--radius"),
    (["render", "PLY", "--resolution", "0"], "--resolution"),
    (["render", "PLY", "--device", "potato"], "--device"),
    (["export", "PLY", "--mesh", "OUT/m.ply", "--voxel-size", "0"], "--voxel-size"),
    (["export", "PLY", "--mesh", "OUT/m.ply", "--views", "0"], "--views"),
    (["export", "PLY", "--mesh", "OUT/m.ply", "--resolution", "0"], "--resolution"),
])
def test_commands_refuse_values_out_of_range_in_one_line(tmp_path, args, fragment):
    write_ply(tmp_path / "s.ply", small_scene(n=20, dtype=torch.float32))
    args = [str(tmp_path / "s.ply") if a == "PLY" else a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert_clean_error(cli(*args), fragment, tmp_path / "out")


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. "
                                                                "DefaultCPUAllocator: can't allocate memory: you "
                                                                "tried to allocate 3221225472 bytes.")])
def test_out_of_memory_is_one_line_even_without_a_message(monkeypatch, capsys, error):
    """The CLI's own handler once raised IndexError on a MemoryError with no message, and let torch's CPU
    allocator's wording through as a traceback."""
    import esd_gs.cli

    def oom(argv):
        raise error

    monkeypatch.setitem(esd_gs.cli.COMMANDS, "render", oom)
    with pytest.raises(SystemExit) as stop:
        esd_gs.cli.main(["render", "x.ply"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "out of memory in render" in lines[0], lines


def damage_config(run, kind):
    path = run / "config.yaml"
    if kind == "not utf-8":
        path.write_bytes(b"\xff\xfe prompt: a head\n")
    elif kind == "number key":
        path.write_text("{1: 2}\n")
    else:
        path.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")


def damage_checkpoints(run, kind):
    for path in (run / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        if kind == "step":
            state["step"] = "ten"
        elif kind == "splats":
            state["splats"]["means"] = torch.zeros(5, 2)
        else:
            state["optimizers"]["means"]["state"][0]["exp_avg"] = torch.zeros(3)
        torch.save(state, path)


@pytest.mark.parametrize("damage,fragment", [
    (lambda run: damage_config(run, "not utf-8"), "not UTF-8"),
    (lambda run: damage_config(run, "number key"), "keys are not all names"),
    (lambda run: damage_config(run, "deep"), "nested too deeply"),
    (lambda run: damage_checkpoints(run, "step"), "no complete checkpoint"),
    (lambda run: damage_checkpoints(run, "splats"), "no complete checkpoint"),
    (lambda run: damage_checkpoints(run, "adam"), "does not fit this run"),
])
def test_resume_of_damaged_run_files_is_one_line(tmp_path, damage, fragment):
    """config.yaml and checkpoints damaged in ways the testers found (each once a traceback): one line, exit 2
    (a damaged newest checkpoint first falls back to an older one, with a one-line warning each)."""
    args = ["train", *SYNTH, "--steps", "4", "--output-dir", tmp_path, "--run-name", "r", "--log.checkpoint-every",
            "2", "--log.turntable-frames", "0", "--gaussians.num-points", "200", "--synthetic.unet-channels", "8"]
    assert cli(*args).returncode == 0
    (tmp_path / "r" / "splats.ply").unlink()
    damage(tmp_path / "r")
    r = cli(*args, "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert fragment in lines[-1] and all(line.startswith("esd-gs: ") for line in lines), lines


def test_damaged_batch_files_are_measured_again_or_refused(tmp_path):
    """A damaged index.json or janus.json costs the rows their old figures, not the batch; a jobs file nested
    beyond reason is one line."""
    from esd_gs.commands.batch import finished_metrics, previous_rows, read_jobs
    from esd_gs.errors import UserError

    (tmp_path / "index.json").write_text('[{"run_name": "a", "seconds": "x", "metrics": 3}, {"run_name": 5}]')
    assert previous_rows(tmp_path) == {"a": {"seconds": None, "metrics": {}}}
    (tmp_path / "index.json").write_text("[" * 100_000)
    assert previous_rows(tmp_path) == {}
    (tmp_path / "janus.json").write_text('{"janus": tru')
    assert finished_metrics(tmp_path) == {}
    (tmp_path / "jobs.yaml").write_text("- " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(UserError, match="nested too deeply"):
        read_jobs(tmp_path / "jobs.yaml")
