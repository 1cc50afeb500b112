"""`esd-gs` command line (tyro): train | batch | janus | clip | inception | render | view | export | bench |
download."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import tyro

from .commands.args import parse, train_from_args
from .core.cameras import ORBIT_FOVY_DEG, ORBIT_RADIUS, VIEW_ELEVATION_DEG
from .errors import UserError
from .io.mesh import MeshConfig
from .metrics.clip import DEFAULT_CLIP_MODEL

USAGE = """usage: esd-gs {train,batch,janus,clip,inception,render,view,export,bench,download} [--help] ...

  train      optimise Gaussians for a prompt with SDS / VSD / ESD (esd-gs train --preset demo)
  batch      many runs (prompts x settings x seeds) on Ray, resumable, with an index and a contact sheet
  janus      Janus metric of a synthetic-world result (front_share, face_count, ...)
  clip       CLIP score of a result against its prompt (needs CLIP weights)
  inception  the paper's Inception Quality / Variety of a result's views (needs torchvision + weights)
  render     turntable GIF / MP4 / PNG frames (RGB and depth) of a PLY or run folder
  view       interactive viewer in the browser (viser)
  export     mesh (open3d TSDF fusion), .splat, compressed PLY, glTF (KHR_gaussian_splatting), SPZ
  bench      speed: `bench raster` (rasterizer) or `bench step` (one training step, per component)
  download   fetch Stable Diffusion weights on a connected machine, for offline ones (--model-path DIR)
"""


def cmd_train(argv: list[str]) -> None:
    result = train_from_args(argv)
    print(f"done: {result['run_dir']} ({result['n_gaussians']} Gaussians, {result['skipped_steps']} skipped steps)")
    if "janus" in result:  # the synthetic world's end-of-run report
        j = result["janus"]
        print(f"janus={j['janus']} front_share={j['front_share']:.2f} faces={j['face_count']} "
              f"view_error={j['view_error_deg']:.1f}deg variety={j['view_variety']:.2f}")


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

    from .io.atomic import check_output_file, write_json
    from .io.ply import load_splats, resolve_ply
    from .synthetic.janus import janus_report

    args = parse(JanusArgs, argv, "esd-gs janus")
    output = check_output_file(args.output or report_path(resolve_ply(args.path), "janus"))
    report = janus_report(load_splats(args.path, "cpu"))
    if not report["looks_like_head"]:
        print(f"esd-gs janus: warning: these renders do not resemble the synthetic head (match distance "
              f"{report['match_rms']:.3f} vs {report['match_rms_limit']:.3f} or less for heads); the metric "
              "assumes a synthetic-world result", file=sys.stderr)
    write_json(output, report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}))


def check_orbit(radius: float, fovy_deg: float) -> None:
    """A camera distance and field of view that can show something (checked before any work)."""
    if not radius > 0 or not 0 < fovy_deg < 180:
        raise UserError(f"--radius must be positive and --fovy-deg in (0, 180) degrees (got {radius}, {fovy_deg})")


def check_turntable(flag: str, frames: int, resolution: int) -> None:
    from .core.memory import check_fits, image_bytes

    if frames <= 0 or resolution < 8:
        raise UserError(f"{flag} must be positive and --resolution >= 8 (got {frames}, {resolution})")
    check_fits(image_bytes(frames, resolution), f"{frames} views at {resolution}x{resolution}",
               f"lower --resolution or {flag}")


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
    from .io.atomic import check_output_file
    from .io.ply import load_splats, resolve_ply
    from .render.turntable import render_turntable

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
    from .config import saved_config
    from .io.atomic import write_json
    from .io.ply import resolve_ply
    from .metrics.clip import clip_scores, load_clip

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
    from .io.atomic import write_json
    from .metrics.inception import class_posteriors, inception_metrics, load_inception

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


@dataclass
class RenderArgs:
    """Turntable of a PLY or run folder: GIF, MP4 or a folder of PNG frames; RGB and optionally depth."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    output: Path | None = None
    """File (.gif/.mp4) or folder (png); default: turntable_render.<format> next to the PLY."""
    format: Literal["gif", "mp4", "png"] = "gif"
    frames: int = 36
    resolution: int = 256
    elevation_deg: float = VIEW_ELEVATION_DEG
    radius: float = ORBIT_RADIUS
    fovy_deg: float = ORBIT_FOVY_DEG
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    depth: bool = False
    """Also write the depth turntable (grey, near = dark) as <output>_depth."""
    fps: int = 15
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: str = "auto"


def cmd_render(argv: list[str]) -> None:
    from .io.atomic import check_output_file
    from .io.media import save_png, save_video
    from .io.ply import load_splats, resolve_ply
    from .render.turntable import depth_to_rgb, render_turntable

    args = parse(RenderArgs, argv, "esd-gs render")
    check_turntable("--frames", args.frames, args.resolution)
    check_orbit(args.radius, args.fovy_deg)
    if args.fps < 1:
        raise UserError(f"--fps must be at least 1 (got {args.fps})")
    out = args.output or resolve_ply(args.path).parent / f"turntable_render.{args.format}"
    if args.format == "png" and out.exists() and not out.is_dir():
        raise UserError(f"--format png writes a folder of frames, but {out} is a file")
    if args.format != "png":
        check_output_file(out)
    splats = load_splats(args.path, args.device)
    rgb, depth, alpha = render_turntable(splats, args.frames, args.resolution, args.elevation_deg, args.radius,
                                         args.fovy_deg, args.background, args.backend)
    videos = [(out, rgb)]
    if args.depth:
        videos.append((out.with_name(out.stem + "_depth" + out.suffix), depth_to_rgb(depth, alpha, args.background)))
    for path, frames in videos:
        if args.format == "png":
            for i, frame in enumerate(frames):
                save_png(path / f"frame_{i:04d}.png", frame)
        elif not save_video(path, frames, fps=args.fps):
            raise UserError(f"could not write {path}: no usable ffmpeg (pip install imageio-ffmpeg) - try --format gif")
        print(f"wrote {path} ({args.frames} frames, {args.resolution}x{args.resolution})")


@dataclass
class ViewArgs:
    """Open a PLY or run folder in the browser (viser): orbit with the mouse, renders by esd-gs."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    host: str = "127.0.0.1"
    """0.0.0.0 to reach it from other machines (or forward the port over ssh)."""
    port: int = 8080
    max_resolution: int = 512
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    device: str = "auto"


def cmd_view(argv: list[str]) -> None:
    import signal
    import time

    from .render.viewer import Viewer
    from .io.ply import load_splats

    args = parse(ViewArgs, argv, "esd-gs view")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535 (got {args.port}; 0 picks a free one)")
    splats = load_splats(args.path, args.device)
    try:
        viewer = Viewer(splats, args.host, args.port, args.max_resolution, args.backend)
    except OSError as e:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror} (try --port)")
    # Ctrl-C must reach this loop even when the parent started us with SIGINT ignored or a library
    # swapped the handler while the viewer started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print(f"viewer on http://{'localhost' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{viewer.port}"
              " (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("viewer stopped", file=sys.stderr)
    finally:
        viewer.stop()


@dataclass
class ExportArgs:
    """Export a PLY or run folder: a vertex-coloured mesh (TSDF fusion of rendered RGB-D), a .splat file
    for web viewers, an SH-truncated PLY or SuperSplat's compressed PLY, a glTF with the
    KHR_gaussian_splatting extension, Niantic's SPZ."""

    path: tyro.conf.Positional[Path]
    """Run folder or PLY file."""
    mesh: Path | None = None
    """Write a triangle mesh here (.ply, .obj, .glb)."""
    splat: Path | None = None
    """Write antimatter15's .splat format here (gsplat's exporter)."""
    ply: Path | None = None
    """Write the splats again as PLY here (with --sh-degree, --compressed)."""
    glb: Path | None = None
    """Write a binary glTF with the KHR_gaussian_splatting extension here (three.js, Babylon.js, PlayCanvas,
    Cesium)."""
    spz: Path | None = None
    """Write Niantic's SPZ here (Babylon.js, PlayCanvas, Scaniverse; about 10x smaller than PLY)."""
    sh_degree: int | None = None
    """Keep SH bands up to this degree in --ply / --splat / --glb / --spz (default: all)."""
    compressed: bool = False
    """--ply in SuperSplat's compressed layout."""
    up: Literal["auto", "z", "y", "-y"] = "auto"
    """Up axis of the written files. z: esd-gs's own frame (front towards +x); y: glTF's and three.js's
    (front towards +z); -y: INRIA/COLMAP's, which SuperSplat and mkkellogg's viewer assume for .ply and
    .splat (a run's splats.ply is written so). auto: y for .glb (glTF is y-up by specification) and .spz
    (stored y-up by its specification), -y for .ply and .splat, z for meshes. A PLY names its frame in its
    header, and esd-gs reads any of them back into its own."""
    yaw: str | None = None
    """Turn the object about its vertical axis before writing: degrees (counter-clockwise seen from above), or
    'front' to turn its front towards esd-gs's +x, which every --up frame maps to the side a viewer's default
    camera sees (glTF's +z): from the Janus report's best alignment for runs on the synthetic head (a run
    folder's config.yaml says), 0 for Stable Diffusion runs with view prompts (their "front view" is +x)."""
    mesh_options: tyro.conf.OmitArgPrefixes[MeshConfig] = dataclasses.field(default_factory=MeshConfig)
    device: str = "auto"


def export_yaw(args: ExportArgs, splats) -> float:
    """--yaw in degrees; 'front' from where the run's front is (see ExportArgs.yaw)."""
    import math

    import yaml

    if args.yaw is None:
        return 0.0
    if args.yaw != "front":
        try:
            deg = float(args.yaw)
        except ValueError:
            raise UserError(f"--yaw takes degrees or 'front' (got {args.yaw!r})") from None
        if not math.isfinite(deg):
            raise UserError(f"--yaw must be a finite number of degrees (got {args.yaw!r})")
        return deg
    config = Path(args.path) / "config.yaml"
    if not config.is_file():
        raise UserError(f"--yaw front needs a run folder (its config.yaml tells where the front is); {args.path} "
                        "is not one: pass --yaw DEG")
    try:
        cfg = yaml.safe_load(config.read_text(errors="replace")) or {}
    except yaml.YAMLError:
        raise UserError(f"{config}: not readable YAML; pass --yaw DEG") from None
    from .worlds.stable_diffusion import knows_synthetic_head

    if not isinstance(cfg, dict):
        raise UserError(f"{config}: not a run's config; pass --yaw DEG")
    if cfg.get("world") == "synthetic" or knows_synthetic_head(str(cfg.get("model_path") or "")):
        from .synthetic.janus import janus_report

        return -janus_report(splats)["front_azimuth_deg"]
    if (cfg.get("prior") or {}).get("view_dependent_prompt", True):
        return 0.0
    raise UserError(f"--yaw front: {args.path} was trained without view prompts, so nothing fixed its front; "
                    "pass --yaw DEG")


def export_up(args: ExportArgs, target: Path) -> str:
    """The up axis a file is written with: --up, or the format's own convention."""
    if args.up != "auto":
        return args.up
    suffix = target.suffix.lower()
    if target == args.mesh:
        return "y" if suffix in (".glb", ".gltf") else "z"
    return "y" if suffix in (".glb", ".gltf", ".spz") else "-y"


def cmd_export(argv: list[str]) -> None:
    from gsplat import export_splats

    from .core.gaussians import splats_from_tensors, truncate_sh
    from .io.atomic import atomic_path, check_output_file
    from .io.gltf import write_glb
    from .io.mesh import splats_to_mesh, write_mesh
    from .io.orient import UP_ROTATIONS, rotate_splats, to_up, yaw_rotation
    from .io.ply import load_splats, write_compressed_ply, write_ply
    from .io.spz import write_spz

    args = parse(ExportArgs, argv, "esd-gs export")
    targets = [t for t in (args.mesh, args.splat, args.ply, args.glb, args.spz) if t]
    if not targets:
        raise UserError("nothing to export: pass --mesh OUT.ply|.obj|.glb, --splat OUT.splat, --ply OUT.ply, "
                        "--glb OUT.glb or --spz OUT.spz")
    for target in targets:
        check_output_file(target)
    if args.mesh:
        m = args.mesh_options
        check_turntable("--views", m.views, m.resolution)
        check_orbit(m.radius, m.fovy_deg)
        if not (m.voxel_size > 0 and m.truncation_voxels > 0 and 0 <= m.alpha_min <= 1 and m.target_triangles >= 0):
            raise UserError(f"--voxel-size and --truncation-voxels must be positive, --alpha-min in [0, 1] and "
                            f"--target-triangles at least 0 (got {m.voxel_size}, {m.truncation_voxels}, {m.alpha_min}, "
                            f"{m.target_triangles})")
    splats = load_splats(args.path, args.device)
    yaw = export_yaw(args, splats)
    if yaw:
        splats = splats_from_tensors(rotate_splats(splats, yaw_rotation(yaw)), splats["means"].device)
        print(f"turned {yaw:+.1f} deg about the vertical axis")
    kept = truncate_sh(splats, args.sh_degree)
    n = len(kept["means"])
    if args.ply and not args.compressed:
        write_ply(args.ply, kept, up=export_up(args, args.ply))
        print(f"wrote {args.ply} ({n} Gaussians, {export_up(args, args.ply)}-up)")
    if args.splat:
        turned = to_up(kept, export_up(args, args.splat))
        with atomic_path(args.splat) as tmp:
            export_splats(*[turned[k].detach().cpu() for k in ("means", "scales", "quats", "opacities", "sh0", "shN")],
                          format="splat", save_to=str(tmp))
        print(f"wrote {args.splat} ({n} Gaussians, splat, {export_up(args, args.splat)}-up)")
    if args.ply and args.compressed:
        written = write_compressed_ply(args.ply, to_up(kept, export_up(args, args.ply)))
        left = f"; {n - written} with opacity <= 1/255 left out, as the format does" if written < n else ""
        print(f"wrote {args.ply} ({written} Gaussians, ply_compressed, {export_up(args, args.ply)}-up{left})")
    for target, write in ((args.glb, write_glb), (args.spz, write_spz)):
        if target:
            write(target, to_up(kept, export_up(args, target)))
            print(f"wrote {target} ({n} Gaussians, {export_up(args, target)}-up)")
    if args.mesh:
        mesh = splats_to_mesh(splats, args.mesh_options)
        mesh.rotate(UP_ROTATIONS[export_up(args, args.mesh)].double().numpy(), center=(0.0, 0.0, 0.0))
        write_mesh(args.mesh, mesh)
        print(f"wrote {args.mesh} ({len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles, "
              f"{export_up(args, args.mesh)}-up)")


def cmd_bench(argv: list[str]) -> None:
    from .commands.bench import RasterArgs, StepArgs, bench_raster, bench_step, print_result

    kinds = {"raster": (RasterArgs, bench_raster), "step": (StepArgs, bench_step)}
    if not argv or argv[0] not in kinds:
        raise UserError("usage: esd-gs bench {raster,step} [--json] ... (see esd-gs bench raster --help)")
    Args, run = kinds[argv[0]]
    args = parse(Args, argv[1:], f"esd-gs bench {argv[0]}")
    print_result(run(args), args.json)


@dataclass
class DownloadArgs:
    """Fetch the Stable Diffusion files esd-gs uses (configs, tokenizer, one set of UNet / VAE / text encoder
    weights; not the single-file checkpoints) into a folder to pass as --model-path on a machine without the
    hub. Aliases try their ids in order: sd21-base (the default prior), sd21 (768 px, v prediction)."""

    model: tyro.conf.Positional[str] = "sd21-base"
    """Alias or hub id."""
    dir: Path = Path("models/sd21-base")
    """Where the pipeline folder goes."""
    full_precision: bool = False
    """fp32 weights (twice the size) instead of the fp16 ones; training in bf16/fp16 (GPUs) needs no more."""


def cmd_download(argv: list[str]) -> None:
    from .guidance.stable_diffusion import MODEL_PARTS
    from .guidance.weights import download, hub_reachable

    args = parse(DownloadArgs, argv, "esd-gs download")
    if not hub_reachable():
        raise UserError("the Hugging Face hub cannot be reached from here (offline, or HF_HUB_OFFLINE is set); run "
                        "esd-gs download on a connected machine and copy the folder over")
    folder = download(args.model, MODEL_PARTS, half=not args.full_precision, local_dir=args.dir)
    print(f"done: {folder} (esd-gs train --model-path {folder} ...)")


def cmd_batch(argv: list[str]) -> None:
    from .commands.batch import cmd_batch as run

    run(argv)


COMMANDS = {"train": cmd_train, "batch": cmd_batch, "janus": cmd_janus, "clip": cmd_clip, "inception": cmd_inception,
            "render": cmd_render, "view": cmd_view, "export": cmd_export, "bench": cmd_bench, "download": cmd_download}


def out_of_memory(e: BaseException) -> bool:
    """MemoryError, CUDA's out of memory, or torch's CPU allocator failing."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
        any(words in text for words in ("not enough memory", "out of memory", "can't allocate memory"))


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line of ours (Python's quote the source line that raised them)."""
    print(f"esd-gs: warning: {str(message).strip()}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> None:
    import warnings

    warnings.showwarning = one_line_warning
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
        print(f"esd-gs: {e.label}{e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:  # a file-system failure not met on a checked path
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"esd-gs: error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"esd-gs: {argv[0]} interrupted", file=sys.stderr)
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(e):
            raise
        said = (str(e).strip().splitlines() or ["MemoryError"])[0][:160]
        print(f"esd-gs: error: out of memory in {argv[0]} ({said}); "
              "ask for less: a lower --resolution, fewer --frames or Gaussians", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
