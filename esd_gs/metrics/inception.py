"""The ESD paper's Inception metrics of a result (its section 6): an ImageNet Inception-v3 classifies each
turntable view, and
- Inception Quality (IQ) = mean over views of the entropy of the view's class posterior (nats; lower is
  sharper: each view looks like something),
- Inception Variety (IV) = entropy of the mean posterior over views (nats; higher is more varied views:
  a Janus object shows the same class-evidence from every side),
- their Inception Score exp(IV - IQ) = exp(mean KL(p(y|view) || p(y))).
The classifier is torchvision's inception_v3 with its ImageNet weights (an optional extra: torchvision must
match the installed torch). None ship with esd-gs; offline, `--weights FILE` takes the state dict.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..guidance.weights import reachable

INPUT_SIZE = 299


def load_inception(weights_file: Path | None, device: torch.device):
    """(torchvision inception_v3 in eval mode, ImageNet class names, input mean, input std)."""
    try:
        from torchvision.models import Inception_V3_Weights, inception_v3
    except Exception as e:  # not installed, or built for another torch (it fails on import then)
        raise UserError(f"esd-gs inception needs torchvision built for this torch {torch.__version__} "
                        f"(pip install torchvision; import failed: {str(e).splitlines()[0]})") from None
    weights = Inception_V3_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if weights_file is None and not cached.is_file():
        if not reachable(weights.url):
            raise UserError(f"no Inception-v3 weights found (offline): download {weights.url} on a connected "
                            f"machine and pass --weights FILE, or put it in {cached.parent}")
        state = weights.get_state_dict(progress=True)
    else:
        path = weights_file or cached
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise UserError(f"cannot read Inception-v3 weights {path}: {why}") from None
    model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"{weights_file or cached} is not an Inception-v3 state dict: {str(e).splitlines()[0]}") \
            from None
    preprocess = weights.transforms()
    return model.to(device).eval(), weights.meta["categories"], preprocess.mean, preprocess.std


@torch.no_grad()
def class_posteriors(model, frames: Tensor, mean: list[float], std: list[float]) -> Tensor:
    """frames [V,H,W,3] in [0, 1] -> p(y | view) [V, classes]. The whole view is resized to 299 (no centre crop:
    the object fills the frame and a crop would cut it)."""
    x = frames.permute(0, 3, 1, 2).to(next(model.parameters()).device, torch.float32)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    x = (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
    return model(x).softmax(-1).cpu()


def entropy(p: Tensor) -> Tensor:
    """Entropy in nats over the last axis (0 log 0 = 0)."""
    return torch.special.entr(p).sum(-1)


def inception_metrics(posteriors: Tensor) -> dict:
    """[V, classes] class posteriors of V views -> IQ, IV, Inception Score and each view's entropy."""
    per_view = entropy(posteriors)
    iq, iv = per_view.mean().item(), entropy(posteriors.mean(0)).item()
    return {"inception_quality": iq, "inception_variety": iv, "inception_score": math.exp(iv - iq),
            "per_view_entropy": per_view.tolist()}
