import pytest

from esd_gs.config import CONFIG_DIR, load_preset, validate


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_preset_loads_and_validates(name):
    cfg = load_preset(name)
    validate(cfg)
    assert cfg.preset == name


def test_flags_override_preset():
    import tyro

    from esd_gs.config import TrainConfig

    cfg = tyro.cli(TrainConfig, default=load_preset("demo"), args=["--lam", "0.25", "--render.batch-size", "2"])
    assert cfg.lam == 0.25 and cfg.render.batch_size == 2 and cfg.world == "synthetic"
