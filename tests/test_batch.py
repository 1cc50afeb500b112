"""esd-gs batch: Ray tasks over a jobs file, resumable, an index and a contact sheet (issue 15)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import psutil
import pytest

from esd_gs.commands.batch import BatchArgs, expand_jobs, job_flags, read_jobs, run_lock
from esd_gs.errors import UserError

from conftest import cli, free_port, run_cli

SMALL = ["--", "--gaussians.num-points", "300", "--log.turntable-frames", "8", "--log.turntable-resolution", "32",
         "--log.preview-every", "0", "--synthetic.unet-channels", "8"]


def test_jobs_files_become_train_flags(tmp_path):
    (tmp_path / "j.txt").write_text("# props\na head\n\na red chair\n")
    assert read_jobs(tmp_path / "j.txt") == [{"prompt": "a head"}, {"prompt": "a red chair"}]
    (tmp_path / "j.csv").write_text("prompt,guidance,lam,log.progress\na head,esd,0.25,false\n")
    (tmp_path / "j.yaml").write_text("jobs:\n  - {prompt: a head, render: {resolution: 32}, seed: 3, args: [--steps, 5]}\n")
    assert job_flags(read_jobs(tmp_path / "j.csv")[0]) == ["--prompt", "a head", "--guidance", "esd", "--lam", "0.25",
                                                           "--log.no-progress"]
    assert job_flags(read_jobs(tmp_path / "j.yaml")[0]) == ["--prompt", "a head", "--render.resolution", "32",
                                                            "--seed", "3", "--steps", "5"]
    jobs = expand_jobs([{"prompt": "a", "steps": 7}], BatchArgs(jobs=tmp_path, preset="demo", steps=20, seeds="0,1"))
    assert jobs == [{"preset": "demo", "steps": 7, "prompt": "a", "seed": 0},
                    {"preset": "demo", "steps": 7, "prompt": "a", "seed": 1}]
    with pytest.raises(UserError, match="--seeds"):
        expand_jobs(jobs, BatchArgs(jobs=tmp_path, seeds="0,x"))


def test_a_run_folder_takes_one_worker(tmp_path):
    """A second process on a locked run fails at once, naming the holder's PID; within the holder the lock is
    re-entrant (a batch worker holds it around its job's Trainer)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from esd_gs.commands.batch import run_lock\nwith run_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True); time.sleep(60)", str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with run_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run"), run_lock(tmp_path / "run"):  # free again once the holder died
        pass


def test_the_driver_renders_each_photo_set_once_before_the_workers_start(tmp_path, monkeypatch):
    """A local batch renders the jobs' photo sets into the cache before submitting: the synthetic world's
    prior photos, one render per distinct data setting, and the truth's views for every job that a Janus
    report measures (tiny-sd knows the head; sd21-base does not)."""
    import torch

    from esd_gs.commands.batch import plan, render_photo_sets
    from esd_gs.synthetic import photos
    from esd_gs.synthetic.janus import truth_views

    monkeypatch.setenv("ESD_GS_CACHE", str(tmp_path / "cache"))
    small = ["--synthetic.num-images", "8", "--synthetic.resolution", "8", "--render.resolution", "8"]
    jobs = plan([{"prompt": "a head", "seed": 0}, {"prompt": "a head", "seed": 1},
                 {"prompt": "a head", "synthetic.data-seed": 5},
                 {"prompt": "a corgi", "world": "stable-diffusion", "synthetic.data-seed": 7},
                 {"prompt": "a head", "world": "stable-diffusion", "model_path": "tiny-sd", "device": "cpu",
                  "synthetic.resolution": 16}],
                ["--preset", "demo", *small], tmp_path / "b")
    rendered = []
    monkeypatch.setattr(photos, "render_photos", lambda splats, az, el, cfg: rendered.append(len(az)) or
                        torch.zeros(len(az), cfg.resolution, cfg.resolution, 3))
    render_photo_sets(jobs)
    assert not any(job.error for job in jobs), [job.error for job in jobs]
    views = len(truth_views(jobs[0].truth)[0])
    assert sorted(rendered) == [8, 8, views, views]  # 2 data seeds; the truth at resolutions 8 and 16
    render_photo_sets(jobs)  # all cached now
    assert len(rendered) == 4


def wait_for_a_row(batch_dir, status: str, driver: subprocess.Popen, timeout: float = 600) -> None:
    """Until the batch's index has a row with this status (or the driver ended, or the timeout)."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        index = batch_dir / "index.json"
        if index.exists() and any(r["status"] == status for r in json.loads(index.read_text())):
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_batch_on_a_local_ray_cluster_survives_a_killed_driver(tmp_path, monkeypatch):
    """Three seeds of one prompt on 2 CPUs and a job with a bad flag that fails alone; the driver is SIGKILLed
    after the first run finishes: none of the Ray processes it started outlives it (issue 26, item 7), and the
    same command run again finishes the rest without training the finished runs again. Meanwhile a cluster
    address that `ray start` recorded is left behind (a dead one): a batch without --address starts its own
    instance and never joins it (ray.init(None) did, and failed). The rerun's driver stops on SIGTERM from
    the moment its index says a job was submitted (until then Ray's crash handler had SIGTERM: a stack dump)."""
    import esd_gs.commands.batch

    handlers = []

    def write_index(batch_dir, rows):
        if any(r["status"] == "submitted" for r in rows):
            handlers.append(signal.getsignal(signal.SIGTERM))
        write_index_unchanged(batch_dir, rows)

    write_index_unchanged = esd_gs.commands.batch.write_index
    monkeypatch.setattr(esd_gs.commands.batch, "write_index", write_index)
    with recorded_cluster_address(f"127.0.0.1:{free_port()}"):
        killed_driver_then_rerun(tmp_path)
    assert handlers and all(getattr(h, "__name__", None) == "on_term" for h in handlers), handlers


@contextlib.contextmanager
def recorded_cluster_address(address: str):
    """`ray start --head` records its cluster's address in TMP/ray/ray_current_cluster; this records one for the
    block and restores what was there."""
    recorded = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = recorded.read_text() if recorded.is_file() else None
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(address)
    try:
        yield
    finally:
        if before is None:
            recorded.unlink(missing_ok=True)
        else:
            recorded.write_text(before)


def killed_driver_then_rerun(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- {prompt: a head, lam: 0.5}\n- {prompt: a head, run_name: bad, render.resolutoin: 32}\n")
    out = tmp_path / "batch"
    args = ["batch", str(jobs), "--preset", "demo", "--steps", "20", "--seeds", "0,1,2", "--output-dir", str(out),
            "--num-cpus", "2"]
    exe = os.path.join(os.path.dirname(sys.executable), "esd-gs")
    driver = subprocess.Popen([exe, *args, "--no-progress", *SMALL], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for_a_row(out, "done", driver)
        started = psutil.Process(driver.pid).children(recursive=True)  # its local Ray instance and its reaper
        driver.send_signal(signal.SIGKILL)  # the driver alone, as an out-of-memory killer does
        driver.wait()
        _, outlived = psutil.wait_procs(started, timeout=30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # whatever outlived it, should the reaper fail
        except ProcessLookupError:
            pass
    assert not outlived, [p.pid for p in outlived]
    before = {r["run_name"]: r["status"] for r in json.loads((out / "index.json").read_text())}
    finished = [name for name, status in before.items() if status == "done"]
    assert finished and len(finished) < 3, before
    stamps = {name: (out / name / "splats.ply").stat().st_mtime_ns for name in finished}

    r = cli(*args, *SMALL)
    assert r.returncode == 2 and "3 of 6 jobs failed" in r.stderr, r.stderr
    last_bar = [line for line in re.split(r"[\r\n]", r.stderr) if line.startswith("batch:")][-1]
    assert "6/6" in last_bar and "done=3, failed=3, queued=0, running=0" in last_bar, last_bar  # tqdm sorts keys
    rows = json.loads((out / "index.json").read_text())
    done = [row for row in rows if row["status"] == "done"]
    failed = [row for row in rows if row["status"] == "failed"]
    assert [row["run_name"] for row in done] == ["a-head-esd0.5-s0", "a-head-esd0.5-s1", "a-head-esd0.5-s2"]
    assert all("resolutoin" in row["error"] and "\n" not in row["error"] for row in failed) and len(failed) == 3
    for name in finished:  # not trained again
        assert (out / name / "splats.ply").stat().st_mtime_ns == stamps[name]
    for row in done:
        assert (out / row["run_name"] / "splats.ply").is_file() and "janus" in row["metrics"]
        # the job's own flags, whether trained by this driver or reused (not the worker's --output-dir ...)
        assert row["args"].count("--run-name") <= 1 and "--output-dir" not in row["args"], row["args"]
        steps = [json.loads(line)["step"] for line in (out / row["run_name"] / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 21))
    assert (out / "index.csv").read_text().count("\n") == 7
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.shape[0] == 6 * 96
    for k in range(3):  # a done row shows its head: not a flat grey band
        frames = sheet[k * 96:(k + 1) * 96, 280:]
        assert frames.std() > 10 and not np.all(frames == 220)


def test_jobs_that_can_never_start_are_refused_before_submission():
    from esd_gs.commands.batch import Job, check_schedulable

    jobs = [Job(0, {}, [], run_name="big"), Job(1, {}, [], run_name="small")]
    asks = {0: {"num_cpus": 64}, 1: {"num_cpus": 1}}
    with pytest.raises(UserError, match="1 of 2 jobs can never start: big asks for 64 CPUs, and the Ray cluster "
                                        "has 2 CPUs and 0 GPUs in all"):
        check_schedulable(jobs, asks, {"CPU": 2.0})
    check_schedulable(jobs, {0: {"num_cpus": 2}, 1: {"num_cpus": 1}}, {"CPU": 2.0})  # fits: no error


def test_a_csv_with_an_unclosed_quote_is_refused(tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text('prompt,seed\n"a head,1\na cat,2\n')
    with pytest.raises(UserError, match="invalid CSV"):
        read_jobs(jobs)
    jobs.write_text('prompt,seed\n"a head, smiling",1\na cat,2\n')
    assert read_jobs(jobs) == [{"prompt": "a head, smiling", "seed": "1"}, {"prompt": "a cat", "seed": "2"}]


def test_cpu_stable_diffusion_jobs_ask_for_no_gpu(tmp_path):
    """tiny-sd's preset runs on the CPU: its jobs must schedule on a CPU-only cluster; SD 2.1 jobs ask a GPU."""
    from esd_gs.commands.batch import plan

    jobs = plan([{"preset": "tiny-sd"}, {"preset": "sd21-esd"}, {"preset": "sd21-esd", "device": "cpu"},
                 {"preset": "demo"}], [], tmp_path)
    assert [job.error for job in jobs] == [None] * 4
    assert [job.gpu for job in jobs] == [False, True, False, False]


@pytest.mark.slow
def test_sigterm_stops_the_batch_driver_in_one_line(tmp_path):
    """SIGTERM (a scheduler's stop) ends the driver as Ctrl-C does: exit 143, one line, its jobs marked
    interrupted in the index, no Ray stack dump."""
    (tmp_path / "jobs.txt").write_text("a head\n")
    out = tmp_path / "b"
    exe = os.path.join(os.path.dirname(sys.executable), "esd-gs")
    driver = subprocess.Popen([exe, "batch", str(tmp_path / "jobs.txt"), "--preset", "demo", "--steps", "2000",
                               "--output-dir", str(out), "--num-cpus", "1", "--no-progress", *SMALL],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_a_row(out, "submitted", driver)
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=120)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert driver.returncode == 143, stderr
    # ours is the only line: no traceback, and none of Ray's notices (its token authentication's came first)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "batch stopped: 0 done, 0 failed, 1 interrupted" in lines[0], stderr
    assert [r["status"] for r in json.loads((out / "index.json").read_text())] == ["interrupted"]


def cluster_processes(port: int) -> list[psutil.Process]:
    """The processes of the Ray cluster whose GCS listens on this port (each names it in its command line:
    `--gcs-address=HOST:PORT`, `--gcs_server_port=PORT`), with their descendants."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        if any(arg.endswith((f":{port}", f"={port}")) for arg in p.info["cmdline"] or []):
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
    return list(found.values())


@pytest.mark.slow
def test_batch_on_a_ray_cluster_survives_a_killed_worker_node(tmp_path):
    """Item 8 of issue 26: a cluster started as users start one (`ray start --head`, then a second node with
    `ray start --address`), a batch on it with --address, the worker node killed mid-job (its raylet and
    everything under it: SIGKILL, as a lost machine): every job ends done or failed, and the same command
    again finishes the rest without training the finished runs again."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    port, node_port = free_port(), free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    # Ray's token authentication, as its docs set a cluster up: one token (~/.ray/auth_token) for every node
    # and driver
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}

    def ray_cli(*args):
        r = subprocess.run([ray, *args], env=env, capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stderr[-3000:])

    try:
        ray_cli("get-auth-token", "--generate")
        ray_cli("start", "--head", f"--port={port}", "--include-dashboard=false", *common)
        ray_cli("start", f"--address=127.0.0.1:{port}", f"--node-manager-port={node_port}", *common)
        (tmp_path / "jobs.txt").write_text("a head\n")
        out = tmp_path / "b"
        args = ["batch", str(tmp_path / "jobs.txt"), "--address", f"127.0.0.1:{port}", "--preset", "demo",
                "--steps", "30", "--seeds", "0,1", "--output-dir", str(out), "--no-progress", *SMALL]
        # the driver without RAY_AUTH_MODE, as a user runs it: it sends its token anyway (a screen of Ray's
        # InvalidAuthToken lines and no cluster, until 2026-12-06)
        driver_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        driver = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "esd-gs"), *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=driver_env)
        deadline = time.time() + 300  # both jobs training: one on each node
        while time.time() < deadline and len(list(out.glob("*/.running"))) < 2 and driver.poll() is None:
            time.sleep(0.1)
        assert len(list(out.glob("*/.running"))) == 2, driver.stderr.read() if driver.poll() is not None else ""
        node = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "raylet"
                and any(f"={node_port}" in arg for arg in p.info["cmdline"] or [])]
        assert len(node) == 1
        for p in [node[0], *node[0].children(recursive=True)]:
            p.kill()
        _, stderr = driver.communicate(timeout=300)
        rows = json.loads((out / "index.json").read_text())
        assert driver.returncode == 2 and "1 of 2 jobs failed" in stderr and "InvalidAuthToken" not in stderr, stderr
        assert sorted(r["status"] for r in rows) == ["done", "failed"], rows
        finished = [r["run_name"] for r in rows if r["status"] == "done"]
        stamps = {name: (out / name / "splats.ply").stat().st_mtime_ns for name in finished}
        r = run_cli(*args, env=driver_env)
        assert r.returncode == 0, r.stderr
        rows = json.loads((out / "index.json").read_text())
        assert [r["status"] for r in rows] == ["done", "done"]
        for name in finished:
            assert (out / name / "splats.ply").stat().st_mtime_ns == stamps[name]
        for row in rows:
            steps = [json.loads(line)["step"] for line in (out / row["run_name"] / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(1, 31))
    finally:
        for p in cluster_processes(port):
            with contextlib.suppress(psutil.Error):
                p.kill()
        recorded = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # as `ray stop` leaves it
        if recorded.is_file() and recorded.read_text().strip().endswith(f":{port}"):
            recorded.unlink()


def test_jobs_files_refuse_what_train_would_misread(tmp_path):
    """A prompt that YAML reads as null or a boolean is refused (it trained on "None" / "True"); a value that
    starts with '-' stays a value; a BOM is no part of a CSV's first key; a single mapping is one job; an empty
    seed list is refused (it ran seed 0)."""
    for text in ("- {prompt: null}\n", "- {prompt: yes}\n", "- {prompt: a head, run_name: 7}\n"):
        (tmp_path / "j.yaml").write_text(text)
        with pytest.raises(UserError, match="must be text"):
            job_flags(read_jobs(tmp_path / "j.yaml")[0])
    (tmp_path / "j.yaml").write_text("- {prompt: -a head, seed: -1}\n")
    assert job_flags(read_jobs(tmp_path / "j.yaml")[0]) == ["--prompt=-a head", "--seed=-1"]
    (tmp_path / "one.yaml").write_text("prompt: a head\nsteps: 5\n")
    assert read_jobs(tmp_path / "one.yaml") == [{"prompt": "a head", "steps": 5}]
    (tmp_path / "j.csv").write_bytes("\ufeffprompt,seed\na head,1\n".encode())
    assert read_jobs(tmp_path / "j.csv") == [{"prompt": "a head", "seed": "1"}]
    for seeds in (",", " , "):
        with pytest.raises(UserError, match="no seed"):
            expand_jobs([{"prompt": "a"}], BatchArgs(jobs=tmp_path, seeds=seeds))
    from esd_gs.commands.args import parse_train_args

    assert parse_train_args(job_flags({"prompt": "-a head"})).prompt == "-a head"


def test_batch_flags_out_of_range_and_unreachable_clusters_are_one_line(tmp_path):
    (tmp_path / "j.txt").write_text("a head\n")
    for flags, fragment in ((["--cpus-per-job", "-1"], "--cpus-per-job"), (["--num-cpus", "-1"], "--num-cpus"),
                            (["--contact-frames", "0"], "--contact-frames"),
                            (["--address", "not-a-host:xyz"], "HOST:PORT")):
        r = cli("batch", tmp_path / "j.txt", "--output-dir", tmp_path / "b", *flags)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.stderr
    t0 = time.monotonic()
    port = free_port()
    r = cli("batch", tmp_path / "j.txt", "--output-dir", tmp_path / "b", "--address", f"127.0.0.1:{port}")
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_two_drivers_of_one_batch_lose_nothing_and_a_changed_job_is_no_rerun(tmp_path):
    """The same batch started twice a few seconds apart (the testers' case: the second finished s2, then the
    first, which had planned s2 as new, cleared it to train it again): every run ends done, trained once, with
    its outputs, and both indexes are true to the folders. Then a job whose settings changed since its run
    finished is reported as changed, with what changed, and its run is left as it was."""
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- {run_name: long, steps: 40}\n- {run_name: s1, steps: 8}\n- {run_name: s2, steps: 8}\n")
    out = tmp_path / "b"
    args = ["batch", str(jobs), "--preset", "demo", "--num-cpus", "1", "--output-dir", str(out), "--no-progress"]
    small = [*SMALL, "--log.turntable-frames", "0", "--log.checkpoint-every", "4"]
    exe = os.path.join(os.path.dirname(sys.executable), "esd-gs")
    first = subprocess.Popen([exe, *args, *small], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_a_row(out, "submitted", first)
    time.sleep(3)
    second = subprocess.Popen([exe, *args, *small], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for driver in (first, second):
        _, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-2000:]
    rows = json.loads((out / "index.json").read_text())
    assert {r["run_name"]: r["status"] for r in rows} == {"long": "done", "s1": "done", "s2": "done"}
    for name, steps in (("long", 40), ("s1", 8), ("s2", 8)):
        run = out / name
        assert (run / "splats.ply").is_file() and (run / "janus.json").is_file(), name
        logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert logged == list(range(1, steps + 1)), name  # trained once, never cleared and trained again

    config = (out / "s1" / "config.yaml").read_text()
    jobs.write_text("- {run_name: long, steps: 40}\n- {run_name: s1, steps: 9}\n- {run_name: s2, steps: 8}\n")
    r = cli(*args[:-1], *small)
    assert r.returncode == 2, r.stderr
    assert "changed: s1: finished with other settings (steps: 8 -> 9)" in r.stdout and "remove" in r.stdout, r.stdout
    assert {x["run_name"]: x["status"] for x in json.loads((out / "index.json").read_text())} == \
        {"long": "done", "s1": "changed", "s2": "done"}
    assert (out / "s1" / "config.yaml").read_text() == config


def test_sigterm_while_ray_starts_is_the_one_line_stop(tmp_path, monkeypatch):
    """SIGTERM that arrives during ray.init (a scheduler stopping the batch early) stops it as after: exit 143
    (128 + 15) with the batch's line and its jobs interrupted; it ended with 15 and no word."""
    import ray

    from esd_gs.commands import batch, ray_cleanup
    from esd_gs.errors import Interrupted

    def init(**kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_cleanup, "start", lambda: None)
    monkeypatch.setattr(ray_cleanup, "finish", lambda watch: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(batch, "render_photo_sets", lambda jobs: None)
    jobs = [{"prompt": "a head", "preset": "demo", "run_name": "r"}]
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="batch stopped: 0 done, 0 failed, 1 interrupted") as stop:
        batch.run_batch(jobs, tmp_path / "b", progress=False)
    assert stop.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert [r["status"] for r in json.loads((tmp_path / "b" / "index.json").read_text())] == ["interrupted"]


def test_planning_thousands_of_jobs_shows_progress(tmp_path, monkeypatch, capsys):
    """A jobs file of thousands of jobs (or 20,000 seeds) took minutes to plan with nothing on the screen."""
    import esd_gs.commands.args
    from esd_gs.commands.batch import plan
    from esd_gs.config import TrainConfig

    monkeypatch.setattr(esd_gs.commands.args, "parse_train_args", lambda argv: TrainConfig(world="synthetic"))
    jobs = plan([{"prompt": "a head", "seed": k} for k in range(1500)], [], tmp_path)
    assert len(jobs) == 1500 and "planning jobs" in capsys.readouterr().err
    plan([{"prompt": "a head"}] * 10, [], tmp_path)  # a few: no bar
    assert "planning jobs" not in capsys.readouterr().err


def test_a_resume_that_drops_the_variational_network_says_so():
    """An SDS run's checkpoint resumed with a rule that has a variational network started it afresh silently."""
    from esd_gs.guidance.distill import DistillationObjective, PriorConfig
    from esd_gs.core.cameras import CameraConfig

    class Net:
        def load_trainable_state(self, state):
            raise AssertionError("nothing to load")

    objective = DistillationObjective(prior=None, variational=Net(), rule="esd", lam=0.5, cfg=PriorConfig(),
                                      cameras=CameraConfig(), resolution=8, batch_size=1, total_steps=4,
                                      stage2_step=1)
    with pytest.warns(UserWarning, match="holds no variational network"):
        objective.load_state_dict({})
    sds = DistillationObjective(None, None, "sds", 0.0, PriorConfig(), CameraConfig(), 8, 1, 4, 1)
    with pytest.warns(UserWarning, match="left unused"):
        sds.load_state_dict({"params": {}})
