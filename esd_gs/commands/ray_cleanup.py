"""Ends what a killed batch driver's local Ray instance leaves behind (issue 26, item 7).

A SIGKILLed driver cannot shut Ray down, and Ray's agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`)
then live on, adopted by init, ignoring SIGTERM. So the driver starts this small process first, holding the
write end of its stdin: while the driver lives it records the driver's new descendants (Ray's processes);
"done" on the pipe means Ray was shut down normally; end of file without it means the driver died, and the
recorded processes still running are killed.

    python -m esd_gs.commands.ray_cleanup DRIVER_PID [PID ...]   (PIDs: the driver's children before Ray, left alone)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import psutil


def start() -> subprocess.Popen:
    """The watcher for this process's Ray processes from now on (call `finish` after ray.shutdown())."""
    before = [str(p.pid) for p in psutil.Process().children(recursive=True)]
    return subprocess.Popen([sys.executable, "-m", "esd_gs.commands.ray_cleanup", str(os.getpid()), *before],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish(watcher: subprocess.Popen) -> None:
    """Ray was shut down normally: the watcher ends without killing anything."""
    try:
        watcher.stdin.write(b"done\n")
        watcher.stdin.close()
        watcher.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        watcher.kill()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal group; the driver handles it
    driver, leave = int(sys.argv[1]), {int(p) for p in sys.argv[2:]} | {os.getpid()}
    seen: dict[int, psutil.Process] = {}
    while True:
        try:
            for p in psutil.Process(driver).children(recursive=True):
                if p.pid not in leave:
                    seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            break
        if select.select([sys.stdin], [], [], 0.5)[0]:
            if sys.stdin.readline():  # "done"
                return
            break  # end of file: the driver died
    for p in seen.values():
        try:
            p.kill()  # psutil checks the start time: a PID reused since is left alone
        except psutil.Error:
            pass


if __name__ == "__main__":
    main()
