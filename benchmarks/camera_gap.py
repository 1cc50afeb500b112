#!/usr/bin/env python
"""Camera gap of finished runs with a learned variational network (issue 12): synthetic-world runs, and
Stable Diffusion runs whose model knows the synthetic head (tiny-sd: the LoRA on its UNet, in latent space;
the exact estimator's bank holds encoded renders):
|eps(camera) - eps(no camera)| / |eps_prior - eps(camera)| at t = 200, 500, 800 for the learned network and
for the exact estimator on the same renders (esd_gs/synthetic/camera_gap.py).

    python benchmarks/camera_gap.py RUN [--across RUN ...] [--also NAME=RUN ...] [--output docs/results/camera_gap.json]
    python benchmarks/camera_gap.py RUN --refit-steps 1600 [--refit-batch 4]   (the learned gap as RUN's
        network keeps training on RUN's final object; JSON lines, a list in --output; nothing else measured)

docs/results/camera_gap.json was made from the benchmark's runs (`python benchmarks/janus.py`) by the
command in docs/results.md section 3: RUN = the demo network's seed 0, --across its seeds 1-9, --also the
earlier networks' seed-0 runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from esd_gs.config import TrainConfig, from_dict, saved_config
from esd_gs.core.device import pick_device
from esd_gs.errors import UserError
from esd_gs.core.gaussians import splats_from_tensors
from esd_gs.io.atomic import write_json
from esd_gs.io.checkpoint import latest_checkpoint
from esd_gs.synthetic.camera_gap import gap_report, refit
from esd_gs.worlds import make_world
from esd_gs.worlds.stable_diffusion import knows_synthetic_head


@dataclass
class Args:
    run: tyro.conf.Positional[Path]
    """A finished synthetic-world run with the learned variational network (vsd or esd)."""
    also: list[str] = field(default_factory=list)
    """More runs to report under their own key, as NAME=RUN."""
    across: list[Path] = field(default_factory=list)
    """Runs of RUN's configuration on other seeds: the learned gap and the ratios of all of them (RUN
    included) summarised as mean, min and max under "across_seeds"."""
    output: Path | None = None
    views: int = 16
    draws: int = 4
    more_bank_sizes: list[int] = field(default_factory=lambda: [64, 256, 1024])
    """Also report the exact gap with these numbers of renders (the run's own K is the reference)."""
    refit_steps: int = 0
    """Instead of the report: freeze RUN's object, train its network this many more steps and print the
    learned gaps at the start and every quarter (esd_gs/synthetic/camera_gap.py `refit`)."""
    refit_batch: int = 4
    """Fresh renders a refit step (the demo trains on 4 a step)."""


def load_run(run: Path):
    """(config, synthetic objective with the run's final network, final splats, step) of a finished run."""
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run folder (no config.yaml)")
    data = saved_config(run)
    data.pop("preset", None)
    cfg = from_dict(TrainConfig, data)
    synthetic = cfg.world == "synthetic" and cfg.synthetic.variational == "learned"
    if cfg.guidance not in ("vsd", "esd") or not (synthetic or knows_synthetic_head(cfg.model_path or "")):
        raise UserError(f"{run}: camera_gap needs a vsd/esd run with a learned network, in the synthetic world "
                        "or with a model of the synthetic head (tiny-sd)")
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise UserError(f"{run}: no readable checkpoint in {run / 'checkpoints'}")
    objective = make_world(cfg, pick_device("cpu")).objective()
    objective.load_state_dict(ckpt["objective"])
    return cfg, objective, splats_from_tensors(ckpt["splats"]), ckpt["step"]


def run_report(run: Path, args: Args) -> dict:
    cfg, objective, splats, step = load_run(run)
    report = gap_report(objective.prior, objective.variational, splats, cfg.synthetic, args.views, args.draws,
                        more_bank_sizes=tuple(args.more_bank_sizes))
    return {**report, "run": str(run), "step": step, "camera_map": cfg.variational.camera_map}


def summary(reports: list[dict]) -> dict:
    """Mean, min and max over runs of the learned gap and of its ratio to the exact gap at each bank size."""
    def stats(values: list[float]) -> dict:
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}

    times = list(reports[0]["learned"])
    exact = {str(reports[0]["bank_size"]): [r["exact"] for r in reports]}
    for k in reports[0]["exact_by_bank_size"]:
        exact[k] = [r["exact_by_bank_size"][k] for r in reports]
    out = {"runs": [r["run"] for r in reports],
           "learned": {t: stats([r["learned"][t] for r in reports]) for t in times}}
    for k, per_run in exact.items():
        out[f"ratio_K{k}"] = {t: stats([r["learned"][t] / e[t] for r, e in zip(reports, per_run)]) for t in times}
    return out


def main() -> None:
    args = tyro.cli(Args)
    try:
        measure(args)
    except UserError as e:
        raise SystemExit(f"camera_gap: {e}") from None


def measure(args: Args) -> None:
    if args.refit_steps:
        cfg, objective, splats, step = load_run(args.run)
        entries = []
        for entry in refit(objective.prior, objective.variational, splats, cfg.synthetic, args.refit_steps,
                           args.refit_batch, views=args.views, draws=args.draws):
            entries.append({"run": str(args.run), "run_step": step, "refit_batch": args.refit_batch, **entry})
            print(json.dumps(entries[-1]), flush=True)
        if args.output:
            write_json(args.output, entries)
        return
    report = run_report(args.run, args)
    if args.across:
        report["across_seeds"] = summary([report, *(run_report(run, args) for run in args.across)])
    for item in args.also:
        name, _, path = item.partition("=")
        report[name] = run_report(Path(path), args)
    if args.output:
        write_json(args.output, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
