"""CLIP score of a result against its prompt, the text-alignment metric of the ESD paper and most text-to-3D
work: CLIP's image embedding of each turntable view and its text embedding of the prompt, 100 x their
cosine clipped at 0 (torchmetrics' CLIPScore), averaged over the views. Needs CLIP weights (a hub id or a
local transformers folder); none ship with esd-gs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..guidance.weights import resolve_model
from ..io.media import to_uint8

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


def load_clip(model: str, device: torch.device):
    """(CLIPModel in eval mode, CLIPProcessor) from a hub id or a folder; a one-line UserError if missing."""
    from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

    try:  # transformers 5's PIL preprocessing: its default one needs torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = resolve_model(model, (), kind="CLIP", flag="--model")
    try:
        processor = CLIPProcessor(image_processor=ImageProcessor.from_pretrained(folder),
                                  tokenizer=AutoTokenizer.from_pretrained(folder))
        return CLIPModel.from_pretrained(folder).to(device).eval(), processor
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load CLIP from {model}: {str(e).splitlines()[0]}") from None


@torch.no_grad()
def clip_scores(model, processor, frames: Tensor, prompt: str) -> Tensor:
    """frames [F,H,W,3] in [0, 1] (any size: the processor resizes) -> per-view CLIP score [F]."""
    inputs = processor(text=[prompt], images=list(to_uint8(frames)), return_tensors="pt", padding=True,
                       truncation=True).to(model.device)
    out = model(**inputs)
    image, text = F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1)
    return (100 * image @ text[0]).clamp_min(0).cpu()
