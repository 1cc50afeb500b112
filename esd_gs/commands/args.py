"""Command-line parsing shared by `esd-gs` (cli.py) and `esd-gs batch` (batch.py): tyro with one-line errors,
and the train command's flags -> TrainConfig -> a finished run."""

from __future__ import annotations

import contextlib
import io
import sys

import tyro

from ..errors import UserError


def parse(cls, argv: list[str], prog: str, default=None):
    """tyro.cli, with its multi-line error box condensed to one line (--help prints in full)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(cls, args=argv, prog=prog, default=default)
    except SystemExit as e:
        if not e.code:
            sys.stderr.write(err.getvalue())
            raise
        raise UserError(f"{prog}: {condense_tyro_error(err.getvalue())} (see {prog} --help)") from None


def condense_tyro_error(text: str) -> str:
    """tyro's error box (title, message, help, suggestions) -> 'message; did you mean --x?'. tyro draws it
    with Unicode lines when stdout can encode them and with ASCII otherwise; both are read here."""
    blocks, block = [], []
    for raw in text.splitlines():
        if raw.strip().startswith(("╭", "╰")):  # Unicode box: title and bottom rule
            continue
        line = raw.strip(" │")
        if line and set(line) <= set("-─"):
            blocks.append(block)
            block = []
        elif line:
            block.append(line)
    blocks.append(block)
    if len(blocks) > 1 and len(blocks[0]) == 1 and not text.lstrip().startswith("╭"):
        blocks = blocks[1:]  # ASCII box: the first block is the title alone
    blocks = [b for b in blocks if b]
    message = " ".join(blocks[0]) if blocks else "invalid arguments"
    for b in blocks:
        if b[0].startswith("Perhaps you meant") and len(b) > 1:
            message += f"; did you mean {b[1].split()[0]}?"
    return message


def renamed_flags(argv: list[str]) -> list[str]:
    """Flags of renamed config keys (config.RENAMED) under their new names, with a one-line notice each."""
    from ..config import RENAMED

    flags = {f"--{old.replace('_', '-')}": f"--{new.replace('_', '-')}" for old, new in RENAMED.items()}
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in flags:
            print(f"esd-gs: note: {name} is now {flags[name]}; the old flag works until the next release",
                  file=sys.stderr)
            arg = flags[name] + eq + value
        out.append(arg)
    return out


def parse_train_args(argv: list[str]):
    """`esd-gs train` flags -> TrainConfig: the preset's values first, then the flags."""
    from ..config import TrainConfig, load_preset

    argv = renamed_flags(argv)
    preset = None
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    default = load_preset(preset) if preset else TrainConfig()
    return parse(TrainConfig, argv, "esd-gs train", default=default)


def train_from_args(argv: list[str], quiet: bool = False) -> dict:
    """What `esd-gs train ARGS` does (esd-gs batch runs every job through here); returns the result."""
    from ..run.trainer import Trainer

    cfg = parse_train_args(argv)
    if quiet:
        cfg.log.progress = False
    return Trainer(cfg).train()


def check_orbit(radius: float, fovy_deg: float) -> None:
    """A camera distance and field of view that can show something (checked before any work)."""
    if not radius > 0 or not 0 < fovy_deg < 180:
        raise UserError(f"--radius must be positive and --fovy-deg in (0, 180) degrees (got {radius}, {fovy_deg})")


def check_turntable(flag: str, frames: int, resolution: int) -> None:
    from ..core.memory import check_fits, image_bytes

    if frames <= 0 or resolution < 8:
        raise UserError(f"{flag} must be positive and --resolution >= 8 (got {frames}, {resolution})")
    check_fits(image_bytes(frames, resolution), f"{frames} views at {resolution}x{resolution}",
               f"lower --resolution or {flag}")
