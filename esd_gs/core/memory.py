"""Refusing work that cannot fit in memory before it starts: an allocation larger than the machine's memory
is a traceback at best and, with the kernel's overcommit, a SIGKILL from its OOM killer at worst (`esd-gs
render --resolution 100000` was killed that way)."""

from __future__ import annotations

import os

from ..errors import UserError


def available_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable), or free physical pages elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(nbytes: float, what: str, hint: str) -> None:
    available = available_bytes()
    if nbytes > available:
        raise UserError(f"{what} needs about {nbytes / 2**30:,.1f} GiB of memory and {available / 2**30:.1f} GiB "
                        f"is available; {hint}")


def image_bytes(images: int, width: int, height: int | None = None) -> float:
    """Rendered frames as the tools hold them: float RGB, alpha and depth, and the uint8 copy written out."""
    return images * width * (height or width) * (5 * 4 + 3)


def gaussian_bytes(n: int, sh_degree: int) -> float:
    """n Gaussians' parameters with their gradients and Adam's two moments."""
    return n * 4 * (3 + 3 + 4 + 1 + 3 * (sh_degree + 1) ** 2) * 4
