import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from esd_gs.errors import UserError
from esd_gs.io.ply import read_ply, write_ply

from scenes import small_scene


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_exact(tmp_path, degree):
    splats = small_scene(n=50, dtype=torch.float32, sh_degree=degree)
    write_ply(tmp_path / "a.ply", splats)
    back = read_ply(tmp_path / "a.ply")
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(back[k], splats[k].detach()), k


def test_reads_gsplat_export(tmp_path):
    from gsplat import export_splats

    s = small_scene(n=40, dtype=torch.float32, sh_degree=2)
    export_splats(s["means"].detach(), s["scales"].detach(), s["quats"].detach(), s["opacities"].detach(),
                  s["sh0"].detach(), s["shN"].detach(), format="ply", save_to=str(tmp_path / "g.ply"))
    back = read_ply(tmp_path / "g.ply")
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(back[k], s[k].detach()), k


def test_reads_original_3dgs_layout_ascii(tmp_path):
    # the original code writes nx ny nz; an ascii file of that layout must read too
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = "ply\nformat ascii 1.0\nelement vertex 2\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n"
    rows = ["0.1 0.2 0.3 0 0 0 0.5 0.6 0.7 -1 -3 -3 -3 1 0 0 0", "1 2 3 0 0 0 0 0 0 2 -2 -2 -2 0 1 0 0"]
    (tmp_path / "o.ply").write_text(header + "\n".join(rows) + "\n")
    back = read_ply(tmp_path / "o.ply")
    assert torch.allclose(back["means"][1], torch.tensor([1.0, 2.0, 3.0]))
    assert back["shN"].shape == (2, 0, 3)


def _valid_bytes(tmp_path):
    write_ply(tmp_path / "v.ply", small_scene(n=5, dtype=torch.float32, sh_degree=1))
    return (tmp_path / "v.ply").read_bytes()


@pytest.mark.parametrize("case,message", [
    ("missing", "not found"), ("empty", "empty"), ("notply", "not a PLY"), ("truncated", "truncated"),
    ("wrongfield", "missing fields"), ("nan", "NaN"), ("liar", "claims 1000000000000"),
])
def test_bad_files_raise_one_clear_error(tmp_path, case, message):
    good = _valid_bytes(tmp_path)
    path = tmp_path / "bad.ply"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "notply":
        path.write_bytes(b"hello world\n" * 10)
    elif case == "truncated":
        path.write_bytes(good[:-30])
    elif case == "wrongfield":
        path.write_bytes(good.replace(b"property float opacity", b"property float opacitx"))
    elif case == "nan":
        splats = small_scene(n=5, dtype=torch.float32)
        with torch.no_grad():
            splats["means"][2, 1] = float("nan")
        tensors = {k: v.detach() for k, v in splats.items()}
        from plyfile import PlyData
        write_ply(tmp_path / "ok.ply", {**tensors, "means": torch.zeros(5, 3)})
        ply = PlyData.read(str(tmp_path / "ok.ply"))
        ply["vertex"].data["y"][2] = np.nan
        ply.write(str(path))
    elif case == "liar":
        path.write_bytes(good.replace(b"element vertex 5", b"element vertex 1000000000000"))
    with pytest.raises(UserError, match=message) as err:
        read_ply(path)
    assert "\n" not in str(err.value)


def test_write_refuses_nan(tmp_path):
    splats = small_scene(n=5, dtype=torch.float32)
    with torch.no_grad():
        splats["scales"][0, 0] = float("inf")
    with pytest.raises(UserError, match="NaN or Inf"):
        write_ply(tmp_path / "x.ply", splats)
    assert not (tmp_path / "x.ply").exists()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    write_ply(folder / "base.ply", small_scene(n=6, dtype=torch.float32, sh_degree=1))
    return folder


@pytest.mark.slow
@settings(max_examples=2_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_fuzzed_files_give_model_or_clear_error(fuzz_dir, data):
    base = (fuzz_dir / "base.ply").read_bytes()
    kind = data.draw(st.sampled_from(["flip", "cut", "insert", "header"]))
    blob = bytearray(base)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    elif kind == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=20))
    else:
        end = base.index(b"end_header")
        i = data.draw(st.integers(0, end))
        blob[i:i] = data.draw(st.sampled_from([b"element vertex 99999999999\n", b"property float f_rest_0\n",
                                               b"format ascii 1.0\n", b"\n", b"property list uchar int q\n"]))
    path = fuzz_dir / "f.ply"
    path.write_bytes(bytes(blob))
    try:
        out = read_ply(path)
    except UserError as e:
        assert "\n" not in str(e)
        return
    n = len(out["means"])
    assert n > 0 and all(torch.isfinite(v).all() and len(v) == n for v in out.values())


def test_a_header_past_64_kb_reads(tmp_path):
    """Comments can push a valid header past 64 KB (it was called truncated)."""
    write_ply(tmp_path / "s.ply", small_scene(n=10, dtype=torch.float32))
    data = (tmp_path / "s.ply").read_bytes()
    at = data.index(b"element vertex")
    comments = b"".join(b"comment %06d a header past sixty-four kilobytes\n" % k for k in range(2000))
    (tmp_path / "long.ply").write_bytes(data[:at] + comments + data[at:])
    assert len(comments) > 1 << 16
    assert torch.equal(read_ply(tmp_path / "long.ply")["means"], read_ply(tmp_path / "s.ply")["means"])
