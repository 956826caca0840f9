"""Prediction regression gate: today's predictions against the goldens in tests/golden/.

The goldens are ``cmperf snapshot`` documents written by ``scripts/update_goldens.py`` (every shipped
scenario; every shipped system x model at four decode/prefill operating points). This test regenerates
them with the same code and diffs them with ``cmperf diff --fail-on any`` at a floating-noise tolerance,
so any change that moves a prediction fails here until the goldens are updated on purpose.
"""

import functools
import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
RTOL = "1e-9"  # floating-point noise only: any real change in a prediction is beyond it
HINT = (
    "a change that moves a prediction updates the goldens (python scripts/update_goldens.py) in the same "
    "commit and says why in its message"
)


@functools.cache
def _generator():
    spec = importlib.util.spec_from_file_location("update_goldens", ROOT / "scripts" / "update_goldens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return _generator().generate(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", ["scenarios.json", "grid.json"])
def test_predictions_match_goldens(fresh, name):
    golden = GOLDEN / name
    assert golden.exists(), f"{golden} is missing: run python scripts/update_goldens.py"
    r = CliRunner().invoke(
        main,
        ["diff", str(golden), str(fresh[name]), "--rtol", RTOL, "--fail-on", "any", "--format", "markdown"],
    )
    assert r.exit_code == 0, (
        f"predictions moved against {golden.relative_to(ROOT)} (exit {r.exit_code}):\n{r.stdout}\n"
        f"{r.stderr}\n{HINT}"
    )


def test_goldens_are_deterministic_and_cover_the_grid(fresh):
    """Same inputs, same bytes (sorted keys, 12-digit floats); every shipped system, model and scenario."""
    import json

    gen = _generator()
    assert gen.documents() == {n: p.read_text(encoding="utf-8") for n, p in fresh.items()}
    systems, models = gen.grid_axes()
    assert "cloudmatrix384" in systems and "deepseek-r1" in models
    grid = json.loads(fresh["grid.json"].read_text(encoding="utf-8"))["scenarios"]
    assert len(grid) == len(systems) * len(models) * 4
    assert "decode/cloudmatrix384/deepseek-r1/batch8" in grid
    scen = json.loads(fresh["scenarios.json"].read_text(encoding="utf-8"))["scenarios"]
    assert sorted(scen) == sorted(p.stem for p in gen.scenario_files())


def test_diff_catches_a_moved_prediction(fresh, tmp_path):
    """The gate itself: a 1e-6 relative move of one metric fails the diff."""
    import json

    doc = json.loads(fresh["grid.json"].read_text(encoding="utf-8"))
    case = doc["scenarios"]["decode/cloudmatrix384/deepseek-r1/batch8"]["metrics"]
    case["tpot_s"] *= 1 + 1e-6
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(doc), encoding="utf-8")
    r = CliRunner().invoke(
        main, ["diff", str(fresh["grid.json"]), str(moved), "--rtol", RTOL, "--fail-on", "any"]
    )
    assert r.exit_code == 1, r.output
