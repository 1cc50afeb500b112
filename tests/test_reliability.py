"""Reliability, second pass (issue 14): each case failed before its fix."""

import gc
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from esd_gs.errors import UserError
from esd_gs.io.ply import read_ply, write_ply
from esd_gs.run.trainer import Trainer

from conftest import assert_clean_error, cli, free_port, run_cli, tiny_synthetic
from scenes import colored_blob_scene, small_scene


def steps_of(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoints(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))


def quick(tmp_path, **kw):
    kw = {"run_name": "r", "steps": 30, **kw}
    cfg = tiny_synthetic(tmp_path, **kw)
    cfg.densify.enabled = False
    cfg.guidance = kw.get("guidance", "sds")
    return cfg


# 1 ------------------------------------------------------------------------------------------------
def test_overwrite_then_killed_then_resume_ends_with_the_new_run(tmp_path, monkeypatch):
    old = quick(tmp_path, steps=40)
    old.log.preview_every = 7
    Trainer(old).train()  # the old run: checkpoints 30, 40; previews 7, 14, ..., 35, 40
    new = quick(tmp_path, steps=40, overwrite=True, lam=0.1, guidance="esd")
    new.log.preview_every = 10
    killed = Trainer(new)
    monkeypatch.setattr(killed, "finish", lambda: None)  # a kill at step 25: no final checkpoint, no PLY
    killed.cfg.steps = 25
    killed.train()
    assert checkpoints(tmp_path / "r") == ["step_0000010.pt", "step_0000020.pt"]
    assert not (tmp_path / "r" / "splats.ply").exists()
    again = quick(tmp_path, steps=40, resume=True, lam=0.1, guidance="esd")
    again.log.preview_every = 10
    resumed = Trainer(again)
    assert resumed.step == 20
    resumed.train()
    assert steps_of(tmp_path / "r") == list(range(1, 41))
    ply = read_ply(tmp_path / "r" / "splats.ply")
    assert torch.equal(ply["means"], resumed.splats["means"].detach())
    previews = sorted(p.name for p in (tmp_path / "r" / "previews").glob("*.png"))
    assert previews == [f"step_{s:06d}.png" for s in range(10, 50, 10)]


def test_overwrite_with_fewer_steps_keeps_nothing_of_the_old_run(tmp_path):
    Trainer(quick(tmp_path, steps=60)).train()
    Trainer(quick(tmp_path, steps=20, overwrite=True)).train()
    assert checkpoints(tmp_path / "r") == ["step_0000010.pt", "step_0000020.pt"]
    assert steps_of(tmp_path / "r") == list(range(1, 21))


# 2 ------------------------------------------------------------------------------------------------
def test_resume_refuses_changes_that_define_the_run_and_records_safe_ones(tmp_path):
    Trainer(quick(tmp_path, steps=10)).train()
    for key, value in (("lam", 0.1), ("gaussians.lr_means", 0.01), ("synthetic.unet_channels", 64),
                       ("gaussians.sh_degree", 2)):
        cfg = quick(tmp_path, steps=10, resume=True)
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
        with pytest.raises(UserError, match=key.replace(".", r"\.")) as err:
            Trainer(cfg)
        assert "\n" not in str(err.value)
    saved = (tmp_path / "r" / "config.yaml").read_text()
    # a run saved before an option existed resumes with the option's default, and only with it
    without = re.sub(r"\n  camera_map_sharpness: .*\n", "\n", saved)
    assert without != saved
    (tmp_path / "r" / "config.yaml").write_text(without)
    cfg = quick(tmp_path, steps=10, resume=True)
    cfg.variational.camera_map_sharpness = 8.0
    with pytest.raises(UserError, match=r"variational\.camera_map_sharpness: 20\.0 -> 8\.0"):
        Trainer(cfg)
    cfg = quick(tmp_path, steps=15, resume=True)
    cfg.log.preview_every = 5
    Trainer(cfg).train()
    record = json.loads((tmp_path / "r" / "resumes.jsonl").read_text())
    assert record["step"] == 10 and record["changes"]["steps"] == [10, 15]
    assert "log.preview_every" in record["changes"]
    assert saved != (tmp_path / "r" / "config.yaml").read_text()


# 3 ------------------------------------------------------------------------------------------------
@pytest.fixture
def blob_ply(tmp_path):
    write_ply(tmp_path / "blob.ply", colored_blob_scene())
    return tmp_path / "blob.ply"


def test_file_system_errors_are_one_line(tmp_path, blob_ply, monkeypatch):
    folder = tmp_path / "adir"
    folder.mkdir()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = [
        (("render", blob_ply, "--frames", "2", "--resolution", "16", "--output", "/proc/x.gif"), "cannot write"),
        (("export", blob_ply, "--ply", folder), "it is a folder"),
        (("export", blob_ply, "--ply", a_file / "x.ply"), "is a file"),
        (("render", blob_ply, "--format", "png", "--output", a_file), "is a file"),
        (("janus", blob_ply, "--output", "/proc/x.json"), "cannot write"),
        (("train", "--preset", "demo", "--output-dir", "/proc/esd"), "run folder"),
    ]
    for args, fragment in cases:
        assert_clean_error(cli(*args), fragment)

    import plyfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plyfile.PlyData, "read", denied)
    for command in ("render", "export", "janus", "view"):
        assert_clean_error(cli(command, blob_ply, "--mesh", tmp_path / "m.ply") if command == "export"
                           else cli(command, blob_ply), "Permission denied")


def test_full_disk_mid_training_is_one_line_and_keeps_the_checkpoint_before(full_disk, monkeypatch):
    """torch.save reports ENOSPC as RuntimeError: the checkpoint's failure is one line, and the checkpoint
    written before it stays loadable."""
    args = ["train", "--preset", "demo", "--steps", "30", "--log.checkpoint-every", "5", "--output-dir", full_disk.path,
            "--run-name", "r", "--guidance", "sds", "--gaussians.num-points", "200", "--log.no-progress",
            "--log.keep-checkpoints", "5", "--log.turntable-frames", "0", "--log.preview-every", "0"]
    original = Trainer.save_checkpoint

    def fill_after_first(self):  # the disk fills up after the first checkpoint, as it would during a run
        original(self)
        full_disk.fill(1000)

    monkeypatch.setattr(Trainer, "save_checkpoint", fill_after_first)
    r = cli(*args)
    assert_clean_error(r, "is the disk full?")
    assert "step_0000010.pt" in r.stderr and "the previous checkpoint is kept" in r.stderr
    ckpts = checkpoints(full_disk.path / "r")
    assert ckpts == ["step_0000005.pt"]
    assert torch.load(full_disk.path / "r" / "checkpoints" / ckpts[0], weights_only=True)["step"] == 5


def test_full_disk_never_leaves_an_empty_mesh_or_video(full_disk, blob_ply, monkeypatch):
    """export --mesh and render --format mp4 on a full disk: one line, exit 2, and the file that was there
    before (a good mesh) is unchanged; open3d's writer reported success on a full disk until 2026-11-29."""
    mesh = full_disk.path / "m.obj"
    args = ["export", blob_ply, "--mesh", mesh, "--resolution", "48", "--views", "12"]
    assert cli(*args).returncode == 0
    before = mesh.read_bytes()
    full_disk.fill(20_000)
    assert_clean_error(cli(*args), "cannot write")
    assert mesh.read_bytes() == before and not [p for p in full_disk.path.iterdir() if p.name.startswith(".m.obj")]
    full_disk.fill(0)
    r = cli("render", blob_ply, "--frames", "24", "--resolution", "64", "--format", "mp4", "--output",
            full_disk.path / "t.mp4")
    assert_clean_error(r, "cannot write")
    assert not (full_disk.path / "t.mp4").exists()
    # GIF and PNG frames: one line too, and no "Exception ignored in PluginV3.__del__" traceback when imageio's
    # plugin is collected (it held the file and failed to close it again)
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    for fmt in ("gif", "png"):
        r = cli("render", blob_ply, "--frames", "24", "--resolution", "64", "--format", fmt, "--output",
                full_disk.path / f"t.{fmt}")
        assert_clean_error(r, "cannot write")
        gc.collect()
    assert not ignored, [str(u.exc_value) for u in ignored]


# 4 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_view_refuses_bad_port(blob_ply, port):
    assert_clean_error(cli("view", blob_ply, "--port", port), "--port must lie in 0..65535")


# 5 ------------------------------------------------------------------------------------------------
def test_offline_start_without_weights_fails_fast(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    t0 = time.time()
    r = run_cli("train", "--prompt", "a corgi", "--output-dir", tmp_path / "o", env=env)
    assert time.time() - t0 < 20
    assert_clean_error(r, "stabilityai/stable-diffusion-2-1-base", tmp_path / "o")
    assert "--model-path" in r.stderr


def test_model_path_that_is_no_folder(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert_clean_error(cli("train", "--model-path", tmp_path / "nowhere", "--output-dir", tmp_path / "o"),
                       "does not exist")
    assert_clean_error(cli("train", "--model-path", tmp_path / "weights.bin", "--output-dir", tmp_path / "o"),
                       "is a file")
    (tmp_path / "half").mkdir()
    assert_clean_error(cli("train", "--model-path", tmp_path / "half", "--output-dir", tmp_path / "o"),
                       "not a diffusers Stable Diffusion folder")


# 6 ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_rerun_names_the_unfinished_run(tmp_path):
    """SIGTERM, as a cluster's scheduler sends it, goes through Ctrl-C's handler: a checkpoint at the step
    reached, one line, exit 143 (SIGTERM ended runs with nothing saved until 2026-11-29)."""
    signum = signal.SIGTERM
    args = ["train", "--preset", "demo", "--steps", "100000", "--output-dir", tmp_path, "--run-name", "c",
            "--guidance", "sds", "--gaussians.num-points", "200", "--log.no-progress", "--synthetic.unet-channels", "8"]
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "esd-gs"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "c" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert f"({signal.Signals(signum).name})" in err and len(err.strip().splitlines()) == 1
    assert "saved a checkpoint" in err and "--resume" in err and "Traceback" not in err
    step = int(checkpoints(tmp_path / "c")[-1][5:12])
    assert step >= 3 and steps_of(tmp_path / "c")[-1] == step
    r = cli("train", *args[1:4], "10", *args[5:])
    assert r.returncode == 0 and "unfinished run" in r.stderr and "c-1" in r.stderr


def test_ctrl_c_stops_at_the_end_of_the_step_with_a_checkpoint(tmp_path, monkeypatch):
    from esd_gs.errors import Interrupted

    trainer = Trainer(quick(tmp_path, steps=50))
    original = trainer.train_step

    def ctrl_c_at_step_3():
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only asks the loop to stop
        return original()

    monkeypatch.setattr(trainer, "train_step", ctrl_c_at_step_3)
    with pytest.raises(Interrupted, match=r"stopped at step 4 of 50 \(SIGINT\); saved a checkpoint") as e:
        trainer.train()
    assert e.value.exit_code == 130 and checkpoints(tmp_path / "r") == ["step_0000004.pt"]


def test_interrupt_without_checkpoint_says_so(tmp_path, monkeypatch):
    trainer = Trainer(quick(tmp_path, steps=50))
    original = trainer.train_step

    def interrupted():
        if trainer.step == 3:
            raise KeyboardInterrupt
        return original()

    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(UserError, match="no checkpoint was written yet"):
        trainer.train()


def test_checkpoint_by_time(tmp_path):
    cfg = quick(tmp_path, steps=5)
    cfg.log.checkpoint_every, cfg.log.checkpoint_minutes = 1000, 1e-9
    trainer = Trainer(cfg)
    trainer.train()
    # by time after every step (keeping the newest two), then step 5 at the end
    assert checkpoints(tmp_path / "r") == ["step_0000004.pt", "step_0000005.pt"]
    cfg = quick(tmp_path, steps=5, overwrite=True)
    cfg.log.checkpoint_every, cfg.log.checkpoint_minutes, cfg.log.keep_checkpoints = 1000, 1e-9, 1
    Trainer(cfg).train()
    assert checkpoints(tmp_path / "r") == ["step_0000005.pt"]


# 7, 8 ---------------------------------------------------------------------------------------------
def test_stale_temps_are_cleaned_and_outputs_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(quick(tmp_path, steps=10)).train()
        run = tmp_path / "r"
        litter = [run / ".splats.ply.ab12cd34.tmp.ply", run / ".config.yaml.zz99aa00.tmp.yaml",
                  run / "checkpoints" / ".step_0000010.pt.q1w2e3r4.tmp.pt", run / ".turntable.mp4.abcdefgh.tmp.mp4"]
        for p in litter:
            p.write_bytes(b"half")
        (run / ".notes").write_text("mine")
        Trainer(quick(tmp_path, steps=12, resume=True)).train()
        assert not any(p.exists() for p in litter) and (run / ".notes").exists()
        for p in [run / "splats.ply", run / "config.yaml", run / "turntable.gif", run / "janus.json",
                  run / "checkpoints" / "step_0000012.pt"]:
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


# 9, 10, 11 ----------------------------------------------------------------------------------------
# (9 and 11's bad flags are cases of tests/test_bad_input.py::test_train_rejects_bad_values)
def test_janus_names_its_report_after_the_ply_and_warns_for_other_objects(tmp_path, blob_ply):
    Trainer(quick(tmp_path, steps=2)).train()
    run = tmp_path / "r"
    before = (run / "janus.json").read_bytes()
    write_ply(run / "other.ply", colored_blob_scene())
    r = cli("janus", run / "other.ply")
    assert r.returncode == 0 and "do not resemble the synthetic head" in r.stderr
    assert (run / "janus.json").read_bytes() == before and (run / "other.janus.json").exists()
    assert cli("janus", run).returncode == 0 and (run / "janus.json").exists()


def test_ply_edge_cases(tmp_path):
    splats = small_scene(n=3, dtype=torch.float32)
    write_ply(tmp_path / "ok.ply", splats)
    data = (tmp_path / "ok.ply").read_bytes()
    commented = data.replace(b"format binary_little_endian 1.0\n",
                             b"format binary_little_endian 1.0\ncomment written before end_header by a tool\n")
    (tmp_path / "c.ply").write_bytes(commented)
    assert torch.equal(read_ply(tmp_path / "c.ply")["means"], splats["means"].detach())

    from plyfile import PlyData, PlyElement
    import numpy as np
    vertex = PlyData.read(str(tmp_path / "ok.ply"))["vertex"].data
    wide = np.empty(len(vertex), dtype=[(n, "<f8") for n in vertex.dtype.names])
    for n in vertex.dtype.names:
        wide[n] = vertex[n]
    wide["x"][0] = 1e300
    PlyData([PlyElement.describe(wide, "vertex")]).write(str(tmp_path / "f8.ply"))
    with pytest.raises(UserError, match="outside the float32 range"):
        read_ply(tmp_path / "f8.ply")


def test_fallback_to_an_older_checkpoint_warns(tmp_path):
    from esd_gs.io.checkpoint import latest_checkpoint

    Trainer(quick(tmp_path, steps=20)).train()
    newest = tmp_path / "r" / "checkpoints" / "step_0000020.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="step_0000020.pt"):
        assert latest_checkpoint(tmp_path / "r" / "checkpoints")["step"] == 10


@pytest.mark.slow
def test_view_ctrl_c_stops_the_viewer(blob_ply):
    port = free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "esd-gs"), "view", str(blob_ply),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        for line in proc.stdout:
            if "viewer on" in line:
                break
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler prints every thread on SIGABRT
            proc.send_signal(signal.SIGABRT)
            pytest.fail("the viewer did not stop on Ctrl-C:\n" + proc.communicate(timeout=30)[1][-6000:])
    finally:
        proc.kill()
    assert proc.returncode == 0 and "viewer stopped" in err and "checkpoint" not in err


@pytest.mark.slow
def test_concurrent_runs_on_one_name_never_share_a_folder(tmp_path):
    """Two `esd-gs train` started together on one --run-name: both finish, in two folders, each holding one
    run; a --resume of a run whose lock another process holds is refused, naming its PID."""
    exe = os.path.join(os.path.dirname(sys.executable), "esd-gs")
    args = [exe, "train", "--preset", "demo", "--steps", "6", "--output-dir", str(tmp_path), "--run-name", "race",
            "--guidance", "sds", "--gaussians.num-points", "200", "--log.no-progress", "--log.turntable-frames", "0",
            "--log.checkpoint-every", "3", "--synthetic.unet-channels", "8"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race", "race-1"]
    for name in ("race", "race-1"):
        assert steps_of(tmp_path / name) == list(range(1, 7)) and (tmp_path / name / "splats.ply").exists()
    assert sum("race is taken; this run writes to race-1" in err for _, err in outs) == 1

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from esd_gs.io.lock import RunLock; "
                               "RunLock(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path / "race")],
                              stdout=subprocess.PIPE, text=True)  # as a run training there holds it
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli("train", *args[2:5], "20", *args[6:], "--resume")
        assert_clean_error(r, f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("args", [
    ("render", "BLOB", "--resolution", "100000", "--frames", "2"),
    ("render", "BLOB", "--frames", "100000000"),
    ("export", "BLOB", "--mesh", "OUT/m.ply", "--resolution", "100000"),
    ("train", "--preset", "demo", "--gaussians.num-points", "2000000000", "--output-dir", "OUT"),
])
def test_work_larger_than_memory_is_refused_before_it_starts(tmp_path, blob_ply, args):
    """Was a 19-52 line traceback, or the kernel's OOM killer (exit 137) for the render."""
    args = [str(a).replace("BLOB", str(blob_ply)).replace("OUT", str(tmp_path / "out")) for a in args]
    assert_clean_error(cli(*args), "GiB is available", tmp_path / "out")


def test_damaged_run_files_are_one_line_or_skipped(tmp_path):
    """A stray checkpoints/step_backup.pt is not a checkpoint; a checkpoint that loads but lacks keys falls
    back to the one before; random bytes in metrics.jsonl end the kept lines; a config.yaml that is not a
    mapping is one line for --resume and for esd-gs clip."""
    cfg = quick(tmp_path, steps=20)
    cfg.log.checkpoint_every, cfg.log.keep_checkpoints = 5, 4
    Trainer(cfg).train()  # checkpoints 5, 10, 15, 20
    run = tmp_path / "r"
    (run / "splats.ply").unlink()  # unfinished again
    torch.save({"x": 1}, run / "checkpoints" / "step_backup.pt")
    torch.save({"step": 50}, run / "checkpoints" / "step_0000050.pt")
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(bytes(range(256)) + b"\n5\n")
    with pytest.warns(UserWarning, match="step_0000050.pt lacks splats"):
        resumed = Trainer(quick(tmp_path, steps=22, resume=True))
    assert resumed.step == 20
    resumed.train()
    assert steps_of(run) == list(range(1, 23))
    (run / "config.yaml").write_text("- just\n- a list\n")
    assert_clean_error(cli("train", "--preset", "demo", "--output-dir", tmp_path, "--run-name", "r", "--resume"),
                       "is not a run's config")
    from tiny_sd import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    assert_clean_error(cli("clip", run, "--model", clip), "is not a run's config")


@pytest.mark.parametrize("content,fragment", [
    (b"- {prompt: a head, args: 5}\n- {prompt: a head, steps: 2, run_name: ok}\n", "a job's args must be"),
    (b"- {prompt: a head, args: null, steps: 2}\n- {prompt: a head, steps: 2, run_name: ok}\n", None),
    (b"- {prompt: caf\xe9}\n", "is not UTF-8 text"),
])
def test_bad_jobs_are_one_line_and_fail_alone(tmp_path, content, fragment):
    from esd_gs.commands.batch import BatchArgs, expand_jobs, plan, read_jobs

    jobs = tmp_path / "jobs.yaml"
    jobs.write_bytes(content)
    if fragment == "is not UTF-8 text":
        assert_clean_error(cli("batch", jobs, "--output-dir", tmp_path / "b"), fragment)
        return
    planned = plan(expand_jobs(read_jobs(jobs), BatchArgs(jobs=jobs, preset="demo")), [], tmp_path / "b")
    assert [j.error is None for j in planned] == [fragment is None, True]
    if fragment:
        assert fragment in planned[0].error and planned[1].run_name == "ok"


@pytest.mark.parametrize("name", ["a\tb", "line\nbreak", "x" * 300])
def test_run_names_with_control_characters_or_too_long_are_refused(tmp_path, name):
    assert_clean_error(cli("train", "--preset", "demo", "--output-dir", tmp_path / "o", "--run-name", name),
                       "--run-name must be at most 200 bytes", tmp_path / "o")


def test_a_full_disk_error_names_the_file(full_disk, blob_ply):
    full_disk.fill(0)
    out = full_disk.path / "report.json"
    r = cli("janus", blob_ply, "--output", out)  # (the blob is no head: janus warns first, in a line of its own)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    assert r.stderr.strip().splitlines()[-1] == f"esd-gs: error: cannot write {out}: No space left on device"


def test_a_full_photo_cache_only_costs_time(full_disk, monkeypatch):
    """The synthetic world's photo cache on a full disk: a warning, the photos, no temporary file left (it was a
    37-line traceback)."""
    from esd_gs.synthetic.config import SyntheticConfig
    from esd_gs.synthetic.photos import cached_photos, photo_angles

    cfg = SyntheticConfig(num_images=4, resolution=16)
    monkeypatch.setenv("ESD_GS_CACHE", str(full_disk.path / "cache"))
    (full_disk.path / "cache").mkdir()
    full_disk.fill(0)
    with pytest.warns(UserWarning, match="could not cache the photo set"):
        photos = cached_photos(*photo_angles(cfg), cfg)
    left = [p.name for p in (full_disk.path / "cache").iterdir()]
    assert photos.shape == (4, 16, 16, 3) and all(name.endswith(".pt.lock") for name in left), left  # (an empty lock)


def test_a_run_killed_while_finishing_is_not_done_and_resume_finishes_it(tmp_path):
    """splats.ply is written last: a run stopped while writing its report (janus.json) is resumable for
    `esd-gs batch`, not done, and --resume completes the report without training again."""
    from esd_gs.commands.batch import run_state

    trainer = Trainer(quick(tmp_path, steps=10))

    def killed(splats, run_dir):
        raise KeyboardInterrupt

    trainer.world.evaluate = killed
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    run_dir = tmp_path / "r"
    assert not (run_dir / "janus.json").exists() and run_state(run_dir) == "resumable"
    result = Trainer(quick(tmp_path, steps=10, resume=True)).train()
    assert result["steps"] == 10 and steps_of(run_dir) == list(range(1, 11))
    assert (run_dir / "janus.json").is_file() and run_state(run_dir) == "done"


def test_a_trainer_driven_step_by_step_unlocks_its_folder_when_closed(tmp_path):
    """`with Trainer(cfg) as trainer:` (esd-gs bench drives train_step itself): the run folder is locked inside
    the block, as for a run that trains, and free after it."""
    import fcntl

    def locked_elsewhere(run_dir) -> bool:
        with open(run_dir / ".lock") as f:  # another open file: flock conflicts with this process's own lock
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    with Trainer(quick(tmp_path, steps=2)) as trainer:
        trainer.train_step()
        assert locked_elsewhere(trainer.run_dir)
    assert not locked_elsewhere(trainer.run_dir)


def test_media_on_a_nearly_full_disk_keep_the_good_file(full_disk, blob_ply):
    """MP4, GIF and PNG at fill levels from nothing to almost the file's size: the writer says so in one line
    (the MP4 once said "wrote" after ffmpeg's trailer error and left a 4 KB file no player opens) and the good
    file that was there is unchanged; with room, it is replaced."""
    from esd_gs.io.media import save_png, save_video

    frames = torch.rand(48, 128, 128, 3, generator=torch.Generator().manual_seed(0))
    other = frames.flip(0)
    for name, write in (("t.mp4", lambda p, f: save_video(p, f)), ("t.gif", lambda p, f: save_video(p, f[:12])),
                        ("t.png", lambda p, f: save_png(p, f[0]))):
        target = full_disk.path / name
        (full_disk.path / "filler").unlink(missing_ok=True)
        write(target, frames)
        good = target.read_bytes()
        for free in sorted({0, 4096, len(good) // 4, len(good) // 2, len(good) - 4096}):
            (full_disk.path / "filler").unlink(missing_ok=True)
            full_disk.fill(free)
            with pytest.raises(UserError, match=f"cannot write {target}"):
                write(target, other)
            assert target.read_bytes() == good, (name, free)
            assert not [p for p in full_disk.path.iterdir() if p.name.startswith(".")], free  # no temp left
        (full_disk.path / "filler").unlink()
        write(target, other)
        assert target.read_bytes() != good
    full_disk.fill(5_000)  # the command the testers ran: one line, exit 2, the good file kept
    r = cli("render", blob_ply, "--frames", "48", "--resolution", "128", "--format", "mp4", "--output",
            full_disk.path / "t.mp4", "--background", "0", "0", "0")
    assert_clean_error(r, "cannot write")
    assert (full_disk.path / "t.mp4").read_bytes() != b"" and (full_disk.path / "t.mp4").stat().st_size > 10_000


def test_overwrite_clears_every_output_a_run_folder_can_hold(tmp_path):
    """--overwrite once left the old run's turntable_render.gif, clip.json and inception.json beside the new
    run's outputs, where they passed for its own."""
    cfg = tiny_synthetic(tmp_path, run_name="r", steps=4)
    Trainer(cfg).train()
    run = tmp_path / "r"
    assert cli("render", run, "--frames", "4", "--resolution", "32").returncode == 0
    assert cli("render", run, "--frames", "4", "--resolution", "32", "--format", "png", "--depth").returncode == 0
    (run / "clip.json").write_text("{}")
    (run / "inception.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    left = {"turntable_render.gif", "turntable_render.png", "turntable_render_depth.png", "clip.json", "inception.json"}
    assert left <= {p.name for p in run.iterdir()}
    Trainer(tiny_synthetic(tmp_path, run_name="r", steps=2, overwrite=True, log=cfg.log)).train()
    names = {p.name for p in run.iterdir()}
    assert not left & names and "notes.txt" in names and (run / "splats.ply").is_file()


def test_a_full_disk_while_logging_names_the_file(full_disk):
    """ENOSPC carries no file name: the error says metrics.jsonl (it said only "No space left on device")."""
    cfg = tiny_synthetic(full_disk.path, run_name="r", steps=6)
    cfg.log.metrics_every, cfg.log.checkpoint_every, cfg.log.checkpoint_minutes = 1, 0, 0
    trainer = Trainer(cfg)
    full_disk.fill(0)
    with pytest.raises(UserError, match="cannot write .*metrics.jsonl: No space left on device"):
        trainer.train()
