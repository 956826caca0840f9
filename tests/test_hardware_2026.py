"""The late-2026 systems (issue 17): spec facts, precision paths (MX/NVFP4, crippled INT8 on Blackwell
Ultra), the 3D-torus plane, and every new system through serve and optimize (decode, prefill and compare
run over every system in tests/test_hardware.py)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import comm, compare, specs
from cmperf.cli import main
from cmperf.deployment import Precision, default_precision
from cmperf.errors import CmperfError

NEW_SYSTEMS = ["atlas-950-superpod", "hgx-b300", "gb300-nvl72", "vr-nvl72", "tpu7x-pod", "mi355x-cluster"]


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_names_and_sizes():
    sizes = {n: specs.load_system(n).num_devices for n in NEW_SYSTEMS}
    assert sizes == {
        "atlas-950-superpod": 8192,
        "hgx-b300": 128,
        "gb300-nvl72": 72,
        "vr-nvl72": 72,
        "tpu7x-pod": 9216,
        "mi355x-cluster": 32,
    }
    a = specs.load_system("atlas-950-superpod")
    # 18 ports x 4 lanes x 112 Gb/s = 2,016 GB/s bidirectional, per direction half
    assert a.planes["ub"].bytes_per_s_per_rank == pytest.approx(2016e9 / 2)
    assert a.planes["ub"].latency_s == pytest.approx(2.1e-6)  # HC25 cross-cabinet latency
    assert a.chip.hbm_bytes_per_s == pytest.approx(4e12) and a.chip.peak("mxfp4") == pytest.approx(1946e12)


def test_mx_and_nvfp4_bytes_carry_their_block_scales():
    assert specs.DTYPE_BYTES["mxfp8"] == 1 + 1 / 32 and specs.DTYPE_BYTES["mxfp4"] == 0.5 + 1 / 32
    assert specs.DTYPE_BYTES["nvfp4"] == 0.5 + 1 / 16
    # an MXFP8 dispatch message of R1: 7,168 x 1.03125 + 240 B scale/header = 7,632 B (16 B aligned)
    assert comm.message_bytes(7168, "mxfp8", 240, 16) == 7632.0


def test_native_experts_take_the_fastest_4bit_path():
    assert default_precision(specs.load_system("gb300-nvl72"), experts="native").experts == "nvfp4"
    assert default_precision(specs.load_system("atlas-950-superpod"), experts="native").experts == "mxfp4"
    assert default_precision(specs.load_system("mi355x-cluster"), experts="native").experts == "mxfp4"
    assert default_precision(specs.load_system("tpu7x-pod"), experts="native").experts == "fp8"  # no FP4


def test_fp4_on_tpu7x_is_an_error_and_exit_2():
    with pytest.raises(CmperfError, match="tpu7x has no fp4"):
        default_precision(specs.load_system("tpu7x-pod"), weights="fp4")
    r = run("decode", "--system", "tpu7x-pod", "--devices", "64", "--weights", "fp4")
    assert r.exit_code == 2 and "has no fp4" in r.output and len(r.output.strip().splitlines()) == 1


def test_int8_on_blackwell_ultra_warns_with_the_rate_and_uses_it(r1, capsys):
    s = specs.load_system("hgx-b300")
    assert s.chip.crippled("int8") == ("fp8", 4500e12) and s.chip.crippled("fp8") is None
    assert specs.load_system("cloudmatrix384").chip.crippled("int8") is None
    Precision._warned.discard(("b300", "int8"))
    p = default_precision(s, weights="int8")
    err = capsys.readouterr().err
    assert "warning: --weights int8 on hgx-b300" in err and "153.5 TOPS" in err and "3.4%" in err
    assert p.gemm == "int8"
    # the prediction uses the crippled rate: INT8 W8A8 is far slower than FP8 on the same deployment
    fp8 = compare.decode_row(s, r1, batch_per_device=96)
    int8 = compare.decode_row(s, r1, batch_per_device=96, weights="int8")
    assert int8.tpot_s > 3 * fp8.tpot_s
    default_precision(s, weights="int8")
    assert capsys.readouterr().err == ""  # one warning line per chip and datatype, not one per check


def test_torus_alltoall_worked_numbers():
    link = 100e9  # TPU7x: 1,200 GB/s bidirectional over 6 links
    assert float(comm.torus_alltoall_bandwidth((4, 4, 4), link)) == pytest.approx(200e9)
    assert float(comm.torus_alltoall_bandwidth((16, 24, 24), link)) == pytest.approx(100e9 * 8 / 24)
    # a 1D ring of 8: bisection 8 b / 8 = b; channel load 8 b / 8 = b
    assert float(comm.torus_alltoall_bandwidth((8,), link)) == pytest.approx(100e9)
    assert comm.torus_group_dims((16, 24, 24), 512).tolist() == pytest.approx([8, 8, 8])
    assert float(comm.torus_diameter_hops((4, 4, 4), 64)) == 6
    # larger groups never get a faster per-rank all-to-all rate
    rates = comm.torus_alltoall_bandwidth((16, 24, 24), link, np.array([8, 64, 320, 1024, 9216]))
    assert np.all(np.diff(rates) <= 1e-6)


def test_torus_ep_collective_is_slower_than_a_switch_of_the_same_injection():
    s = specs.load_system("tpu7x-pod")
    payload = 96 * 8 * 7408.0
    t = comm.ep_collective_time(s, "dispatch", payload, 64)
    # 4x4x4 cube: 200 GB/s x 0.8; alpha 33.01 us + 6 hops x 0.5 us
    assert float(t.time_s) == pytest.approx(33.01e-6 + 3e-6 + payload * 63 / 64 / (200e9 * 0.8), rel=1e-9)
    flat = payload * 63 / 64 / (600e9 * 0.8)
    assert float(t.link_s) == pytest.approx(3 * flat, rel=1e-9)


def _torus_spec(tmp_path, dims):
    text = (specs.find("tpu7x-pod", "system")).read_text().replace('name = "tpu7x-pod"', 'name = "big-torus"')
    text = text.replace("value = [16, 24, 24]", f"value = {dims}")
    (tmp_path / "big-torus.toml").write_text(text)
    return str(tmp_path)


def test_torus_larger_than_the_pod_is_one_line_exit_2(tmp_path):
    d = _torus_spec(tmp_path, [32, 24, 24])
    with pytest.raises(CmperfError, match="18432 chips, larger than the system's num_devices = 9216"):
        specs.load_system("big-torus", [d])
    r = run("decode", "--system", "big-torus", "--spec-dir", d)
    assert r.exit_code == 2 and "larger than" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_torus_bad_dims_and_unknown_key(tmp_path):
    d = _torus_spec(tmp_path, [16, 24, 23])
    with pytest.raises(CmperfError, match="domain_devices"):
        specs.load_system("big-torus", [d])
    d = _torus_spec(tmp_path, '"4x4x4"')
    with pytest.raises(CmperfError, match="list of 1-6 whole numbers"):
        specs.load_system("big-torus", [d])
    text = (tmp_path / "big-torus.toml").read_text().replace('"4x4x4"', "[16, 24, 24]")
    (tmp_path / "big-torus.toml").write_text(
        text.replace('topology = "torus"', 'topology = "torus"\nrings = 3')
    )
    with pytest.raises(CmperfError, match="unknown key"):
        specs.load_system("big-torus", [str(tmp_path)])


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_every_new_system_serves(name):
    devices = {"atlas-950-superpod": 384, "tpu7x-pod": 384}.get(name)
    args = ["serve", "--system", name, "--rate", "1", "--format", "json"]
    args += ["--devices-total", str(devices)] if devices else []
    r = run(*args[:5], "--size", *args[5:])
    assert r.exit_code in (0, 1), r.output  # 1: sized but an SLO unmet; never a crash or bad input
    d = json.loads(r.output)
    assert d["kind"] in ("serve", "size", "serve-size") or "pools" in json.dumps(d)


def _small_copy(name, tmp_path):
    """The 8,192/9,216-chip systems cut to 384 chips (same chip, planes and kernels): `optimize` enumerates
    every whole-node instance size of the *system* (cmperf.search.instance_sizes), ~40 s at full size even
    with --devices 64, so the test runs on the copy; the full-size time is in the issue-17 note."""
    text = specs.find(name, "system").read_text().replace(f'name = "{name}"', f'name = "{name}-384"')
    for big in ("8192", "9216"):
        text = text.replace(f"value = {big},", "value = 384,")
    text = text.replace("value = [16, 24, 24]", "value = [8, 8, 6]")
    (tmp_path / f"{name}-384.toml").write_text(text)
    return f"{name}-384", ["--spec-dir", str(tmp_path)]


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_every_new_system_optimizes(name, tmp_path):
    extra: list[str] = []
    if specs.load_system(name).num_devices > 1024:
        name, extra = _small_copy(name, tmp_path)
    r = run("optimize", "--system", name, "--top", "2", "--format", "json", *extra)
    assert r.exit_code in (0, 1), r.output
    d = json.loads(r.output)
    assert d["schema_version"] == 1


# ---------- power (tokens/s per kW where a source gives it)

#: Chip power in ../shared/reference/hardware-2026.md; every other chip has none (never an invented number).
POWER_W = {"b300": 1100.0, "gb300": 1400.0, "rubin": 2300.0, "mi355x": 1400.0}


def test_chip_power_only_where_the_reference_gives_it():
    for name in POWER_W:
        c = specs.load_chip(name)
        assert c.power_w == POWER_W[name] and c.sources["power"].startswith(("MLPerf", "AMD"))
    for name in ("ascend-910c", "ascend-950dt", "tpu7x", "h800", "b200", "gb200"):
        assert specs.load_chip(name).power_w is None
    for name in [*NEW_SYSTEMS, "cloudmatrix384"]:
        assert specs.load_system(name).power_w is None  # no rack or node power in the references
    shown = run("specs", "show", "gb300", "--format", "markdown").output
    assert "| power_w | 1,400 W | MLPerf Inference v6.1" in shown


def test_compare_per_kw_and_power_not_known(r1):
    gb = compare.decode_row(specs.load_system("gb300-nvl72"), r1, batch_per_device=96)
    assert (gb.power_w_per_device, gb.power_basis) == (1400.0, "chip")
    assert gb.tokens_per_s_per_kw == pytest.approx(gb.tokens_per_s_per_device / 1.4)
    assert gb.tokens_per_s_per_kw == pytest.approx(4213, abs=1)  # 5,899 tokens/s per GPU / 1.4 kW
    tpu = compare.decode_row(specs.load_system("tpu7x-pod"), r1, batch_per_device=8)
    assert (tpu.power_w_per_device, tpu.power_basis, tpu.tokens_per_s_per_kw) == (None, "", None)
    r = run("compare", "--systems", "cloudmatrix384,hgx-b300", "--batch", "96", "--format", "markdown")
    assert r.exit_code == 0, r.output
    assert "| power per device | power not known | 1,100 W (chip only) |" in r.output
    assert "| tokens/s per kW | power not known | 3,923 |" in r.output
    d = json.loads(run("compare", "--systems", "cloudmatrix384,vr-nvl72", "--format", "json").output)
    assert [x["tokens_per_s_per_kw"] is None for x in d["rows"]] == [True, False]
    assert d["rows"][1]["power_w_per_device"] == 2300.0


def _with_line(tmp_path, name, base, kind, line, after):
    """A copy of the spec ``base`` named ``name`` with ``line`` inserted after the line starting ``after``."""
    text = specs.find(base, kind).read_text().replace(f'name = "{base}"', f'name = "{name}"')
    head, sep, tail = text.partition(after)
    eol = tail.index("\n") + 1
    (tmp_path / f"{name}.toml").write_text(head + sep + tail[:eol] + line + "\n" + tail[eol:])
    return str(tmp_path)


def test_system_power_per_node_and_per_system(tmp_path, r1):
    line = (
        'power = { value = "14.3 kW", per = "node", source = "test: 8 x 1.1 kW + 5.5 kW host", mark = "I" }'
    )
    d = _with_line(tmp_path, "b300-node-power", "hgx-b300", "system", line, "devices_per_node")
    s = specs.load_system("b300-node-power", [d])
    assert s.power_w == pytest.approx(14.3e3 * 16) and s.power_per_device() == (
        pytest.approx(1787.5),
        "system",
    )
    row = compare.decode_row(s, r1, batch_per_device=96)
    assert row.power_basis == "system"
    assert row.tokens_per_s_per_kw == pytest.approx(row.tokens_per_s_per_device / 1.7875)
    line = 'power = { value = "72 kW", source = "test: below 72 x 1.4 kW of GPUs alone", mark = "I" }'
    d = _with_line(tmp_path, "gb300-low", "gb300-nvl72", "system", line, "devices_per_node")
    with pytest.raises(CmperfError, match="1,000 W per device is below its chip gb300's own 1,400 W"):
        specs.load_system("gb300-low", [d])


@pytest.mark.parametrize("value", ['"0 W"', '"-700 W"', "0", '"1.4 kV"'])
def test_bad_power_is_one_line_exit_2(tmp_path, value):
    text = specs.find("gb300", "chip").read_text()
    assert 'power = { value = "1400 W"' in text
    (tmp_path / "gb300.toml").write_text(
        text.replace('power = { value = "1400 W"', f"power = {{ value = {value}")
    )
    d = str(tmp_path)  # a chip of the same name in --spec-dir replaces the built-in one
    r = run("decode", "--system", "gb300-nvl72", "--spec-dir", d)
    assert r.exit_code == 2 and "key power" in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


# ---------- binding plane on a torus, precision a chip lacks, microbatches auto


def test_binding_plane_uses_the_torus_rate(tmp_path, r1):
    """EP1024 over two 8x8x8 tori joined by DCN: half the remote bytes cross ICI at the sub-torus rate
    (10 GB/s link x min(8/8, 24/24, 6) = 10 GB/s per chip), half DCN at 20 GB/s. ICI binds; timed at its
    60 GB/s injection, as a switch, DCN would look slower."""
    text = specs.find("tpu7x-pod", "system").read_text().replace('name = "tpu7x-pod"', 'name = "tpu-split"')
    text = text.replace("value = 9216,", "value = 1024,", 1).replace(
        "value = [16, 24, 24]", "value = [8, 8, 8]"
    )
    text = text.replace(
        'domain_devices = { value = 9216, source = "GC TPU7x: all',
        'domain_devices = { value = 512, source = "',
    )
    text = text.replace('bandwidth = { value = "600 GB/s"', 'bandwidth = { value = "60 GB/s"')
    text = text.replace('bandwidth = { value = "100 Gb/s"', 'bandwidth = { value = "160 Gb/s"')
    (tmp_path / "tpu-split.toml").write_text(text)
    s = specs.load_system("tpu-split", [str(tmp_path)])
    assert float(comm._rate(s, "ici", 1024)) == pytest.approx(10e9)
    row = compare.decode_row(s, r1, devices=1024, batch_per_device=96)
    assert row.ep_scaleout_fraction == pytest.approx(512 / 1023)
    assert (row.binding_stream, row.binding_ceiling, row.binding_plane) == ("comm stream", "link", "ici")
    secs = comm.ep_plane_seconds(s, "dispatch", 1e6, 1024)
    # 1 MB: 511/1024 of it to the other 511 chips of the own torus, 512/1024 over DCN; both planes at 0.8
    assert float(secs["ici"]) == pytest.approx(1e6 * 511 / 1024 / (10e9 * 0.8))
    assert float(secs["dcn"]) == pytest.approx(1e6 * 512 / 1024 / (20e9 * 0.8))


@pytest.mark.parametrize(
    ("system", "flag", "dtype"),
    [
        ("tpu7x-pod", "--weights", "fp4"),
        ("atlas-950-superpod", "--experts-dtype", "nvfp4"),
        ("mi355x-cluster", "--experts-dtype", "nvfp4"),
    ],
)
def test_compare_precision_a_chip_lacks_is_one_line_exit_2(system, flag, dtype):
    r = run("compare", "--systems", f"cloudmatrix384,{system}", flag, dtype)
    assert r.exit_code == 2 and f"has no {dtype}" in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_compare_microbatches_auto_is_the_decode_choice(r1):
    cm = compare.decode_row(specs.load_system("cloudmatrix384"), r1, batch_per_device=8, microbatches="auto")
    assert cm.workload["microbatches"] == 1 and cm.tpot_s == pytest.approx(15.20e-3, abs=5e-6)
    r = run(
        "compare", "--systems", "cloudmatrix384", "--batch", "8", "--microbatches", "auto", "--format", "json"
    )
    assert r.exit_code == 0 and json.loads(r.output)["rows"][0]["workload"]["microbatches"] == 1
    bad = run("compare", "--phase", "prefill", "--microbatches", "auto")
    assert bad.exit_code == 2 and "--microbatches" in bad.output


def test_every_new_chip_efficiency_transfer_names_its_chip_and_keeps_its_value():
    """A transferred efficiency says "transferred from CHIP (...): why", mark I, and equals CHIP's value."""
    import re
    import tomllib

    for name in ("ascend-950pr", "ascend-950pr-28c", "ascend-950dt", "ascend-950dt-32c", "ascend-950dt-28c"):
        assert specs.load_chip(name).eff == specs.load_chip("ascend-910c").eff
    for name in ("b300", "gb300", "rubin", "tpu7x", "mi355x"):
        raw = tomllib.loads(specs.find(name, "chip").read_text())["efficiency"]
        for key, entry in raw.items():
            if key in ("pipeline_compute", "expert_memory"):  # a GPU's own fit (test_gpu_*_is_its_own)
                continue
            m = re.match(r"transferred from ([a-z0-9-]+) \(.+\): \S.{20,}", entry["source"])
            if name == "mi355x" and key == "gemm_compute":
                assert m is None and "measured on MI355X" in entry["source"] and entry["value"] == 0.626
                continue
            assert m and entry["mark"] == "I", (name, key)
            assert entry["value"] == specs.load_chip(m.group(1)).eff[key], (name, key)


def test_block_scaled_kv_needs_the_format_on_the_chip():
    """A KV cache in MXFP8 / NVFP4 is a hardware block format: refused (one line, exit 2) on a chip without
    it, accepted where the chip has it."""
    r = CliRunner().invoke(main, ["decode", "--system", "tpu7x-pod", "--kv-dtype", "mxfp8"])
    assert r.exit_code == 2 and "--kv-dtype mxfp8 on tpu7x-pod: chip tpu7x has no mxfp8" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    ok = CliRunner().invoke(main, ["decode", "--system", "gb300-nvl72", "--kv-dtype", "nvfp4"])
    assert ok.exit_code == 0, ok.output


def test_gpu_pipeline_compute_is_its_own():
    """No GPU carries another chip's in-loop compute share (issue 14): Blackwell's and Hopper's are fitted on
    their own measured rows (scripts/fit_gpu_pipeline.py: 0.68 and 1.0, where Hopper's fit rails), a chip
    without rows keeps the default 1.0; the 910C's 0.74 stays on the Ascend dies."""
    import tomllib

    fitted = dict.fromkeys(("b200", "b300", "gb200", "gb300"), 0.68)
    fitted |= dict.fromkeys(("h100", "h200", "h800", "h20"), 1.0)
    for name, value in {**fitted, "rubin": 1.0, "mi355x": 1.0, "tpu7x": 1.0}.items():
        entry = tomllib.loads(specs.find(name, "chip").read_text())["efficiency"]["pipeline_compute"]
        assert specs.load_chip(name).eff["pipeline_compute"] == value, name
        assert "ascend" not in entry["source"] and "910C" not in entry["source"], name
        assert ("scripts/fit_gpu_pipeline.py" in entry["source"]) == (name in fitted), name
    assert specs.load_chip("ascend-910c").eff["pipeline_compute"] == 0.74


def test_blackwell_in_loop_share_moves_compute_bound_prefill_not_small_batch_decode():
    """What Blackwell's fitted 0.68 moves: hgx-b200 prefill (defaults, compute-heavy) is 8.9% faster at 1.0
    (11,508 -> 12,537 tokens/s per GPU; the collectives it overlaps do not move), decode at batch 8 (the
    weight read binds) under 2%."""
    import dataclasses

    from cmperf import decode, prefill
    from cmperf.deployment import Deployment

    s, m = specs.load_system("hgx-b200"), specs.load_model("deepseek-r1")
    raw = dataclasses.replace(
        s, chip=dataclasses.replace(s.chip, eff={**s.chip.eff, "pipeline_compute": 1.0})
    )
    pre = [prefill.predict(x, m, Deployment(phase="prefill")).tokens_per_s_per_device for x in (s, raw)]
    assert pre[0] == pytest.approx(11508, rel=0.01) and pre[1] / pre[0] == pytest.approx(1.089, abs=0.005)
    dec = [decode.predict(x, m, Deployment(devices=8, batch_per_device=8)).tpot_s for x in (s, raw)]
    assert 0.98 < dec[1] / dec[0] < 1.0


def test_gpu_expert_memory_is_its_own_and_moves_the_weight_read():
    """The routed experts' grouped-GEMM weight-streaming fraction (chip ``expert_memory``, issue 14 item 4:
    GEMM efficiency by shape) is fitted per GPU architecture jointly with the frameworks' step overhead
    (scripts/fit_gpu_pipeline.py: Hopper 0.70, Blackwell 0.76); a chip without the key streams its experts
    at its gemm_memory (the 910C: 0.6 as before). What it moves: hgx-b200 decode at batch 8 (the expert
    weight read binds) is 16.3% slower at gemm_memory's 0.6 (15.54 -> 18.08 ms), compute-bound prefill
    not at all."""
    import dataclasses
    import tomllib

    from cmperf import decode, prefill
    from cmperf.deployment import Deployment

    fitted = dict.fromkeys(("b200", "b300", "gb200", "gb300"), 0.76)
    fitted |= dict.fromkeys(("h100", "h200", "h800", "h20"), 0.70)
    for name, value in fitted.items():
        entry = tomllib.loads(specs.find(name, "chip").read_text())["efficiency"]["expert_memory"]
        assert specs.load_chip(name).eff["expert_memory"] == value, name
        assert "scripts/fit_gpu_pipeline.py" in entry["source"] and entry["mark"] == "I", name
    for name in ("ascend-910c", "rubin", "mi355x", "tpu7x"):
        chip = specs.load_chip(name)
        assert chip.eff["expert_memory"] == chip.eff["gemm_memory"], name

    s, m = specs.load_system("hgx-b200"), specs.load_model("deepseek-r1")
    raw = dataclasses.replace(s, chip=dataclasses.replace(s.chip, eff={**s.chip.eff, "expert_memory": 0.6}))
    dec = [decode.predict(x, m, Deployment(devices=8, batch_per_device=8)).tpot_s for x in (s, raw)]
    assert dec[0] == pytest.approx(15.54e-3, rel=0.005) and dec[1] / dec[0] == pytest.approx(1.163, abs=0.005)
    pre = [prefill.predict(x, m, Deployment(phase="prefill")).tokens_per_s_per_device for x in (s, raw)]
    assert pre[1] == pytest.approx(pre[0], rel=1e-9)
