#!/usr/bin/env python
"""Janus rates of SDS, VSD and ESD in the synthetic world (issue 12's benchmark).

Every run is the demo preset (`configs/demo.yaml`; the tinysd settings: `configs/tiny-sd.yaml`) with only
the method, the seed, the setting and the variational network changed.
Settings:
  main                  photo set uniform in azimuth (front share 0.25), no view prompts; the training
                        cameras are the photos' orbit. The fair test: with lam = 1 ESD minimises
                        KL(q || p) over renders, and here the true head is that optimum.
  main-nomap            main with the variational UNet's camera as a class embedding only (threestudio's
                        design).
  main-vpred            main with the network trained to predict v (its loss weighs high t 1/alphabar
                        more than eps does) and a finer camera map (16x16 grid, 4 Fourier octaves of the
                        camera).
  main-vpred-map32      the same with a full-resolution (32x32) camera map (an MLP of the camera),
                        the one whose camera branch came closest to the exact estimator's until pins.
  main-vpred-pins64     the same with the map a blend of 64 grids pinned to directions on the sphere
                        (`--variational.camera-map-pins 64`) instead of an MLP of the camera.
  main-vpred-pins64-top20  main-vpred-pins64 with the scale-free densification of the Stable Diffusion path
                        (`--densify.grow-top 0.2 --densify.prune-large`: the top 20% of visible Gaussians
                        by 2D gradient grow at each refine, the demo's threshold grew 20-24%; oversized
                        Gaussians pruned): the re-check before that rule may become the demo's.
  main-exact1200        main's exact rows in 3x longer runs (1200 steps; t_max drops at 600,
                        densification until 900), the bank re-rendered every 4 steps: the exact
                        estimator's strongest variant on tuning seeds (docs/results.md section 4).
  oracle                the same photo set; a photometric fit and SDS with strong view prompts (kappa 5):
                        proof that the world and the optimiser can express the truth.
  front0.7              70% of the photos within 45 deg of the front, no view prompts (secondary: a
                        front-biased p makes a Janus head closer to ESD's optimum than the truth).
  front0.7-viewprompts  the same with view prompts (kappa 0.12). Both with the class-embedding network.
  tinysd                the real Stable Diffusion path (`configs/tiny-sd.yaml`: tiny-sd, trained on the fair
                        photo set, as the prior with CFG; LoRA on its UNet), no view prompts, the camera as
                        a class embedding only (threestudio's design); SDS also with view prompts.
  tinysd-pins64         the same with the camera also as a map of 64 pinned grids at the latents' 16x16.
  tinysd-web            the paper's regime through the real path (`configs/tiny-sd-web.yaml`: tiny-sd-web,
                        trained on front-biased photos whose view captions are rare and often wrong), view
                        prompts on for every row, as ProlificDreamer and the ESD authors run.
  demo-fresh            the demo preset as it ships (its ESD: lam 1, then 0.5 from the anneal step), run on
                        seeds 300-319 (`--first-seed 300 --seeds 20`): the fidelity check of results.md
                        section 8.
Methods: sds; vsd, esd_lam0.5, esd_lam1.0 with the learned variational network (in `main` predicting eps,
with the camera also as a coarse spatial input, `--variational.camera-map`); and vsd-exact,
esd_lam0.5-exact, esd_lam1.0-exact with the exact estimator (fresh renders, Dirac camera branch). Each
setting spells its network out in full, so the rows do not change when the demo preset's network does.
The baselines the ESD paper compares with (issue 25): sds-viewprompts (view prompts alone), sds-perpneg,
vsd-perpneg, esd_lam1.0-perpneg (Perp-Neg on the view prompts) and debiased-sds (score debiasing, the clip
growing 0.5 -> 2.0), in main-vpred-pins64 (the demo's network) and tinysd.

Each row: the Janus rate, the rate of runs with no face at all (no view matches a front view: the
outcome the janus flag does not count) and of collapsed runs (one face, not Janus, but a view error over
COLLAPSED_DEG: the views do not follow the head round), consistent = none of the three, view variety, the paper's iv / iq, the view error, and fidelity:
match_rms over all seeds and over the consistent ones (one face, not Janus), PSNR to the truth at the
same views (blank for rows run before those metrics existed).
The runs go through `esd-gs batch`'s machinery (esd_gs/batch.py: one Ray task per run, one CPU thread
each, on a local Ray instance or --address); finished runs are reused, so an interrupted benchmark
continues. Outputs: docs/results/janus.json
({setting: {method: {metric: [per seed]}}}), the table in docs/results.md (between its markers; the text
around them is kept) and docs/results/strip_<setting>_<method>.png (turntables, a row per seed, for the
settings in --strips).

    python benchmarks/janus.py --settings main --seeds 10
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tyro

from esd_gs.commands.batch import run_batch
from esd_gs.errors import UserError

REPO = Path(__file__).resolve().parents[1]
LEARNED = ["sds", "vsd", "esd_lam0.5", "esd_lam1.0"]
EXACT = ["vsd-exact", "esd_lam0.5-exact", "esd_lam1.0-exact"]
METHODS = {
    "sds": ["--guidance", "sds"],
    "vsd": ["--guidance", "vsd"],
    # ESD with a constant lam, whatever schedule a preset has (--lam-final None)
    "esd_lam0.5": ["--guidance", "esd", "--lam", "0.5", "--lam-final", "None"],
    "esd_lam1.0": ["--guidance", "esd", "--lam", "1.0", "--lam-final", "None"],
    "esd_lam1.0to0": ["--guidance", "esd", "--lam", "1.0", "--lam-final", "0"],  # lam 1 until the anneal step
    "vsd-exact": ["--guidance", "vsd", "--synthetic.variational", "exact"],
    "esd_lam0.5-exact": ["--guidance", "esd", "--lam", "0.5", "--lam-final", "None", "--synthetic.variational",
                         "exact"],
    "esd_lam1.0-exact": ["--guidance", "esd", "--lam", "1.0", "--lam-final", "None", "--synthetic.variational",
                         "exact"],
    "photometric": ["--guidance", "photometric"],
    "sds-hardview": ["--guidance", "sds", "--prior.view-dependent-prompt", "--synthetic.view-kappa", "5"],
    "sds-viewprompts": ["--guidance", "sds", "--prior.view-dependent-prompt"],
    # issue 25's baselines; Perp-Neg works on the view prompts (kappa 0.12 in the synthetic world)
    "sds-perpneg": ["--guidance", "sds", "--prior.view-dependent-prompt", "--prior.perp-neg"],
    "vsd-perpneg": ["--guidance", "vsd", "--prior.view-dependent-prompt", "--prior.perp-neg"],
    "esd_lam1.0-perpneg": ["--guidance", "esd", "--lam", "1.0", "--lam-final", "None", "--prior.view-dependent-prompt",
                           "--prior.perp-neg"],
    # threestudio's clip ramp, the best of three on tuning seeds 100-102 (benchmarks/baselines_tuning.yaml)
    "debiased-sds": ["--guidance", "sds", "--prior.grad-clip", "0.5", "--prior.grad-clip-final", "2.0"],
    "esd": ["--guidance", "esd"],  # the preset's own ESD (the demo's lam schedule)
}
NO_PROMPTS = ["--prior.no-view-dependent-prompt"]
FAIR = ["--synthetic.front-share", "0.25", *NO_PROMPTS]
# The learned variational networks, each spelled out in full so that a change of the demo preset's
# network changes no setting's runs.
CLASS_EMBEDDING = ["--variational.no-camera-map", "--variational.camera-map-pins", "0", "--variational.camera-frequencies",
                   "0", "--synthetic.unet-prediction", "epsilon"]
CAMERA_MAP = ["--variational.camera-map", "--variational.camera-map-grid", "0", "--variational.camera-map-pins", "0",
              "--variational.camera-frequencies", "0", "--synthetic.unet-prediction", "epsilon"]

EXACT_LONG = ["--steps", "1200", "--stage2-step", "600", "--densify.refine-stop-iter", "900",
              "--synthetic.bank-refresh-every", "4"]


def v_camera_map(grid: int, pins: int = 0) -> list[str]:
    """The network trained to predict v, with a camera map of this grid (an MLP of the camera, or `pins`
    pinned grids) and 4 Fourier octaves of the camera."""
    return ["--variational.camera-map", "--variational.camera-map-grid", str(grid), "--variational.camera-map-pins",
            str(pins), "--variational.camera-frequencies", "4", "--synthetic.unet-prediction", "v_prediction"]


SD_CLASS_EMBEDDING = ["--variational.no-camera-map", "--variational.camera-map-pins", "0",
                      "--variational.camera-frequencies", "0"]
SD_PINS = ["--variational.camera-map", "--variational.camera-map-grid", "16", "--variational.camera-map-pins", "64",
           "--variational.camera-frequencies", "4"]
VARIATIONAL = ["vsd", "esd_lam0.5", "esd_lam1.0"]
BASELINES = ["sds", "sds-viewprompts", "sds-perpneg", "debiased-sds"]  # the ones without a variational network
SETTINGS = {  # name: (flags, methods)
    "main": ([*FAIR, *CAMERA_MAP], LEARNED + EXACT),
    "main-nomap": ([*FAIR, *CLASS_EMBEDDING], ["vsd", "esd_lam1.0"]),
    "main-vpred": ([*FAIR, *v_camera_map(16)], VARIATIONAL),
    "main-vpred-map32": ([*FAIR, *v_camera_map(32)], VARIATIONAL),
    "main-vpred-pins64": ([*FAIR, *v_camera_map(32, pins=64)], [*BASELINES, *VARIATIONAL, "vsd-perpneg",
                                                                 "esd_lam1.0-perpneg"]),
    "main-vpred-pins64-top20": ([*FAIR, *v_camera_map(32, pins=64), "--densify.grow-top", "0.2",
                                 "--densify.prune-large"], ["vsd", "esd_lam1.0"]),
    "main-exact1200": ([*FAIR, *EXACT_LONG], EXACT),
    "oracle": (["--synthetic.front-share", "0.25"], ["photometric", "sds-hardview"]),
    "front0.7": (["--synthetic.front-share", "0.7", *NO_PROMPTS, *CLASS_EMBEDDING], LEARNED),
    "front0.7-viewprompts": (["--synthetic.front-share", "0.7", "--prior.view-dependent-prompt", *CLASS_EMBEDDING],
                             LEARNED),
    "tinysd": ([*NO_PROMPTS, *SD_CLASS_EMBEDDING], [*BASELINES, *VARIATIONAL, "vsd-perpneg", "esd_lam1.0-perpneg"]),
    "tinysd-pins64": ([*NO_PROMPTS, *SD_PINS], ["vsd", "esd_lam1.0"]),
    # view prompts on for every row; the network (a class embedding: 12 of 12 tuning runs consistent, the pinned
    # map 11 of 12) and Perp-Neg's scale (100: 4 of 4 consistent, as 30; ties go to SDS's) were fixed on seeds
    # 100-103 (benchmarks/tinysd_web_tuning.yaml; results.md section 9)
    "tinysd-web": (["--prior.view-dependent-prompt", *SD_CLASS_EMBEDDING],
                   ["sds", "vsd", "esd_lam0.5", "esd_lam1.0", "sds-perpneg", "debiased-sds"]),
    # the decisive pair of tinysd-web (VSD against its best ESD row) again on seeds 20-39, as one `esd-gs batch`
    # (benchmarks/tinysd_web_recheck.yaml, stored with --record)
    "tinysd-web-recheck": (["--prior.view-dependent-prompt", *SD_CLASS_EMBEDDING], ["vsd", "esd_lam1.0"]),
    "demo-fresh": ([], ["vsd", "esd"]),
}
AS_SHIPPED = ("demo-fresh",)  # settings that measure a preset as it ships: they follow its network on purpose
PRESETS = {"tinysd": "tiny-sd", "tinysd-pins64": "tiny-sd", "tinysd-web": "tiny-sd-web",
           "tinysd-web-recheck": "tiny-sd-web"}  # the others: demo
COLLAPSED_DEG = 30.0
"""A consistent run's view error stays under this: the oracle rows reach at most 12.3 deg (20 of 20 runs) and
the consistent runs of every row before 2026-12-06 under 30 but for 5 of ~300 (30-48 deg); a demo VSD run
on an unseen photo set ended at 48 deg with one face, front share 0.375 and variety 1.37: a collapsed head."""
METRICS = ("janus", "front_share", "face_count", "view_error_deg", "view_variety", "iv", "iq", "match_rms", "psnr")
STRIP_FRAMES = 8


@dataclass
class Args:
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    methods: list[str] | None = None
    """Run only these of each setting's methods; the setting's other rows in janus.json are kept."""
    seeds: int = 10
    first_seed: int = 0
    address: str | None = None
    """Ray cluster (default: a local instance with one single-threaded run per core)."""
    runs_dir: Path = REPO / "outputs" / "bench-janus"
    results_dir: Path = REPO / "docs" / "results"
    steps: int | None = None
    """Override the demo preset's steps (default: the preset's)."""
    strips: list[str] = field(default_factory=lambda: ["main", "main-vpred-map32", "main-vpred-pins64",
                                                         "main-exact1200"])
    """Settings whose turntable strips are written when they are run (about 0.5 MB each)."""
    summarize: list[Path] | None = None
    """Only print the table of these `esd-gs batch` folders (a row per job name without its -sN seed suffix;
    tuning and re-check batches) and exit."""
    table_only: bool = False
    """Only rewrite results.md's table from janus.json (no runs)."""
    record: Path | None = None
    """Store this `esd-gs batch` folder's finished runs as the rows of the one setting in --settings (no runs;
    each run's preset, seed and flags must be the setting's): re-checks run as a batch of their own."""


def run_name(setting: str, method: str, seed: int) -> str:
    return f"{setting}-{method}-s{seed}"


def job(args: Args, setting: str, method: str, seed: int) -> dict:
    """One run as a batch job: the setting's preset (demo or tiny-sd) and the setting's and method's flags
    (its config.yaml records all of them)."""
    extra = ["--steps", str(args.steps)] if args.steps else []
    return {"run_name": run_name(setting, method, seed), "preset": PRESETS.get(setting, "demo"), "seed": seed,
            "args": [*SETTINGS[setting][0], *METHODS[method], *extra, "--log.preview-every", "0"]}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def strip(args: Args, setting: str, method: str, seeds: list[int]) -> np.ndarray:
    """Rows = seeds, columns = STRIP_FRAMES turntable frames (azimuth 0 = the true front)."""
    rows = []
    for seed in seeds:
        frames = iio.imread(args.runs_dir / run_name(setting, method, seed) / "turntable.gif")[..., :3]
        rows.append(np.concatenate(list(frames[:: len(frames) // STRIP_FRAMES][:STRIP_FRAMES]), axis=1))
    return np.concatenate(rows, axis=0)


def write_table(path: Path, table: str) -> None:
    """Replaces the text between the table markers of `path` (creating the file if needed)."""
    start, end = "<!-- janus table: written by benchmarks/janus.py -->", "<!-- end of janus table -->"
    text = path.read_text() if path.is_file() else f"# Results\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def rate(flags: list[bool]) -> str:
    n, k = len(flags), sum(flags)
    lo, hi = wilson(k, n)
    return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"


def table(results: dict) -> str:
    """A row per setting and method. 'no face' (no view matches a front view) and 'collapsed' (one face, not
    Janus, view error over COLLAPSED_DEG) are counted apart from Janus; consistent = none of them. The fidelity
    columns (match_rms over all seeds / over the consistent ones; PSNR to the truth at the same views) are blank
    for rows run before they existed; 'none': no consistent seed."""
    lines = ["| setting | method | consistent [95% CI] | Janus rate [95% CI] | no face [95% CI] | collapsed "
             "| view variety | iv | iq | view error (deg) | match_rms all / consistent | PSNR (dB) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for setting, methods in results.items():
        for method, m in methods.items():
            outcome = outcomes(m)
            fidelity = "– | –"
            if len(m.get("psnr", [])) == len(m["janus"]):
                consistent = [r for r, o in zip(m["match_rms"], outcome) if o == "consistent"]
                fidelity = (f"{np.mean(m['match_rms']):.3f} / {f'{np.mean(consistent):.3f}' if consistent else 'none'} "
                            f"| {np.mean(m['psnr']):.1f}")
            count = lambda kind: [o == kind for o in outcome]  # noqa: E731
            lines.append(f"| {setting} | {method} | {rate(count('consistent'))} | {rate(count('janus'))} "
                         f"| {rate(count('no face'))} | {sum(count('collapsed'))} "
                         f"| {np.mean(m['view_variety']):.2f} | {np.mean(m['iv']):.2f} | {np.mean(m['iq']):.2f} "
                         f"| {np.mean(m['view_error_deg']):.0f} | {fidelity} | {len(m['janus'])} |")
    return "\n".join(lines)


def outcomes(m: dict[str, list]) -> list[str]:
    """Each seed's outcome: 'janus', 'no face', 'collapsed' or 'consistent' (in that order of precedence)."""
    return ["janus" if j else "no face" if f == 0 else "collapsed" if e > COLLAPSED_DEG else "consistent"
            for j, f, e in zip(m["janus"], m["face_count"], m["view_error_deg"])]


def add_report(row: dict[str, list], report: dict) -> None:
    """Appends one run's janus.json to a row's per-seed lists (runs older than a metric lack it)."""
    for k in [k for k in METRICS if k in report]:
        row[k].append(int(report[k]) if k == "janus" else report[k])


def batch_results(batch_dir: Path) -> dict:
    """{batch folder name: {job: {metric: [per seed]}}} from a batch's finished runs' janus.json."""
    rows = json.loads((batch_dir / "index.json").read_text())
    methods: dict[str, dict[str, list]] = {}
    for r in sorted((r for r in rows if r["status"] == "done"), key=lambda r: r["run_name"]):
        report = json.loads((batch_dir / r["run_name"] / "janus.json").read_text())
        add_report(methods.setdefault(r["run_name"].rsplit("-s", 1)[0], {k: [] for k in METRICS}), report)
    return {batch_dir.name: methods}


def recorded(args: Args) -> tuple[str, dict]:
    """The one setting of --settings and its rows from the --record batch, every run checked against job()."""
    if len(args.settings) != 1:
        raise SystemExit("--record stores one setting: name it with --settings")
    setting = args.settings[0]
    (rows,) = batch_results(args.record).values()
    if sorted(rows) != sorted(SETTINGS[setting][1]):
        raise SystemExit(f"{args.record} holds {sorted(rows)}, setting {setting} has {SETTINGS[setting][1]}")
    for r in json.loads((args.record / "index.json").read_text()):
        method, seed = r["run_name"].rsplit("-s", 1)
        j = job(args, setting, method, int(seed))
        flags = ["--run-name", r["run_name"], "--preset", j["preset"], "--seed", seed, *j["args"]]
        if r["status"] == "done" and r["args"] != flags:
            raise SystemExit(f"{r['run_name']} was not run with setting {setting}'s flags: {' '.join(r['args'])}")
    return setting, {m: rows[m] for m in SETTINGS[setting][1]}


def main() -> None:
    args = tyro.cli(Args)
    if args.record:
        setting, rows = recorded(args)
        path = args.results_dir / "janus.json"
        results = json.loads(path.read_text())
        results[setting] = rows
        path.write_text(json.dumps(results, indent=1) + "\n")
        args.table_only = True
    if args.summarize:
        print(table({name: m for d in args.summarize for name, m in batch_results(d).items()}))
        return
    if args.table_only:
        results = json.loads((args.results_dir / "janus.json").read_text())
        text = table({s: results[s] for s in SETTINGS if s in results})
        write_table(args.results_dir.parent / "results.md", text)
        print(text)
        return
    unknown = sorted(set(args.methods or []) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]}; the methods: {', '.join(METHODS)}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    methods = {s: [m for m in SETTINGS[s][1] if args.methods is None or m in args.methods] for s in args.settings}
    jobs = [(s, m, seed) for seed in seeds for s in args.settings for m in methods[s]]
    t0 = time.time()
    rows = run_batch([job(args, *j) for j in jobs], args.runs_dir, address=args.address)
    print(f"{len(jobs)} runs in {time.time() - t0:.0f} s (finished ones reused)", flush=True)
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0]['run_name']}: {failed[0]['error']}")
    reports = [json.loads((args.runs_dir / run_name(*j) / "janus.json").read_text()) for j in jobs]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / "janus.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results = {s: v for s, v in results.items() if s in SETTINGS}
    for s in args.settings:  # the setting's rows in SETTINGS order: the ones run now replace their old values
        old = results.get(s, {})
        results[s] = {m: {k: [] for k in METRICS} if m in methods[s] else old[m] for m in SETTINGS[s][1]
                      if m in methods[s] or m in old}
    for (s, m, _), report in zip(jobs, reports):
        add_report(results[s][m], report)
    path.write_text(json.dumps(results, indent=1) + "\n")
    for s in [s for s in args.settings if s in args.strips]:
        for m in methods[s]:
            iio.imwrite(args.results_dir / f"strip_{s}_{m}.png", strip(args, s, m, seeds))
    text = table({s: results[s] for s in SETTINGS if s in results})
    write_table(args.results_dir.parent / "results.md", text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a stopped batch (Ctrl-C, SIGTERM) says what it kept, in one line
        print(f"janus.py: {e.label}{e}", file=sys.stderr)
        sys.exit(e.exit_code)
