"""One process per run folder: an exclusive flock on RUN/.lock holding the owner's PID.

The operating system drops the lock when its holder ends, even by SIGKILL, so a dead run never blocks
its folder. Within one process the lock is re-entrant: a batch worker holds it around a job whose Trainer
takes it again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import UserError

LOCK_NAME = ".lock"
_held: dict[str, list] = {}  # resolved run folder -> [open lock file, depth]


class RunLock:
    """Held from creation until `release()` (or the process's end)."""

    def __init__(self, run_dir: Path, wait: bool = False):
        """wait: block until the holder ends (a batch worker waits for another batch's worker on the same run);
        else a held lock is a one-line UserError naming the holder."""
        self.key, self.released = str(Path(run_dir).resolve()), False
        if self.key in _held:
            _held[self.key][1] += 1
            return
        f = open(Path(run_dir) / LOCK_NAME, "a+")  # a+: the holder's PID stays readable until we own it
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise UserError(f"{run_dir} is in use by process {pid} (another esd-gs run on this folder); wait for it "
                            "to end, or pick another --run-name") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        _held[self.key] = [f, 1]

    def release(self) -> None:
        """Drops this holder's share of the lock (once: a second call does nothing)."""
        entry = _held.get(self.key)
        if entry is None or self.released:
            return
        self.released = True
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.key]
            entry[0].close()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_new_run_dir(base: Path) -> tuple[Path, RunLock]:
    """The first of base, base-1, base-2, ... that does not exist, created (mkdir: atomic, so two processes
    never get the same one) and locked."""
    i = 0
    while True:
        path = base if i == 0 else base.with_name(f"{base.name}-{i}")
        i += 1
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path, RunLock(path)
