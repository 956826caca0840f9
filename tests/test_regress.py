"""Snapshots and diffs (cmperf.regress, `cmperf snapshot`, `cmperf diff`)."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf import regress
from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_directions():
    assert regress.direction("s/tokens_per_s_per_device") == 1
    assert regress.direction("s/tpot_s") == -1 and regress.direction("s/ttft_s") == -1
    assert regress.direction("s/streams.moe.binding") == 0 and regress.direction("s/imbalance") == 0
    assert regress.direction("s/max_batch_per_device") == 1 and regress.direction("s/feasible") == 1


def test_metric_tolerance_names():
    """--metric-rtol NAME matches the whole key, the part after the first '/', the metric's own name (a grid
    snapshot's scenario names hold '/': decode/dgx-h100/deepseek-r1/batch64), or a glob of any of them."""
    per = {"tpot_s": 0.1, "ttft*": 0.2, "cm384/tokens_per_s_per_device": 0.3}
    assert regress.rtol_for("decode/dgx-h100/deepseek-r1/batch64/tpot_s", 0.0, per) == 0.1
    assert regress.rtol_for("prefill/hgx-h200/kimi-k2/default/ttft_s", 0.0, per) == 0.2
    assert regress.rtol_for("x/cm384/tokens_per_s_per_device", 0.0, per) == 0.3
    assert regress.rtol_for("decode/dgx-h100/deepseek-r1/batch64/step_s", 0.05, per) == 0.05


def test_every_category():
    old = {
        "a/tokens_per_s_per_device": 2000.0,
        "a/tpot_s": 0.040,
        "a/imbalance": 1.30,
        "a/binding": "attention stream",
        "a/step_s": 0.0680,
        "a/gone": 1.0,
        "a/feasible": True,
    }
    new = {
        "a/tokens_per_s_per_device": 1800.0,
        "a/tpot_s": 0.036,
        "a/imbalance": 1.50,
        "a/binding": "MoE stream",
        "a/step_s": 0.0681,
        "a/fresh": 2.0,
        "a/feasible": False,
    }
    cats = {c.metric: c.category for c in regress.diff(old, new, rtol=0.01)}
    assert cats == {
        "a/tokens_per_s_per_device": "regression",
        "a/tpot_s": "improvement",
        "a/imbalance": "drift",
        "a/binding": "drift",
        "a/step_s": "unchanged",
        "a/gone": "removed",
        "a/fresh": "added",
        "a/feasible": "regression",
    }
    ch = regress.diff(old, new, rtol=0.01)
    assert regress.counts(ch)["regression"] == 2 and regress.failed(ch, "regression")
    # -10% throughput is inside a 15% per-metric tolerance (glob or plain name)
    ch2 = regress.diff(
        {"a/tokens_per_s_per_device": 2000.0},
        {"a/tokens_per_s_per_device": 1800.0},
        0.01,
        {"tokens_per_s*": 0.15},
    )
    assert [c.category for c in ch2] == ["unchanged"] and not regress.failed(ch2, "any")
    imp = regress.diff({"a/tpot_s": 0.04}, {"a/tpot_s": 0.03}, 0.01)
    assert not regress.failed(imp, "regression") and regress.failed(imp, "any")


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    out = d / "old.json"
    r = run("snapshot", "cm384-decode-50ms", "cm384-decode-15ms", "-o", out)
    assert r.exit_code == 0, r.output
    return d, out


def test_snapshot_contents_and_self_diff(snap):
    _, out = snap
    doc = json.loads(out.read_text())
    assert doc["kind"] == "snapshot" and doc["cmperf_version"] and doc["schema_version"] == 1
    m = doc["scenarios"]["cm384-decode-50ms"]["metrics"]
    assert re.fullmatch(r"[0-9a-f]{16}", doc["scenarios"]["cm384-decode-50ms"]["spec_hash"])
    for key in ("tpot_s", "tokens_per_s_per_device", "lower_tpot_s", "upper_tpot_s", "streams.moe.binding"):
        assert key in m
    # the snapshot records exactly what `cmperf decode` prints for the scenario
    dec = json.loads(run("decode", "--scenario", "cm384-decode-50ms", "--format", "json").output)
    assert m["tpot_s"] == dec["tpot_s"] and m["tokens_per_s_per_device"] == dec["tokens_per_s_per_device"]
    r = run("diff", out, out, "--rtol", "0", "--fail-on", "any")
    assert r.exit_code == 0, r.output
    assert "0 regression, 0 improvement, 0 drift, 0 added, 0 removed" in r.output


def test_changed_efficiency_in_copied_specs_is_flagged(snap, tmp_path):
    _, old = snap
    spec = tmp_path / "specs"
    shutil.copytree(ROOT / "hardware", spec / "hardware")
    chip = spec / "hardware" / "ascend-910c.toml"
    text = chip.read_text()
    new_text = re.sub(r"gemm_compute = \{ value = [0-9.]+", "gemm_compute = { value = 0.4", text)
    assert new_text != text
    chip.write_text(new_text)
    new = tmp_path / "new.json"
    r = run("snapshot", "cm384-decode-50ms", "cm384-decode-15ms", "--spec-dir", spec, "-o", new)
    assert r.exit_code == 0, r.output
    r = run("diff", old, new, "--rtol", "0.01", "--format", "json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    cats = {c["metric"]: c["category"] for c in d["changes"]}
    # half the GEMM efficiency slows the compute-bound expert GEMMs: the MoE stream regresses in both
    assert cats["cm384-decode-50ms/streams.moe.m_s"] == "regression"
    assert cats["cm384-decode-15ms/streams.moe.m_s"] == "regression"
    assert d["counts"]["regression"] >= 2
    old_m = json.loads(old.read_text())["scenarios"]["cm384-decode-50ms"]
    new_m = json.loads(new.read_text())["scenarios"]["cm384-decode-50ms"]
    assert old_m["spec_hash"] != new_m["spec_hash"]
    assert new_m["metrics"]["streams.moe.m_s"] > 1.2 * old_m["metrics"]["streams.moe.m_s"]
    md = run("diff", old, new, "--format", "markdown")
    assert md.exit_code == 1 and "| regression | cm384-decode-50ms/streams.moe.m_s |" in md.output
    # a loose per-metric tolerance on everything except nothing: glob silences all, exit 0
    assert run("diff", old, new, "--metric-rtol", "*=10").exit_code == 0


def test_added_and_removed_scenarios(snap, tmp_path):
    _, old = snap
    one = tmp_path / "one.json"
    assert run("snapshot", "cm384-decode-50ms", "-o", one).exit_code == 0
    r = run("diff", old, one, "--format", "json")
    assert r.exit_code == 0  # removed metrics fail only with --fail-on any
    assert json.loads(r.stdout)["counts"]["removed"] > 0
    assert run("diff", old, one, "--fail-on", "any").exit_code == 1
    r = run("diff", one, old, "--fail-on", "any", "--format", "json")
    assert r.exit_code == 1 and json.loads(r.stdout)["counts"]["added"] > 0


def test_diff_bad_input(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    r = run("diff", p, p)
    assert r.exit_code == 2 and "not a cmperf snapshot" in r.output
    assert run("diff", p, p, "--metric-rtol", "tpot_s").exit_code == 2
