import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_decode_json_defaults_are_the_paper_setup():
    r = run("decode", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in (
        "tpot_s",
        "tokens_per_s_per_device",
        "step_s",
        "moe_layer_s",
        "batch_per_device",
        "feasible",
        "reasons",
        "hbm_bytes_per_rank",
        "ops",
        "schema_version",
    ):
        assert key in d
    assert d["batch_per_device"] == 96 and d["deployment"]["ep_size"] == 320
    assert {"name", "time_s", "bound"} <= set(d["ops"][0])


def test_decode_json_is_deterministic():
    assert run("decode", "--format", "json").output == run("decode", "--format", "json").output


def test_decode_table_and_markdown():
    r = run("decode", "--batch", "8")
    assert r.exit_code == 0 and "per-op breakdown" in r.output
    md = run("decode", "--format", "markdown").output
    assert md.startswith("# cmperf decode prediction") and "| mla.attention |" in md


def test_prompt_output_len_replace_kv_len():
    d = json.loads(run("decode", "--prompt-len", "4096", "--output-len", "256", "--format", "json").output)
    assert d["deployment"]["kv_len"] == 4096 + 128


def test_comm_json():
    r = run(
        "comm",
        "--system",
        "cloudmatrix384",
        "--op",
        "dispatch",
        "--ep",
        "32",
        "--tokens-per-rank",
        "128",
        "--format",
        "json",
    )
    d = json.loads(r.output)
    assert d["time_s"] == pytest.approx(133e-6, rel=0.10)  # CM384 Table 7
    assert d["bandwidth_bytes_per_s"] == pytest.approx(62e9, rel=0.10)


def test_specs_list_and_show():
    r = run("specs", "list", "--format", "json")
    names = {s["name"] for s in json.loads(r.output)["specs"]}
    assert {"cloudmatrix384", "ascend-910c", "deepseek-r1"} <= names
    r = run("specs", "show", "ascend-910c", "--format", "markdown")
    assert r.exit_code == 0 and "Table 10" in r.output


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["decode", "--system", "nosuch"], 2, "available:"),
        (["decode", "--model", "nosuch"], 2, "available:"),
        (["decode", "--ep", "300"], 2, "--ep"),
        (["decode", "--batch", "-1"], 2, "--batch"),
        (["decode", "--kv-len", "999999"], 2, "context"),
        (["decode", "--devices", "400"], 2, "--devices"),
        (["decode", "--mtp-accept", "1.5"], 2, "--mtp-accept"),
        (["decode", "--weights", "fp8"], 2, "fp8"),
        (["decode", "--batch", "96", "--kv-len", "32768"], 3, "infeasible"),
        (["decode", "--spec-dir", "/nonexistent"], 2, "--spec-dir"),
    ],
)
def test_bad_input_one_line(args, code, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code, r.output
    err = r.stderr if hasattr(r, "stderr") else r.output
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in r.output


def test_malformed_spec_file_via_cli(tmp_path):
    d = tmp_path / "hw"
    d.mkdir()
    (d / "cloudmatrix384.toml").write_text(
        (ROOT / "hardware/cloudmatrix384.toml")
        .read_text()
        .replace("num_devices = { value = 384,", "num_devices = { value = -384,")
    )
    r = CliRunner().invoke(main, ["decode", "--spec-dir", str(d)])
    assert r.exit_code == 2 and "cloudmatrix384.toml: key num_devices" in r.stderr


def _cmperf_imports(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[str]:
    """The cmperf modules an import statement names (the part after ``cmperf.``), relative or absolute.

    ``from .render import x``, ``from . import render``, ``from .. import render`` (in a subpackage),
    ``from cmperf import render``, ``import cmperf.render`` all name ``render``; names that are not modules
    (``from . import __version__``) come back too and match no layer. ``package`` is the importing file's
    package, e.g. ["cmperf"] or ["cmperf", "cli"]."""
    if isinstance(node, ast.Import):
        parts = [a.name.split(".") for a in node.names]
        return [p[1] for p in parts if p[0] == "cmperf" and len(p) > 1]
    if node.level:
        up = node.level - 1
        assert up < len(package), f"{'.'.join(package)}: relative import beyond the cmperf package"
        base = package[: len(package) - up]
    else:
        base = []
    full = base + (node.module.split(".") if node.module else [])
    if full[:1] != ["cmperf"]:
        return []
    if len(full) > 1:  # from .render import x / from cmperf.cli.common import y
        return [full[1]]
    return [a.name for a in node.names]  # from . import render / from cmperf import render


def test_import_direction():
    """Imports only go downward; nothing but cmperf.cli imports cli, click or rich."""
    layers = [
        "units errors domains extras",
        "specs",
        "deployment",
        "graph imbalance",
        "roofline",
        "comm",
        "step memory",
        "decode",
        "prefill",
        "queueing",
        "serving",
        "sizing",
        "search compare",
        "symbolic regress scenario validate points",
        "sensitivity",
        "render report engines plot",
        "sweep",
        "cli",
    ]
    rank = {m: i for i, group in enumerate(layers) for m in group.split()}
    problems = []
    for path in sorted((ROOT / "cmperf").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts  # ("cmperf", "decode") / ("cmperf", "cli", "x")
        package = list(rel[:-1])
        if rel == ("cmperf", "__init__"):
            continue
        mod = rel[1]  # a module's layer; every file of a subpackage (cli) is in the subpackage's layer
        mod = "cli" if mod == "__main__" else mod  # python -m cmperf: the command line's entry point
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _cmperf_imports(node, package):
                if target == "cli" and mod != "cli":
                    problems.append(f"{mod} imports cli (line {node.lineno})")
                elif mod in rank and target in rank and rank[target] > rank[mod]:
                    problems.append(f"{mod} imports {target} (upward, line {node.lineno})")
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative: cmperf's own modules, checked above
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if mod not in ("render", "cli") and n.split(".")[0] in ("click", "rich"):
                    problems.append(f"{mod} imports {n} (line {node.lineno})")
    assert not problems, "\n".join(problems)


# Known exceptions to the rule below, each with its reason.
IMPORT_PROBE_ALLOWED: set[tuple[str, str]] = {
    # optional extras: a missing one becomes one line naming the flag and `pip install 'cmperf[extra]'`
    ("cmperf/extras.py", "except ModuleNotFoundError"),
}


def test_no_silent_import_fallbacks():
    """Every cmperf module is part of every build: an ImportError is a bug that must propagate, not a
    feature switch (`except ImportError: return False`, `importlib.util.find_spec(...) is None`)."""
    found = []
    for path in sorted((ROOT / "cmperf").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for needle in ("except ImportError", "except ModuleNotFoundError", "find_spec("):
                if needle in line and (rel, needle) not in IMPORT_PROBE_ALLOWED:
                    found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "silent import fallbacks; import plainly instead:\n" + "\n".join(found)


def test_decode_does_not_import_heavy_modules():
    code = (
        "import sys; from cmperf.cli import main; "
        "from click.testing import CliRunner; CliRunner().invoke(main, ['decode', '--format', 'json']); "
        "print(sorted(m for m in ('sympy', 'scipy.optimize', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_command_in_readme():
    readme = (ROOT / "README.md").read_text()
    for name, cmd in main.commands.items():
        assert f"cmperf {name}" in readme, f"README does not document `cmperf {name}`"
        for sub in getattr(cmd, "commands", {}):
            assert f"cmperf {name} {sub}" in readme


def test_command_map_matches_modules():
    import importlib
    import pkgutil

    import cmperf.cli as cli

    found = {}
    for m in pkgutil.iter_modules(cli.__path__):
        if m.name.endswith("_cmd"):
            for cmd in importlib.import_module(f"cmperf.cli.{m.name}").COMMANDS:
                found[cmd.name] = m.name
    assert found == cli.COMMAND_MODULES
