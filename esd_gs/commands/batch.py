"""`esd-gs batch`: many training runs (prompts x settings x seeds) as Ray tasks.

A job is a set of `esd-gs train` settings; every job becomes one Ray task that calls the same training
code as `esd-gs train` (args.train_from_args) in its own run folder under the batch folder. The driver
keeps `index.json` / `index.csv` (one row per job: its flags, status (pending, submitted,
done, failed, interrupted, or changed: finished with settings its job no longer says), seconds, final metrics, paths) and
draws `contact_sheet.png` (a row of turntable frames per job). Rerunning the same command skips
finished runs, resumes interrupted ones from their last checkpoint and reruns the rest; a lock file in
each run folder keeps two workers off the same run. A job that fails is one line in the index; the
others go on. Ctrl-C cancels what is running (each run keeps its last checkpoint).

Jobs files: .txt (one prompt a line; '#' comments), .yaml (a list of mappings, or {jobs: [...]}) or .csv
(a header of keys). Keys are train settings: prompt, preset, guidance, lam, seed, steps, run_name, any
dotted key such as render.resolution, and `args` (a list of raw train flags).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from ..errors import Interrupted, UserError
from ..io.atomic import atomic_path, write_json, write_text
from ..io.checkpoint import checkpoint_paths
from ..io.lock import RunLock
from ..synthetic.config import SyntheticConfig

INDEX_KEYS = ("index", "run_name", "status", "seconds", "error", "prompt", "args", "run_dir", "splats", "turntable",
              "metrics")


@dataclass
class BatchArgs:
    """Train every job of a jobs file on Ray (a local instance, or a cluster with --address). Train flags
    after `--` apply to every job (a job's own values win)."""

    jobs: tyro.conf.Positional[Path]
    """A .txt (prompt a line), .yaml or .csv jobs file."""
    preset: str | None = None
    """Preset for every job that names none."""
    steps: int | None = None
    """Steps for every job that names none."""
    seeds: str | None = None
    """Cross every job with these seeds, e.g. 0,1,2."""
    output_dir: Path | None = None
    """The batch folder (default: outputs/<jobs file name>); one run folder per job inside."""
    address: str | None = None
    """Ray cluster to use (default: $RAY_ADDRESS, else a local instance started for this call)."""
    num_cpus: int | None = None
    """CPUs of the local instance (default: all)."""
    cpus_per_job: float = 1.0
    """CPUs a CPU job (synthetic world, or `--device cpu`) asks for (its torch/numba threads)."""
    gpus_per_job: float = 1.0
    """GPUs a Stable Diffusion job asks for (unless it runs with `--device cpu`, as tiny-sd's preset does)."""
    contact_frames: int = 8
    """Turntable frames per row of the contact sheet."""
    progress: bool = True


# -- jobs ----------------------------------------------------------------------------------------
def read_jobs(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"jobs file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Excel's CSV) is no part of the first key
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); save the jobs file as UTF-8") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or []
        except yaml.YAMLError as e:
            raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        except RecursionError:
            raise UserError(f"{path}: nested too deeply to be a jobs file") from None
        if isinstance(data, dict):  # {jobs: [...]}, or one job
            data = data["jobs"] if "jobs" in data else [data]
        if not isinstance(data, list) or not all(isinstance(j, dict) for j in data):
            raise UserError(f"{path}: expected a list of jobs (mappings of train settings)")
        jobs = data
    elif suffix == ".csv":
        try:  # strict: an unclosed quote is an error, not one job swallowing the rest of the file
            jobs = [{k.strip(): v.strip() for k, v in row.items() if k and v not in (None, "")}
                    for row in csv.DictReader(text.splitlines(), strict=True)]
        except csv.Error as e:
            raise UserError(f"{path}: invalid CSV ({e}; an unclosed quote?)") from None
    else:
        jobs = [{"prompt": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not jobs:
        raise UserError(f"{path} holds no jobs")
    return jobs


def job_flags(job: dict) -> list[str]:
    """A job's settings as `esd-gs train` flags (unknown keys pass through: train names them)."""
    from ..config import TrainConfig, flatten, to_dict

    defaults = flatten(to_dict(TrainConfig()))
    bools = {k for k, v in defaults.items() if isinstance(v, bool)}
    texts = {k for k, v in defaults.items() if isinstance(v, str)} | {"run_name"}
    flags = []
    for key, value in flatten({str(k): v for k, v in job.items() if k != "args"}).items():
        head, _, name = key.rpartition(".")
        option = "--" + (head + "." if head else "") + name.replace("_", "-")
        if key in texts and not isinstance(value, str):  # YAML reads `prompt: yes` as True, `prompt:` as None
            raise UserError(f"a job's {key} must be text (got {value!r}); quote it in the jobs file")
        if key in bools:
            on = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            flags.append(option if on else "--" + (head + "." if head else "") + "no-" + name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            flags += [option, *map(str, value)]
        elif str(value).startswith("-"):  # "-a head" or -1: a value, not a flag
            flags.append(f"{option}={value}")
        else:
            flags += [option, str(value)]
    extra = job.get("args") or []
    if not isinstance(extra, (str, list)):
        raise UserError(f"a job's args must be a string or a list of flags (got {extra!r})")
    return flags + (extra.split() if isinstance(extra, str) else [str(a) for a in extra])


def expand_jobs(jobs: list[dict], args: BatchArgs) -> list[dict]:
    """Shared defaults (--preset, --steps) under each job's own values; crossed with --seeds."""
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seeds takes integers separated by commas (got {args.seeds!r})") from None
        if not seeds:
            raise UserError(f"--seeds lists no seed (got {args.seeds!r}); e.g. --seeds 0,1,2")
    shared = {k: v for k, v in (("preset", args.preset), ("steps", args.steps)) if v is not None}
    out = []
    for job in jobs:
        for seed in seeds or [None]:
            crossed = {**shared, **job}
            if seed is not None:
                crossed["seed"] = seed
                if "run_name" in job:  # a named job gets one folder per seed
                    crossed["run_name"] = f"{job['run_name']}-s{seed}"
            out.append(crossed)
    return out


# -- the task ------------------------------------------------------------------------------------
RUNNING = ".running"  # present while a worker trains the run (the driver counts these)


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False):
    """Holds the run folder's lock (io/lock.py: another esd-gs on the same run fails at once, or with `wait`
    this waits for it to end) and marks the run as running meanwhile."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir, wait=wait):
        (run_dir / RUNNING).touch()
        try:
            yield
        finally:
            (run_dir / RUNNING).unlink(missing_ok=True)


def finished_result(run_dir: Path) -> dict:
    """What a worker reports for a run that was finished when it got the lock (by another batch, say)."""
    from ..io.ply import read_ply

    return {"run_dir": str(run_dir), "n_gaussians": len(read_ply(run_dir / "splats.ply")["means"]),
            "skipped_steps": 0, "janus": finished_metrics(run_dir), "reused": True}


def train_job(argv: list[str], run_dir: str, threads: int) -> dict:
    """One job inside a Ray worker: the `esd-gs train` code path, with `threads` CPU threads. The run's state
    is decided here, under its lock (another batch of the same jobs may have finished or started it since the
    driver planned): finished, it is reported as it is; with a checkpoint, resumed; else started afresh."""
    import torch

    from .args import train_from_args

    torch.set_num_threads(threads)  # the rasterizer's numba kernels follow it
    t0 = time.monotonic()
    with run_lock(Path(run_dir), wait=True):
        state = run_state(Path(run_dir))
        if state == "done":
            return {**finished_result(Path(run_dir)), "seconds": 0.0}
        result = train_from_args([*argv, "--resume" if state == "resumable" else "--overwrite"], quiet=True)
    return {**result, "seconds": time.monotonic() - t0}


# -- the driver ----------------------------------------------------------------------------------
@dataclass
class Job:
    index: int
    settings: dict
    argv: list[str]
    run_name: str = ""
    run_dir: Path | None = None
    gpu: bool = False
    error: str | None = None
    cfg: object = None  # its TrainConfig
    photos: SyntheticConfig | None = None  # the synthetic world's data settings: its prior's photo set
    truth: SyntheticConfig | None = None  # where the Janus report renders the true head (synthetic world, tiny-sd)


def plan(jobs: list[dict], shared_flags: list[str], batch_dir: Path) -> list[Job]:
    """Parses every job like `esd-gs train` would (bad flags fail here, in the index) and names its folder."""
    from tqdm import tqdm

    from ..config import validate
    from ..run.run_folder import default_run_name
    from ..worlds.stable_diffusion import DEFAULT_MODEL, knows_synthetic_head
    from .args import parse_train_args

    planned, names = [], set()  # thousands of jobs take a while to parse: say so
    for i, settings in enumerate(tqdm(jobs, desc="planning jobs", unit="job", disable=len(jobs) < 1000)):
        job = Job(i, settings, list(shared_flags))
        try:
            job.argv += job_flags(settings)
            cfg = job.cfg = parse_train_args(job.argv)
            validate(cfg)
            name = cfg.run_name or default_run_name(cfg)
            job.gpu = cfg.world == "stable-diffusion" and cfg.device != "cpu"  # tiny-sd runs say cpu
            job.photos = cfg.synthetic if cfg.world == "synthetic" else None
            if cfg.world == "synthetic" or knows_synthetic_head(cfg.model_path or DEFAULT_MODEL):
                job.truth = cfg.synthetic
        except UserError as e:  # this job fails alone, under its own name where it gave one
            job.error, name = str(e), str(settings.get("run_name") or f"job{i}")
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        job.run_name, job.run_dir = name, batch_dir / name
        planned.append(job)
    return planned


def render_photo_sets(jobs: list[Job]) -> None:
    """The photo sets that the jobs read from the cache (the synthetic world's prior photos, the Janus
    report's views of the truth, for tiny-sd runs too), rendered here with every core: on a cold cache one
    worker would render each with its single thread while the others wait (the demo's 1024 photos: ~6 s)."""
    from ..synthetic.janus import truth_views
    from ..synthetic.photos import cached_photos, photo_angles

    photos, truths = [], []
    for job in jobs:
        if job.photos is not None and job.photos not in photos:
            photos.append(job.photos)
            cached_photos(*photo_angles(job.photos), job.photos)
        if job.truth is not None and job.truth not in truths:
            truths.append(job.truth)
            truth_views(job.truth)


def run_state(run_dir: Path) -> str:
    """done (has splats.ply), resumable (has a checkpoint) or new."""
    if (run_dir / "splats.ply").is_file():
        return "done"
    if checkpoint_paths(run_dir / "checkpoints"):
        return "resumable"
    return "new"


def changed_settings(job: Job) -> str | None:
    """What a finished run was trained with that its job no longer says ("steps: 3 -> 50, ..."); None: the same."""
    from ..config import config_changes, resumable, saved_config, stage2_step

    cfg = copy.deepcopy(job.cfg)
    cfg.stage2_step = stage2_step(cfg)  # as the run fixed it when it started
    try:
        changes = config_changes(saved_config(job.run_dir), cfg)
    except UserError as e:
        return str(e)
    # what a resume may change but what the run trained: its length and its weights
    changes = {k: v for k, v in changes.items() if not resumable(k) or k in ("steps", "model_path")}
    if not changes:
        return None
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:4])
    return listed + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def finished_metrics(run_dir: Path) -> dict:
    from ..synthetic.janus import SUMMARY_KEYS

    try:
        report = json.loads((run_dir / "janus.json").read_text())
    except (OSError, ValueError):  # none, or damaged: the row goes without metrics (`esd-gs janus` remakes them)
        return {}
    return {k: report[k] for k in SUMMARY_KEYS if k in report} if isinstance(report, dict) else {}


def row(job: Job, status: str, seconds: float | None = None, error: str | None = None, metrics=None) -> dict:
    done = status == "done"
    return {"index": job.index, "run_name": job.run_name, "status": status,
            "seconds": None if seconds is None else round(seconds, 1), "error": error,
            "prompt": job.settings.get("prompt"), "args": job.argv, "run_dir": str(job.run_dir),
            "splats": str(job.run_dir / "splats.ply") if done else None,
            "turntable": str(job.run_dir / "turntable.gif") if done else None, "metrics": metrics or {}}


def write_index(batch_dir: Path, rows: list[dict]) -> None:
    import io

    rows = sorted(rows, key=lambda r: r["index"])
    write_json(batch_dir / "index.json", rows)
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    columns = [k for k in INDEX_KEYS if k != "metrics"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns + metric_keys)
    for r in rows:
        writer.writerow([" ".join(r[k]) if k == "args" else r[k] for k in columns]
                        + [r["metrics"].get(k) for k in metric_keys])
    write_text(batch_dir / "index.csv", text.getvalue())


def previous_rows(batch_dir: Path) -> dict[str, dict]:
    """The last index's rows by run name (finished runs keep their time and metrics; a damaged index's rows, or
    values of the wrong kind, are left out: finished runs are measured again from their folders)."""
    try:
        rows = {r["run_name"]: r for r in json.loads((batch_dir / "index.json").read_text())}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return {}
    return {name: {"seconds": r.get("seconds") if isinstance(r.get("seconds"), (int, float)) else None,
                   "metrics": r.get("metrics") if isinstance(r.get("metrics"), dict) else {}}
            for name, r in rows.items() if isinstance(name, str)}


def without_flag(argv: list[str], flag: str) -> list[str]:
    """argv less `flag VALUE` (the driver sets it once itself)."""
    out = list(argv)
    while flag in out:
        i = out.index(flag)
        del out[i:i + 2]
    return out


def one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    message = text[-1] if text else ""
    return message if isinstance(cause, UserError) else f"{type(cause).__name__}: {message}"


def check_schedulable(pending: list[Job], asks: dict[int, dict], cluster: dict) -> None:
    """Refuses, before anything is submitted, jobs that no node could ever start (Ray would queue them
    forever): one line with what they ask for and what the cluster has."""
    names = {"num_cpus": "CPU", "num_gpus": "GPU"}  # Ray's option names -> its resource names
    have = {k: cluster.get(name, 0) for k, name in names.items()}
    stuck = [job for job in pending if any(n > have[k] for k, n in asks[job.index].items())]
    if stuck:
        ask = ", ".join(f"{n:g} {names[k]}s" for k, n in asks[stuck[0].index].items())
        raise UserError(f"{len(stuck)} of {len(pending)} jobs can never start: {stuck[0].run_name} asks for {ask}, "
                        f"and the Ray cluster has {have['num_cpus']:g} CPUs and {have['num_gpus']:g} GPUs in all "
                        "(lower --cpus-per-job; Stable Diffusion jobs need a GPU each: --gpus-per-job)")


def initial_rows(planned: list[Job], batch_dir: Path) -> tuple[dict[int, dict], list[Job]]:
    """Each job's row before anything runs (failed to plan, changed, done, or pending) and the pending jobs."""
    before = previous_rows(batch_dir)
    rows, pending = {}, []
    for job in planned:
        state = "failed" if job.error else run_state(job.run_dir)
        if job.error:
            rows[job.index] = row(job, "failed", error=job.error)
        elif state == "done" and (changed := changed_settings(job)):
            rows[job.index] = row(job, "changed", error=f"finished with other settings ({changed}); to train it as "
                                  f"the job now says, remove {job.run_dir} or give the job another run_name")
        elif state == "done":
            old = before.get(job.run_name, {})
            rows[job.index] = row(job, "done", old.get("seconds"), metrics=old.get("metrics") or
                                  finished_metrics(job.run_dir))
        else:
            (job.run_dir / RUNNING).unlink(missing_ok=True)  # left by a worker of a killed batch
            pending.append(job)
            rows[job.index] = row(job, "pending")
    return rows, pending


def send_ray_token(address: str | None) -> None:
    """Joining a cluster with a token on this machine: token mode, before Ray is imported (it reads the mode
    then). `ray start` clusters use token authentication, and a driver sends its token only in token mode:
    without it, a screen of Ray's "InvalidAuthToken" lines, then no cluster; a cluster without tokens ignores it."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    joining = address or os.environ.get("RAY_ADDRESS")
    if joining and "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path)):
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, threads: int, received: list[int]):
    """Ray for the block: the cluster at `address` (or $RAY_ADDRESS), else a local instance of its own, shut
    down after. SIGTERM (a scheduler, `kill`) stops the batch as Ctrl-C does (KeyboardInterrupt; received[0]
    says which), from before Ray starts (it exited 15 without a word when it came during ray.init) and again
    after it (ray.init installs a crash handler: a stack dump, exit 15)."""
    import logging

    import ray

    from . import ray_cleanup

    started_here = not (address or os.environ.get("RAY_ADDRESS"))
    previous = None

    def on_term(signum, frame):
        received[0] = signum
        raise KeyboardInterrupt

    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        previous = signal.signal(signal.SIGTERM, on_term)
    watch = ray_cleanup.start() if started_here else None  # Ray's processes end with a SIGKILLed driver too
    if started_here:  # our own instance keeps Ray's default, token authentication, without Ray's notice of it
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        # "local": a new instance even where `ray start` left a cluster's address behind (ray.init(None) would
        # join it). Workers inherit the driver's environment: a NUMBA_NUM_THREADS set for the driver's own cores
        # would size every worker's numba pool past its share, and its idle threads spin
        ray.init(address=address or ("local" if started_here else None), num_cpus=num_cpus if started_here else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}})
        if on_main:
            signal.signal(signal.SIGTERM, on_term)
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if started_here:
            ray.shutdown()
            ray_cleanup.finish(watch)


def run_jobs(pending: list[Job], rows: dict[int, dict], batch_dir: Path, asks: dict, threads: int, bar) -> None:
    """Submits the pending jobs and records each as it ends (done or failed), the index rewritten each time."""
    import ray

    task, refs, started = ray.remote(train_job), {}, {}
    for job in pending:
        argv = [*without_flag(job.argv, "--run-name"), "--output-dir", str(batch_dir), "--run-name", job.run_name,
                "--log.no-progress"]  # train_job adds --resume or --overwrite; the index keeps the job's own flags
        refs[task.options(**asks[job.index], max_retries=0).remote(argv, str(job.run_dir), threads)] = job
        started[job.index] = time.time()
        rows[job.index] = row(job, "submitted")
    write_index(batch_dir, list(rows.values()))
    waiting, shown, live = list(refs), None, sys.stderr.isatty()
    counts = {"done": sum(r["status"] == "done" for r in rows.values()),
              "failed": sum(r["status"] in ("failed", "changed") for r in rows.values())}
    while waiting:
        try:
            finished, waiting = ray.wait(waiting, num_returns=1, timeout=2.0)
        except KeyboardInterrupt:
            for ref in waiting:
                ray.cancel(ref)
            raise
        for ref in finished:
            job = refs[ref]
            try:
                result = ray.get(ref)
                rows[job.index] = row(job, "done", result["seconds"], metrics={
                    "n_gaussians": result["n_gaussians"], "skipped_steps": result["skipped_steps"],
                    **result.get("janus", {})})
                counts["done"] += 1
            except Exception as e:  # noqa: BLE001 - a failed job is recorded, the others go on
                rows[job.index] = row(job, "failed", time.time() - started[job.index], error=one_line(e))
                counts["failed"] += 1
            write_index(batch_dir, list(rows.values()))
        running = sum((refs[ref].run_dir / RUNNING).exists() for ref in waiting)
        state = {**counts, "running": running, "queued": len(waiting) - running}
        # a terminal redraws every poll; a log file gets a line when a job finishes (update) and one when the
        # counts change between finishes (the next job's worker has started), so no line is stale
        bar.set_postfix(**state, refresh=live or (not finished and state != shown))
        if finished:
            bar.update(len(finished))
        shown = state


def run_batch(jobs: list[dict], batch_dir: Path, shared_flags: list[str] = (), address: str | None = None,
              num_cpus: int | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 1.0,
              progress: bool = True) -> list[dict]:
    """Runs every job not finished yet on Ray; returns (and writes) the index rows. Ctrl-C or SIGTERM cancels
    what runs (each run keeps its last checkpoint) and marks it interrupted."""
    send_ray_token(address)
    import ray
    from tqdm import tqdm

    batch_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(jobs, list(shared_flags), batch_dir)
    rows, pending = initial_rows(planned, batch_dir)
    write_index(batch_dir, list(rows.values()))
    if not pending:
        return [rows[i] for i in sorted(rows)]
    if not (address or os.environ.get("RAY_ADDRESS")):  # the local workers share this machine's photo cache
        render_photo_sets(pending)
    threads = max(1, int(cpus_per_job))
    asks = {job.index: {"num_gpus": gpus_per_job, "num_cpus": 1} if job.gpu else {"num_cpus": cpus_per_job}
            for job in pending}
    bar = tqdm(total=len(planned), initial=len(planned) - len(pending), desc="batch", unit="job",
               disable=not progress, dynamic_ncols=True)
    received = [signal.SIGINT]
    try:
        with ray_session(address, num_cpus, threads, received):
            check_schedulable(pending, asks, ray.cluster_resources())
            run_jobs(pending, rows, batch_dir, asks, threads, bar)
    except KeyboardInterrupt:
        stopped = [job for job in pending if rows[job.index]["status"] in ("pending", "submitted")]
        for job in stopped:  # (a stop during submission leaves some never submitted: interrupted too)
            rows[job.index] = row(job, "interrupted")
        write_index(batch_dir, list(rows.values()))
        done = sum(r["status"] == "done" for r in rows.values())
        failed = sum(r["status"] in ("failed", "changed") for r in rows.values())
        raise Interrupted(f"batch stopped: {done} done, {failed} failed, {len(stopped)} interrupted (each keeps its "
                          "last checkpoint); rerun the same command to continue", received[0]) from None
    finally:
        bar.close()
    return [rows[i] for i in sorted(rows)]


def contact_sheet(rows: list[dict], path: Path, frames: int = 8, size: int = 96) -> None:
    """One row per job: its label, then `frames` turntable frames (grey for jobs without a result)."""
    import imageio.v3 as iio
    from PIL import Image, ImageDraw

    label_w = 280
    sheet = Image.new("RGB", (label_w + frames * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        y = i * size
        gif = Path(r["turntable"]) if r.get("turntable") else None
        if gif and gif.is_file():
            video = iio.imread(gif)[..., :3]
            for j, k in enumerate(np.linspace(0, len(video), frames, endpoint=False).astype(int)):
                sheet.paste(Image.fromarray(video[k]).resize((size, size)), (label_w + j * size, y))
        else:
            draw.rectangle([label_w, y, label_w + frames * size - 1, y + size - 1], fill=(220, 220, 220))
        metrics = r.get("metrics") or {}
        lines = [r["run_name"][:40], r["status"] + (f" {r['seconds']:.0f} s" if r.get("seconds") else "")]
        if "janus" in metrics:
            lines.append(f"janus={metrics['janus']} variety={metrics['view_variety']:.2f}")
        if r.get("error"):
            lines += [r["error"][k:k + 44] for k in range(0, min(len(r["error"]), 132), 44)]
        for k, text in enumerate(lines):
            draw.text((6, y + 6 + 14 * k), text, fill=(0, 0, 0) if r["status"] != "failed" else (170, 0, 0))
        draw.line([0, y + size - 1, sheet.width, y + size - 1], fill=(200, 200, 200))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def check_args(args: BatchArgs) -> None:
    """Refuses, before anything runs, values no batch can use; an --address (or $RAY_ADDRESS) must answer."""
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UserError(f"--num-cpus must be at least 1 (got {args.num_cpus})")
    if not args.cpus_per_job > 0 or not args.gpus_per_job >= 0:
        raise UserError(f"--cpus-per-job must be above 0 and --gpus-per-job at least 0 (got {args.cpus_per_job}, "
                        f"{args.gpus_per_job})")
    if args.contact_frames < 1:
        raise UserError(f"--contact-frames must be at least 1 (got {args.contact_frames})")
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, "--address" if args.address else "$RAY_ADDRESS")


def check_reachable(address: str, where: str, timeout: float = 10.0) -> None:
    """A HOST:PORT Ray address must parse and accept a connection within `timeout` s (Ray itself waits minutes
    with nothing but its own warnings); 'auto' and ray:// addresses are Ray's to find."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{where} {address!r} is not HOST:PORT (the head node's address, e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
        raise UserError(f"cannot reach the Ray cluster at {where} {address} ({why}); start it with `ray start "
                        "--head` there, or leave the address out for a local one") from None


def cmd_batch(argv: list[str]) -> None:
    from .args import parse

    own, shared = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parse(BatchArgs, own, "esd-gs batch")
    check_args(args)
    jobs = expand_jobs(read_jobs(args.jobs), args)
    batch_dir = args.output_dir or Path("outputs") / args.jobs.stem
    t0 = time.time()
    rows = run_batch(jobs, batch_dir, shared, args.address, args.num_cpus, args.cpus_per_job, args.gpus_per_job,
                     args.progress)
    contact_sheet(rows, batch_dir / "contact_sheet.png", args.contact_frames)
    done = sum(r["status"] == "done" for r in rows)
    print(f"batch {batch_dir}: {done} of {len(rows)} done in {time.time() - t0:.0f} s; index.json, index.csv, "
          "contact_sheet.png")
    failed = [r for r in rows if r["status"] in ("failed", "changed")]
    for r in failed:
        print(f"  {r['status']}: {r['run_name']}: {r['error']}")
    if failed:
        raise UserError(f"{len(failed)} of {len(rows)} jobs failed or changed (see {batch_dir / 'index.json'})")
