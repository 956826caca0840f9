"""The library behind `cmperf explain` / `cmperf comm`: cmperf.sensitivity (elasticities, numeric and
symbolic) and cmperf.comm.ep_collective_estimate (payload and time of one EP collective), and the comm
command's input checks."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cmperf import comm, scenario, sensitivity, specs
from cmperf import validate as val
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.errors import CmperfError


@pytest.fixture(scope="module")
def paper_decode():
    """(system, model, Deployment, imbalance) of the paper's 50 ms decode setup (CM384, batch 96, EP320)."""
    sc = scenario.load("cm384-decode-50ms")
    system, model = scenario.specs_of(sc)
    p = scenario.predict(sc, system, model)
    return system, model, Deployment.from_knobs(p.deployment), float(p.imbalance)


def test_elasticities_of_the_paper_decode_deployment(paper_decode):
    system, model, dep, imbalance = paper_decode
    forms = sensitivity.decode_forms(system, model, dep, imbalance)
    rows = {r.parameter: r for r in sensitivity.elasticities(system, model, dep, forms)}
    hbm = rows["HBM bandwidth"]
    # a speed divides a time: 10% more HBM bandwidth buys between 0 and 10% more tokens/s (0.26 here)
    assert hbm.symbol == "B_HBM" and 0.0 < hbm.numeric < 1.0 and 0.0 < hbm.symbolic < 1.0
    assert hbm.agree
    for r in rows.values():
        if (
            r.parameter.startswith(("fixed cost", "dispatch alpha", "combine alpha"))
            or "latency" in r.parameter
        ):
            assert r.numeric <= 1e-9, r  # a fixed cost adds to a time: never more tokens/s
        else:
            assert -1e-9 <= r.numeric <= 1.0, r
        assert (r.symbolic is None) == (r.symbol == "") == (r.agree is None)
    vals = sensitivity.closed_form_values(forms)
    assert vals["symbolic_tokens_per_s_per_device"] == pytest.approx(1940, rel=0.10)  # ~10% closed form
    assert len(sensitivity.plain_forms(forms)) == 8


def test_sensitivity_import_does_not_import_sympy():
    code = "import sys\nimport cmperf.sensitivity\nprint('sympy' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("system", "phase", "ep", "tokens", "dtype"),
    [("cloudmatrix384", "decode", 32, 128.0, None), ("dgx-h800", "prefill", 32, 4096.0, "fp8")],
)
def test_ep_collective_estimate_payload_is_tokens_copies_message(system, phase, ep, tokens, dtype):
    sysm, r1 = specs.load_system(system), specs.load_model("deepseek-r1")
    e = comm.ep_collective_estimate(sysm, r1, "dispatch", ep, tokens, None, dtype, phase)
    assert e.payload_bytes == pytest.approx(
        e.tokens_per_rank * e.copies_per_token * e.message_bytes, rel=1e-15
    )
    assert e.time_s == pytest.approx(e.latency_s + e.link_s, rel=1e-12)
    assert e.bandwidth_bytes_per_s == pytest.approx(e.payload_bytes / e.time_s, rel=1e-12)
    assert e.top_k == r1.num_experts_per_tok
    if e.scaleout_bytes is None:  # per-expert kernel: one message per (token, expert)
        assert e.copies_per_token == 8.0 and e.message_bytes == 7680.0  # CM384 §4.2: INT8 7.5 KB
    else:  # DeepEP normal: one copy per distinct destination rank, fewer than top-8
        assert 6.0 < e.copies_per_token < 8.0
    r = CliRunner().invoke(
        main,
        ["comm", "--system", system, "--phase", phase, "--ep", str(ep), "--tokens-per-rank", str(tokens)]
        + (["--dtype", dtype] if dtype else [])
        + ["--format", "json"],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["payload_bytes"] == pytest.approx(e.payload_bytes, rel=1e-11)


def test_validate_comm_points_use_the_estimate():
    pt = next(p for p in val.load_reference() if p.id == "table7.dispatch.ep32")
    sysm, r1 = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    assert val.comm_value(pt) == comm.ep_collective_estimate(sysm, r1, "dispatch", 32, 128).time_s


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"top_k": 0}, "--top-k"),
        ({"tokens_per_rank": float("nan")}, "--tokens-per-rank"),
        ({"ep_size": 0}, "--ep"),
        ({"op": "all_gather"}, "--op"),
    ],
)
def test_ep_collective_estimate_rejects_bad_input(kw, flag):
    sysm, r1 = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    args = {"op": "dispatch", "ep_size": 32, "tokens_per_rank": 128.0, **kw}
    with pytest.raises(CmperfError, match=flag):
        comm.ep_collective_estimate(sysm, r1, **args)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--top-k", "0"], "--top-k"),  # was: silently the model's top-k
        (["--top-k", "-1"], "--top-k"),  # was: a negative payload
        (["--tokens-per-rank", "nan"], "--tokens-per-rank"),  # was: exit 0, time_s null
        (["--tokens-per-rank", "inf"], "--tokens-per-rank"),
        (["--tokens-per-rank", "-1"], "--tokens-per-rank"),
        (["--ep", "0"], "--ep"),
    ],
)
def test_comm_bad_input_one_line(args, flag):
    r = CliRunner().invoke(main, ["comm", *args, "--format", "json"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and flag in lines[0], r.stderr
    assert r.stdout == "" and "Traceback" not in r.output
