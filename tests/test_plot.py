"""CSV tables, `--plot` images, the terminal Pareto chart and the report's Mermaid chart."""

import csv
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf import plot, report
from cmperf.cli import main
from cmperf.cli.common import write_atomic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def pareto_runs():
    """pareto on 64 devices (a smaller search): JSON, CSV and table at 80 columns."""
    args = ("pareto", "--devices", "64")
    js = run(*args, "--format", "json")
    cs = run(*args, "--format", "csv")
    tb = run(*args, env={"COLUMNS": "80"})
    for r in (js, cs, tb):
        assert r.exit_code == 0, r.output
    return json.loads(js.stdout), cs.stdout_bytes.decode(), tb.stdout  # (Result.stdout drops the \r)


def test_pareto_csv_is_the_json_frontier(pareto_runs):
    doc, text, _ = pareto_runs
    assert text.endswith("\r\n")
    rows = rows_of(text)
    front = doc["pareto"]
    assert len(rows) == len(front) >= 10
    assert list(rows[0])[:8] == [
        "devices",
        "ep_size",
        "batch_per_device",
        "microbatches",
        "attention_cube_cores",
        "mtp",
        "tpot_s",
        "tokens_per_s_per_device",
    ]
    for row, rec in zip(rows, front, strict=True):
        assert set(row) == set(rec)
        for k, v in rec.items():
            if v is None:
                assert row[k] == ""  # one microbatch: the cores are not split
            else:
                assert float(row[k]) == v, k  # both carry 12 significant digits
    tpot = [float(r["tpot_s"]) for r in rows]
    tps = [float(r["tokens_per_s_per_device"]) for r in rows]
    assert tpot == sorted(tpot) and tps == sorted(tps)  # a frontier: faster costs throughput
    assert all(int(r["devices"]) <= 64 for r in rows)


def test_terminal_chart_fits_80_columns_and_marks_the_frontier(pareto_runs):
    doc, _, table = pareto_runs
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80
    legend = next(i for i, line in enumerate(lines) if line.startswith("* Pareto frontier"))
    assert lines[legend].startswith(f"* Pareto frontier ({len(doc['pareto'])})")
    assert "· other configurations that fit" in lines[legend]
    axis = next(i for i in range(legend, len(lines)) if "└" in lines[i])
    plot_rows = lines[legend + 2 : axis]
    assert len(plot_rows) == 16
    stars = sum(line.count("*") for line in plot_rows)
    assert 10 <= stars <= len(doc["pareto"])  # points sharing a cell show once
    assert lines[axis + 2].strip() == "TPOT (ms)"
    # the highest frontier point (the most tokens/s) sits in the top data row
    top = max(p["tokens_per_s_per_device"] for p in doc["pareto"])
    y_top = float(next(line for line in plot_rows if "┤" in line).split("┤")[0].replace(",", ""))
    assert top <= y_top
    assert lines[axis + 4].strip() == "frontier"  # then the frontier's table


def test_text_chart_places_points():
    text = plot.text_chart([(10.0, 100.0), (20.0, 200.0)], ([15.0, 15.0], [50.0, 0.0]), width=40, height=5)
    lines = text.splitlines()
    # the legend takes two lines at 40 columns
    assert lines[:3] == [
        "* Pareto frontier (2)",
        "· other configurations that fit (2)",
        "tokens/s per device",
    ]
    assert plot.text_chart([(10.0, 100.0)], ([25.0], [50.0]), width=80).splitlines()[0] == (
        "* Pareto frontier (1)   · other configurations that fit (0)"  # x 25 is beyond the axis (10..20)
    )
    lines = lines[1:]
    grid = lines[2:7]  # y from 200 (top) to 0 (bottom), 5 rows of 50
    assert grid[0] == "200 ┤" + " " * 34 + "*"  # x 20 -> the last of 35 columns
    assert grid[2] == "100 ┤*"  # x 10 -> the first column
    assert grid[3] == "    │" + " " * 17 + "·"  # the cloud: x 15 -> column 17, y 50
    assert grid[4] == "  0 ┤" + " " * 17 + "·"
    assert lines[7] == "    └" + "┬" + "─" * 16 + "┬" + "─" * 16 + "┬"
    assert lines[8].split() == ["10", "15", "20"]
    assert all(len(line) <= 40 for line in lines)


def test_pareto_plot_png_and_deterministic_svg(tmp_path):
    png, svg1, svg2 = tmp_path / "f.png", tmp_path / "a.svg", tmp_path / "b.svg"
    for path in (png, svg1, svg2):
        r = run("pareto", "--phase", "prefill", "--plot", path, "--format", "json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["kind"] == "pareto"  # the image is extra, the output is unchanged
    w, h = png_size(png.read_bytes())
    assert (w, h) == (750, 480)  # 7.5 x 4.8 in at 100 dpi
    assert png.stat().st_size > 10_000
    a = svg1.read_bytes()
    assert a == svg2.read_bytes()  # same inputs, same bytes
    assert a.startswith(b"<?xml") and b"<svg" in a and b"<dc:date>" not in a


def test_optimize_plot_has_both_panels(tmp_path):
    out = tmp_path / "opt.png"
    r = run("optimize", "--devices", "64", "--plot", out, "--format", "json")
    assert r.exit_code == 0, r.output
    assert png_size(out.read_bytes()) == (1500, 480)  # decode and prefill side by side


def test_decode_prefill_compare_plots(tmp_path):
    for args, name in (
        (("decode",), "d.png"),
        (("prefill", "--ops", "all"), "p.svg"),
        (("compare", "--systems", "cloudmatrix384,dgx-h800"), "c.png"),
    ):
        out = tmp_path / name
        r = run(*args, "--plot", out, "--format", "json")
        assert r.exit_code == 0, r.output
        data = out.read_bytes()
        assert data.startswith(PNG_MAGIC) if name.endswith(".png") else data.startswith(b"<?xml")
    # one bar per op: 12 by default; the figure grows with the bars
    assert png_size((tmp_path / "d.png").read_bytes())[1] == round(100 * (1.2 + 0.28 * 12))


@pytest.mark.parametrize("bad", ["x.pdf", "x", "x.png.txt"])
def test_plot_suffix_is_one_line_exit_2(tmp_path, bad):
    out = tmp_path / bad
    r = run("decode", "--plot", out)
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cmperf: error: --plot:")
    assert ".png or .svg" in r.stderr and not r.stdout
    assert list(tmp_path.iterdir()) == []


def test_plot_missing_folder_and_missing_extra(tmp_path):
    r = run("decode", "--plot", tmp_path / "no" / "x.png")
    assert r.exit_code == 2 and "--plot: folder" in r.stderr
    code = "import sys; sys.modules['matplotlib'] = None; from cmperf.cli import main; main()"
    p = subprocess.run(
        [sys.executable, "-c", code, "decode", "--plot", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        env={**os.environ, "CMPERF_NO_PROGRESS": "1"},
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        "cmperf: error: --plot needs the optional package 'matplotlib': pip install 'cmperf[plot]'"
    )
    assert not p.stdout and not (tmp_path / "x.png").exists()


def test_serve_size_csv_is_the_json_candidates():
    js = run("serve", "--size", "--format", "json")
    cs = run("serve", "--size", "--format", "csv")
    assert js.exit_code == cs.exit_code == 0, cs.output
    doc, rows = json.loads(js.stdout), rows_of(cs.stdout)
    assert list(rows[0]) == [
        "rank",
        "best",
        "prefill_devices",
        "decode_devices",
        "ttft_slo_rps",
        "tpot_slo_rps",
        "goodput_rps",
        "goodput_rps_per_device",
    ]
    assert len(rows) == len(doc["candidates"])
    for i, (row, c) in enumerate(zip(rows, doc["candidates"], strict=True)):
        assert int(row["rank"]) == i + 1
        for k, v in c.items():
            assert float(row[k]) == v, k
    best = [r for r in rows if r["best"] == "true"]
    assert len(best) == 1 and int(best[0]["prefill_devices"]) == doc["best"]["prefill_devices"] == 304
    assert int(best[0]["decode_devices"]) == doc["best"]["decode_devices"] == 72


def test_serve_csv_without_size_is_exit_2():
    r = run("serve", "--rate", "40", "--format", "csv")
    assert r.exit_code == 2 and r.stderr.startswith("cmperf: error: --format csv:") and not r.stdout


def test_validate_csv_is_the_json_points():
    js, cs = run("validate", "--format", "json"), run("validate", "--format", "csv")
    assert js.exit_code == cs.exit_code
    pts, rows = json.loads(js.stdout)["points"], rows_of(cs.stdout)
    assert list(rows[0]) == [
        "id",
        "unit",
        "published",
        "predicted",
        "error",
        "tolerance",
        "status",
        "source",
        "note",
    ]
    assert [r["id"] for r in rows] == [p["id"] for p in pts] and len(rows) == 17
    for row, p in zip(rows, pts, strict=True):
        assert float(row["published"]) == p["published"] and float(row["predicted"]) == p["predicted"]
        assert row["status"] == p["status"] and row["source"] == p["source"]  # commas quoted
    d50 = next(r for r in rows if r["id"] == "decode-50ms.tokens_per_s")
    assert float(d50["published"]) == 1943 and abs(float(d50["predicted"]) - 1940) < 1


def test_write_atomic_writes_through_a_fifo(tmp_path):
    """-o /dev/null or a FIFO: written through, never replaced by a regular file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(Path(fifo).read_bytes()))
    reader.start()
    write_atomic(str(fifo), b"abc")
    reader.join(5)
    assert got == [b"abc"] and fifo.is_fifo()


def test_report_chart_is_numeric_with_slo_and_point():
    sweep = {
        "batch": [8.0, 64.0, 96.0, 256.0, 384.0],
        "tpot_s": [0.0170, 0.0400, 0.0495, 0.0859, 0.165],
        "tokens_per_s_per_device": [470.0, 1600.0, 1940.0, 2240.0, 2324.0],
        "feasible": [True, True, True, True, False],
    }
    g = report.chart_grid(sweep, 0.05, (0.0495, 1940.0))
    assert (g["lo_ms"], g["hi_ms"]) == (17.0, 85.9)  # the feasible TPOTs, not the one over HBM
    assert len(g["x_ms"]) == report.CHART_POINTS and g["x_ms"][1] - g["x_ms"][0] == pytest.approx(68.9 / 60)
    assert g["x_ms"][g["slo_i"]] == pytest.approx(50.0, abs=0.6)
    assert g["x_ms"][g["point_i"]] == pytest.approx(49.5, abs=0.6) and g["point_i"] != g["slo_i"]
    assert g["y"][0] == 470.0 and g["y"][-1] == 2240.0
    text = report.mermaid_chart(sweep, 0.05, (0.0495, 1940.0))
    assert 'x-axis "TPOT (ms)" 17.0 --> 85.9' in text and 'y-axis "tokens/s per device" 0 --> 2500' in text
    bars = [line for line in text.splitlines() if line.startswith("    bar [")]
    assert len(bars) == 2
    for line, value, i in zip(bars, ("2500", "1940"), (g["slo_i"], g["point_i"]), strict=True):
        vals = line.removeprefix("    bar [").removesuffix("]").split(", ")
        assert vals[i] == value and set(vals[:i] + vals[i + 1 :]) == {"-2500"}  # no 0 stubs
    caption = report.chart_caption(sweep, 0.2, None)
    assert "TPOT SLO 200.00 ms: outside the swept TPOT range, not drawn." in caption
