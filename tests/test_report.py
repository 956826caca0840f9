"""Scenario files, `cmperf report`, `cmperf explain`, `cmperf validate`."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf import scenario
from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_shipped_scenarios_load_with_citations():
    for name in ("cm384-decode-50ms", "cm384-decode-15ms", "cm384-prefill"):
        sc = scenario.load(name)
        assert sc.name == name and "2506.12708" in sc.source and sc.system == "cloudmatrix384"


def test_scenario_fills_defaults_and_flags_override():
    a = json.loads(run("decode", "--scenario", "cm384-decode-15ms", "--format", "json").stdout)
    assert a["batch_per_device"] == 8 and a["deployment"]["ep_size"] == 320
    b = json.loads(
        run("decode", "--scenario", "cm384-decode-15ms", "--batch", "16", "--format", "json").stdout
    )
    assert b["batch_per_device"] == 16 and b["tpot_s"] > a["tpot_s"]
    c = json.loads(run("decode", "--batch", "8", "--format", "json").stdout)
    assert c["tpot_s"] == a["tpot_s"]


def test_scenario_unknown_key_is_one_line_exit_2(tmp_path):
    p = tmp_path / "typo.toml"
    p.write_text('name = "typo"\ncommand = "decode"\n[options]\nbatchh = 3\n')
    r = run("decode", "--scenario", p)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "typo.toml" in r.output and "options.batchh" in r.output
    assert "Traceback" not in r.output
    r = run("decode", "--scenario", "cm384-prefill")
    assert r.exit_code == 2 and "cmperf prefill --scenario cm384-prefill" in r.output


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    outs = []
    for i in (1, 2):
        out = d / f"report{i}.md"
        r = run("report", "--scenario", "cm384-decode-50ms", "-o", out)
        assert r.exit_code == 0, r.output
        outs.append(out.read_bytes())
    return outs


def test_report_is_byte_identical_and_complete(reports):
    a, b = reports
    assert a == b
    text = a.decode()
    headings = [
        "# cmperf report: cm384-decode-50ms",
        "## What to do",
        "## Headline predictions",
        "## Bounds on TPOT",
        "## Decode: streams per layer and the binding ceiling",
        "## Decode: per-op breakdown",
        "## Throughput vs TPOT",
        "## Prefill",
        "## Serving",
        "## Optimizer: top configurations",
        "## Validation against published numbers",
        "## Closed forms",
        "## Inputs",
        "## Deployment",
        "## Appendix: sources",
    ]
    pos = [text.index(h) for h in headings]
    assert pos == sorted(pos)  # top to bottom in this order
    assert "```mermaid\n%%{init:" in text and "\nxychart-beta\n" in text and "| mla.attention |" in text
    assert "CM384 Table 10" in text  # the spec sources are listed
    assert "| table7.dispatch.ep256 |" in text and "$$\n" in text and "B_{\\mathrm{HBM}}" in text
    dec = json.loads(run("decode", "--scenario", "cm384-decode-50ms", "--format", "json").stdout)
    assert f"| tokens/s per device | {dec['tokens_per_s_per_device']:,.0f} |" in text


@pytest.mark.parametrize(
    "body",
    [
        'name = "broken"\ncommand = "decode"\n[deployment]\nbatchh = 3\n',  # unknown key
        'name = "broken"\ncommand = "decode"\n[options]\nbatchh = 3\n',  # unknown option
        'name = "broken"\ncommand = "decode"\n[options]\nbatch = 3\n',  # a knob in [options]
        'name = "broken"\ncommand = "decode"\n[deployment\nbatch = 3\n',  # not TOML
        'name = "broken"\ncommand = "decode"\n[deployment]\nbatch_per_device = -5\n',  # rejected by check
        'name = "other"\ncommand = "decode"\n',  # name does not match the file
    ],
)
def test_broken_scenario_leaves_no_report(tmp_path, body):
    sc = tmp_path / "broken.toml"
    sc.write_text(body)
    out = tmp_path / "report.md"
    r = run("report", "--scenario", sc, "-o", out)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml"]


def test_validate_prints_the_table():
    r = run("validate", "--format", "json")
    assert r.exit_code in (0, 1)
    pts = {p["id"]: p for p in json.loads(r.stdout)["points"]}
    assert r.exit_code == (1 if any(p["status"] == "FAIL" for p in pts.values()) else 0)
    for ep in (8, 16, 32, 64, 128, 256):
        for op in ("dispatch", "combine"):
            p = pts[f"table7.{op}.ep{ep}"]
            assert p["status"] == "pass" and abs(p["error"]) <= 0.10 and "Table 7" in p["source"]
    d50 = pts["decode-50ms.tokens_per_s"]
    assert d50["published"] == 1943 and d50["tolerance"] == 0.10
    assert d50["error"] == pytest.approx(d50["predicted"] / 1943 - 1, abs=1e-11)  # JSON keeps 12 digits
    table = run("validate")
    assert "predicted vs published" in table.output and "decode-15ms.tpot" in table.output


def test_explain_elasticities_numeric_and_symbolic():
    r = run("explain", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    rows = {e["parameter"]: e for e in d["elasticities"]}
    # peak and efficiency enter as a product: equal elasticities, numerically and symbolically
    a, b = rows["peak bf16"], rows["efficiency attention_compute"]
    assert a["numeric"] == pytest.approx(b["numeric"], abs=1e-6)
    assert a["symbolic"] == pytest.approx(b["symbolic"], abs=1e-9)
    sym = [e for e in d["elasticities"] if e["symbolic"] is not None]
    assert len(sym) >= 10
    assert sum(e["agree"] for e in sym) >= 0.8 * len(sym)
    # 10% more of everything that sets a speed cannot buy more than 10% (elasticities of speeds in [0, 1])
    for e in d["elasticities"]:
        assert -1.0 <= e["numeric"] <= 1.0
    assert "TPOT(b, L)" in d["forms_latex"]
    t = run("explain")
    assert t.exit_code == 0 and "closed forms" in t.output and "HBM bandwidth" in t.output


@pytest.mark.parametrize("where", ["flag-after", "flag-before", "env"])
def test_scenario_by_name_honours_spec_dir_and_cmperf_path(tmp_path, monkeypatch, where):
    """Issue 11 item 4: `--scenario NAME` finds a scenario in a --spec-dir folder (either order on the
    command line) or on CMPERF_PATH, for the prediction commands and for snapshot alike."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "mine.toml").write_text(
        'name = "mine"\ncommand = "decode"\n[deployment]\nbatch_per_device = 24\nmicrobatches = 1\n'
    )
    args = {"flag-after": ["--spec-dir", tmp_path], "flag-before": ["--spec-dir", tmp_path], "env": []}[where]
    if where == "env":
        monkeypatch.setenv("CMPERF_PATH", str(tmp_path))
    cmd = (
        ["decode", *args, "--scenario", "mine"]
        if where == "flag-before"
        else ["decode", "--scenario", "mine", *args]
    )
    r = run(*cmd, "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["batch_per_device"] == 24
    snap = run("snapshot", "mine", *args)
    assert snap.exit_code == 0, snap.output
    assert json.loads(snap.stdout)["scenarios"]["mine"]["metrics"]["batch_per_device"] == 24


def test_serve_refuses_what_decode_refuses():
    """One record, one check: `serve` refuses per-depth rates that do not fit --mtp as `decode` does."""
    for cmd in (["decode"], ["serve", "--rate", "40"]):
        r = run(*cmd, "--mtp", "2", "--mtp-accept", "0.9,0.8,0.7")
        assert r.exit_code == 2 and "3 per-depth rates for --mtp 2; give at most 2" in r.stderr, r.output


def test_serve_scenario_workload_and_slo_tables_apply(tmp_path):
    """[workload] and [slo] map onto the records serve reads; a flag still overrides the file."""
    p = tmp_path / "sv.toml"
    p.write_text(
        'name = "sv"\ncommand = "serve"\n[workload]\nrate_per_s = 60\nprompt_len = 2048\n'
        "[slo]\nttft_s = 1.5\ntpot_s = 0.04\nquantile = 0.9\n"
    )
    d = json.loads(run("serve", "--scenario", p, "--format", "json").stdout)
    assert d["rate_rps"] == 60 and d["inputs"]["prompt_len"] == 2048
    assert d["slo"] == {"quantile": "p90", "tpot_s": 0.04, "ttft_s": 1.5}
    d2 = json.loads(run("serve", "--scenario", p, "--rate", "30", "--format", "json").stdout)
    assert d2["rate_rps"] == 30


def test_decode_scenario_refuses_prefill_knobs(tmp_path):
    p = tmp_path / "mixed.toml"
    p.write_text('name = "mixed"\ncommand = "decode"\n[deployment]\ncache_hit = 0.5\n')
    r = run("decode", "--scenario", p)
    assert r.exit_code == 2 and "deployment.cache_hit is a prefill knob" in r.stderr


def test_model_without_mtp_gets_none_anywhere(tmp_path):
    """A model with no MTP module is credited with none by default in decode, serve and compare; asking
    for it is refused by name."""
    src = (ROOT / "models" / "deepseek-r1.toml").read_text()
    src = src.replace('name = "deepseek-r1"', 'name = "no-mtp"').replace(
        "num_mtp_modules = 1", "num_mtp_modules = 0"
    )
    src = src.replace('aliases = ["deepseek-v3", "deepseek-r1-0528"]', "aliases = []")
    (tmp_path / "no-mtp.toml").write_text(src)
    common = ("--model", "no-mtp", "--spec-dir", tmp_path, "--format", "json")
    d = json.loads(run("decode", *common).stdout)
    assert d["deployment"]["mtp"] == 0 and d["tokens_per_step"] == d["batch_per_device"]
    s = json.loads(run("serve", "--rate", "20", *common).stdout)
    assert s["inputs"]["mtp"] == 0
    c = json.loads(run("compare", "--systems", "cloudmatrix384", *common).stdout)
    assert c["rows"][0]["workload"]["mtp"] == 0
    bad = run("decode", "--mtp", "1", *common[:4])
    assert bad.exit_code == 2 and "no-mtp has no MTP module; use --mtp 0" in bad.stderr
