"""The benchmarks' definitions (benchmarks/janus.py): a row measures what its setting names."""

import pytest

from esd_gs.commands.args import parse_train_args
from esd_gs.commands.batch import job_flags
from esd_gs.config import validate

from conftest import load_script


@pytest.fixture(scope="module")
def janus():
    return load_script("benchmarks/janus.py", "janus_benchmark")


def camera_network(cfg) -> tuple:
    """What the learned variational network is made of (the map's fields only where there is a map)."""
    v = cfg.variational
    shape = (v.camera_map, v.camera_map_grid, v.camera_map_pins) if v.camera_map else (False,)
    return (*shape, v.camera_frequencies, cfg.synthetic.unet_prediction if cfg.world == "synthetic" else None)


def other_preset(cfg) -> list[str]:
    """Preset flags whose network differs from cfg's in every field that camera_network reads."""
    other = {"epsilon": "v_prediction", "v_prediction": "epsilon"}[cfg.synthetic.unet_prediction]
    return ["--variational.camera-map", "--variational.camera-map-grid", "12", "--variational.camera-map-pins", "7",
            "--variational.camera-frequencies", "3", "--synthetic.unet-prediction", other]


def test_every_setting_spells_its_network_out_whatever_the_preset_says(janus):
    """A setting's rows keep their network when the demo preset's changes (`main` once took the demo's pinned
    camera map, added after it was defined, into a rerun)."""
    checked = 0
    for setting, (_, methods) in janus.SETTINGS.items():
        for method in methods if setting not in janus.AS_SHIPPED else []:
            flags = job_flags(janus.job(janus.Args(), setting, method, 0))
            cfg = parse_train_args(flags)
            validate(cfg)  # a setting the demo preset's network makes invalid runs nothing (main-nomap once)
            if cfg.guidance not in ("vsd", "esd") or cfg.synthetic.variational == "exact":
                continue  # no learned network
            under_other = parse_train_args([*other_preset(cfg), *flags])
            validate(under_other)
            assert camera_network(under_other) == camera_network(cfg), (setting, method)
            checked += 1
    assert checked >= 20


def test_fairness_summary_against_hand_computation():
    """benchmarks/tiny_sd_fairness.py: two equally full bins give log 2 / log 8 = 1/3 of uniform's entropy,
    Miller-Madow adds (bins used - 1) / 2n nats, and the front share counts |azimuth| < 45 deg."""
    import math

    import torch

    fairness = load_script("benchmarks/tiny_sd_fairness.py", "tiny_sd_fairness")
    # bins 4 and 0 (190 deg = -170)
    azimuths = torch.tensor([10.0, 20.0, 30.0, 40.0, 190.0, 200.0, 210.0, 220.0], dtype=torch.float64)
    s = fairness.summarize(azimuths, bootstrap=200)
    assert s["hist"] == [4, 0, 0, 0, 4, 0, 0, 0]
    assert s["entropy_ratio"] == pytest.approx(1 / 3)
    assert s["entropy_ratio_miller_madow"] == pytest.approx(1 / 3 + 1 / 16 / math.log(8))
    assert s["front_share"] == 0.5
    assert s["view_shares"] == {"front": 0.5, "side": 0.0, "back": 0.5}  # -170..-140 deg: the back range
    lo, hi = s["entropy_ratio_ci95"]
    assert 0 <= lo <= s["entropy_ratio"] <= hi <= 1 / 3 + 1e-9  # resampling two bins never beats an even split


def test_outcomes_count_a_collapsed_head_apart(janus):
    """Per seed: Janus first, then no face, then a view error over COLLAPSED_DEG (one face that does not follow
    the views round), else consistent; the table's counts come from these."""
    m = {"janus": [1, 0, 0, 0, 0], "face_count": [2, 0, 1, 1, 1], "view_error_deg": [5.0, 90.0, 48.0, 30.0, 4.0]}
    assert janus.outcomes(m) == ["janus", "no face", "collapsed", "consistent", "consistent"]
    row = {**m, "front_share": [0.5, 0, 0.375, 0.25, 0.25], "view_variety": [1.0] * 5, "iv": [1.0] * 5,
           "iq": [0.5] * 5}
    line = janus.table({"s": {"vsd": row}}).splitlines()[-1]
    assert line.startswith("| s | vsd | 0.40 [") and "| 1 | 1.00 |" in line, line


def test_a_recorded_batch_must_have_run_its_settings_flags(janus, tmp_path):
    """--record stores a batch's runs as a setting's rows only when each ran with that setting's preset, seed
    and flags (a re-check run as its own batch); a run with any other flag is refused, naming it."""
    import json

    setting = "tinysd-web-recheck"
    rows = []
    for method in janus.SETTINGS[setting][1]:
        for seed in (20, 21):
            j = janus.job(janus.Args(), setting, method, seed)
            name = f"{method}-s{seed}"
            (tmp_path / name).mkdir()
            report = {k: (seed if k == "view_error_deg" else 1) for k in janus.METRICS}
            (tmp_path / name / "janus.json").write_text(json.dumps(report))
            rows.append({"run_name": name, "status": "done",
                         "args": ["--run-name", name, "--preset", j["preset"], "--seed", str(seed), *j["args"]]})
    (tmp_path / "index.json").write_text(json.dumps(rows))
    args = janus.Args(settings=[setting], record=tmp_path)
    assert janus.recorded(args) == (setting, {m: {**{k: [1, 1] for k in janus.METRICS}, "view_error_deg": [20, 21]}
                                             for m in janus.SETTINGS[setting][1]})
    rows[1]["args"] = [a if a != "vsd" else "sds" for a in rows[1]["args"]]
    (tmp_path / "index.json").write_text(json.dumps(rows))
    with pytest.raises(SystemExit, match="vsd-s21 was not run with setting tinysd-web-recheck's flags"):
        janus.recorded(args)
