"""Issue 16: readable output. Time flags need a unit, every --help ends with examples, `specs show` prints
display units and the right source per plane, CSV tables, the report's summary / order / chart, the spec
format documented, no progress output without a terminal."""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf.cli import COMMAND_MODULES, main
from cmperf.cli.examples import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent


def run(*args, **env):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "120", **env})


@pytest.mark.parametrize(
    "args,flag",
    [
        (("serve", "--rate", "40", "--tpot-slo", "50"), "--tpot-slo"),
        (("serve", "--rate", "40", "--ttft-slo", "2"), "--ttft-slo"),
        (("optimize", "--tpot-slo", "50"), "--tpot-slo"),
        (("optimize", "--ttft-slo", "2.5"), "--ttft-slo"),
        (("decode", "--step-overhead", "1"), "--step-overhead"),
    ],
)
def test_bare_time_is_exit_2_naming_flag_and_units(args, flag):
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cmperf: error: {flag}: ")
    assert "has no unit" in lines[0] and "ms" in lines[0] and "µs" in lines[0]


def test_time_with_unit_and_none_still_work():
    r = run("serve", "--rate", "40", "--tpot-slo", "50ms", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["slo"]["tpot_s"] == pytest.approx(0.05, rel=1e-12)
    r = run("optimize", "--tpot-slo", "50ms", "--ttft-slo", "none", "--top", "1", "--format", "json")
    assert r.exit_code == 0, r.output


def test_scenario_seconds_are_not_refused(tmp_path):
    """A scenario file's [slo] numbers are seconds (its keys are named *_s): no unit needed there."""
    p = tmp_path / "sv.toml"
    p.write_text(
        'name = "sv"\ncommand = "serve"\n[workload]\nrate_per_s = 40\n[slo]\nttft_s = 1.5\ntpot_s = 0.04\n'
    )
    r = run("serve", "--scenario", p, "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["slo"]["tpot_s"] == 0.04


def _all_commands():
    out = [name for name in COMMAND_MODULES if name != "specs"]
    return [*out, "specs", "specs list", "specs show", "specs import"]


@pytest.mark.parametrize("path", ["", *_all_commands()])
def test_every_help_ends_with_examples(path):
    r = run(*path.split(), "--help")
    assert r.exit_code == 0, r.output
    tail = r.stdout[r.stdout.index("Examples:") :]
    shown = [ln.strip() for ln in tail.splitlines()[1:] if ln.strip()]
    assert shown == list(EXAMPLES[path]) and all(x.startswith("cmperf") for x in shown)


def test_options_have_help_and_defaults_are_spelled_one_way():
    for path in ("pareto", "comm", "compare"):
        ctx = main.make_context("cmperf", [path], resilient_parsing=True)
        cmd = main.get_command(ctx, path)
        for p in cmd.params:
            if p.param_type_name == "option":
                assert p.help, f"{path} {p.opts[0]} has no help text"
                assert not re.search(r"\[default [^:]|\[\d+\]", p.help), p.help


def test_slo_percentile_help_matches_its_range():
    r = run("serve", "--help")
    assert "[50, 100)" in " ".join(r.stdout.split())
    assert run("serve", "--rate", "40", "--slo-percentile", "95").exit_code == 0
    assert run("serve", "--rate", "40", "--slo-percentile", "100").exit_code == 2


def test_specs_show_display_units_and_sources_per_plane():
    r = run("specs", "show", "cloudmatrix384", "--format", "markdown")
    assert r.exit_code == 0, r.output
    rows = {
        c[1].strip(): (c[2].strip(), c[3].strip())
        for c in (ln.split("|") for ln in r.stdout.splitlines())
        if len(c) == 5
    }
    assert rows["planes.ub.bytes_per_s_per_rank"] == (
        "196.00 GB/s",
        "CM384 §3.3.1: 7 x 224 Gb/s per die per direction",
    )
    assert rows["planes.ub.latency_s"][0] == "1.9 µs"
    assert rows["cpu_dram_per_node_bytes"][0] == "2.00 TB"
    assert rows["planes.ub.host_read_efficiency"][1].startswith("CM384 Table 1: NPU->CPU read")
    assert rows["planes.rdma.host_read_efficiency"] == ("-", "")  # not set: no value and not ub's source
    assert rows["planes.rdma.bytes_per_s_per_rank"][1].startswith("CM384 §3.3.1: 200 Gb/s per die")
    assert "2000000000000.0" not in r.stdout
    chip = run("specs", "show", "ascend-910c", "--format", "markdown").stdout
    assert "| overhead_s.vector | 2.0 µs | msModeling default fixed cost per vector op" in chip
    assert "| peak_flops.int8 | 752 TFLOP/s |" in chip and "| hbm_bytes_per_s | 1.60 TB/s |" in chip
    js = json.loads(run("specs", "show", "cloudmatrix384", "--format", "json").stdout)
    assert js["spec"]["planes"]["ub"]["bytes_per_s_per_rank"] == 196e9  # JSON stays SI


def test_optimize_prints_times_like_the_others_and_plurals():
    r = run("optimize", "--tpot-slo", "50ms", "--top", "2")
    assert r.exit_code == 0, r.output
    assert "microbatch(es)" not in r.stdout and re.search(r"\b2 microbatches\b", r.stdout)
    assert re.search(r"\b1\.1\d\d s\b", r.stdout) and " ms  1" not in r.stdout  # TTFT as "1.161 s"
    v = run("validate").stdout
    assert re.search(r"\d µs ", v) and not re.search(
        r"\d\.\d+ us ", v
    )  # predicted column (sources quote as written)


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_optimize_pareto_compare_match_json():
    o = run("optimize", "--tpot-slo", "50ms", "--top", "3", "--format", "csv")
    oj = json.loads(run("optimize", "--tpot-slo", "50ms", "--top", "3", "--format", "json").stdout)
    assert o.exit_code == 0, o.output
    rows = _csv(o.stdout)
    dec = [r for r in rows if r["phase"] == "decode"]
    assert [int(r["rank"]) for r in dec] == [1, 2, 3]
    assert float(dec[0]["tpot_s"]) == pytest.approx(oj["top"][0]["tpot_s"], rel=1e-11)
    assert float(dec[0]["tokens_per_s_per_device"]) == pytest.approx(
        oj["top"][0]["tokens_per_s_per_device"], rel=1e-11
    )
    assert any(r["phase"] == "prefill" and r["ttft_s"] for r in rows)
    p = run("pareto", "--format", "csv")
    pj = json.loads(run("pareto", "--format", "json").stdout)
    prow = _csv(p.stdout)
    assert len(prow) == len(pj["pareto"]) > 1
    assert [float(r["tpot_s"]) for r in prow] == pytest.approx([c["tpot_s"] for c in pj["pareto"]], rel=1e-11)
    c = run("compare", "--format", "csv")
    crow = _csv(c.stdout)
    assert [r["system"] for r in crow] == ["cloudmatrix384", "dgx-h800", "dgx-h100"]
    assert float(crow[0]["tpot_s"]) == pytest.approx(0.0495, rel=0.02)  # the paper's 49.4 ms point
    assert run("compare", "--format", "csv").stdout == c.stdout  # deterministic


def test_csv_to_file(tmp_path):
    out = tmp_path / "f.csv"
    r = run("pareto", "--format", "csv", "-o", out)
    assert r.exit_code == 0 and r.stdout == ""
    raw = out.read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n")  # RFC 4180 line ends
    assert raw.decode().splitlines()[0].startswith("devices,ep_size,batch_per_device")


def test_no_progress_without_a_terminal():
    r = run("serve", "--rate", "40", "--size", "--devices-total", "64", "--format", "json")
    assert r.exit_code in (0, 1), r.output
    assert r.stderr == "" or r.stderr.startswith("cmperf: no split")


@pytest.fixture(scope="module")
def report_text():
    r = run("report")
    assert r.exit_code == 0, r.output
    return r.stdout


def test_report_summary_first_and_sections(report_text):
    t = report_text
    assert t.index("## What to do") < t.index("## Headline predictions") < t.index("## Appendix: sources")
    head = t[: t.index("## Headline predictions")]
    dec = json.loads(run("decode", "--scenario", "cm384-decode-50ms", "--format", "json").stdout)
    assert f"{dec['tokens_per_s_per_device']:,.0f} tokens/s per device" in head
    assert "attention stream" in head and "+10% buys" in head
    assert "## Prefill" in t and "## Serving" in t and "TTFT p50 / p90 / p99" in t


def test_report_tables_readable(report_text):
    t = report_text
    streams = t[t.index("## Decode: streams") : t.index("## Decode: per-op")]
    order = [
        ln.split("|")[1].strip() for ln in streams.splitlines() if ln.startswith("| ") and "stage" not in ln
    ]
    assert order == ["dense", "moe", "mtp", "head"]  # execution order
    ops = t[t.index("## Decode: per-op") : t.index("## Throughput")]
    # no stream/count columns (the table fits GitHub's 1,012 px page); text left, numbers right
    assert "| stage | op | per call | per step | share | bound | compute | memory | link | fixed |" in ops
    assert "|:---|:---|---:|---:|---:|:---|---:|---:|---:|---:|" in ops
    body = [ln for ln in ops.splitlines() if ln.startswith("| ") and not ln.startswith("| stage")]
    assert len(body) == 16 and "41 more ops" in body[-1]
    opt = t[t.index("## Optimizer") : t.index("## Validation")]
    assert "tokens/s per device" in opt and "HBM per rank" in opt
    assert not re.search(r"\de\+\d", opt) and "hbm_bytes_per_rank" not in opt


def test_report_chart_numeric_axis_slo_and_point(report_text):
    t = report_text
    chart = t[t.index("```mermaid") : t.index("```\n", t.index("```mermaid") + 3)]
    lo, hi = map(float, re.findall(r'x-axis "TPOT \(ms\)" ([\d.]+) --> ([\d.]+)', chart)[0])
    assert 15 < lo < 16 and 110 < hi < 113  # a numeric TPOT axis over the feasible sweep
    assert chart.count("    bar [") == 2 and "plotColorPalette" in chart and " 0," not in chart
    assert "TPOT SLO 50.00 ms: red bar." in t and "1,940 tokens/s at 49.49 ms" in t


def test_report_long_formula_wrapped(report_text):
    blocks = re.findall(r"\$\$\n(.*?)\n\$\$", report_text, flags=re.S)
    assert blocks and any("\\begin{aligned}" in b for b in blocks)
    for b in blocks:
        for ln in b.splitlines():
            assert len(ln) <= 160, ln[:80]


def test_specs_doc_names_every_hardware_table():
    doc = (ROOT / "docs" / "specs.md").read_text()
    for f in sorted((ROOT / "hardware").glob("*.toml")):
        for key in tomllib.loads(f.read_text()):
            assert f"`{key}`" in doc or f"`[{key}]`" in doc or f"[{key}." in doc, f"{f.name}: {key}"


def test_readme_has_install_and_quickstart():
    text = (ROOT / "README.md").read_text()
    assert "## Install and quickstart" in text and "pip install ." in text
    assert "make run" in text and "make test" in text and "docs/specs.md" in text
