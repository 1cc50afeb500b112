#!/usr/bin/env python
"""Camera gap of a finished synthetic-world run with the learned variational network (issue 12):
|eps(camera) - eps(no camera)| / |eps_prior - eps(camera)| at t = 200, 500, 800 for the learned network and
for the exact estimator on the same renders (esd_gs/synthetic/camera_gap.py).

    python benchmarks/camera_gap.py outputs/a-head-esd0.5-s0 [--output docs/results/camera_gap.json]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro
import yaml

from esd_gs.config import TrainConfig, from_dict
from esd_gs.device import pick_device
from esd_gs.errors import UserError
from esd_gs.gaussians import splats_from_tensors
from esd_gs.io.atomic import write_json
from esd_gs.io.checkpoint import latest_checkpoint
from esd_gs.synthetic.camera_gap import gap_report
from esd_gs.worlds.synthetic import SyntheticWorld


@dataclass
class Args:
    run: tyro.conf.Positional[Path]
    """A finished synthetic-world run with the learned variational network (vsd or esd)."""
    output: Path | None = None
    views: int = 16
    draws: int = 4


def main() -> None:
    args = tyro.cli(Args)
    data = yaml.safe_load((args.run / "config.yaml").read_text())
    data.pop("preset", None)
    cfg = from_dict(TrainConfig, data)
    if cfg.world != "synthetic" or cfg.guidance not in ("vsd", "esd") or cfg.synthetic.variational != "learned":
        raise UserError("camera_gap needs a synthetic-world vsd/esd run with the learned variational network")
    ckpt = latest_checkpoint(args.run / "checkpoints")
    objective = SyntheticWorld(cfg, pick_device("cpu")).objective()
    objective.load_state_dict(ckpt["objective"])
    report = gap_report(objective.prior, objective.variational, splats_from_tensors(ckpt["splats"]), cfg.synthetic,
                        args.views, args.draws)
    report["run"] = str(args.run)
    report["step"] = ckpt["step"]
    if args.output:
        write_json(args.output, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
