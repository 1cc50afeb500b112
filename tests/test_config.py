import pytest

from esd_gs.config import CONFIG_DIR, load_preset, validate


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_preset_loads_validates_and_sets_what_it_says(name):
    """Every key a preset file sets arrives in the config, with its value (a misspelt or misplaced key would be
    refused; a value that never arrives would pass silently)."""
    import yaml

    from esd_gs.config import flatten, to_dict

    cfg = load_preset(name)
    validate(cfg)
    assert cfg.preset == name
    written = flatten(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()))
    loaded = flatten(to_dict(cfg))
    assert written and all(loaded[k] == (list(v) if isinstance(v, tuple) else v) for k, v in written.items()), \
        {k: (v, loaded[k]) for k, v in written.items() if loaded[k] != v}


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


def test_the_renamed_anneal_step_still_works_with_a_notice(tmp_path, capsys):
    """prior.anneal_step became stage2_step (it moves ESD's lam too): the old key in a preset file, the old
    flag, and a run saved with the old key all still work, each with a one-line notice where a user wrote it."""
    from esd_gs.commands.args import parse_train_args
    from esd_gs.config import config_changes

    old = tmp_path / "old.yaml"
    old.write_text("world: synthetic\nsteps: 50\nprior:\n  anneal_step: 17\n  t_max_final: 0.4\n")
    cfg = load_preset(str(old))
    assert cfg.stage2_step == 17 and cfg.prior.t_max_final == 0.4
    assert "'prior.anneal_step' is now 'stage2_step'" in capsys.readouterr().err
    cfg = parse_train_args(["--preset", "demo", "--prior.anneal-step", "33"])
    assert cfg.stage2_step == 33
    assert capsys.readouterr().err.strip().splitlines() == [
        "esd-gs: note: --prior.anneal-step is now --stage2-step; the old flag works until the next release"]
    saved = {"steps": 50, "prior": {"anneal_step": 17}}
    cfg.steps, cfg.stage2_step = 50, 17
    assert "stage2_step" not in config_changes(saved, cfg)  # a run saved before the rename resumes unchanged
