"""Output has one owner: every command and format renders to a string and goes through ``emit`` (stdout or
``-o FILE``, written atomically with the mode a plain write would give); tables fit the page width."""

import os
import stat

import pytest
from click.testing import CliRunner

from cmperf.cli import main
from cmperf.errors import CmperfError

# command -> (cheap arguments, formats it offers, bad input that must write nothing and exit 2)
COMMANDS = {
    "decode": (["decode"], ("table", "json", "markdown"), ["--batch", "-1"]),
    "comm": (["comm"], ("table", "json", "markdown"), ["--ep", "0"]),
    "prefill": (["prefill"], ("table", "json", "markdown"), ["--system", "nosuch"]),
    "serve": (["serve", "--rate", "40"], ("table", "json", "markdown"), ["--system", "nosuch"]),
    "optimize": (["optimize", "--devices", "32"], ("table", "json", "markdown"), ["--system", "nosuch"]),
    "pareto": (["pareto", "--devices", "16"], ("table", "json", "markdown"), ["--system", "nosuch"]),
    "compare": (["compare"], ("table", "json", "markdown"), ["--systems", "nosuch"]),
    "report": (["report", "--scenario", "cm384-decode-50ms"], (None,), ["--scenario", "nosuch"]),
    # explain runs sympy (seconds): its table path only (json and markdown go through the same emit)
    "explain": (["explain"], ("table",), ["--scenario", "nosuch"]),
    "validate": (["validate"], ("table", "json", "markdown"), ["--spec-dir", "/nonexistent"]),
    "snapshot": (["snapshot", "cm384-decode-15ms"], (None,), ["nosuch"]),
    "diff": (["diff", "{snap}", "{snap}"], ("table", "json", "markdown"), ["--rtol", "-1"]),
    "specs list": (["specs", "list"], ("table", "json", "markdown"), ["--spec-dir", "/nonexistent"]),
    "specs show": (
        ["specs", "show", "cloudmatrix384"],
        ("table", "json", "markdown"),
        ["--spec-dir", "/nonexistent"],
    ),
}
CASES = [(name, fmt) for name, (_, fmts, _) in COMMANDS.items() for fmt in fmts]


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "snap.json"
    r = CliRunner().invoke(main, ["snapshot", "cm384-decode-15ms", "-o", str(path)])
    assert r.exit_code == 0, r.output
    return str(path)


def args_of(name, snap, fmt=None, extra=()):
    base, _, _ = COMMANDS[name]
    args = [a.format(snap=snap) for a in base] + list(extra)
    return args + (["--format", fmt] if fmt else [])


def invoke(args, **env):
    return CliRunner().invoke(main, args, env=env or None)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}-{f or 'default'}" for n, f in CASES])
def test_output_file_gets_everything_and_a_plain_mode(name, fmt, tmp_path, snap, umask022):
    out = tmp_path / "out.txt"
    r = invoke(args_of(name, snap, fmt, ["-o", str(out)]))
    assert r.exit_code in (0, 1), r.output  # 1: validate/diff found something; the output is still written
    text = out.read_text(encoding="utf-8")
    assert text.strip(), f"{name} --format {fmt} -o wrote nothing"
    assert r.stdout == "", f"{name} --format {fmt} -o also printed to stdout"
    assert mode(out) == 0o644  # 0666 & ~umask, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left behind
    if (fmt == "table" or name == "snapshot") and name != "explain":  # (explain: slow, same path)
        plain = invoke(args_of(name, snap, fmt))  # stdout gets the same text as the file
        assert plain.stdout == text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_existing_file_keeps_its_mode_and_bad_input_writes_nothing(name, tmp_path, snap, umask022):
    fmt = COMMANDS[name][1][-1]  # the cheapest format the command has
    if name != "explain":  # explain is slow; its file path is the one every command shares
        out = tmp_path / "kept.txt"
        out.write_text("old\n")
        out.chmod(0o600)
        r = invoke(args_of(name, snap, fmt, ["-o", str(out)]))
        assert r.exit_code in (0, 1), r.output
        assert out.read_text() != "old\n" and mode(out) == 0o600
        out.chmod(0o640)
        assert invoke(args_of(name, snap, fmt, ["-o", str(out)])).exit_code in (0, 1)
        assert mode(out) == 0o640
    bad_out = tmp_path / "bad.txt"
    bad = invoke(args_of(name, snap, fmt, [*COMMANDS[name][2], "-o", str(bad_out)]))
    assert bad.exit_code == 2, bad.output
    assert not bad_out.exists() and "Traceback" not in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if name == "explain" else ["kept.txt"])


def test_write_error_leaves_nothing_behind(tmp_path, monkeypatch):
    from cmperf.cli import common

    target = tmp_path / "x.json"
    target.write_text("before")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(common.os, "replace", boom)
    # a write error is the user's to fix (a full disk, a read-only folder): one line naming --output, exit 2
    with pytest.raises(CmperfError, match=r"--output: cannot write .*disk full"):
        common.write_atomic(str(target), "after")
    assert target.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def decode_ops():
    import json

    return json.loads(invoke(["decode", "--format", "json", "--ops", "2"]).stdout)["ops"]  # JSON: every op


def test_decode_table_fits_80_columns():
    r = invoke(["decode"], COLUMNS="80")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(ln for ln in lines if len(ln) > 80)
    for row in ("deployment", "TPOT  ", "tokens/s per device", "HBM per rank", "feasible"):
        assert any(ln.startswith(row) for ln in lines), row
    assert "2 microbatches (auto)" in r.stdout
    header = next(ln for ln in lines if ln.startswith("stage") and " op " in ln)
    assert all(h in header for h in ("per step", "share", "bound", "compute", "memory"))
    assert "mla.attention" in r.stdout
    assert f"... {len(decode_ops()) - 12} more ops (--ops all)" in r.stdout
    assert invoke(["decode"], COLUMNS="80").stdout == r.stdout  # deterministic for a width


@pytest.mark.parametrize("width", [60, 100, 120, 200])
def test_tables_fit_any_width(width):
    for args in (["decode"], ["prefill", "--ops", "all"], ["serve", "--rate", "40"], ["compare"]):
        out = invoke(args, COLUMNS=str(width)).stdout
        assert max(map(len, out.splitlines())) <= width, (args, width)


def test_ops_option():
    ops = decode_ops()
    n = len(ops)
    heaviest = [o["name"] for o in sorted(ops, key=lambda o: -o["total_s"])[:3]]

    def op_rows(md):
        return md.split("## Per-op breakdown")[1].count("\n| ") - 1  # table lines less the header

    top = invoke(["decode", "--format", "markdown"], COLUMNS="200").stdout
    every = invoke(["decode", "--format", "markdown", "--ops", "all"], COLUMNS="200").stdout
    assert op_rows(every) == n and "more ops" not in every
    assert op_rows(top) == 12 and f"... {n - 12} more ops (--ops all)" in top
    three = invoke(["decode", "--ops", "3"], COLUMNS="200").stdout
    assert f"the 3 heaviest of {n} ops" in three and f"... {n - 3} more ops (--ops all)" in three
    rows = three.split("the 3 heaviest")[1].splitlines()[3:6]  # after the title, header and rule
    assert [ln.split()[1] for ln in rows] == heaviest
    bad = invoke(["decode", "--ops", "none"])
    assert bad.exit_code == 2 and "--ops" in bad.output


@pytest.mark.parametrize("width", [70, 100])
def test_squeezed_tables_fold_at_words_not_inside_them(width):
    """A table wider than the page keeps every word whole (a cell folds at its spaces; columns go from
    the right when even the longest words do not fit): the validate group table's 11-letter system names
    ("gb200-nvl72") and its "incomplete" once came out as "gb200-nvl7" over "2" at 100 columns."""
    from cmperf import render
    from cmperf.points import GROUP_HEADER as header

    rows = [
        (
            "gb200-nvl72",
            "sglang",
            "disagg",
            "129-512",
            "3",
            "14.1%",
            "151.3%",
            "-2.9%",
            "730%/1043%",
            "incomplete 33",
        )
    ] * 2
    out = render.tables("", [], [("t", header, rows)], width=width)
    lines = out.splitlines()
    assert max(map(len, lines)) <= width
    words = {w for ln in lines for w in ln.split()}
    shown = [h for h in header if h.split()[0] in words]
    assert {"gb200-nvl72", "sglang", "14.1%"} <= words and not words & {"gb200-nvl7", "incomple", "skippe"}
    assert ("incomplete" in words) == ("skipped" in shown)
    assert (width == 100) == ("skipped" in shown), out  # 100 columns hold it; 70 leave columns out
