"""`esd-gs` command line (tyro): train | janus (render, export, view, bench: see the open issues)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from .errors import UserError

USAGE = """usage: esd-gs {train,janus} [--help] ...

  train    optimise Gaussians for a prompt with SDS / VSD / ESD (esd-gs train --preset demo)
  janus    Janus metric of a synthetic-world result (front_share, face_count, ...)
"""


def resolve_ply(path: Path) -> Path:
    """A run folder means its splats.ply."""
    path = Path(path)
    return path / "splats.ply" if path.is_dir() else path


def cmd_train(argv: list[str]) -> None:
    from .config import TrainConfig, load_preset
    from .train import Trainer

    preset = None
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    default = load_preset(preset) if preset else TrainConfig()
    cfg = tyro.cli(TrainConfig, default=default, args=argv, prog="esd-gs train")
    result = Trainer(cfg).train()
    print(f"done: {result['run_dir']} ({result['n_gaussians']} Gaussians, {result['skipped_steps']} skipped steps)")
    if "janus" in result:
        j = result["janus"]
        print(f"janus={j['janus']} front_share={j['front_share']:.2f} faces={j['face_count']} "
              f"view_error={j['view_error_deg']:.1f}deg variety={j['view_variety']:.2f}")


@dataclass
class JanusArgs:
    """Janus metric of a synthetic-world result; writes janus.json next to the PLY."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""


def cmd_janus(argv: list[str]) -> None:
    import json

    from .gaussians import splats_from_tensors
    from .io.atomic import write_json
    from .io.ply import read_ply
    from .synthetic.janus import janus_report

    args = tyro.cli(JanusArgs, args=argv, prog="esd-gs janus")
    ply = resolve_ply(args.path)
    report = janus_report(splats_from_tensors(read_ply(ply)))
    write_json(ply.parent / "janus.json", report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))


COMMANDS = {"train": cmd_train, "janus": cmd_janus}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"esd-gs: error: unknown command '{argv[0]}'\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    try:
        COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f"esd-gs: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("esd-gs: interrupted (the last checkpoint is kept; continue with --resume)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
