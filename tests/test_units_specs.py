import shutil
from pathlib import Path

import pytest

from cmperf import specs, units
from cmperf.errors import CmperfError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "kind", "si"),
    [
        ("200 Gb/s", "bytes_per_s", 25e9),
        ("196 GB/s", "bytes_per_s", 196e9),
        ("1.6 TB/s", "bytes_per_s", 1.6e12),
        ("400 Gbps", "bytes_per_s", 50e9),
        ("64 GB", "bytes", 64e9),
        ("2TB", "bytes", 2e12),
        ("512 MiB", "bytes", 512 * 2**20),
        ("1 KiB", "bytes", 1024),
        ("8 b", "bytes", 1),
        ("50 ms", "s", 0.05),
        ("50ms", "s", 0.05),
        ("1.9 us", "s", 1.9e-6),
        ("1.9 µs", "s", 1.9e-6),
        ("2 s", "s", 2.0),
        ("752 TOPS", "flops", 752e12),
        ("353.9 TFLOPS", "flops", 353.9e12),
        ("1 PFLOPS", "flops", 1e15),
        (3.5, "s", 3.5),
    ],
)
def test_unit_table(text, kind, si):
    assert units.parse(text, kind) == pytest.approx(si, rel=1e-12)


@pytest.mark.parametrize("bad", ["fast", "12 parsecs", "", "ms 50"])
def test_unit_errors_name_the_flag(bad):
    with pytest.raises(CmperfError, match="--tpot-slo"):
        units.parse(bad, "s", where="--tpot-slo")


def test_cm384_spec_values(cm384):
    chip = cm384.chip
    assert chip.peak("int8") == 752e12
    assert chip.hbm_bytes_per_s == 1.6e12 and chip.hbm_bytes == 64 * 2**30
    assert (chip.cube_cores, chip.vector_cores) == (24, 48)
    assert cm384.num_ranks == 768
    assert cm384.planes["ub"].bytes_per_s_per_rank == 196e9
    assert cm384.planes["rdma"].bytes_per_s_per_rank == 25e9  # 200 Gb/s per die
    assert cm384.planes["vpc"].bytes_per_s_per_rank == pytest.approx(50e9 / 16)  # 400 Gb/s per node / 16 dies
    assert all(src for src in chip.sources.values())


def test_model_alias_and_arch(r1):
    v3 = specs.load_model("deepseek-v3")
    assert v3.path == r1.path
    assert (r1.hidden_size, r1.num_layers, r1.n_routed_experts, r1.num_experts_per_tok) == (7168, 61, 256, 8)


def _copy_specs(tmp_path):
    d = tmp_path / "specs"
    shutil.copytree(ROOT / "hardware", d / "hardware")
    shutil.copytree(ROOT / "models", d / "models")
    return d


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("gemm_compute = { value = 0.797,", "gemm_compute = { valu = 0.797,", "gemm_compute"),
        ("gemm_compute = { value = 0.797,", "gemm_compute = { value = 1.7,", "gemm_compute.*fraction"),
        ('bandwidth = { value = "1.6 TB/s",', 'bandwidth = { value = "1.6 parsecs",', "hbm.bandwidth.*unit"),
        ("[efficiency]", "bogus_key = 3\n[efficiency]", "bogus_key.*unknown key"),
        ('source = "CM384 §3.3.1: 24 AIC per die"', 'source = ""', "cores.cube has no source"),
        ('name = "ascend-910c"', 'name = "ascend-910x"', "must match the file name"),
        ("[peak]", "[peak\n", "not valid TOML"),
    ],
)
def test_malformed_chip_names_file_and_key(tmp_path, old, new, match):
    d = _copy_specs(tmp_path)
    f = d / "hardware" / "ascend-910c.toml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(CmperfError, match=match) as e:
        specs.load_system("cloudmatrix384", [str(d)])
    assert "ascend-910c.toml" in str(e.value)


def test_unknown_spec_lists_available():
    with pytest.raises(CmperfError, match=r"available: .*cloudmatrix384"):
        specs.load_system("cloudmatrix385")


def test_spec_dir_and_env_precedence(tmp_path, monkeypatch):
    d = _copy_specs(tmp_path)
    f = d / "hardware" / "ascend-910c.toml"
    f.write_text(f.read_text().replace("gemm_compute = { value = 0.797,", "gemm_compute = { value = 0.5,"))
    assert specs.load_system("cloudmatrix384", [str(d)]).chip.eff["gemm_compute"] == 0.5
    monkeypatch.setenv("CMPERF_PATH", str(d))
    assert specs.load_system("cloudmatrix384").chip.eff["gemm_compute"] == 0.5
    monkeypatch.delenv("CMPERF_PATH")
    assert specs.load_system("cloudmatrix384").chip.eff["gemm_compute"] == 0.797
