"""Tiny random models saved in the folder layouts users download: a Stable Diffusion pipeline (diffusers)
and a CLIP model (transformers)."""

from pathlib import Path

import torch

from esd_gs.commands.bench import char_tokenizer
from esd_gs.guidance.stable_diffusion import sd_scheduler


TEXT_CONFIG = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=100,
                   bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=16)


def build_tiny_sd(folder: Path, prediction_type: str = "epsilon", half_only: bool = False,
                  safetensors: bool = True) -> Path:
    """half_only: fp16 weights saved as the `fp16` variant alone (the usual half-precision download);
    safetensors False: .bin files only."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    folder = Path(folder)
    save = dict(variant="fp16" if half_only else None, safe_serialization=safetensors)
    dtype = torch.float16 if half_only else torch.float32
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).to(dtype).save_pretrained(folder / "unet", **save)
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
    ).to(dtype).save_pretrained(folder / "vae", **save)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)).to(dtype)
    text_encoder.save_pretrained(folder / "text_encoder", **save)
    if not safetensors:  # transformers 5 writes safetensors whatever it is asked: convert as old downloads hold it
        (folder / "text_encoder" / "model.safetensors").unlink()
        torch.save(text_encoder.state_dict(), folder / "text_encoder" / "pytorch_model.bin")
    char_tokenizer(folder / "tokenizer", 16).save_pretrained(folder / "tokenizer")
    sd_scheduler(prediction_type).save_pretrained(folder / "scheduler")
    return folder


def build_tiny_clip(folder: Path) -> Path:
    """CLIPModel + CLIPProcessor (32x32 images, 16-d embeddings) in one flat folder, as on the hub."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    folder = Path(folder)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=TEXT_CONFIG, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=char_tokenizer(folder, 16)).save_pretrained(folder)
    return folder
