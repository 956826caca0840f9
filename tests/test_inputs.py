"""Bad input: each case of issue 15's list is one line with the right exit code (2 bad input, 3 infeasible).

The classes behind them are tested by generation (tests/test_fuzz_cli.py, tests/test_fuzz_files.py); these
are the concrete commands, with the message each must print.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import cmperf
from cmperf import domains, regress, serving
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.errors import CmperfError

ROOT = Path(__file__).resolve().parent.parent
GRID = str(ROOT / "tests/golden/grid.json")


def run(*args):
    r = CliRunner(env={"CMPERF_PATH": None}).invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def one_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serve", "--rate", "40", "--prefixes", "9223372036854775808"],
            "--prefixes: '9223372036854775808' is out",
        ),
        (["serve", "--rate", "40", "--prompt-cv", "nan"], "--prompt-cv: 'nan' is not a finite number"),
        (["serve", "--rate", "40", "--prompt-cv", "inf"], "--prompt-cv: 'inf' is not a finite number"),
        (
            ["serve", "--rate", "40", "--prompt-cv", "1e300"],
            "--prompt-cv: '1e300' is out of range; give a number in [0, 4]",
        ),
        (["serve", "--rate", "40", "--prompt-cv", "1e25"], "--prompt-cv: '1e25' is out of range"),
        (
            ["serve", "--rate", "40", "--mtp-accept", "-1"],
            "--mtp-accept: '-1' is out of range; give a number in [0, 1]",
        ),
        (["serve", "--concurrency", "1e-300"], "--concurrency: '1e-300' is not a whole number"),
        (["serve", "--size", "--devices-total", "0"], "--devices-total: '0' is out of range"),
        (["serve", "--rate", "nan"], "--rate: cannot parse 'nan'"),
        (["serve", "--rate", "40", "--ttft-slo", "1e999s"], "--ttft-slo: inf is not a finite number"),
        (["pareto", "--prompt-len", "nan"], "--prompt-len: 'nan' is not a finite number"),
        (["compare", "--phase", "prefill", "--microbatches", "0"], "--microbatches: '0' is out of range"),
        (["compare", "--devices", "dgx-h800=1e300"], "--devices dgx-h800: '1e300' is out of range"),
        (["compare", "--systems", "nosuch"], "--systems: unknown system 'nosuch'"),
        (["decode", "--format", "json", "-o", "/proc/version"], "--output: cannot write in /proc"),
        (["decode", "--batch", "nan"], "--batch: 'nan' is not a finite number; give a number in (0, 1e+06]"),
        (["decode", "--batch", "inf"], "--batch: 'inf' is not a finite number"),
        (["decode", "--imbalance", "inf"], "--imbalance: 'inf' is not a finite number"),
        (["decode", "--devices", "1.5"], "--devices: '1.5' is not a whole number"),
        (["decode", "--attn-cores", "24"], "--attn-cores: 24 leaves no cube core to one stream"),
        (["decode", "--attn-cores", "66"], "--attn-cores: 66 leaves no cube core to one stream"),
        (["decode", "--system", "dgx-h800", "--attn-cores", "66"], "--attn-cores: dgx-h800 does not split"),
        (["decode", "--step-overhead", "1e999ms"], "--step-overhead: inf is not a finite number"),
        (["comm", "--tokens-per-rank", "nan"], "--tokens-per-rank: 'nan' is not a finite number"),
        (["comm", "--top-k", "0"], "--top-k: '0' is out of range; give a whole number in [1, 4096]"),
        (["comm", "--top-k", "-1"], "--top-k: '-1' is out of range"),
        (["prefill", "--devices", "0"], "--devices: '0' is out of range"),
        (["prefill", "--devices", "17"], "--devices: 17 devices (34 ranks) do not split into the default"),
        (
            ["diff", GRID, GRID, "--rtol", "nan"],
            "--rtol: 'nan' is not",
        ),
        (
            ["diff", GRID, GRID, "--metric-rtol", "x=nan"],
            "--metric-rtol x: nan is not a tolerance",
        ),
        (["decode", "--formt", "json"], "No such option '--formt'"),
        (["decode", "--format", "xml"], "'xml' is not one of"),
    ],
)
def test_bad_flag_is_one_line_exit_2(args, message):
    r = run(*args)
    line = one_line(r)
    assert r.exit_code == 2 and line.startswith("cmperf: error: ") and message in line, line
    assert r.stdout == ""


def test_a_billion_prefixes_run():
    """Was OOM-killed (a 16 GB popularity vector): the Zipf / Che sums are O(1) memory now."""
    r = run("serve", "--rate", "40", "--prefixes", "1e9", "--format", "json")
    assert r.exit_code == 0, r.stderr
    cache = json.loads(r.stdout)["cache"]
    assert cache["model"] == "zipf-lru" and 0 < cache["request_hit_rate"] < 1


def test_overload_is_a_state_with_explicit_nulls_and_exit_3():
    r = run("serve", "--rate", "1400", "--format", "json")
    assert r.exit_code == 3 and one_line(r).startswith("cmperf: overloaded: prefill: 1400 req/s exceeds")
    d = json.loads(r.stdout)
    assert d["overloaded"] is True and d["prefill"]["overloaded"] and d["decode"]["overloaded"]
    assert d["decode"]["tokens_per_s_per_device"] is None and d["ttft_s"]["p99"] is None
    assert d["utilization"]["prefill"] == pytest.approx(1400 / d["max_rate_rps"]["prefill_capacity_rps"])
    doc = (ROOT / "docs/json.md").read_text()
    assert "`decode.tokens_per_s_per_device`" in doc and "`ttft_s.*`" in doc
    ok = run("serve", "--rate", "40", "--format", "json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["overloaded"] is False


def test_serve_size_that_nothing_meets_is_exit_1():
    r = run("serve", "--size", "--tpot-slo", "1ms")
    assert r.exit_code == 1 and "no split of 384 devices meets" in one_line(r)


def test_optimize_where_nothing_fits_says_so():
    r = run("optimize", "--devices", "1")
    assert r.exit_code == 3 and "no decode configuration fits on 1 devices" in one_line(r)
    assert "relax the SLO" not in r.stderr


# ---------------------------------------------------------------------------------------------- diff


def _golden() -> dict:
    return json.loads((ROOT / "tests/golden/scenarios.json").read_text())


def _diff_with(tmp_path, doc_or_bytes) -> str:
    p = tmp_path / "x.json"
    if isinstance(doc_or_bytes, bytes):
        p.write_bytes(doc_or_bytes)
    else:
        p.write_text(json.dumps(doc_or_bytes))
    r = run("diff", ROOT / "tests/golden/scenarios.json", p)
    assert r.exit_code == 2
    return one_line(r)


def test_diff_validates_the_snapshot_schema(tmp_path):
    g = _golden()
    assert "key scenarios must be an object" in _diff_with(tmp_path, {**g, "scenarios": [1]})
    sc = next(iter(g["scenarios"]))
    no_metrics = json.loads(json.dumps(g))
    del no_metrics["scenarios"][sc]["metrics"]
    assert f"key scenarios.{sc} has no metrics" in _diff_with(tmp_path, no_metrics)
    assert "not UTF-8" in _diff_with(tmp_path, b"\xff\xfe\x00binary")
    assert "nested too deep" in _diff_with(tmp_path, ("[" * 10_000 + "]" * 10_000).encode())
    for v in (2, 999, "1", None):
        assert "schema_version" in _diff_with(tmp_path, {**g, "schema_version": v})
    nan = json.dumps(g).replace('"tpot_s": 0.0', '"tpot_s": NaN', 1)
    assert "NaN is not a number a snapshot may hold" in _diff_with(tmp_path, nan.encode())
    nested = json.loads(json.dumps(g))
    nested["scenarios"][sc]["metrics"]["tpot_s"] = {"x": 1}
    assert "is not a metric value" in _diff_with(tmp_path, nested)


def test_a_metric_that_turns_null_is_a_regression():
    c = regress.classify("s/tpot_s", 0.05, None, 0.01)
    assert c.category == "regression"
    assert regress.classify("s/tpot_s", 0.05, math.nan, 0.01).category == "regression"  # never "unchanged"
    with pytest.raises(CmperfError, match="--rtol"):
        regress.diff({}, {}, math.nan)


def test_snapshot_refuses_an_infeasible_scenario(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text('name = "big"\ncommand = "decode"\n[deployment]\nbatch_per_device = 5000\n')
    r = run("snapshot", p, "-o", tmp_path / "s.json")
    assert r.exit_code == 3 and "scenario big is infeasible" in one_line(r)
    assert not (tmp_path / "s.json").exists()


# ---------------------------------------------------------------------------------------------- files


def test_scenario_values_are_checked_by_file_and_key(tmp_path):
    p = tmp_path / "sc.toml"
    for body, message in (
        ("batch_per_device = [96]", "key deployment.batch_per_device: a list is not a value"),
        ("batch_per_device = nan", "key deployment.batch_per_device: nan is not a finite number"),
        ('batch_per_device = "96"', "key deployment.batch_per_device: '96' is a string, not a number"),
        ("devices = 16.5", "key deployment.devices: 16.5 is not a whole number"),
        ("eplb = 5", "key deployment.eplb: 5 is not a name"),
        ('microbatches = "two"', "key deployment.microbatches: 'two' is not a count"),
    ):
        p.write_text(f'name = "sc"\ncommand = "decode"\n[deployment]\n{body}\n')
        for args in (["decode", "--scenario", p], ["snapshot", p], ["report", "--scenario", p]):
            r = run(*args)
            assert r.exit_code == 2 and f"sc.toml: {message}" in one_line(r), (body, args, r.stderr)


def test_scenario_name_is_found_in_spec_dir(tmp_path):
    text = (ROOT / "scenarios/cm384-decode-15ms.toml").read_text()
    (tmp_path / "mine.toml").write_text(text.replace('name = "cm384-decode-15ms"', 'name = "mine"'))
    r = run("decode", "--scenario", "mine", "--spec-dir", tmp_path, "--format", "json")
    assert r.exit_code == 0, r.stderr


def test_a_chip_with_one_cube_core_is_blamed_on_the_chip(tmp_path):
    chip = (
        (ROOT / "hardware/ascend-910c.toml").read_text().replace("cube = { value = 24", "cube = { value = 1")
    )
    (tmp_path / "ascend-910c.toml").write_text(chip)
    line = one_line(run("decode", "--spec-dir", tmp_path))
    assert f"{tmp_path / 'ascend-910c.toml'}: key cores: chip ascend-910c has 1 cube" in line, line


def test_infinite_capacity_and_bandwidth_in_a_spec(tmp_path):
    chip = (ROOT / "hardware/ascend-910c.toml").read_text()
    for old, new, key in (
        ('capacity = { value = "64 GiB"', "capacity = { value = inf", "hbm.capacity"),
        ('bandwidth = { value = "1.6 TB/s"', 'bandwidth = { value = "1e999 TB/s"', "hbm.bandwidth"),
        ('bandwidth = { value = "1.6 TB/s"', "bandwidth = { value = [1.6]", "hbm.bandwidth"),
    ):
        assert old in chip
        (tmp_path / "ascend-910c.toml").write_text(chip.replace(old, new))
        line = one_line(run("decode", "--spec-dir", tmp_path))
        assert f"ascend-910c.toml: key {key}" in line, line


# ---------------------------------------------------------------------------------------------- library


def test_records_reject_non_finite_numbers(cm384, r1):
    assert Deployment(batch_per_device=math.nan).check(cm384, r1) == [
        "--batch: nan is not a finite number; give a number in (0, 1e+06]"
    ]
    assert Deployment(devices=math.inf).check(cm384, r1)[0].startswith("--devices: inf is not a finite")
    reasons = Deployment(ep_size=300, batch_per_device=-1).check(cm384, r1)
    assert len(reasons) == 2 and reasons[0].startswith("--batch: -1 is out of range")  # every problem
    for field, value in (("prompt_cv", math.nan), ("rate_per_s", math.inf), ("num_prefixes", 10**13)):
        with pytest.raises(CmperfError, match=serving.WORKLOAD_FLAGS[field]):
            serving.Workload(**{field: value}).check(r1)
    pools = serving.default_pools(cm384, r1)
    with pytest.raises(CmperfError, match="--cache-dram: inf is not a finite"):
        serving.evaluate(cm384, r1, serving.Workload(), serving.Pools(cache_dram_bytes=math.inf))
    with pytest.raises(CmperfError, match="--devices-total: 0 is out of range"):
        cmperf.size(cm384, r1, serving.Workload(rate_per_s=None), pools, total_devices=0)


def test_domain_messages():
    d = domains.DEPLOYMENT["devices"]
    assert d.check("1e3", "--devices") == 1000 and isinstance(d.check(16.0, "x"), int)
    with pytest.raises(CmperfError, match=re.escape("--devices: True is not a number")):
        d.check(True, "--devices")
    with pytest.raises(CmperfError, match="is a string, not a number"):
        d.check("16", "key devices", text=False)
    assert domains.OPTIONS["rtol"].describe() == "a number >= 0"
    assert domains.SLO["quantile"].describe() == "a number in [0.5, 1)"


@pytest.mark.parametrize(
    "mutation, needle",
    [
        (("topk_group = 4", "topk_group = 9"), "architecture.topk_group: 9 exceeds n_group 8"),
        (
            ("n_group = 8", "n_group = 3"),
            "architecture.n_group: 3 groups do not divide the 256 routed experts",
        ),
        (("num_experts_per_tok = 8", "num_experts_per_tok = 300"), "top-300 exceeds the 256 routed experts"),
        (("popularity_zipf = { value = 0.1,", 'popularity_zipf = { value = "0.1 req/s",'), "plain number"),
        (("hidden_size = 7168", "hidden_size = 9223372036854775807"), "architecture.hidden_size"),
    ],
)
def test_model_structure_is_checked_by_key(tmp_path, mutation, needle):
    """Impossible model structure (routing groups, top-k, sizes) is one line naming file and key."""
    src = (Path(__file__).resolve().parent.parent / "models" / "deepseek-r1.toml").read_text()
    assert mutation[0] in src
    (tmp_path / "deepseek-r1.toml").write_text(src.replace(*mutation))
    r = CliRunner().invoke(main, ["decode", "--spec-dir", str(tmp_path)])
    assert r.exit_code == 2 and needle in r.stderr and "deepseek-r1.toml" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
