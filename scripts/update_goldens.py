"""Regenerate the prediction goldens in ``tests/golden/`` (the regression gate of ``tests/test_golden.py``).

    python scripts/update_goldens.py           # rewrite tests/golden/*.json (idempotent, ~1 s)
    python scripts/update_goldens.py --check   # exit 1 if a golden is out of date, write nothing

Two documents, both in the ``cmperf snapshot`` layout (``{"schema_version", "kind": "snapshot",
"cmperf_version", "scenarios": {id: {"metrics": {...}}}}``) so that ``cmperf diff OLD NEW`` compares them:

* ``scenarios.json``: ``cmperf snapshot`` over every shipped scenario (``scenarios/*.toml``; the
  ``scenarios/baselines/`` files are inputs of ``cmperf compare``, not scenarios of their own);
* ``grid.json``: every system spec in ``hardware/`` x every model in ``models/`` x four operating points
  (decode ``--batch 8`` and ``--batch 64`` at ``--kv-len 4096``; prefill at its defaults and at
  ``--tokens-per-device 8192``), each keyed ``phase/system/model/point`` with a few headline metrics.

Every command runs in-process through ``click.testing.CliRunner`` on ``cmperf.cli.main`` with
``CMPERF_PATH`` removed, so only the shipped spec files count. A grid case that exits 3 (infeasible)
still prints its JSON and is recorded as it is (``feasible`` false, with its numbers); a case that
exits with any other code (bad input, 2) is recorded as ``{"error": "exit N: <first line>"}``, so a case
that starts or stops failing shows up in the diff instead of disappearing; a command that crashes (an
uncaught exception) stops the script with its traceback. A metric missing from a command's JSON is left
out of the case (the diff reports it as removed). Floats go through ``cmperf.render.to_json`` (12
significant digits, sorted keys), the same as ``cmperf snapshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"

DECODE_POINTS = {
    "batch8": ["--batch", "8", "--kv-len", "4096"],
    "batch64": ["--batch", "64", "--kv-len", "4096"],
}
PREFILL_POINTS = {
    "default": [],
    "tokens8192": ["--tokens-per-device", "8192"],
}
DECODE_METRICS = (
    "tpot_s",
    "tokens_per_s_per_device",
    "step_s",
    "lower_tpot_s",
    "upper_tpot_s",
    "hbm_bytes_per_rank",
    "feasible",
)
PREFILL_METRICS = ("tokens_per_s_per_device", "batch_s", "ttft_s", "hbm_bytes_per_rank", "feasible")


def _runner() -> CliRunner:
    return CliRunner(env={"CMPERF_PATH": None})  # None removes the variable: shipped specs only


def _invoke(args: list[str]):
    from cmperf.cli import main

    return _runner().invoke(main, args)


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def scenario_files() -> list[Path]:
    """The shipped scenarios, sorted by name."""
    return sorted((ROOT / "scenarios").glob("*.toml"))


def scenarios_doc(tmp_dir: Path) -> str:
    """``cmperf snapshot`` of every shipped scenario, as the text the command writes."""
    out = Path(tmp_dir) / "scenarios.json"
    r = _invoke(["snapshot", *(str(p) for p in scenario_files()), "-o", str(out)])
    if r.exit_code != 0:
        raise RuntimeError(f"cmperf snapshot exited {r.exit_code}: {r.output}{r.exception or ''}")
    return out.read_text(encoding="utf-8")


def _catalog() -> list[dict]:
    r = _invoke(["specs", "list", "--format", "json"])
    if r.exit_code != 0:
        raise RuntimeError(f"cmperf specs list exited {r.exit_code}: {r.output}")
    return json.loads(r.stdout)["specs"]


def grid_axes() -> tuple[list[str], list[str]]:
    """(system names, model names): the system specs in hardware/ and the model specs in models/."""
    cat = _catalog()

    def shipped(kind: str, folder: str) -> list[str]:
        d = (ROOT / folder).resolve()
        return sorted(s["name"] for s in cat if s["kind"] == kind and Path(s["path"]).resolve().parent == d)

    return shipped("system", "hardware"), shipped("model", "models")


def grid_cases() -> list[tuple[str, str, list[str], tuple[str, ...]]]:
    """(id, phase, argv, metric names) of every grid case, in id order."""
    systems, models = grid_axes()
    cases = []
    for phase, points, metrics in (
        ("decode", DECODE_POINTS, DECODE_METRICS),
        ("prefill", PREFILL_POINTS, PREFILL_METRICS),
    ):
        for system in systems:
            for model in models:
                for point, flags in points.items():
                    argv = [phase, "--system", system, "--model", model, *flags, "--format", "json"]
                    cases.append((f"{phase}/{system}/{model}/{point}", phase, argv, metrics))
    return sorted(cases, key=lambda c: c[0])


def _spec_hash(system: str, model: str) -> str:
    from cmperf import specs

    s, m = specs.load_system(system), specs.load_model(model)
    return specs.spec_hash(s.path, s.chip.path, m.path)


def grid_doc() -> str:
    """The grid document (snapshot layout) as text."""
    from cmperf import __version__, render

    saved = os.environ.pop("CMPERF_PATH", None)  # the spec hashes too: shipped specs only
    try:
        out = {}
        for case_id, phase, argv, metrics in grid_cases():
            r = _invoke(argv)
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise RuntimeError(f"cmperf {' '.join(argv)} crashed") from r.exception  # a bug, not a case
            if r.exit_code in (0, 3):  # 3 = infeasible: the JSON is still printed, with feasible false
                doc = json.loads(r.stdout)
                rec = {k: doc[k] for k in metrics if k in doc}
            else:
                rec = {"error": f"exit {r.exit_code}: {_first_line(r.stderr or r.output)}"}
            out[case_id] = {
                "command": phase,
                "args": argv,
                "spec_hash": _spec_hash(argv[2], argv[4]),
                "metrics": rec,
            }
    finally:
        if saved is not None:
            os.environ["CMPERF_PATH"] = saved
    return render.to_json({"cmperf_version": __version__, "scenarios": out}, "snapshot")


def documents() -> dict[str, str]:
    """{file name: text} of both goldens, freshly predicted."""
    with tempfile.TemporaryDirectory(prefix="cmperf-golden-") as tmp:
        return {"scenarios.json": scenarios_doc(Path(tmp)), "grid.json": grid_doc()}


def generate(out_dir: Path, texts: dict[str, str] | None = None) -> dict[str, Path]:
    """Write scenarios.json and grid.json (``texts``, else freshly predicted) into ``out_dir``; a file whose
    text is unchanged is not rewritten. Returns {file name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in (documents() if texts is None else texts).items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp_path = path.with_suffix(".json.tmp")
            tmp_path.write_text(text, encoding="utf-8")
            tmp_path.replace(path)  # atomic: a reader never sees half a golden
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a golden is out of date; write nothing")
    args = ap.parse_args(argv)
    texts = documents()
    stale = [
        n
        for n, t in texts.items()
        if not (GOLDEN_DIR / n).exists() or (GOLDEN_DIR / n).read_text("utf-8") != t
    ]
    if not args.check:
        generate(GOLDEN_DIR, texts)
    for name, text in texts.items():
        state = ("out of date" if args.check else "updated") if name in stale else "unchanged"
        n = len(json.loads(text)["scenarios"])
        print(f"{(GOLDEN_DIR / name).relative_to(ROOT)}: {n} cases, {state}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
