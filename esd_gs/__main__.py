"""`python -m esd_gs ...` is `esd-gs ...`."""

from .cli import main

main()
