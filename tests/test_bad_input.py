"""Regression tests of the bad-input sweep: each case once passed bad input silently, named the wrong flag,
or was refused for a reason that did not name the flag or file.

The house standard for bad input: one line on stderr naming the flag or file and the fix, a non-zero exit,
no traceback, no NaN or inf passed off as an answer, and an ``-o`` file neither created nor truncated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent
RUNNER = CliRunner(env={"CMPERF_PATH": None, "COLUMNS": "100"})
DECODE_15MS = ROOT / "scenarios/cm384-decode-15ms.toml"


def run(args: list[str]):
    r = RUNNER.invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
    assert "Traceback" not in r.output
    return r


def one_error_line(r, code: int, *needles: str) -> str:
    """Exit ``code``, one stderr line that starts ``cmperf`` and holds every needle; the line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == code, (r.exit_code, r.stderr, r.stdout[-300:])
    assert len(lines) == 1 and lines[0].startswith("cmperf"), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # --kv-capacity-len: was a bare float (click's message for "abc"), and out-of-range values were
        # reported as --kv-len
        (["--kv-capacity-len", "-1"], ["--kv-capacity-len:", "[1, 1e+09]"]),
        (["--kv-capacity-len", "nan"], ["--kv-capacity-len:", "not a finite number"]),
        (["--kv-capacity-len", "abc"], ["--kv-capacity-len:", "not a number"]),
        (["--kv-capacity-len", "0.5"], ["--kv-capacity-len:"]),
        (
            ["--kv-len", "8000", "--kv-capacity-len", "100"],
            ["--kv-capacity-len: 100 is outside 8000..163840"],
        ),
        (["--kv-capacity-len", "1e8"], ["--kv-capacity-len: 1e+08 is outside 4096..163840"]),
        (
            ["--prompt-len", "100", "--output-len", "10", "--kv-capacity-len", "101"],
            ["--kv-capacity-len: 101 is outside 105..163840"],
        ),
        # a blank --draft-model was "no draft" silently
        (["--draft-model", ""], ["--draft-model: '' is not a name"]),
    ],
)
def test_decode_bad_input(args, needles, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("keep")
    r = run(["decode", *args, "-o", out])
    one_error_line(r, 2, *needles)
    assert "--kv-len:" not in r.stderr
    assert out.read_text() == "keep"  # -o untouched


def test_decode_kv_capacity_len_with_prompt_len_is_not_dropped():
    """--kv-capacity-len with --prompt-len/--output-len was silently replaced by prompt + output."""
    r = run(
        [
            "decode",
            "--prompt-len",
            "100",
            "--output-len",
            "10",
            "--kv-capacity-len",
            "4096",
            "--format",
            "json",
        ]
    )
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)["deployment"]
    assert d["kv_capacity_len"] == 4096.0 and d["kv_len"] == 105.0
    r = run(["decode", "--prompt-len", "100", "--output-len", "10", "--format", "json"])
    assert json.loads(r.stdout)["deployment"]["kv_capacity_len"] == 110.0  # the default: prompt + output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # top-1000 of 256 experts: a 983 MB payload and a 12 ms "answer"
        (["--top-k", "1000"], ["--top-k: 1000", "256 routed experts", "--top-k 256"]),
        # EP100000 on a 128-GPU system
        (["--system", "hgx-h20", "--ep", "100000"], ["--ep: EP100000 exceeds the 128 ranks of hgx-h20"]),
        (["--ep", "769"], ["--ep: EP769 exceeds the 768 ranks of cloudmatrix384"]),
        # a dense model: "top-0", a latency-only time
        (["--model", "llama-3.1-70b"], ["--model: llama-3.1-70b is a dense model"]),
    ],
)
def test_comm_bad_input(args, needles, tmp_path):
    out = tmp_path / "out.txt"
    r = run(["comm", *args, "--format", "json", "-o", out])
    one_error_line(r, 2, *needles)
    assert not out.exists()


def test_comm_edges_stay_valid():
    for args in (["--ep", "768"], ["--top-k", "256"], ["--ep", "1"]):
        r = run(["comm", *args, "--format", "json"])
        assert r.exit_code == 0, (args, r.stderr)
        assert json.loads(r.stdout)["time_s"] >= 0


@pytest.mark.parametrize(
    "args",
    [
        ["prefill", "--cache-plane", ""],
        ["prefill", "--cache-plane", "  ", "--cache-hit", "0.5"],
        ["serve", "--rate", "2", "--cache-plane", ""],
        ["serve", "--rate", "2", "--draft-model", ""],
    ],
)
def test_blank_names_are_refused(args):
    """A blank --cache-plane fell back to the default plane, a blank --draft-model to no draft."""
    flag = args[args.index("--cache-plane" if "--cache-plane" in args else "--draft-model")]
    one_error_line(run(args), 2, f"{flag}: ", "is not a name")


def test_serve_devices_total_needs_size(tmp_path):
    """--devices-total without --size was ignored."""
    out = tmp_path / "out.txt"
    r = run(["serve", "--rate", "2", "--devices-total", "8", "-o", out])
    one_error_line(r, 2, "--devices-total:", "--size")
    assert not out.exists()


def test_pareto_empty_frontier_is_infeasible():
    """No configuration fits: pareto printed an empty frontier with exit 0 (optimize: exit 3)."""
    for phase in ("decode", "prefill"):
        r = run(["pareto", "--system", "hgx-h20", "--devices", "1", "--phase", phase, "--format", "json"])
        one_error_line(r, 3, f"no {phase} configuration fits on 1 devices of hgx-h20", "HBM fit")
        assert json.loads(r.stdout)["pareto"] == []  # the (complete) result is still printed
    r = run(["pareto", "--system", "hgx-h20", "--devices", "16", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["pareto"], r.stderr


def test_optimize_tiny_tpot_slo_is_named_in_its_unit():
    """--tpot-slo 1us was reported as "--tpot-slo 0.00 ms"."""
    r = run(["optimize", "--system", "hgx-h20", "--tpot-slo", "1us", "--format", "json"])
    line = one_error_line(r, 1, "--tpot-slo 1.0 µs")
    assert "0.00 ms" not in line


def _scenario(tmp_path: Path, name: str, edit) -> Path:
    text = DECODE_15MS.read_text().replace('name = "cm384-decode-15ms"', f'name = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(edit(text))
    return path


def test_scenario_choice_value_names_the_file_and_key(tmp_path):
    """eplb = "nope" in a scenario was click's "Invalid value for '--eplb'", naming no file."""
    sc = _scenario(tmp_path, "badeplb", lambda t: t.replace('eplb = "model"', 'eplb = "nope"'))
    one_error_line(run(["decode", "--scenario", sc]), 2, f"{sc}: key deployment.eplb (or --eplb): 'nope'")
    sc = _scenario(tmp_path, "badweights", lambda t: t + '\n[options]\nweights = "fp5"\n')
    one_error_line(run(["decode", "--scenario", sc]), 2, f"{sc}: key options.weights (or --weights): 'fp5'")
    r = run(["decode", "--scenario", sc, "--weights", "int8"])  # the flag overrides the file's value
    assert r.exit_code == 0, r.stderr
    # on the command line, the message is click's, naming the flag
    one_error_line(run(["decode", "--eplb", "nope"]), 2, "'--eplb'", "'nope'")


def test_scenario_per_depth_acceptance_list(tmp_path):
    """mtp_accept = [0.9, 0.7] was refused ("a list is not a value") though --mtp-accept 0.9,0.7 works."""
    sc = _scenario(
        tmp_path,
        "perdepth",
        lambda t: t.replace("mtp_accept = 0.7", "mtp_accept = [0.9, 0.7]").replace("mtp = 1", "mtp = 2"),
    )
    r = run(["decode", "--scenario", sc, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    flag = run(["decode", "--scenario", sc, "--mtp-accept", "0.9,0.7", "--format", "json"])
    assert json.loads(r.stdout)["tpot_s"] == json.loads(flag.stdout)["tpot_s"]
    for value, needle in (
        ('[0.9, "x"]', "key deployment.mtp_accept: 'x' is a string"),
        ("[0.9, 1.5]", "key deployment.mtp_accept: 1.5 is out of range"),
        ("[]", "key deployment.mtp_accept: an empty list"),
    ):
        bad = _scenario(
            tmp_path, "badlist", lambda t, v=value: t.replace("mtp_accept = 0.7", f"mtp_accept = {v}")
        )
        one_error_line(run(["decode", "--scenario", bad]), 2, str(bad), needle)
    # other keys still take one value
    bad = _scenario(
        tmp_path, "badbatch", lambda t: t.replace("batch_per_device = 8", "batch_per_device = [8]")
    )
    one_error_line(
        run(["decode", "--scenario", bad]), 2, "key deployment.batch_per_device: a list is not a value"
    )


def test_scenario_path_that_is_a_folder(tmp_path):
    d = tmp_path / "dir.toml"
    d.mkdir()
    one_error_line(run(["decode", "--scenario", d]), 2, f"--scenario: {d} is not a file")


def test_spec_files_not_toml_or_without_kind(tmp_path):
    """A spec-dir file named like the system but not TOML was "has no kind (empty or unfinished?)"; an
    empty spec path was "kind = None"."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cloudmatrix384.toml").write_text("this is = = not toml [\n")
    one_error_line(run(["decode", "--spec-dir", broken]), 2, "cloudmatrix384.toml: not valid TOML", "line 1")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    line = one_error_line(run(["decode", "--system", empty]), 2, f"{empty}: has no kind", 'kind = "system"')
    assert "None" not in line
    one_error_line(run(["decode", "--model", empty]), 2, f"{empty}: has no kind", 'kind = "model"')


def test_serve_moe_tp_that_does_not_divide_names_moe_tp():
    """serve resolves the decode pool before checking it; an EP derived from --moe-tp is still reported as
    --moe-tp (as `cmperf decode --moe-tp 3` does), not as the --ep the user never gave."""
    r = CliRunner().invoke(main, ["serve", "--rate", "2", "--moe-tp", "3"])
    assert r.exit_code == 2 and r.stderr.startswith("cmperf: error: --moe-tp: 3 must divide the 320 ranks"), (
        r.stderr
    )


def test_scenario_unknown_system_or_model_names_the_file_and_key(tmp_path):
    """system = "nope" in a scenario was "--system: unknown system 'nope'", naming no file; so was a model."""
    sc = _scenario(tmp_path, "badsystem", lambda t: t.replace('system = "cloudmatrix384"', 'system = "nope"'))
    line = one_error_line(
        run(["decode", "--scenario", sc]), 2, f"{sc}: key system (or --system): unknown system 'nope'"
    )
    assert "available: " in line and "cloudmatrix384" in line  # the hint the flag's message has
    sc = _scenario(tmp_path, "badmodel", lambda t: t.replace('model = "deepseek-r1"', 'model = "nope"'))
    one_error_line(
        run(["decode", "--scenario", sc]), 2, f"{sc}: key model (or --model): unknown model 'nope'"
    )
    # on the command line it still names the flag
    one_error_line(run(["decode", "--system", "nope"]), 2, "cmperf: error: --system: unknown system 'nope'")


def test_diff_metric_rtol_unknown_name(tmp_path):
    """--metric-rtol NAME=R with a NAME no compared metric has was accepted and did nothing."""
    old, new = ROOT / "tests/golden/scenarios.json", ROOT / "tests/golden/grid.json"
    out = tmp_path / "out.txt"
    r = run(["diff", old, new, "--metric-rtol", "tpot=0.02", "-o", out])
    line = one_error_line(r, 2, "cmperf: error: --metric-rtol tpot:", "'tpot'", "did you mean tpot_s?")
    assert str(old) in line and str(new) in line
    assert not out.exists()
    one_error_line(run(["diff", old, new, "--metric-rtol", "zzzq=1"]), 2, "--metric-rtol zzzq:", "tpot_s")
    for name in ("tpot_s", "cm384-decode-15ms/tpot_s", "ttft*", "*"):  # names, scenario/names, globs
        assert run(["diff", old, new, "--metric-rtol", f"{name}=10", "--format", "json"]).exit_code in (0, 1)


def test_mtp_accept_with_mtp_0_is_refused(tmp_path):
    """--mtp-accept with --mtp 0 was ignored silently (no draft token to accept)."""
    for cmd in (["decode"], ["serve", "--rate", "2"], ["compare"]):
        out = tmp_path / "out.txt"
        r = run([*cmd, "--mtp", "0", "--mtp-accept", "0.8", "-o", out])
        one_error_line(r, 2, "cmperf: error: --mtp-accept: has no effect with --mtp 0", "--mtp 1 or more")
        assert not out.exists()
        assert run([*cmd, "--mtp", "0", "--format", "json"]).exit_code == 0  # the default rate is fine
    # a scenario file with both keys names the file and the key
    sc = _scenario(tmp_path, "mtpoff", lambda t: t.replace("mtp = 1", "mtp = 0"))
    one_error_line(run(["decode", "--scenario", sc]), 2, f"{sc}: key deployment.mtp_accept: has no effect")
