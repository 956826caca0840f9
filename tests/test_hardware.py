"""Cross-hardware: the spec library, hierarchical EP traffic, per-op-group precision, the Insights bound,
baseline scenarios and `cmperf compare`."""

import json
import math
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ddep

from cmperf import comm, compare, decode, specs
from cmperf.cli import main
from cmperf.deployment import Precision
from cmperf.errors import CmperfError

ROOT = Path(__file__).resolve().parent.parent
INSIGHTS = [str(ROOT / "tests" / "data" / "insights")]
SYSTEMS = [r["name"] for r in specs.catalog() if r["kind"] == "system"]
CHIPS = [r["name"] for r in specs.catalog() if r["kind"] == "chip"]
BASELINES = sorted((ROOT / "scenarios" / "baselines").glob("*.toml"))


def run(*args):
    return CliRunner().invoke(main, list(args))


# ---------- Insights bound


def _insights(system_name, ep=320):
    s = specs.load_system(system_name, INSIGHTS)
    m = specs.load_model("insights-7000", INSIGHTS)
    prec = Precision(gemm="fp8", experts="fp8", dispatch="fp8", combine="bf16")
    # 32 tokens per microbatch per rank: 64 sequences, no MTP, 2 microbatches; EP320 > 256 routed experts puts
    # the shared expert on its own ranks, so each token goes to 8 routed + 1 shared = 9 experts.
    return decode.evaluate(
        s, m, ddep(batch_per_device=64, kv_len=4096, ep_size=ep, microbatches=2, mtp=0, precision=prec)
    )


@pytest.mark.parametrize(
    ("system", "bw", "tpot_ms"), [("insights-50gbps", 50e9, 14.76), ("insights-900gbps", 900e9, 0.82)]
)
def test_insights_bound_from_the_prediction_path(system, bw, tpot_ms):
    ev = _insights(system)
    per_mb_layer_s = 32 * 9 * 7000 * (1 + 2) / bw  # 120.96 us at 50 GB/s (Insights into DeepSeek-V3, ISCA'25)
    assert float(ev.comm_bound_tpot_s) == pytest.approx(2 * 61 * per_mb_layer_s, rel=1e-12)
    assert round(float(ev.comm_bound_tpot_s) * 1e3, 2) == tpot_ms
    # the per-op times the step uses are the same numbers: dispatch + combine of one microbatch of one layer
    moe = next(st for st in ev.stages if st.stage.name == "moe")
    t = sum(float(ot.time_s) for op, ot in zip(moe.stage.ops, moe.op_times, strict=True) if op.kind == "comm")
    assert t == pytest.approx(per_mb_layer_s, rel=1e-12)
    # the bound is a bound: the full prediction is never faster
    assert float(ev.tpot_s) >= float(ev.comm_bound_tpot_s)


def test_insights_bound_exactly_at_50_gbps():
    assert float(_insights("insights-50gbps").comm_bound_tpot_s) == pytest.approx(14.75712e-3, rel=1e-12)
    assert float(_insights("insights-900gbps").comm_bound_tpot_s) == pytest.approx(0.81984e-3, rel=1e-12)


def test_local_copy_stays_home_without_send(tmp_path):
    """Real kernels keep the 1/EP local share on the rank: (EP-1)/EP of the Insights figure."""
    text = (ROOT / "tests/data/insights/insights-50gbps.toml").read_text()
    text = text.replace('name = "insights-50gbps"', 'name = "skip-local"').replace(
        'local_copies = "send"\n', ""
    )
    (tmp_path / "skip-local.toml").write_text(text)
    s = specs.load_system("skip-local", [str(tmp_path)])
    m = specs.load_model("insights-7000", INSIGHTS)
    prec = Precision(gemm="fp8", experts="fp8", dispatch="fp8", combine="bf16")
    ev = decode.evaluate(s, m, ddep(batch_per_device=64, kv_len=4096, ep_size=320, mtp=0, precision=prec))
    assert float(ev.comm_bound_tpot_s) == pytest.approx(14.75712e-3 * 319 / 320, rel=1e-12)


# ---------- hierarchical split


def test_ep144_over_18_h800_nodes_is_mostly_infiniband():
    s = specs.load_system("dgx-h800")
    up, out = comm._split_bytes(s, "nvlink", 1.0, 144)
    assert float(up) == pytest.approx(143 / 144 * 7 / 143) and float(out) == pytest.approx(
        143 / 144 * 136 / 143
    )
    # and the collective takes the slower (InfiniBand) share: 128 tokens x 9 copies x 7,408 B
    payload = 128 * 9 * 7408.0
    t = comm.ep_collective_time(s, "dispatch", payload, 144)
    assert float(t.time_s) == pytest.approx(33.01e-6 + payload * 136 / 144 / (50e9 * 0.9), rel=1e-9)


def test_ep8_inside_one_h800_node_is_all_nvlink():
    s = specs.load_system("dgx-h800")
    up, out = comm._split_bytes(s, "nvlink", 1.0, 8)
    assert float(out) == 0 and float(up) == pytest.approx(7 / 8)


def test_ep320_on_cloudmatrix384_is_all_ub(cm384):
    up, out = comm._split_bytes(cm384, "ub", 1.0, 320)
    assert float(out) == 0 and float(up) == pytest.approx(319 / 320)


@pytest.mark.parametrize("ep", [8, 16, 32, 36, 72])
def test_gb200_nvl72_up_to_72_ranks_is_all_nvlink(ep):
    s = specs.load_system("gb200-nvl72")
    up, out = comm._split_bytes(s, "nvlink", 1.0, ep)
    assert float(out) == 0 and float(up) == pytest.approx((ep - 1) / ep)


def test_atlas_a2_beyond_one_node_is_mostly_roce():
    s = specs.load_system("atlas-800-a2")
    up, out = comm._split_bytes(s, "hccs", 1.0, 16)
    assert float(up) == pytest.approx(7 / 16) and float(out) == pytest.approx(8 / 16)


# ---------- every spec runs


@pytest.mark.parametrize("name", CHIPS)
def test_every_chip_loads(name):
    c = specs.load_chip(name)
    assert c.hbm_bytes > c.hbm_reserved_bytes > 0 and c.hbm_bytes_per_s > 0
    assert all(0 < e <= 1 for e in c.eff.values())
    assert any(d in c.peak_flops for d in ("int8", "fp8")), "tokens/s per TFLOPS needs an 8-bit peak"


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_system_runs_decode(name, r1):
    s = specs.load_system(name)
    row = compare.decode_row(s, r1)
    for v in (row.tpot_s, row.tokens_per_s_per_device, row.lower_s, row.upper_s, row.tokens_per_s_per_tflops):
        assert math.isfinite(v) and v > 0
    assert row.lower_s <= row.tpot_s <= row.upper_s
    assert row.ep_size == row.devices * s.ranks_per_device
    assert row.binding_ceiling in ("compute", "memory", "link", "latency")


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_system_runs_prefill(name, r1):
    pytest.importorskip("cmperf.prefill", reason="cmperf.prefill is being written by the prefill task")
    s = specs.load_system(name)
    row = compare.prefill_row(s, r1)
    for v in (row.tokens_per_s_per_device, row.ttft_s, row.batch_s, row.tokens_per_s_per_tflops):
        assert math.isfinite(v) and v > 0


# ---------- precision


def test_hopper_fp8_gemms_and_dispatch_bf16_attention_and_combine():
    p = compare.default_precision(specs.load_system("dgx-h800"))
    assert (p.gemm, p.experts, p.dispatch) == ("fp8", "fp8", "fp8")
    assert (p.attention, p.combine, p.kv, p.head) == ("bf16", "bf16", "bf16", "bf16")


def test_ascend_int8(cm384):
    p = compare.default_precision(cm384)
    assert (p.gemm, p.experts, p.dispatch, p.combine) == ("int8", "int8", "int8", "bf16")
    assert compare.default_precision(specs.load_system("atlas-800-a2")).gemm == "int8"


@pytest.mark.parametrize(
    ("system", "experts"),
    [("gb200-nvl72", "fp4"), ("hgx-b200", "fp4"), ("dgx-h800", "fp8"), ("cloudmatrix384", "int8")],
)
def test_native_experts_use_fp4_where_the_chip_has_it(system, experts):
    p = compare.default_precision(specs.load_system(system), experts="native")
    assert p.experts == experts
    assert p.dispatch in ("fp8", "int8")  # FP4 experts keep an 8-bit dispatch


def test_fp4_experts_speed_up_blackwell_compute(r1):
    s = specs.load_system("gb200-nvl72")
    fp8 = compare.decode_row(s, r1, batch_per_device=128)
    fp4 = compare.decode_row(s, r1, batch_per_device=128, experts="native")
    assert fp4.precision["experts"] == "fp4"
    assert fp4.tpot_s < fp8.tpot_s  # half the expert weight bytes and twice the peak
    assert fp4.hbm_bytes_per_rank < fp8.hbm_bytes_per_rank


def test_fp8_on_910b_is_bad_input():
    with pytest.raises(CmperfError, match="ascend-910b has no fp8"):
        compare.default_precision(specs.load_system("atlas-800-a2"), weights="fp8")
    with pytest.raises(CmperfError, match="--experts-dtype fp4 on cloudmatrix384"):
        compare.default_precision(specs.load_system("cloudmatrix384"), experts="fp4")


@pytest.mark.parametrize(
    "args",
    [
        ("decode", "--system", "atlas-800-a2", "--devices", "16", "--weights", "fp8"),
        ("compare", "--systems", "atlas-800-a2,dgx-h800", "--weights", "fp8"),
        ("compare", "--systems", "cloudmatrix384", "--experts-dtype", "fp4"),
    ],
)
def test_fp8_on_910b_exits_2_with_one_line(args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert "has no fp" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_8bit_peak_per_device(cm384):
    assert compare.peak_8bit_flops_per_device(cm384) == pytest.approx(1504e12)  # 2 dies x 752 TOPS INT8
    assert compare.peak_8bit_flops_per_device(specs.load_system("dgx-h800")) == pytest.approx(1979e12)


# ---------- baselines


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_baseline_scenarios_are_valid(path, r1):
    from cmperf import scenario

    sc = scenario.load(str(path))
    assert sc.source.strip() and "§" in sc.source
    s = specs.load_system(sc.system)
    cmd = main.commands[sc.command]
    scenario.check_options(sc, [p.name for p in cmd.params], sc.command)
    assert scenario.records(sc, s, r1).check(s, r1) == []


def test_baseline_files_expected():
    assert {p.stem for p in BASELINES} == {
        "deepseek-h800-prefill",
        "deepseek-h800-decode-ep128",
        "deepseek-h800-decode-ep144",
        "sglang-h100-prefill",
        "sglang-h100-decode-ep72",
    }
    raw = tomllib.loads((ROOT / "scenarios/baselines/deepseek-h800-decode-ep144.toml").read_text())
    assert raw["deployment"]["ep_size"] == 144 and raw["deployment"]["batch_per_device"] == 128


def test_deepseek_ep144_placement_is_2_routed_plus_shared(r1):
    from cmperf.deployment import place_experts

    p = place_experts(r1, 144)
    assert (p.routed_slots_per_rank, p.num_redundant, p.experts_per_rank) == (2, 32, 3)


# ---------- compare


def test_compare_default_deployments(r1):
    c = compare.compare(
        [specs.load_system(n) for n in ("cloudmatrix384", "dgx-h800", "dgx-h100", "gb200-nvl72")],
        r1,
        "decode",
    )
    got = {r.system: (r.devices, r.ep_size) for r in c.rows}
    assert got == {
        "cloudmatrix384": (160, 320),
        "dgx-h800": (144, 144),
        "dgx-h100": (72, 72),
        "gb200-nvl72": (72, 72),
    }
    for r in c.rows:
        assert r.tokens_per_s_per_tflops == pytest.approx(
            r.tokens_per_s_per_device / (r.peak_8bit_flops_per_device / 1e12)
        )
    h800 = c.rows[1]
    assert h800.ep_scaleout_fraction == pytest.approx(136 / 143)
    assert c.rows[0].ep_scaleout_fraction == 0 and c.rows[3].ep_scaleout_fraction == 0


def test_compare_matches_decode_command(r1):
    """compare is a view: the same deployment through `cmperf decode` gives the same numbers."""
    row = compare.decode_row(specs.load_system("dgx-h800"), r1)
    r = run(
        "decode",
        "--system",
        "dgx-h800",
        "--devices",
        "144",
        "--batch",
        "128",
        "--microbatches",
        "2",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["tpot_s"] == pytest.approx(row.tpot_s, rel=1e-9)


def test_more_scaleout_bandwidth_never_slower(r1, tmp_path):
    base = compare.decode_row(specs.load_system("dgx-h800"), r1)
    text = (ROOT / "hardware/dgx-h800.toml").read_text().replace('name = "dgx-h800"', 'name = "fast-ib"')
    text = text.replace('bandwidth = { value = "400 Gb/s"', 'bandwidth = { value = "800 Gb/s"')
    (tmp_path / "fast-ib.toml").write_text(text)
    fast = compare.decode_row(
        specs.load_system("fast-ib", [str(tmp_path)]), r1, devices=144, batch_per_device=128
    )
    # the EP bound falls; TPOT never rises (at batch 128 the compute stream binds, so it may stay put)
    assert fast.comm_bound_tpot_s < 0.9 * base.comm_bound_tpot_s and fast.tpot_s <= base.tpot_s


def test_compare_cli_json_and_markdown():
    r = run("compare", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["kind"] == "compare" and d["phase"] == "decode" and d["schema_version"] == 1
    assert [x["system"] for x in d["rows"]] == ["cloudmatrix384", "dgx-h800", "dgx-h100"]
    assert all(x["tpot_s"] > 0 and x["tokens_per_s_per_tflops"] > 0 for x in d["rows"])
    assert run("compare", "--format", "json").output == r.output  # deterministic
    md = run("compare", "--systems", "dgx-h800,gb200-nvl72", "--batch", "64", "--format", "markdown")
    assert md.exit_code == 0, md.output
    assert "| quantity | dgx-h800 | gb200-nvl72 |" in md.output and "tokens/s per TFLOPS" in md.output
    assert "64, 4096" in md.output  # --batch applies to every system


def test_compare_per_system_devices_and_bad_input():
    r = run(
        "compare", "--systems", "dgx-h800,cloudmatrix384", "--devices", "dgx-h800=128", "--format", "json"
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert (rows[0]["devices"], rows[0]["ep_size"], rows[1]["ep_size"]) == (128, 128, 320)
    bad = run("compare", "--systems", "dgx-h800", "--devices", "h100=8")
    assert bad.exit_code == 2 and "--devices" in bad.output
    assert run("compare", "--systems", "nope").exit_code == 2
    assert run("compare", "--tokens-per-device", "100").exit_code == 2


def test_compare_infeasible_exits_3():
    r = run("compare", "--systems", "dgx-h800", "--batch", "4096")
    assert r.exit_code == 3 and "dgx-h800" in r.output and "HBM" in r.output


def test_binding_names_the_slower_plane(r1, tmp_path):
    # H800 with 200 Gb/s NICs (an H20-class cluster's IB): the EP all-to-all over IB binds decode
    text = (ROOT / "hardware/dgx-h800.toml").read_text().replace('name = "dgx-h800"', 'name = "slow-ib"')
    text = text.replace('bandwidth = { value = "400 Gb/s"', 'bandwidth = { value = "200 Gb/s"')
    (tmp_path / "slow-ib.toml").write_text(text)
    row = compare.decode_row(
        specs.load_system("slow-ib", [str(tmp_path)]), r1, devices=144, batch_per_device=128
    )
    assert row.binding_stream == "comm stream" and row.binding_ceiling == "link" and row.binding_plane == "ib"
    secs = row.binding_seconds_by_ceiling
    assert max(secs, key=secs.get) == "link" and secs["link"] > secs.get("latency", 0.0)
    cm = compare.decode_row(specs.load_system("cloudmatrix384"), r1)
    assert cm.ep_scaleout_fraction == 0 and cm.binding_plane in ("ub", "cores", "hbm")


def test_compare_prefill_cli():
    pytest.importorskip("cmperf.prefill", reason="cmperf.prefill is being written by the prefill task")
    r = run("compare", "--phase", "prefill", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [(x["devices"], x["ep_size"]) for x in rows] == [(16, 32), (32, 32), (32, 32)]
    assert rows[1]["ep_scaleout_fraction"] == pytest.approx(24 / 31)  # EP32 over 4 H800 nodes
    assert all(x["batch_s"] > 0 and x["ttft_s"] >= x["batch_s"] for x in rows)
    assert run("compare", "--phase", "prefill", "--batch", "8").exit_code == 2


def test_decode_and_prefill_defaults_fit_every_system():
    """Without --devices/--ep the commands size the instance for the system (one expert per rank capped
    by the system; the EP32 prefill unit), so `cmperf decode --system X` works on every shipped system."""
    for name in ("cloudmatrix384", "dgx-h800", "gb200-nvl72", "atlas-800-a2"):
        d = json.loads(run("decode", "--system", name, "--format", "json").output)
        p = json.loads(run("prefill", "--system", name, "--format", "json").output)
        sysm = specs.load_system(name)
        assert d["deployment"]["ep_size"] == d["deployment"]["devices"] * sysm.ranks_per_device
        assert d["deployment"]["devices"] == min(sysm.num_devices, 320 // sysm.ranks_per_device)
        assert p["deployment"]["ep_size"] == 32 and d["tokens_per_s_per_device"] > 0
