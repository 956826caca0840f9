"""A single `cmperf decode` pays only for what it runs (issue 18: <= 1.3x the import floor, scripts/bench.py).

The program's decode path imports none of the heavy optional libraries nor cmperf's other subsystems; a
spec named like its file is found by reading that one file; the CLI's collector settings (off while a
command runs, cmperf.cli) leave a process that runs commands in-process (tests) as it found it. Nothing
here is timed: each test checks what was imported, read or set.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cmperf import specs
from cmperf.cli import main
from cmperf.errors import CmperfError

#: Never imported by `cmperf decode`: optional heavy libraries and the subsystems of other commands.
NOT_ON_DECODE = (
    "sympy scipy matplotlib pyarrow dask hypothesis rich pandas numpy.ma cmperf.report cmperf.plot "
    "cmperf.sweep cmperf.symbolic cmperf.sensitivity cmperf.compare cmperf.search cmperf.serving "
    "cmperf.aggregated cmperf.hf cmperf.prefill cmperf.sizing cmperf.queueing cmperf.scenario "
    "cmperf.runtime"
).split()

# `python -m cmperf ARGS` in a fresh interpreter (runpy makes it the program, as the console script is),
# then what it imported and whether the CLI took itself for the program, as JSON on stderr.
PROGRAM = """
import json, runpy, sys
sys.argv = ["cmperf", *sys.argv[1:]]
try:
    runpy.run_module("cmperf", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
import cmperf.cli
sys.stderr.write(json.dumps({"code": code, "program": cmperf.cli._PROGRAM, "modules": sorted(sys.modules)}))
"""


def _run_program(*args: str) -> tuple[str, dict]:
    r = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, check=True)
    return r.stdout, json.loads(r.stderr)


def _under(modules: list[str], name: str) -> list[str]:
    return [m for m in modules if m == name or m.startswith(name + ".")]


def test_decode_imports_only_its_own_path():
    out, info = _run_program("decode", "--format", "json")
    assert info["code"] == 0 and info["program"] is True
    assert json.loads(out)["kind"] == "decode"
    assert "cmperf.decode" in info["modules"]  # (the check below looks at the run that predicted)
    imported = [m for name in NOT_ON_DECODE for m in _under(info["modules"], name)]
    assert imported == [], f"`cmperf decode` imported {imported}"


def test_plot_is_imported_when_a_plot_is_asked_for(tmp_path):
    pytest.importorskip("matplotlib")
    _, info = _run_program("decode", "--plot", str(tmp_path / "ops.svg"))
    assert info["code"] == 0 and "cmperf.plot" in info["modules"]
    assert (tmp_path / "ops.svg").read_bytes().lstrip().startswith(b"<")


def test_a_spec_named_like_its_file_reads_that_file_alone(monkeypatch):
    read = []
    head = specs._head
    monkeypatch.setattr(specs, "_head", lambda path: read.append(os.path.basename(path)) or head(path))
    assert specs.find("cloudmatrix384", "system").name == "cloudmatrix384.toml"
    assert specs.find("ascend-910c", "chip").name == "ascend-910c.toml"
    assert specs.find("deepseek-r1", "model").name == "deepseek-r1.toml"
    assert read == ["cloudmatrix384.toml", "ascend-910c.toml", "deepseek-r1.toml"]
    read.clear()
    assert specs.find("deepseek-v3", "model").name == "deepseek-r1.toml"  # an alias: every header
    assert len(read) > 10


def test_an_earlier_folder_still_shadows_by_name(tmp_path):
    """A --spec-dir file whose name (not file stem) is the built-in's wins over the built-in file."""
    text = specs.find("deepseek-r1", "model").read_text()
    (tmp_path / "my-r1.toml").write_text(text)
    assert specs.find("deepseek-r1", "model", (str(tmp_path),)) == tmp_path / "my-r1.toml"


def test_a_file_named_like_the_spec_but_of_another_kind_is_an_error(tmp_path):
    (tmp_path / "cloudmatrix384.toml").write_text('name = "cloudmatrix384"\nkind = "model"\n')
    with pytest.raises(CmperfError, match="named like the system 'cloudmatrix384'"):
        specs.find("cloudmatrix384", "system", (str(tmp_path),))


@pytest.mark.parametrize(
    "args", [["decode", "--format", "json"], ["serve", "--rate", "40", "--format", "json"]]
)
def test_commands_run_in_process_leave_the_collector_as_they_found_it(args):
    assert gc.isenabled()
    assert CliRunner().invoke(main, args).exit_code == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        assert CliRunner().invoke(main, args).exit_code == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
