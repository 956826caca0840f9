"""Issue 13 item 4: `cmperf validate --points FILE.csv` (cmperf.points, docs/points.md) and the
aiconfigurator adapter (scripts/aic_points.py).

Every CSV here is SYNTHETIC: made-up ids and measured numbers written by the tests, never rows of a
measured data set (those stay outside the repository)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import decode, points
from cmperf.cli import main
from cmperf.specs import load_model, load_system

ROOT = Path(__file__).resolve().parent.parent
HEADER = "id,system,model,backend,mode,attn_tp,attn_dp,moe_tp,moe_ep,workers,batch_per_rank,concurrency,isl,osl,weights,experts_dtype,tpot_s"  # noqa: E501

#: SYNTHETIC rows (made-up measured TPOTs), one per outcome.
SYNTHETIC = {
    "syn-h200-ep8": "hgx-h200,deepseek-r1,trtllm,disagg,1,8,1,8,1,16,,1024,1024,fp8,fp8,0.030",
    "syn-h200-conc": "hgx-h200,deepseek-r1,trtllm,disagg,1,8,1,8,2,,256,1024,1024,fp8,fp8,0.025",
    "syn-b200-ep16": "hgx-b200,deepseek-r1,sglang,disagg,1,16,1,16,1,64,,1024,1024,fp8,fp4,0.020",
    "syn-agg": "hgx-h200,deepseek-r1,trtllm,agg,8,1,8,1,,16,,1024,1024,fp8,fp8,0.010",
    "syn-tp": "hgx-h200,deepseek-r1,trtllm,disagg,8,1,1,8,1,16,,1024,1024,fp8,fp8,0.010",
    "syn-moetp": "hgx-h200,deepseek-r1,sglang,disagg,1,8,2,4,1,16,,1024,1024,fp8,fp8,0.010",
    "syn-nobatch": "hgx-h200,deepseek-r1,sglang,disagg,1,8,1,8,,,256,1024,1024,fp8,fp8,0.010",
    "syn-nosys": "h999_sxm,deepseek-r1,sglang,disagg,1,8,1,8,1,16,,1024,1024,fp8,fp8,0.010",
    "syn-fp4-hopper": "hgx-h200,deepseek-r1,sglang,disagg,1,8,1,8,1,16,,1024,1024,fp8,fp4,0.010",
    "syn-too-big": "hgx-h200,deepseek-r1,sglang,disagg,1,256,1,256,1,16,,1024,1024,fp8,fp8,0.010",
}
REASONS = {
    "syn-nobatch": "incomplete",
    "syn-nosys": "unknown-system",
    "syn-fp4-hopper": "dtype",
    "syn-too-big": "invalid",
}


def write(tmp_path: Path, rows: dict[str, str] = SYNTHETIC, header: str = HEADER) -> Path:
    p = tmp_path / "synthetic-points.csv"
    p.write_text(header + "\n" + "".join(f"{k},{v}\n" for k, v in rows.items()), encoding="utf-8")
    return p


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return {r.id: r for r in points.evaluate(points.read(write(tmp_path_factory.mktemp("pts"))))}


def test_posed_row_is_what_cmperf_decode_prints(results):
    """The EP8 row predicts exactly `cmperf decode` with the row's flags; error = predicted / measured - 1."""
    r = run(
        "decode", "--system", "hgx-h200", "--devices", "8", "--ep", "8", "--batch", "16", "--prompt-len",
        "1024", "--output-len", "1024", "--mtp", "0", "--weights", "fp8", "--framework", "tensorrt-llm",
        "--format", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    row = results["syn-h200-ep8"]
    assert row.status == "posed" and row.reason == ""
    assert (row.devices, row.ep_size, row.batch_per_rank, row.batch_range) == (8, 8, 16.0, "9-32")
    assert row.predicted_tpot_s == pytest.approx(doc["tpot_s"], rel=1e-12)
    assert row.error == pytest.approx(doc["tpot_s"] / 0.030 - 1.0, abs=1e-11)  # JSON keeps ~12 digits
    heavy = max(doc["ops"], key=lambda o: o["total_s"])
    assert row.binding_op == f"{heavy['name']} ({heavy['bound']})"
    assert row.microbatches == doc["deployment"]["microbatches"]


def test_batch_from_concurrency_and_datatypes(results, tmp_path):
    """concurrency 256 / (attn_dp 8 x workers 2) = 16 per rank: the same deployment as the EP8 row; the
    B200 row carries FP4 experts to the prediction."""
    a, b = results["syn-h200-conc"], results["syn-h200-ep8"]
    assert a.batch_per_rank == 16.0 and a.predicted_tpot_s == b.predicted_tpot_s
    assert a.error == pytest.approx(b.predicted_tpot_s / 0.025 - 1.0)
    system, model = load_system("hgx-b200"), load_model("deepseek-r1")
    (pt,) = points.read(write(tmp_path, {"syn-b200-ep16": SYNTHETIC["syn-b200-ep16"]}))
    dep, why, note = points.pose(pt, system, model)
    assert why == note == "" and dep.precision.experts == "fp4" and dep.precision.gemm == "fp8"
    assert (dep.devices, dep.ep_size, dep.batch_per_device, dep.mtp) == (16, 16, 64.0, 0)
    assert (dep.kv_len, dep.kv_capacity_len) == (1536.0, 2048.0)
    assert results["syn-b200-ep16"].predicted_tpot_s == decode.predict(system, model, dep).tpot_s


def test_skipped_rows_name_their_reason(results):
    for rid, reason in REASONS.items():
        r = results[rid]
        assert (r.status, r.reason, r.predicted_tpot_s, r.error) == ("skipped", reason, None, None), rid
    assert results["syn-too-big"].note.startswith("--devices: 256 is outside 1..128")
    assert points.skipped(list(results.values())) == {
        "unknown-system": 1, "incomplete": 1, "dtype": 1, "invalid": 1,
    }  # fmt: skip


def test_tp_rows_skip_until_decode_models_tp(tmp_path, monkeypatch):
    """Attention-TP and MoE-TP rows are posed when decode models them (``decode.parallel_of``), else
    skipped with their reason; the TP8 disagg row's batch per device is 16 x attn_dp 1 / 8 devices."""
    rows = {k: SYNTHETIC[k] for k in ("syn-tp", "syn-moetp", "syn-agg")}
    system, model = load_system("hgx-h200"), load_model("deepseek-r1")
    pts = points.read(write(tmp_path, rows))
    if points.tp_modelled():
        dep, why, _ = points.pose(pts[0], system, model)
        assert why == "" and (dep.devices, dep.attn_tp, dep.moe_tp, dep.ep_size) == (8, 8, 1, 8)
        assert dep.batch_per_device == 2.0
        dep, why, _ = points.pose(pts[1], system, model)
        assert why == "" and (dep.attn_tp, dep.moe_tp, dep.ep_size, dep.batch_per_device) == (1, 2, 4, 16.0)
    monkeypatch.setattr(points, "tp_modelled", lambda: False)
    assert [r.reason for r in points.evaluate(pts)] == ["attention-tp", "moe-tp", "attention-tp"]


def test_group_statistics_worst_and_repeats(results):
    """Median / p90 (linear) of |error| and the median signed error, on made-up errors."""
    base = results["syn-h200-ep8"]
    errs = [0.1, -0.2, 0.3, 0.05]
    rs = [replace(base, id=f"e{i}", row=i, error=e) for i, e in enumerate(errs)]
    rs.append(replace(results["syn-nobatch"], id="syn-agg-skipped", mode="agg"))
    gs = {(g.system, g.mode, g.batch_range): g for g in points.groups(rs)}
    g = gs["hgx-h200", "disagg", "9-32"]
    assert (g.posed, g.skipped) == (4, 0)
    assert g.median_abs_error == pytest.approx(0.15)
    assert g.p90_abs_error == pytest.approx(0.27)  # 0.2 + 0.7 x (0.3 - 0.2)
    assert g.median_error == pytest.approx(0.075)
    agg = gs["hgx-h200", "agg", "all"]
    assert (agg.posed, agg.skipped, agg.skipped_by_reason, agg.median_abs_error) == (
        0,
        1,
        {"incomplete": 1},
        None,
    )
    assert ("hgx-h200", "agg", "?") not in gs  # a batch range with nothing posed has no line
    assert gs["all", "all", "all"].posed == 4
    assert [r.id for r in points.worst(rs, 2)] == ["e2", "e1"]
    assert points.batch_range(8) == "1-8" and points.batch_range(513) == ">512"
    assert points.batch_range(None) == "?"


def test_errors_by_stack_version(results):
    """One line per (system, backend, mode, version) with a posed row, its own statistics; a row that
    states no version is grouped as "not stated"; skipped rows count nowhere."""
    base = results["syn-h200-ep8"]
    rs = [
        replace(base, id="a", error=0.1, backend_version="1.2.0rc6.post3"),
        replace(base, id="b", error=-0.3, backend_version="1.2.0rc6.post2"),
        replace(base, id="c", error=-0.1, backend_version="1.2.0rc6.post2"),
        replace(base, id="d", error=0.5),
        replace(base, id="e", error=None, backend_version="1.2.0rc6.post3"),
    ]
    vs = {v.backend_version: v for v in points.versions(rs)}
    assert list(vs) == ["", "1.2.0rc6.post2", "1.2.0rc6.post3"]
    post2 = vs["1.2.0rc6.post2"]
    assert (post2.posed, post2.median_error, post2.median_abs_error) == (
        2,
        pytest.approx(-0.2),
        pytest.approx(0.2),
    )
    assert vs["1.2.0rc6.post3"].posed == 1
    assert points.version_rows([vs[""]])[0][3] == "not stated"


def test_repeats_are_the_noise_floor(tmp_path):
    rows = {
        "syn-a": SYNTHETIC["syn-h200-ep8"],
        "syn-b": SYNTHETIC["syn-h200-ep8"].replace("0.030", "0.045"),
        "syn-c": SYNTHETIC["syn-nobatch"],  # no batch: not a whole configuration
        "syn-d": SYNTHETIC["syn-nobatch"].replace("0.010", "0.020"),
    }
    reps = points.repeats(points.read(write(tmp_path, rows)))
    assert [(r.ids, r.min_tpot_s, r.max_tpot_s) for r in reps] == [(["syn-a", "syn-b"], 0.030, 0.045)]
    assert reps[0].spread == pytest.approx(0.5)


def test_cli_json_table_markdown_csv(tmp_path):
    path = write(tmp_path)
    r = run("validate", "--points", path, "--format", "json")
    assert r.exit_code == 0, r.output
    from test_fuzz_cli import check_json  # the documented nulls (docs/json.md) and finite numbers

    check_json(r.stdout, "validate --points")
    doc = json.loads(r.stdout)
    assert [p["id"] for p in doc["points"]] == list(SYNTHETIC)
    posed = 6 if points.tp_modelled() else 3
    assert doc["skipped"]["incomplete"] == 1 and len(doc["worst"]) == posed
    assert r.stderr.startswith(f"validate: {posed} posed, {10 - posed} skipped; TPOT median |error|")
    table = run("validate", "--points", path)
    assert table.exit_code == 0
    assert [v["backend_version"] for v in doc["versions"]] == [""] * len(doc["versions"])
    titles = ("TPOT error by group", "by stack version", f"worst {posed} rows by", "skipped rows by reason")
    for title in (*titles, "syn-h200-ep8"):
        assert title in table.stdout
    md = run("validate", "--points", path, "--format", "markdown")
    assert (
        md.stdout.startswith("# cmperf validate --points synthetic-points.csv")
        and f"\n## worst {posed}" in md.stdout
    )
    csv_out = run("validate", "--points", path, "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("id,row,system,model,backend,mode,batch_per_rank")
    assert len(csv_out.splitlines()) == 1 + len(SYNTHETIC)
    assert run("validate", "--points", path, "--format", "json").stdout == r.stdout  # deterministic


@pytest.mark.parametrize(
    "header,row,message",
    [
        (HEADER + ",tpot_ms", ",1", "header: unknown column 'tpot_ms'"),
        (HEADER.replace(",tpot_s", ""), "", "header: required column tpot_s is missing"),
        (HEADER, "", "row 1: 16 cells, the header has 17"),
    ],
)
def test_bad_header_or_shape_is_one_line_exit_2(tmp_path, header, row, message):
    line = SYNTHETIC["syn-h200-ep8"]
    if "tpot_s is missing" in message:
        line = line.rsplit(",", 1)[0]
    if "16 cells" in message:
        line = line.rsplit(",", 1)[0]
    p = write(tmp_path, {"syn-x": line + row}, header)
    r = run("validate", "--points", p)
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cmperf: error: {p}: {message}")


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("batch_per_rank", "lots", "'lots' is not a number"),
        ("batch_per_rank", "nan", "'nan' is not a finite number"),
        ("moe_ep", "8.5", "'8.5' is not a whole number >= 1"),
        ("isl", "0", "'0' is not a whole number >= 1"),
        ("tpot_s", "-0.01", "'-0.01' must be > 0"),
        ("tpot_s", "", "empty; this column is required"),
        ("mode", "hybrid", "'hybrid' is not one of disagg, agg"),
        ("weights", "fp5", "unknown datatype 'fp5'"),
        ("attn_dp", "4", "attn_tp x attn_dp = 4 ranks but moe_tp x moe_ep = 8"),
    ],
)
def test_bad_cell_names_file_row_and_column(tmp_path, column, value, message):
    cols = HEADER.split(",")[1:]
    cells = SYNTHETIC["syn-h200-ep8"].split(",")
    cells[cols.index(column)] = value
    p = write(tmp_path, {"syn-ok": SYNTHETIC["syn-h200-conc"], "syn-bad": ",".join(cells)})
    r = run("validate", "--points", p)
    assert r.exit_code == 2 and r.stdout == ""
    col = "moe_ep" if column == "attn_dp" else column
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cmperf: error: {p}: row 2, column {col}: {message}")


def test_bad_files_exit_2(tmp_path):
    p = write(tmp_path, {"syn-a": SYNTHETIC["syn-agg"], "syn-a ": SYNTHETIC["syn-agg"]})
    r = run("validate", "--points", p)
    assert r.exit_code == 2 and r.stderr.strip().endswith("row 2, column id: 'syn-a' is given twice")
    missing = run("validate", "--points", tmp_path / "nope.csv")
    assert missing.exit_code == 2 and "nope.csv: cannot read" in missing.stderr
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00id")
    r = run("validate", "--points", binary)
    assert (
        r.exit_code == 2
        and r.stderr.strip() == f"cmperf: error: {binary}: not UTF-8 text; save the CSV as UTF-8"
    )


def test_doc_lists_every_column_and_reason():
    text = (ROOT / "docs/points.md").read_text(encoding="utf-8")
    for col in points.COLUMNS:
        assert f"| `{col}` |" in text, col
    for reason in points.REASONS:
        assert f"| `{reason}` |" in text, reason


def _adapter():
    spec = importlib.util.spec_from_file_location("aic_points", ROOT / "scripts" / "aic_points.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


AIC_COLUMNS = (
    "id,silicon_data_source,backend,backend_version,model_path,system,precision,mode,isl,osl,gemm_quant_mode,"
    "moe_quant_mode,batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size,prefill_batch_size,"
    "prefill_num_workers,prefill_tp_size,prefill_pp_size,prefill_attention_dp_size,prefill_moe_tp_size,"
    "prefill_moe_ep_size,decode_batch_size,decode_num_workers,decode_tp_size,decode_pp_size,"
    "decode_attention_dp_size,decode_moe_tp_size,decode_moe_ep_size,silicon_ttft_ms,silicon_tpot_ms"
).split(",")


def test_adapter_merges_duplicates_and_maps_names(tmp_path):
    """SYNTHETIC rows in aiconfigurator's layout: one measurement in two dumps (the db-dump copy wins),
    one more on gb300 with NVFP4."""
    base = dict.fromkeys(AIC_COLUMNS, "")
    base.update(backend="trtllm", backend_version="9.9", model_path="deepseek-ai/DeepSeek-R1", isl="1024",
                osl="1024", mode="disagg", precision="fp8", gemm_quant_mode="fp8", moe_quant_mode="fp8_block",
                silicon_ttft_ms="500", silicon_tpot_ms="20")  # fmt: skip
    dump = {**base, "id": "syn-1", "system": "b200_sxm", "silicon_data_source": "source_file=x.csv; "
            "silicon_concurrency=64", "decode_tp_size": "8", "decode_attention_dp_size": "1",
            "decode_moe_tp_size": "1", "decode_moe_ep_size": "8"}  # fmt: skip
    db = {**dump, "id": "syn-0", "silicon_data_source": "db-dump/x; silicon_concurrency=64",
          "decode_tp_size": "1", "decode_attention_dp_size": "8", "decode_batch_size": "8",
          "decode_num_workers": "1"}  # fmt: skip
    fp4 = {**db, "id": "syn-2", "system": "gb300", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4",
           "silicon_tpot_ms": "12"}  # fmt: skip
    src = tmp_path / "aic.csv"
    import csv

    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=AIC_COLUMNS)
        w.writeheader()
        w.writerows([dump, db, fp4])
    out = tmp_path / "points.csv"
    assert _adapter().main([str(src), str(out)]) == 0
    pts = {p.id: p for p in points.read(out)}
    assert list(pts) == ["syn-0", "syn-2"]
    a, b = pts["syn-0"], pts["syn-2"]
    assert (a.system, a.copies, a.attn_tp, a.attn_dp, a.moe_ep, a.batch_per_rank, a.concurrency) == (
        "hgx-b200",
        2,
        1,
        8,
        8,
        8.0,
        64,
    )
    assert (a.weights, a.experts_dtype, a.tpot_s, a.ttft_s, a.mtp) == ("fp8", "fp8", 0.020, 0.5, None)
    assert (b.system, b.weights, b.experts_dtype, b.copies) == ("gb300-nvl72", "nvfp4", "nvfp4", 1)
    results = points.evaluate(list(pts.values()))
    assert [r.status for r in results] == ["posed", "posed"]
    assert np.isfinite([r.error for r in results]).all()


def test_agg_row_is_a_closed_loop_on_an_aggregated_engine(tmp_path):
    """A SYNTHETIC aggregated row (DP8 + EP8 on hgx-h200, 64 users, 1K/1K, made-up TPOT 30 ms and TTFT
    500 ms) predicts what ``aggregated.evaluate`` gives for a closed loop of 64 on that engine: TPOT its
    mean, TTFT its first wave (the users started at once), the steady state's TTFT beside it."""
    from cmperf import aggregated, serving

    header = HEADER + ",ttft_s"
    rows = {"syn-agg-dp": "hgx-h200,deepseek-r1,trtllm,agg,1,8,1,8,,8,64,1024,1024,fp8,fp8,0.030,0.5"}
    (r,) = points.evaluate(points.read(write(tmp_path, rows, header)))
    assert (r.status, r.mode, r.devices, r.ep_size, r.concurrency) == ("posed", "agg", 8, 8, 64.0)
    system, model = load_system("hgx-h200"), load_model("deepseek-r1")
    (pt,) = points.read(write(tmp_path, rows, header))
    dep, _, _ = points.pose(pt, system, model)
    wl = serving.Workload(rate_per_s=None, concurrency=64, prompt_len=1024, output_len=1024)
    res = aggregated.evaluate(system, model, wl, aggregated.Engine(dep), limits=False)
    assert r.predicted_tpot_s == pytest.approx(res.tpot_s["mean"], rel=1e-12)
    assert r.predicted_ttft_s == pytest.approx(res.ttft_first_wave_s, rel=1e-12)
    assert r.ttft_error == pytest.approx(res.ttft_first_wave_s / 0.5 - 1, rel=1e-12)
    assert r.predicted_ttft_steady_s == pytest.approx(res.ttft_s["mean"], rel=1e-12)
    assert 0 < r.prefill_share < 1 and r.binding_op
    g = next(g for g in points.groups([r]) if g.mode == "agg" and g.batch_range == "all")
    assert g.ttft_posed == 1 and g.ttft_median_abs_error == pytest.approx(abs(r.ttft_error))
    assert "TTFT (1 aggregated rows, first wave)" in points.summary_line([r])


def test_adapter_undoes_the_newer_dumps_agg_encoding(tmp_path):
    """SYNTHETIC agg rows in aiconfigurator's layout: the 2026-04-06 / db-dump encoding of a ``tp8_ep8``
    configuration on an 8-GPU system, (tp 64, dp 1, moe_tp 8, moe_ep 8) and (1, 64, 8, 8), maps back to
    the 2026-03-25 file's (8, 1, 1, 8) and (1, 8, 1, 8) with the batch per rank concurrency / dp; a plain
    TP8 row, a row with both tp and dp above 1 (not that encoding) and a disagg row with equal MoE degrees
    keep their columns."""
    import csv

    base = dict.fromkeys(AIC_COLUMNS, "")
    base.update(backend="trtllm", backend_version="9.9", system="b200_sxm", isl="1024", osl="1024",
                mode="agg", precision="fp8", gemm_quant_mode="fp8", moe_quant_mode="fp8",
                silicon_ttft_ms="500",
                silicon_data_source="db-dump/x; silicon_concurrency=256")  # fmt: skip
    tp = {**base, "id": "syn-tp", "tp_size": "64", "attention_dp_size": "1", "moe_tp_size": "8",
          "moe_ep_size": "8", "batch_size": "256", "silicon_tpot_ms": "20"}  # fmt: skip
    dp = {**tp, "id": "syn-dp", "tp_size": "1", "attention_dp_size": "64", "batch_size": "4",
          "silicon_tpot_ms": "21"}  # fmt: skip
    plain = {**tp, "id": "syn-plain", "tp_size": "8", "moe_tp_size": "8", "moe_ep_size": "1",
             "silicon_tpot_ms": "22"}  # fmt: skip
    both = {**tp, "id": "syn-both", "tp_size": "4", "attention_dp_size": "4", "moe_tp_size": "4",
            "moe_ep_size": "4", "silicon_tpot_ms": "24"}  # fmt: skip
    dis = {**base, "id": "syn-dis", "mode": "disagg", "decode_tp_size": "16", "decode_attention_dp_size": "1",
           "decode_moe_tp_size": "4", "decode_moe_ep_size": "4", "decode_batch_size": "8",
           "decode_num_workers": "1", "silicon_tpot_ms": "23"}  # fmt: skip
    src, out = tmp_path / "aic.csv", tmp_path / "points.csv"
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=AIC_COLUMNS)
        w.writeheader()
        w.writerows([tp, dp, plain, both, dis])
    assert _adapter().main([str(src), str(out)]) == 0
    got = {p.id: (p.attn_tp, p.attn_dp, p.moe_tp, p.moe_ep, p.batch_per_rank) for p in points.read(out)}
    assert got == {
        "syn-tp": (8, 1, 1, 8, 256.0),
        "syn-dp": (1, 8, 1, 8, 32.0),
        "syn-plain": (8, 1, 8, 1, 256.0),
        "syn-both": (4, 4, 4, 4, 256.0),
        "syn-dis": (16, 1, 4, 4, 8.0),
    }
