"""Property-based tests of the files cmperf reads (hypothesis): mutated spec, scenario and snapshot files.

Spec files (a system and its chip, CloudMatrix384 and DGX-H800): one value replaced by another type or an
impossible number (a list, a string, NaN, infinity, 1e300, negative, zero, a bool, a table), a key
renamed or deleted, a line duplicated, the file truncated, emptied or made binary. Scenario files: a
generated [deployment] and [options] of random TOML values. Snapshots: a node of a real snapshot replaced,
deleted or nested deep, the schema version changed, the bytes cut or made binary. Whatever the file:

* no traceback; exit 0, 1 (diff beyond tolerance), 2 (bad input: one line, ``cmperf: error: ...``) or 3;
* a successful JSON prediction holds no NaN, infinity or negative time (``test_fuzz_cli.check_json``);
* ``cmperf diff`` never passes (exit 0) a snapshot whose metrics moved: the CI gate cannot be switched off.

Derandomized by default (``CMPERF_HYPOTHESIS``, as ``test_fuzz_cli``); ~15 s.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st
from test_fuzz_cli import RUNNER, check_json, examples  # one set of hypothesis profiles

from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: Any warning (numpy's RuntimeWarning, scipy's IntegrationWarning...) fails these tests: a user would see it
#: printed before the result, and pytest's own capture would hide it from the one-line-stderr checks.
pytestmark = pytest.mark.filterwarnings("error")


def run(args: list[str]):
    """Run cmperf; the properties every file mutation must keep (no traceback, exit class, one line)."""
    r = RUNNER.invoke(main, args)
    where = "cmperf " + " ".join(args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        raise AssertionError(f"{where}: traceback\n{''.join(traceback.format_exception(r.exception))}")
    assert r.exit_code in (0, 1, 2, 3), f"{where}: exit {r.exit_code}"
    if currently_in_test_context():
        event(f"exit {r.exit_code}")
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.exit_code == 2:
        assert len(err) == 1 and err[0].startswith("cmperf: error: "), f"{where}: {err}"
    elif r.exit_code in (1, 3):
        assert len(err) == 1, f"{where}: {err}"
    if r.exit_code in (0, 3) and "json" in args and r.stdout.strip():
        check_json(r.stdout, where)
    return r


# ---------------------------------------------------------------------------------------------- spec files

SPEC_FILES = {
    "hardware/cloudmatrix384.toml": "cloudmatrix384",
    "hardware/ascend-910c.toml": "cloudmatrix384",
    "hardware/dgx-h800.toml": "dgx-h800",
    "hardware/h800.toml": "dgx-h800",
}
TOML_VALUES = [
    "[1, 2]", "[]", '"abc"', '""', "inf", "-inf", "nan", "-1", "0", "0.0", "1e300", "-1e300", "true",
    "{}", "{ value = 1 }", '"1e999 GB"', '"nan ms"', '"-5 us"', "1.5", "9223372036854775807",
    '"1 TB/s"', '"5 ms"', '"1 GB"', '"752 TOPS"', "2", "1",
]  # fmt: skip
VALUE = re.compile(r'(?<=value = )("[^"]*"|[^,}\s]+)')
TOP_SCALAR = re.compile(r"^(name|kind|chip|description|rank|aliases|kv_transfer_plane) = (.*)$", re.M)
KEY = re.compile(r"^([a-z_0-9]+) = ", re.M)
PLAIN = re.compile(r"^[a-z_0-9]+ = ([^{\n][^\n]*)$", re.M)  # a plain value (not an inline table)


@st.composite
def mutated_text(draw, text: str) -> bytes:
    """``text`` with one mutation of a class users make (or a broken editor does)."""
    kind = draw(
        st.sampled_from(["value", "value", "value", "top", "rename", "delete", "duplicate", "cut", "bytes"])
    )
    lines = text.splitlines(keepends=True)
    if kind == "value":  # a spec's `value = X`, or a scenario's `key = X`
        spans = [m.span() for m in VALUE.finditer(text)] + [m.span(1) for m in PLAIN.finditer(text)]
        i, j = spans[draw(st.integers(0, len(spans) - 1))]
        out = text[:i] + draw(st.sampled_from(TOML_VALUES)) + text[j:]
    elif kind == "top":
        ms = list(TOP_SCALAR.finditer(text))
        m = ms[draw(st.integers(0, len(ms) - 1))]
        new = draw(st.sampled_from(["5", "[]", "{}", '"nosuch"', '"chip"', '"model"', "[5]", '""', "true"]))
        out = text[: m.start(2)] + new + text[m.end(2) :]
    elif kind == "rename":
        ms = list(KEY.finditer(text))
        m = ms[draw(st.integers(0, len(ms) - 1))]
        out = text[: m.end(1)] + "x" + text[m.end(1) :]
    elif kind in ("delete", "duplicate"):
        i = draw(st.integers(0, len(lines) - 1))
        out = "".join(lines[:i] + ([lines[i]] * 2 if kind == "duplicate" else []) + lines[i + 1 :])
    elif kind == "cut":
        out = text[: draw(st.integers(0, len(text)))]
    else:  # binary: invalid UTF-8 somewhere
        i = draw(st.integers(0, len(text)))
        return text[:i].encode() + draw(st.sampled_from([b"\xff\xfe", b"\x80", b"\xc3\x28", b"\x00"])) + b"\n"
    return out.encode("utf-8")


@st.composite
def spec_case(draw) -> tuple[str, str, bytes]:
    rel = draw(st.sampled_from(sorted(SPEC_FILES)))
    return rel, SPEC_FILES[rel], draw(mutated_text((ROOT / rel).read_text(encoding="utf-8")))


@examples(70)
@given(spec_case(), st.sampled_from(["decode", "prefill"]))
def test_mutated_spec_files(case, command):
    """A mutated spec file in --spec-dir (it shadows the built-in of its name): the prediction or one line."""
    rel, system, data = case
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / Path(rel).name).write_bytes(data)
        run([command, "--system", system, "--spec-dir", d, "--format", "json"])


@examples(15)
@given(spec_case())
def test_mutated_spec_file_given_by_path(case):
    """The same mutations, the file given by path (--system FILE.toml), the chip from the built-ins."""
    rel, _, data = case
    if not rel.endswith(("cloudmatrix384.toml", "dgx-h800.toml")):
        rel = "hardware/cloudmatrix384.toml"
        data = (ROOT / rel).read_bytes()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(rel).name
        path.write_bytes(data)
        run(["decode", "--system", str(path), "--format", "json"])


def test_empty_or_wrong_kind_spec_named_like_a_builtin_is_an_error(tmp_path):
    """Not silently skipped (the built-in would be used instead): one line naming the file."""
    for content in (
        "",
        "# nothing\n",
        'kind = "chip"\nname = "cloudmatrix384"\n',
        'name = "cloudmatrix384"\n',
    ):
        (tmp_path / "cloudmatrix384.toml").write_text(content)
        r = run(["decode", "--spec-dir", str(tmp_path)])
        assert r.exit_code == 2 and str(tmp_path / "cloudmatrix384.toml") in r.stderr, (content, r.stderr)


def test_spec_types_are_named_by_file_and_key(tmp_path):
    """The classes of the issue, each one line naming the file and the key."""
    base = (ROOT / "hardware/cloudmatrix384.toml").read_text()
    chip = (ROOT / "hardware/ascend-910c.toml").read_text()
    cases = {
        "cloudmatrix384.toml": [
            (re.sub(r"num_devices = \{ value = 384", "num_devices = { value = [384]", base), "num_devices"),
            (
                re.sub(r'(\[planes\.ub\][^\[]*?bandwidth = \{ value = )"[^"]*"', r"\1inf", base, count=1),
                "bandwidth",
            ),
        ],
        "ascend-910c.toml": [
            (chip.replace('capacity = { value = "64 GiB"', 'capacity = { value = "1e999 B"'), "hbm.capacity"),
            (chip.replace('capacity = { value = "64 GiB"', "capacity = { value = inf"), "hbm.capacity"),
            (chip.replace("cube = { value = 24", "cube = { value = 1"), "cores"),
        ],
    }
    for name, variants in cases.items():
        for text, key in variants:
            d = tmp_path / f"{name}-{key}"
            d.mkdir(exist_ok=True)
            (d / name).write_text(text)
            r = run(["decode", "--spec-dir", str(d)])
            assert r.exit_code == 2 and name in r.stderr and key in r.stderr, (name, key, r.stderr)
    model = (ROOT / "models/deepseek-r1.toml").read_text()
    (tmp_path / "deepseek-r1.toml").write_text(
        model.replace('aliases = ["deepseek-v3", "deepseek-r1-0528"]', "aliases = 5")
    )
    r = run(["decode", "--spec-dir", str(tmp_path), "--model", "deepseek-v3"])
    assert r.exit_code == 2 and "deepseek-r1.toml: key aliases" in r.stderr, r.stderr
    (tmp_path / "bin.toml").write_bytes(b"name = \xff\xfe\n")
    r = run(["decode", "--system", str(tmp_path / "bin.toml")])
    assert r.exit_code == 2 and "bin.toml: not UTF-8" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- scenarios

DEPLOYMENT_KEYS = (
    "devices ep_size microbatches eplb imbalance num_redundant batch_per_device kv_len kv_capacity_len kv_cv "
    "mtp mtp_accept attention_cube_cores step_overhead_s tokens_per_device prompt_len cache_hit cache_plane "
    "attn_tp"
).split()
SCENARIO_VALUES = st.one_of(
    st.sampled_from(TOML_VALUES),
    st.sampled_from(['"auto"', '"model"', '"perfect"', '"ub"', "96", "4096", "16", "32", "2", "0.7"]),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda x: (
            "nan" if math.isnan(x) else ("inf" if x == math.inf else ("-inf" if x == -math.inf else repr(x)))
        )
    ),
)


@st.composite
def scenario_text(draw) -> tuple[str, str]:
    command = draw(st.sampled_from(["decode", "prefill"]))
    keys = draw(st.lists(st.sampled_from(DEPLOYMENT_KEYS), min_size=1, max_size=3, unique=True))
    lines = ['name = "{NAME}"', f'command = "{command}"', "[deployment]"]
    lines += [f"{k} = {draw(SCENARIO_VALUES)}" for k in keys]
    if command == "decode" and draw(st.booleans()):
        lines += [
            "[options]",
            f"prompt_len = {draw(SCENARIO_VALUES)}",
            f"output_len = {draw(SCENARIO_VALUES)}",
        ]
    return command, "\n".join(lines) + "\n"


@examples(60)
@given(scenario_text(), st.booleans())
def test_generated_scenarios(case, through_command):
    """A scenario of random values: through its command (the CLI's option types) or `snapshot` (the library
    path of report / validate / snapshot): the prediction, or one line naming the file and the key."""
    command, text = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fz.toml"
        path.write_text(text.replace("{NAME}", "fz"))
        if through_command:
            r = run([command, "--scenario", str(path), "--format", "json"])
        else:
            r = run(["snapshot", str(path)])
            if r.exit_code == 0:  # a snapshot holds only finite predictions
                check_json(r.stdout, text)
        if r.exit_code == 2 and "key " in r.stderr:
            assert "fz.toml" in r.stderr, r.stderr


@examples(20)
@given(st.sampled_from(sorted((ROOT / "scenarios").glob("*.toml"))).flatmap(
    lambda p: st.tuples(st.just(p), mutated_text(p.read_text(encoding="utf-8")))
))  # fmt: skip
def test_mutated_shipped_scenarios(case):
    path, data = case
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / path.name
        target.write_bytes(data)
        run(["snapshot", str(target)])


def test_report_of_a_nan_scenario_is_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "bad"\ncommand = "decode"\n[deployment]\nbatch_per_device = nan\n')
    for args in (["report", "--scenario", str(p)], ["snapshot", str(p)], ["decode", "--scenario", str(p)]):
        r = run(args)
        assert r.exit_code == 2 and "bad.toml: key deployment.batch_per_device" in r.stderr, r.stderr


def test_snapshot_of_an_infeasible_scenario_writes_nothing(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text('name = "big"\ncommand = "decode"\n[deployment]\nbatch_per_device = 5000\n')
    out = tmp_path / "snap.json"
    r = run(["snapshot", str(p), "-o", str(out)])
    assert r.exit_code == 3 and "scenario big is infeasible" in r.stderr and "HBM" in r.stderr, r.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- snapshots

GOLDEN = ROOT / "tests/golden/scenarios.json"
JSON_NODES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.just([]),
    st.just({}),
    st.just({"metrics": {}}),
    st.just([{"metrics": {"tpot_s": 1.0}}]),
)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))


def _set(doc, path, value):
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


@st.composite
def mutated_snapshot(draw) -> bytes:
    doc = json.loads(GOLDEN.read_text())
    kind = draw(st.sampled_from(["replace", "replace", "delete", "nan", "deep", "version", "bytes", "scale"]))
    paths = list(_paths(doc))
    path = paths[draw(st.integers(0, len(paths) - 1))]
    if kind == "replace":
        doc = _set(doc, path, draw(JSON_NODES))
    elif kind == "delete" and path:
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    elif kind == "nan":
        text = json.dumps(doc)
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return re.sub(r"(?<=: )-?\d+\.\d+", token, text, count=draw(st.integers(1, 3))).encode()
    elif kind == "deep":
        depth = draw(st.sampled_from([50, 400, 100_000]))
        doc = _set(doc, path, json.loads("[" * min(depth, 400) + "]" * min(depth, 400)))
        if depth > 400:
            return (json.dumps(doc)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}").encode()
    elif kind == "version":
        doc["schema_version"] = draw(st.sampled_from([0, 2, 999, "1", 1.0, None, True]))
    elif kind == "scale":  # a metric moved: the gate must see it
        sc = next(iter(doc["scenarios"].values()))
        name = next(k for k, v in sc["metrics"].items() if isinstance(v, float) and v != 0)
        sc["metrics"][name] *= draw(st.sampled_from([0.5, 1.5, -1.0, 1e6]))
    else:
        text = json.dumps(doc).encode()
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.sampled_from([b"", b"\xff", b"\x00\x01", b"\xef\xbb\xbf"]))
    return json.dumps(doc).encode()


def _metrics(doc: dict) -> dict:
    return {f"{s}/{k}": v for s, rec in doc["scenarios"].items() for k, v in rec.get("metrics", {}).items()}


@examples(80)
@given(mutated_snapshot(), st.booleans())
def test_mutated_snapshots_never_pass_the_gate_silently(data, as_new):
    """`cmperf diff` on a mutated snapshot: exit 2 (one line naming the file) unless it is still a snapshot;
    and exit 0 only when every metric is there and within tolerance of the original."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mut.json"
        path.write_bytes(data)
        old, new = (GOLDEN, path) if as_new else (path, GOLDEN)
        r = run(["diff", str(old), str(new), "--rtol", "0.01", "--fail-on", "any"])
        if r.exit_code == 2:
            assert "mut.json" in r.stderr, r.stderr
        if r.exit_code == 0:
            a, b = _metrics(json.loads(GOLDEN.read_text())), _metrics(json.loads(data))
            assert a.keys() == b.keys(), "diff passed a snapshot with other metrics"
            for k, v in a.items():
                w = b[k]
                if isinstance(v, float) and isinstance(w, float):
                    assert abs(w - v) <= 0.01 * abs(v), (k, v, w)
                else:
                    assert v == w, (k, v, w)
