"""Property-based tests of the command line (hypothesis): generated invocations of every command.

Each example is a command with a few of its options set to generated values: plausible numbers, NaN and
infinities in every spelling, huge, tiny, negative and zero numbers, integers beyond 64 bits, typos
("4O96", "1,000", "12x"), units where none belongs and none where one does. Whatever the input:

* no traceback, and the exit code is 0 ok, 1 a check failed, 2 bad input or 3 infeasible (README);
* exit 2 is one line on stderr, ``cmperf: error: ...`` (no numpy warning, no usage block before it), and
  ``-o FILE`` is left untouched; 1 and 3 are one line too;
* a JSON result (exit 0, or 3 with its prediction) holds no NaN, no infinity, no string "inf", no negative
  time (a key ending in ``_s``) and no null but those docs/json.md lists for its kind.

The examples are derandomized (profile ``ci``, the default: the same examples on every run, so a failure
reproduces); ``CMPERF_HYPOTHESIS=explore`` draws new ones and ten times as many. The budget of the whole
file is ~30 s on two cores: cheap systems for the searches, few examples for the slow commands.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: Any warning (numpy's RuntimeWarning, scipy's IntegrationWarning...) fails these tests: a user would see it
#: printed before the result, and pytest's own capture would hide it from the one-line-stderr checks.
pytestmark = pytest.mark.filterwarnings("error")

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("CMPERF_HYPOTHESIS", "ci")
settings.load_profile(PROFILE)
SCALE = 10 if PROFILE == "explore" else 1


def examples(n: int) -> settings:
    return settings(max_examples=n * SCALE)


RUNNER = CliRunner(env={"CMPERF_PATH": None, "COLUMNS": "100"})

#: Values no number flag may accept, and edge cases it must handle: every class of bad input.
HOSTILE = [
    "nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e309", "-1e309", "1e300", "-1e300",
    "1e-300", "5e-324", "-1", "-0", "0", "0.0", "-0.5", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999999", "1e25", "1.5", "0.999999", "1e3", "", " ", "abc", "4O96", "1,000",
    "1_000", "12x", "0x10", "--", "true", "None", "none", "auto", "all", "2TB", "40 req/s", "50ms",
    "-5ms", "50", "1e-9 s", "1e999 s", "nan ms",
]  # fmt: skip


def _num(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(int(lo), int(hi)).map(str),
        st.floats(lo, hi, allow_nan=False).map(lambda x: f"{x:g}"),
    )


VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    _num(0, 10),
    _num(0, 5000),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**25), 10**25).map(str),
)


def _times(lo_ms: float, hi_ms: float) -> st.SearchStrategy[str]:
    return st.floats(lo_ms, hi_ms).map(lambda x: f"{x:.3g}ms")


#: Values a user would plausibly give each flag (valid or near the edge of valid): most examples draw from
#: these, so that the runs reach the model and not only the option parser.
PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "--devices": st.sampled_from(["1", "2", "8", "16", "17", "32", "64", "72", "128", "144", "160", "384"]),
    "--ep": st.sampled_from(["1", "8", "16", "32", "64", "72", "128", "144", "256", "288", "320"]),
    "--batch": _num(0, 300),
    "--kv-len": _num(1, 200_000),
    "--prompt-len": _num(1, 20_000),
    "--output-len": _num(1, 5_000),
    "--kv-cv": _num(0, 3),
    "--mtp": st.sampled_from(["0", "1", "2"]),
    "--mtp-accept": _num(0, 1),
    "--microbatches": st.sampled_from(["1", "2", "3", "4", "auto", "5"]),
    "--redundant": _num(0, 64),
    "--step-overhead": _times(0, 2),
    "--attn-cores": st.integers(0, 30).map(str),
    "--imbalance": _num(1, 3),
    "--ops": st.sampled_from(["1", "5", "all", "40"]),
    "--tokens-per-device": _num(100, 100_000),
    "--cache-hit": _num(0, 1),
    "--attn-tp": st.sampled_from(["1", "2", "4", "8", "16", "32", "3"]),
    "--tokens-per-rank": _num(0, 10_000),
    "--top-k": _num(1, 16),
    "--rate": _num(0, 50),
    "--concurrency": _num(1, 500),
    "--prompt-cv": _num(0, 1),
    "--output-cv": _num(0, 4),
    "--prefixes": st.sampled_from(["1", "1000", "100000", "1e9", "1000000000000"]),
    "--prefix-skew": _num(0, 4),
    "--prefix-len": _num(1, 4096),
    "--prefill-devices": st.sampled_from(["8", "16", "32", "48", "64", "96"]),
    "--decode-devices": st.sampled_from(["8", "16", "32", "64", "96"]),
    "--prefill-instance-devices": st.sampled_from(["1", "8", "16", "32"]),
    "--cache-dram": st.sampled_from(["0", "1TB", "500 GB", "2e12", "10 TiB"]),
    "--ttft-slo": st.sampled_from(["0.1s", "1s", "2s", "10s", "500ms"]),
    "--tpot-slo": _times(1, 200),
    "--slo-percentile": _num(50, 99.99),
    "--devices-total": st.sampled_from(["1", "16", "64", "100", "128"]),
    "--top": st.sampled_from(["1", "3", "20"]),
    "--rtol": _num(0, 1),
}


def value_for(flag: str) -> st.SearchStrategy[str]:
    """Three in four plausible for ``flag``, one in four anything (hostile classes, random numbers)."""
    plausible = PLAUSIBLE.get(flag, VALUES)
    return st.integers(0, 3).flatmap(lambda i: VALUES if i == 0 else plausible)


#: Per command: the base arguments (a cheap instance) and the options the examples set.
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "decode": (
        ["decode"],
        "--devices --ep --batch --kv-len --prompt-len --output-len --kv-cv --mtp --mtp-accept "
        "--microbatches --redundant --step-overhead --attn-cores --imbalance --ops".split(),
    ),
    "decode-gpu": (
        ["decode", "--system", "dgx-h800"],
        "--devices --ep --batch --kv-len --mtp --microbatches --attn-cores --imbalance".split(),
    ),
    "prefill": (
        ["prefill"],
        "--devices --ep --tokens-per-device --prompt-len --microbatches --cache-hit --attn-tp "
        "--imbalance --ops".split(),
    ),
    "comm": (["comm"], "--ep --tokens-per-rank --top-k".split()),
    "serve": (
        ["serve", "--system", "hgx-h20", "--rate", "2"],
        "--rate --concurrency --prompt-len --output-len --output-cv --cache-hit --prefixes "
        "--prefix-skew --prefix-len --prefill-devices --decode-devices --prefill-instance-devices "
        "--cache-dram --ttft-slo --tpot-slo --slo-percentile --mtp --mtp-accept".split(),
    ),
    "serve-size": (
        ["serve", "--size", "--system", "hgx-h20"],
        "--devices-total --prompt-len --output-len --rate --ttft-slo --tpot-slo --slo-percentile "
        "--prefill-instance-devices".split(),
    ),
    "optimize": (
        ["optimize", "--system", "hgx-h20"],
        "--devices --prompt-len --output-len --tpot-slo --ttft-slo --slo-percentile --rate --mtp-accept "
        "--top".split(),
    ),
    "pareto": (["pareto", "--system", "hgx-h20"], "--devices --prompt-len --output-len --mtp-accept".split()),
    "compare": (
        ["compare", "--systems", "hgx-h20,gb200-nvl72"],
        "--devices --ep --batch --kv-len --mtp --mtp-accept --microbatches".split(),
    ),
    "compare-prefill": (
        ["compare", "--systems", "hgx-h20,cloudmatrix384", "--phase", "prefill"],
        "--devices --ep --tokens-per-device --prompt-len --microbatches".split(),
    ),
    "diff": (
        ["diff", str(ROOT / "tests/golden/scenarios.json"), str(ROOT / "tests/golden/grid.json")],
        ["--rtol"],
    ),
}
#: Commands that take ``--format json`` (diff: its JSON too).
JSON = set(COMMANDS)


def _null_keys() -> dict[str, list[re.Pattern[str]]]:
    """kind -> the key patterns docs/json.md's "Null values" table allows to be null."""
    text = (ROOT / "docs/json.md").read_text(encoding="utf-8")
    section = text.split("## Null values", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[re.Pattern[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`"):
            continue
        for key in re.findall(r"`([^`]+)`", cells[1]):
            pattern = re.escape(key).replace(r"\*", ".*")
            out.setdefault(cells[0], []).append(re.compile(pattern))
    return out


NULL_KEYS = _null_keys()


def _leaves(doc, path: str = "", timed: bool = False):
    """(path, value, under a key ending in _s) for every leaf of a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, f"{path}.{k}" if path else k, timed or k.endswith("_s"))
    elif isinstance(doc, list):
        for v in doc:
            yield from _leaves(v, f"{path}[]", timed)
    else:
        yield path, doc, timed


def _reject_constant(name: str):
    raise AssertionError(f"{name} in JSON output")


def check_json(text: str, where) -> None:
    doc = json.loads(text, parse_constant=_reject_constant)
    kind = doc["kind"]
    allowed = NULL_KEYS.get(kind, [])
    for path, v, timed in _leaves(doc):
        if v is None:
            assert any(p.fullmatch(path) for p in allowed), f"{where}: null {kind} key {path} (docs/json.md)"
        elif isinstance(v, str):
            assert v.lower() not in ("inf", "-inf", "nan", "infinity"), f"{where}: {path} = {v!r}"
        elif isinstance(v, int | float) and not isinstance(v, bool):
            assert math.isfinite(v), f"{where}: {path} = {v}"
            assert not (timed and v < 0), f"{where}: negative time {path} = {v}"


def run_checked(args: list[str], *, output: bool = False):
    """Run ``cmperf args`` (JSON where the command has it) and check every property of the module."""
    if not output:
        return _run_checked(args, None)
    with tempfile.TemporaryDirectory(prefix="cmperf-fuzz-") as tmp:  # removed after each run
        out_path = Path(tmp) / "out.txt"
        return _run_checked([*args, "-o", str(out_path)], out_path)


def _run_checked(args: list[str], out_path: Path | None):
    r = RUNNER.invoke(main, args)
    where = "cmperf " + " ".join(args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(r.exception))
        raise AssertionError(f"{where}: traceback\n{tb}")
    assert r.exit_code in (0, 1, 2, 3), f"{where}: exit {r.exit_code}"
    if currently_in_test_context():  # --hypothesis-show-statistics: how many runs reach the model
        event(f"exit {r.exit_code}")
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.exit_code == 2:
        assert len(err) == 1 and err[0].startswith("cmperf: error: "), f"{where}: {err}"
        assert out_path is None or not out_path.exists(), f"{where}: wrote -o on bad input"
    elif r.exit_code in (1, 3):
        assert len(err) == 1 and err[0].startswith("cmperf"), f"{where}: {err}"
    else:  # validate prints its summary line
        assert not [ln for ln in err if not ln.startswith("validate: ")], f"{where}: stderr {err}"
    text = out_path.read_text() if out_path is not None and out_path.exists() else r.stdout
    if r.exit_code != 2 and "json" in args and text.strip():
        check_json(text, where)
    return r


@st.composite
def invocation(draw, names: list[str]) -> list[str]:
    """A command's base arguments, then 1 to 3 of its options with generated values."""
    base, opts = COMMANDS[draw(st.sampled_from(names))]
    chosen = draw(st.lists(st.sampled_from(opts), min_size=1, max_size=3, unique=True))
    args = list(base)
    for flag in chosen:
        args += [flag, draw(value_for(flag))]
    return [*args, "--format", "json"]


@examples(300)
@given(invocation(["decode", "decode-gpu", "prefill", "comm", "compare", "compare-prefill", "diff"]))
def test_fast_commands_never_crash(args):
    run_checked(args)


@examples(40)
@given(invocation(["serve", "serve-size"]))
def test_serve_never_crashes(args):
    run_checked(args)


@examples(60)
@given(invocation(["optimize", "pareto"]))
def test_searches_never_crash(args):
    run_checked(args)


@examples(60)
@given(invocation(["decode", "prefill", "comm"]), st.sampled_from(["json", "table", "markdown"]))
def test_output_file_is_written_only_on_good_input(args, fmt):
    """-o FILE: written on success (and on an infeasible prediction, exit 3), untouched on bad input."""
    args = [*args[:-1], fmt]
    run_checked(args, output=True)


TYPOS = st.sampled_from(
    ["--batchh", "--batch=", "--format=xml", "--system=nosuch", "--model=nosuch", "-x", "--ep=", "---"]
)


@examples(20)
@given(st.sampled_from(sorted({b[0] for b, _ in COMMANDS.values()} | {"snapshot", "specs"})), TYPOS, VALUES)
def test_typos_and_unknown_names_are_one_line(cmd, typo, value):
    """A misspelt flag, a bad choice, an unknown system or model: exit 2 with one line, no usage block."""
    r = run_checked([cmd, typo, value])
    assert r.exit_code == 2, (cmd, typo, value, r.output)


NAMES = st.one_of(
    st.sampled_from(["nosuch", "", ".", "..", "/", "/dev/null", "x.toml", "../hardware", "cm384-decode"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)


@examples(20)
@given(st.sampled_from(["snapshot", "report --scenario", "explain --scenario", "specs show"]), NAMES)
def test_unknown_scenarios_and_specs_are_one_line(cmd, name):
    r = run_checked([*cmd.split(), name])
    assert r.exit_code == 2, (cmd, name, r.output)


@examples(15)
@given(st.lists(st.tuples(st.sampled_from(["tpot_s", "*", "x/y", "", "="]), VALUES), min_size=1, max_size=2))
def test_diff_tolerances_never_disable_the_gate(pairs):
    """--metric-rtol NAME=R with any R: a finite R >= 0 is a tolerance (exit 0 or 1); anything else is exit 2
    (a NaN tolerance would pass every change), and so is a NAME no compared metric matches (x/y)."""
    old, new = ROOT / "tests/golden/scenarios.json", ROOT / "tests/golden/grid.json"
    args = ["diff", str(old), str(new), "--fail-on", "any"]
    for name, value in pairs:
        args += ["--metric-rtol", f"{name}={value}"]
    r = run_checked([*args, "--format", "json"])
    try:
        ok = all(math.isfinite(float(v)) and float(v) >= 0 and n not in ("", "=", "x/y") for n, v in pairs)
    except ValueError:
        ok = False
    ok = ok and len({n for n, _ in pairs}) == len(pairs)
    assert r.exit_code == (1 if ok else 2), (pairs, r.stderr)


def test_commands_without_numeric_options_print_documented_json():
    """specs list / show (every spec), validate, snapshot: the same JSON properties (no stray null)."""
    from cmperf import specs

    names = [r["name"] for r in specs.catalog()]
    for args in (["specs", "list"], ["validate"], *(["specs", "show", n] for n in names)):
        r = run_checked([*args, "--format", "json"])
        assert r.exit_code == 0, (args, r.stderr)
    r = run_checked(["snapshot", "cm384-decode-15ms", "cm384-prefill"])
    assert r.exit_code == 0 and r.stdout
    check_json(r.stdout, "snapshot")
