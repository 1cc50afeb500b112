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


def test_default_run_names_say_the_rule_and_its_lam_schedule():
    from esd_gs.commands.args import parse_train_args
    from esd_gs.run.run_folder import default_run_name

    names = [default_run_name(parse_train_args(["--preset", "demo", *flags])) for flags in (
        [], ["--lam", "0.5"], ["--lam-final", "None"], ["--guidance", "vsd", "--seed", "3"])]
    assert names == ["a-head-esd1to0.5-s0", "a-head-esd0.5-s0", "a-head-esd1-s0", "a-head-vsd-s3"]
