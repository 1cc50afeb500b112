"""esd-gs: text-to-3D Gaussian splatting with Entropic Score Distillation."""

__version__ = "0.1.0"
