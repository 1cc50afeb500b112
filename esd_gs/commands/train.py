"""`esd-gs train`: one run, its outcome in a line (and the Janus report's for the synthetic head)."""

from __future__ import annotations

from .args import train_from_args


def cmd_train(argv: list[str]) -> None:
    result = train_from_args(argv)
    print(f"done: {result['run_dir']} ({result['n_gaussians']} Gaussians, {result['skipped_steps']} skipped steps)")
    if "janus" in result:  # the synthetic world's end-of-run report
        j = result["janus"]
        print(f"janus={j['janus']} front_share={j['front_share']:.2f} faces={j['face_count']} "
              f"view_error={j['view_error_deg']:.1f}deg variety={j['view_variety']:.2f}")
