"""Atomic file writes: write to a temporary file in the same folder, fsync, rename into place.

A crash or SIGKILL at any moment leaves either the old file or the new one, never half of one; what a
kill can leave is a hidden temporary file of our naming (`.NAME.XXXXXXXX.tmp...`), which
`clean_stale_temps` removes when a run folder is opened again. Files get the usual permissions
(0666 less the umask), not mkstemp's private 0600. File-system failures become one-line UserErrors.
Before the rename the written file is checked (not empty; and what the writer's `verify` reads back): some
writers (open3d's mesh writers, ffmpeg) report success on a full disk, and the previous file must survive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError

TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]*)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def write_error(path: Path, e: OSError) -> UserError:
    return UserError(f"cannot write {path}: {e.strerror or type(e).__name__}")


def nearest_existing(path: Path) -> Path:
    """`path` itself, or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuses, before any work, a file path that is a folder, lies below a file, or whose folder takes
    no new files (probed with a temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    parent = nearest_existing(path.parent)
    if parent.exists() and not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file")
    if parent == path.parent:
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as e:
            raise write_error(path, e) from None
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuses, before any work, a folder that cannot be created or written."""
    path = Path(path)
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise UserError(f"cannot create the run folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot {'write into' if existing == path else 'create'} the run folder {path}: "
                        f"{existing} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, verify: Callable[[Path], str | None] | None = None,
                allow_empty: bool = False) -> Iterator[Path]:
    """Yields a temporary path next to `path`; once written, checked (non-empty unless `allow_empty`, and
    `verify(tmp)` returning None, or what is wrong) and renamed over `path` atomically."""
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:  # the writer's own failure (ENOSPC has no file name): name the file it was writing
            raise write_error(path, e) from None
        try:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            problem = "the writer left it empty" if not allow_empty and tmp_path.stat().st_size == 0 else \
                verify(tmp_path) if verify else None
            if problem:
                raise UserError(f"cannot write {path}: {problem} (is the disk full?); nothing was replaced")
            os.chmod(tmp_path, FILE_MODE)
            os.replace(tmp_path, path)
        except OSError as e:
            raise write_error(path, e) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def reads_back(read: Callable[[Path], dict], n: int) -> Callable[[Path], str | None]:
    """An atomic_path `verify` for splat files: `read(tmp)` must give back all n splats."""
    def verify(tmp: Path) -> str | None:
        try:
            m = len(read(tmp)["means"])
        except Exception as e:  # any reader failure means the file is not what was written
            return f"it does not read back ({type(e).__name__})"
        return None if m == n else f"it reads back with {m} of {n} splats"
    return verify


def write_text(path: str | os.PathLike, text: str) -> None:
    data = text.encode()
    short = lambda tmp: None if tmp.stat().st_size == len(data) else "a short write"  # noqa: E731
    with atomic_path(path, verify=short, allow_empty=not data) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Removes the temporary files an interrupted atomic write left in `folder`; returns how many."""
    removed = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and TEMP_NAME.match(p.name):
                p.unlink(missing_ok=True)
                removed += 1
    return removed
