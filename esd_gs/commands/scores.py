"""`esd-gs janus`, `clip` and `inception`: a result scored by the synthetic head's Janus metric, CLIP's text
alignment or the paper's Inception Quality / Variety, each written beside the PLY."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import tyro

from ..core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG
from ..errors import UserError
from ..metrics.clip import DEFAULT_CLIP_MODEL
from .args import check_orbit, check_turntable, parse


@dataclass
class JanusArgs:
    """Janus metric of a synthetic-world result: which way each of 24 views of the PLY faces, matched
    against the synthetic world's procedural head (facing +x, seen from the synthetic orbit). It means
    nothing for other objects. Writes RUN/janus.json for a run folder (or its splats.ply), and
    NAME.janus.json beside any other PLY, unless --output says where."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    output: Path | None = None
    """Where to write the report (default: see above)."""


def report_path(ply: Path, kind: str) -> Path:
    """RUN/<kind>.json for a run's splats.ply, NAME.<kind>.json beside any other PLY."""
    return ply.with_name(f"{kind}.json") if ply.name == "splats.ply" else ply.with_suffix(f".{kind}.json")


def cmd_janus(argv: list[str]) -> None:
    import json

    from ..io.atomic import check_output_file, write_json
    from ..io.ply import load_splats, resolve_ply
    from ..synthetic.janus import janus_report

    args = parse(JanusArgs, argv, "esd-gs janus")
    output = check_output_file(args.output or report_path(resolve_ply(args.path), "janus"))
    report = janus_report(load_splats(args.path, "cpu"))
    if not report["looks_like_head"]:
        print(f"esd-gs janus: warning: these renders do not resemble the synthetic head (match distance "
              f"{report['match_rms']:.3f} vs {report['match_rms_limit']:.3f} or less for heads); the metric "
              "assumes a synthetic-world result", file=sys.stderr)
    write_json(output, report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))


@dataclass
class ViewsArgs:
    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    views: int = 8
    """Turntable views to score, evenly spaced in azimuth."""
    resolution: int = 224
    """Side of each rendered view in pixels (the model's own preprocessing resizes it)."""
    elevation_deg: float = VIEW_ELEVATION_DEG
    radius: float = ORBIT_RADIUS
    fovy_deg: float = ORBIT_FOVY_DEG
    output: Path | None = None
    """Where to write the report (default: see above)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: str = "auto"


def scored_views(args: ViewsArgs, kind: str, load_model):
    """What `clip` and `inception` share: checks, the report's path, the model (loaded before the views are
    rendered, so that missing weights fail at once) and the turntable views [V,H,W,3]."""
    from ..io.atomic import check_output_file
    from ..io.ply import load_splats, resolve_ply
    from ..render.turntable import render_turntable

    check_turntable("--views", args.views, args.resolution)
    check_orbit(args.radius, args.fovy_deg)
    output = check_output_file(args.output or report_path(resolve_ply(args.path), kind))
    splats = load_splats(args.path, args.device)
    model = load_model(splats["means"].device)
    frames, _, _ = render_turntable(splats, args.views, args.resolution, args.elevation_deg, args.radius,
                                    args.fovy_deg, backend=args.backend, depth=False)
    return output, model, frames


@dataclass
class ClipArgs(ViewsArgs):
    """CLIP score of a PLY or run folder against its prompt (the paper's text-alignment metric): 100 x the
    cosine of CLIP's image and text embeddings for each turntable view, clipped at 0, and their mean. Writes
    RUN/clip.json (NAME.clip.json beside any other PLY) unless --output says where."""

    prompt: str | None = None
    """Text to score against; default: the run's prompt (its config.yaml)."""
    model: str = DEFAULT_CLIP_MODEL
    """CLIP weights: a Hugging Face id (from the cache, or downloaded when the hub answers) or a local folder."""


def cmd_clip(argv: list[str]) -> None:
    from ..config import saved_config
    from ..io.atomic import write_json
    from ..io.ply import resolve_ply
    from ..metrics.clip import clip_scores, load_clip

    args = parse(ClipArgs, argv, "esd-gs clip")
    ply = resolve_ply(args.path)
    prompt = args.prompt
    if prompt is None and ply.name == "splats.ply" and (ply.parent / "config.yaml").is_file():
        prompt = saved_config(ply.parent).get("prompt")
    if not (prompt or "").strip():
        raise UserError("no prompt to score against: pass --prompt \"...\" (a run folder's config.yaml gives its own)")
    output, (model, processor), frames = scored_views(args, "clip", partial(load_clip, args.model))
    scores = clip_scores(model, processor, frames, prompt)
    mean = scores.mean().item()
    write_json(output, {"model": args.model, "prompt": prompt, "views": args.views, "elevation_deg": args.elevation_deg,
                        "clip_score": mean, "per_view": scores.tolist()})
    print(f"clip_score={mean:.2f} (views {scores.min().item():.2f}..{scores.max().item():.2f}, "
          f"{args.views} views, {args.model}) -> {output}")


@dataclass
class InceptionArgs(ViewsArgs):
    """The ESD paper's Inception metrics of a PLY or run folder: an ImageNet Inception-v3 classifies each
    turntable view; Inception Quality = mean entropy of a view's class posterior (lower: sharper), Inception
    Variety = entropy of the mean posterior (higher: more varied views), Inception Score = exp(IV - IQ).
    Needs torchvision. Writes RUN/inception.json (NAME.inception.json beside any other PLY) unless --output
    says where."""

    resolution: int = 299
    weights: Path | None = None
    """Inception-v3 state dict (torchvision's ImageNet file); default: torch's hub cache, downloaded if online."""


def cmd_inception(argv: list[str]) -> None:
    from ..io.atomic import write_json
    from ..metrics.inception import class_posteriors, inception_metrics, load_inception

    args = parse(InceptionArgs, argv, "esd-gs inception")
    output, (model, classes, mean, std), frames = scored_views(
        args, "inception", partial(load_inception, args.weights))
    posteriors = class_posteriors(model, frames, mean, std)
    report = inception_metrics(posteriors)
    top = posteriors.argmax(-1).tolist()
    write_json(output, {"views": args.views, "elevation_deg": args.elevation_deg, **report,
                        "per_view_top_class": [classes[i] for i in top]})
    print(f"inception_quality={report['inception_quality']:.3f} inception_variety={report['inception_variety']:.3f} "
          f"inception_score={report['inception_score']:.2f} ({args.views} views) -> {output}")
