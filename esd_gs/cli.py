"""`esd-gs` command line (tyro): train | batch | janus | clip | inception | render | view | export | bench |
download."""

from __future__ import annotations

import importlib
import sys

from .errors import UserError

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


# command: the module of esd_gs.commands whose cmd_<command> runs it (imported when it runs: `esd-gs --help`
# and a typo cost no torch import)
COMMANDS = {"train": "train", "batch": "batch", "janus": "scores", "clip": "scores", "inception": "scores",
            "render": "render", "view": "render", "export": "export", "bench": "bench", "download": "download"}


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
        command = COMMANDS[argv[0]]
        if isinstance(command, str):
            command = getattr(importlib.import_module(f"esd_gs.commands.{command}"), f"cmd_{argv[0]}")
        command(argv[1:])
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
