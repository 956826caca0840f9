"""The documentation cannot rot: docs/api.md runs as written and prints what it shows; docs/scenarios.md
names every knob of the records a scenario file sets; every shipped scenario loads; ``python -m cmperf``
runs the command line; docs/cli.md is the click tree (every command and option, with help text and
examples), docs/spec.schema.json is ``spec_schema()`` and every bundled spec validates against it, every spec
key is in docs/specs.md, and docs/model.md covers the model's modules. Regenerate the generated files with
``python tests/test_docs.py``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import click
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


def _commands():
    """(path, command) of every command and subcommand of ``cmperf``, in order."""
    from cmperf.cli import main

    out = []

    def walk(prefix, grp):
        for name in grp.list_commands(None):
            cmd = grp.get_command(None, name)
            path = f"{prefix} {name}".strip()
            out.append((path, cmd))
            if isinstance(cmd, click.Group):
                walk(path, cmd)

    walk("", main)
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_cli() -> str:
    """docs/cli.md from the click tree: per command its help, a table of every option (its meaning, units and
    default as ``--help`` gives them) and its examples."""
    lines = [
        "# Command reference",
        "",
        "Generated from the click commands by `python tests/test_docs.py` (a test checks it is current).",
        "Times take a unit (`50ms`, `2s`); every command takes `-h/--help`; exit codes: 0 ok, 1 a check",
        "failed, 2 bad input, 3 infeasible.",
    ]
    for path, cmd in _commands():
        ctx = click.Context(cmd, info_name=f"cmperf {path}")
        lines += ["", f"## `cmperf {path}`", "", (cmd.help or "").split("\b")[0].strip()]
        args = [p.human_readable_name for p in cmd.params if isinstance(p, click.Argument)]
        if args:
            lines += ["", "Arguments: " + ", ".join(f"`{a}`" for a in args)]
        rows = [p.get_help_record(ctx) for p in cmd.params if isinstance(p, click.Option)]
        rows = [r for r in rows if r is not None]
        if rows:
            lines += ["", "| option | meaning |", "|---|---|"]
            lines += [f"| `{_cell(a)}` | {_cell(b)} |" for a, b in rows]
        if isinstance(cmd, click.Group):
            lines += ["", "Subcommands: " + ", ".join(f"`{n}`" for n in cmd.list_commands(ctx))]
        if cmd.epilog:
            ex = [x.strip() for x in cmd.epilog.split("\n") if x.strip().startswith("cmperf")]
            lines += ["", "```", *ex, "```"]
    return "\n".join(lines) + "\n"


def schema_text() -> str:
    from cmperf.cli.specs_cmd import spec_schema

    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def test_cli_md_is_current():
    assert (DOCS / "cli.md").read_text() == render_cli(), "run: python tests/test_docs.py"


def test_every_command_and_option_is_documented_with_help_and_examples():
    text = (DOCS / "cli.md").read_text()
    cmds = _commands()
    assert len(cmds) >= 15
    for path, cmd in cmds:
        assert f"## `cmperf {path}`" in text, path
        assert (cmd.help or "").strip(), f"cmperf {path} has no help text"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert (p.help or "").strip() or p.name == "help", f"cmperf {path} {p.opts[0]} has no help"
                assert f"`{p.opts[0]}" in text or f", {p.opts[0]}" in text or f"/{p.opts[0]}" in text, (
                    f"cmperf {path} {p.opts[0]} is not in docs/cli.md"
                )


@pytest.mark.parametrize("path", [p for p, _ in _commands()] + [""])
def test_help_ends_with_examples(path):
    from click.testing import CliRunner

    from cmperf.cli import main

    out = CliRunner().invoke(main, [*path.split(), "--help"])
    assert out.exit_code == 0, out.output
    tail = out.output.rstrip().split("\n")
    i = max(k for k, line in enumerate(tail) if line.strip() == "Examples:")
    assert i > 0 and all(x.strip().startswith("cmperf") for x in tail[i + 1 :]), out.output[-400:]


def _validate(inst, schema, root, where="$"):
    """A small JSON Schema check (the subset spec.schema.json uses): type, enum, properties,
    additionalProperties, required, items, minLength, $ref."""
    if "$ref" in schema:
        ref = schema["$ref"].removeprefix("#/").split("/")
        target = root
        for k in ref:
            target = target[k]
        _validate(inst, target, root, where)
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float)}
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        ok = any(isinstance(inst, types[x]) and not isinstance(inst, bool) for x in allowed)
        assert ok, f"{where}: {inst!r} is not {t}"
    if "enum" in schema:
        assert inst in schema["enum"], f"{where}: {inst!r} not in {schema['enum']}"
    if isinstance(inst, str) and "minLength" in schema:
        assert len(inst) >= schema["minLength"], f"{where}: empty"
    if isinstance(inst, dict):
        for k in schema.get("required", []):
            assert k in inst, f"{where}: {k} is required"
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for k, v in inst.items():
            if k in props:
                _validate(v, props[k], root, f"{where}.{k}")
            else:
                assert extra is not False, f"{where}.{k}: not allowed by the schema"
                if isinstance(extra, dict):
                    _validate(v, extra, root, f"{where}.{k}")
    if isinstance(inst, list) and "items" in schema:
        for i, x in enumerate(inst):
            _validate(x, schema["items"], root, f"{where}[{i}]")


def _bundled_specs():
    return sorted((ROOT / "hardware").glob("*.toml")) + sorted((ROOT / "models").glob("*.toml"))


def test_schema_is_current_and_every_bundled_spec_validates():
    assert (DOCS / "spec.schema.json").read_text() == schema_text(), "run: python tests/test_docs.py"
    schema = json.loads(schema_text())
    files = _bundled_specs()
    assert len(files) > 30
    for f in files:
        _validate(tomllib.loads(f.read_text()), schema, schema, f.name)


def test_schema_rejects_what_the_loader_rejects():
    schema = json.loads(schema_text())
    bad = [
        {"name": "x", "kind": "chip", "hbm": {"capacity": {"value": "64 GB"}}},  # no source
        {"name": "x", "kind": "chip", "hbm": {"capacity": {"value": "64 GB", "source": "s", "mark": "X"}}},
        {"name": "x", "kind": "system", "planes": {"ub": {"bandwith": {"value": 1, "source": "s"}}}},
        {"name": "x", "kind": "gadget"},
    ]
    for inst in bad:
        with pytest.raises(AssertionError):
            _validate(inst, schema, schema)


def test_every_spec_key_is_in_specs_md():
    from cmperf.cli.specs_cmd import KEY_DOCS

    text = (DOCS / "specs.md").read_text()
    for key in KEY_DOCS:
        leaf = key.split(".")[-1]
        if leaf != "*":
            assert f"`{leaf}`" in text or f"`{key}`" in text, f"{key} is not in docs/specs.md"


def test_model_md_covers_every_model_module():
    text = (DOCS / "model.md").read_text()
    for mod in ("graph", "roofline", "comm", "step", "decode", "prefill", "queueing", "serving"):
        assert f"`cmperf/{mod}.py`" in text, mod
    # every function the page names exists
    import importlib

    for mod, fn in re.findall(r"`cmperf\.(\w+)\.(\w+)`", text):
        assert hasattr(importlib.import_module(f"cmperf.{mod}"), fn), f"cmperf.{mod}.{fn}"


@pytest.mark.parametrize("like", ["hgx-h200", "h200", "deepseek-r1", "cloudmatrix384", "tpu7x-pod"])
def test_specs_new_template_loads_back_unchanged(like, tmp_path):
    from click.testing import CliRunner

    from cmperf.cli import main

    out = tmp_path / "my-spec.toml"
    r = CliRunner().invoke(main, ["specs", "new", "--like", like, "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert 'name = "my-spec"' in text and "# mark " in text

    def show(name, *extra):
        r = CliRunner().invoke(main, ["specs", "show", name, *extra, "--format", "json"])
        assert r.exit_code == 0, r.output
        spec = json.loads(r.output)["spec"]
        return {k: v for k, v in spec.items() if k not in ("name", "path", "aliases")}

    assert show("my-spec", "--spec-dir", str(tmp_path)) == show(like)
    # every key line is preceded by its meaning and unit
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_0-9]+ = ", line):
            j = i - 1
            while lines[j].startswith("# mark "):
                j -= 1
            assert lines[j].startswith("# ") and lines[j].endswith("]"), line
    r = CliRunner().invoke(main, ["specs", "new", "--like", like, "-o", str(tmp_path / "bad name.toml")])
    assert r.exit_code == 2 and "--output" in r.output


if __name__ == "__main__":
    (DOCS / "cli.md").write_text(render_cli())
    (DOCS / "spec.schema.json").write_text(schema_text())
    print("wrote docs/cli.md and docs/spec.schema.json", file=sys.stderr)
