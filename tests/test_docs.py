"""The documentation cannot rot: docs/api.md runs as written and prints what it shows; docs/scenarios.md
names every knob of the records a scenario file sets; every shipped scenario loads; ``python -m cmperf``
runs the command line."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import cmperf
from cmperf import scenario
from cmperf.deployment import Deployment, Precision
from cmperf.serving import SLO, Workload

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def api_run() -> tuple[dict, str, list[str]]:
    """(namespace, stdout) of every python block of docs/api.md run in order in one namespace."""
    blocks = python_blocks((DOCS / "api.md").read_text(encoding="utf-8"))
    ns: dict = {"__name__": "docs_api"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for k, code in enumerate(blocks):
            exec(compile(code, f"docs/api.md[python block {k}]", "exec"), ns)
    return ns, out.getvalue(), blocks


def test_api_doc_runs_and_covers_the_walkthrough(api_run):
    ns, _, blocks = api_run
    assert len(blocks) >= 8
    code = "\n".join(blocks)
    for call in ("cmperf.predict(", "cmperf.evaluate(", ".at(", "cmperf.serve(", "cmperf.size("):
        assert call in code, f"docs/api.md no longer shows {call}"
    # the grid's point equals the scalar prediction (one model, two entry points)
    assert ns["ev"].at(10).tpot_s == pytest.approx(ns["p"].tpot_s, rel=1e-12)  # batch 96, 2 microbatches


def test_api_doc_outputs_are_what_the_code_prints(api_run):
    """Every line the blocks print is shown in a block as an output comment ("# " + the line)."""
    _, stdout, blocks = api_run
    shown = {line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("#")}
    printed = [line.rstrip() for line in stdout.splitlines() if line.strip()]
    assert printed
    missing = [line for line in printed if f"# {line}".strip() not in shown]
    assert not missing, "docs/api.md shows other outputs than the code prints now:\n" + "\n".join(missing)


def test_api_doc_headline_numbers(api_run):
    """The paper's setups, with the tolerances of the calibration table (README): decode batch 96 is the
    calibration point (1,943 tokens/s, 49.4 ms published), prefill is out of sample (6,688 published)."""
    ns, _, _ = api_run
    p, pre, r, b = ns["p"], ns["pre"], ns["r"], ns["split"].best
    assert p.tpot_s == pytest.approx(0.0494, rel=0.01)
    assert p.tokens_per_s_per_device == pytest.approx(1943, rel=0.01)
    assert pre.tokens_per_s_per_device == pytest.approx(6688, rel=0.10)
    assert r.slo_met and r.goodput_rps == pytest.approx(40.0, rel=1e-6)
    assert r.ttft_s["p99"] == pytest.approx(0.114, rel=0.02)
    assert b["prefill_devices"] + b["decode_devices"] <= 384
    assert b["goodput_rps"] == pytest.approx(523.9, rel=0.01)


def test_public_api_names():
    for name in cmperf.__all__:
        assert getattr(cmperf, name) is not None
    assert cmperf.Deployment is Deployment and cmperf.Workload is Workload
    assert cmperf.load_scenario is scenario.load
    with pytest.raises(AttributeError):
        _ = cmperf.no_such_name


def test_entry_points_refuse_bad_records(cm384, r1):
    """An unknown phase, and the decode grid without a microbatch count, are one clear error each."""
    for fn in (cmperf.predict, cmperf.evaluate):
        with pytest.raises(cmperf.CmperfError, match="phase"):
            fn(cm384, r1, Deployment(phase="train"))
    with pytest.raises(cmperf.CmperfError, match="microbatches"):
        cmperf.evaluate(cm384, r1, Deployment())


def test_entry_points_dispatch_on_phase(cm384, r1):
    """predict / evaluate are the phase modules' own (same numbers); serve and size default the pools."""
    from cmperf import decode, prefill, serving, sizing

    dep, pre = Deployment(microbatches=2), Deployment(phase="prefill")
    assert cmperf.predict(cm384, r1, dep) == decode.predict(cm384, r1, dep)
    assert cmperf.predict(cm384, r1, pre).batch_s == prefill.predict(cm384, r1, pre).batch_s
    assert cmperf.evaluate(cm384, r1, pre).batch_s == pytest.approx(prefill.predict(cm384, r1, pre).batch_s)
    wl = Workload(rate_per_s=40)
    pools = serving.default_pools(cm384, r1)
    r = cmperf.serve(cm384, r1, wl, limits=False)
    assert r.ttft_s == serving.evaluate(cm384, r1, wl, pools, limits=False).ttft_s
    assert r.inputs["prefill_devices"] == 96 and r.inputs["decode_devices"] == 160
    s = cmperf.size(cm384, r1, Workload(rate_per_s=100), total_devices=192)
    assert s.best == sizing.size(cm384, r1, Workload(rate_per_s=100), pools, total_devices=192).best


def test_import_cmperf_is_light():
    code = (
        "import sys, cmperf; print(sorted(m for m in sys.modules if m.split('.')[0] in ('cmperf', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['cmperf', 'cmperf.errors']"


def test_python_dash_m_cmperf():
    r = subprocess.run(
        [sys.executable, "-m", "cmperf", "--version"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert r.stdout.strip() == f"cmperf, version {cmperf.__version__}"


def test_py_typed_marker():
    assert (ROOT / "cmperf" / "py.typed").is_file()


# ------------------------------------------------------------------------------------------ scenarios.md


def test_scenarios_doc_names_every_field():
    """A new knob on a record a scenario file sets must be documented in docs/scenarios.md (as `name`)."""
    text = (DOCS / "scenarios.md").read_text(encoding="utf-8")
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in (Deployment, Precision, Workload, SLO)
        for f in fields(cls)
        if f"`{f.name}`" not in text
    ]
    assert not missing, "docs/scenarios.md does not document: " + ", ".join(missing)
    for key in scenario.TOP_KEYS:
        assert f"`{key}`" in text, f"docs/scenarios.md does not document the top-level key {key}"
    for command in scenario.COMMANDS:
        assert f"`{command}`" in text


SHIPPED = [
    *sorted((ROOT / "scenarios").glob("*.toml")),
    *sorted((ROOT / "scenarios/baselines").glob("*.toml")),
]


def test_there_are_shipped_scenarios():
    assert len(SHIPPED) >= 8


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_scenario_loads(path):
    sc = scenario.load(str(path))
    assert sc.name == path.stem and sc.command in scenario.COMMANDS


def test_scenarios_doc_examples_load(tmp_path):
    """The example files of docs/scenarios.md (```toml blocks with a name) load and predict."""
    text = (DOCS / "scenarios.md").read_text(encoding="utf-8")
    examples = [
        b for b in re.findall(r"^```toml\n(.*?)^```", text, flags=re.S | re.M) if "\nname = " in f"\n{b}"
    ]
    assert len(examples) >= 2
    for body in examples:
        name = re.search(r'^name = "([^"]+)"', body, flags=re.M).group(1)
        path = tmp_path / f"{name}.toml"
        path.write_text(body, encoding="utf-8")
        sc = scenario.load(str(path))
        system, model = scenario.specs_of(sc)
        rec = scenario.predict(sc, system, model)
        assert rec.feasible and rec.tokens_per_s_per_device > 0


def test_readme_python_example_runs():
    """The README's Python API example runs and prints what its comments say."""
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python example"
    ns: dict = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in blocks:
            exec(compile(code, "README.md[python]", "exec"), ns)
    assert out.getvalue().splitlines() == [
        "49.49 ms, 1,940 tokens/s per NPU",
        "TTFT p99 114 ms, goodput 40.0 req/s",
    ]
