"""`cmperf sweep` (issue 18): a sweep file's cells equal the direct library calls and the single commands,
the table is byte-identical across executors and runs, Parquet round-trips, bad files are one line naming
file and key, a failing cell is a row, and 1,000 cells run on 2 local processes."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import cmperf
from cmperf import decode, prefill, serving, sweep
from cmperf.cli import main
from cmperf.deployment import Deployment, kv_lengths

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text, encoding="utf-8")
    return p


DECODE = """\
command = "decode"
system = ["cloudmatrix384", "dgx-h800"]
[deployment]
batch_per_device = [8, 96]
[workload]
prompt_len = 4096
output_len = [256, 1024]
[frameworks.cm-infer]
microbatches = 2
mtp = 1
[frameworks.no-overlap]
microbatches = 1
mtp = 0
"""


@pytest.fixture(scope="module")
def specs():
    return {n: cmperf.load_system(n) for n in ("cloudmatrix384", "dgx-h800")}, cmperf.load_model(
        "deepseek-r1"
    )


def test_decode_cells_equal_decode_predict_in_cell_order(tmp_path, specs):
    systems, model = specs
    sw = sweep.load(str(write(tmp_path, "dec", DECODE)))
    assert sw.size == 16 and list(sw.axes) == [
        "system",
        "model",
        "deployment.batch_per_device",
        "workload.prompt_len",
        "workload.output_len",
        "framework",
    ]
    rows = sweep.run(sw, jobs=1)
    assert [r["cell"] for r in rows] == list(range(16))
    # the last axis (framework) varies fastest, the first (system) slowest
    assert [r["framework"] for r in rows[:2]] == ["cm-infer", "no-overlap"]
    assert [r["system"] for r in (rows[0], rows[7], rows[8])] == ["cloudmatrix384"] * 2 + ["dgx-h800"]
    knobs = {"cm-infer": {"microbatches": 2, "mtp": 1}, "no-overlap": {"microbatches": 1, "mtp": 0}}
    for r in rows:
        kv, cap, cv = kv_lengths(model, 4096, r["workload.output_len"])
        dep = Deployment(
            batch_per_device=r["deployment.batch_per_device"],
            kv_len=kv,
            kv_capacity_len=cap,
            kv_cv=cv,
            **knobs[r["framework"]],
        )
        p = decode.predict(systems[r["system"]], model, dep)
        assert r["status"] == ("ok" if p.feasible else "infeasible"), r
        assert r["tpot_s"] == p.tpot_s and r["tokens_per_s_per_device"] == p.tokens_per_s_per_device
        assert r["config.ep_size"] == p.deployment["ep_size"]
        assert r["binding"] == p.streams["moe"]["binding"]
    # CloudMatrix384 at the paper's instance, batch 96, 4K/256, 2 microbatches, MTP 1 (README: 49.71 ms under
    # optimize's EP96; here the one-expert-per-rank EP320 default)
    r = rows[4]
    assert (r["system"], r["deployment.batch_per_device"], r["workload.output_len"], r["framework"]) == (
        "cloudmatrix384",
        96,
        256,
        "cm-infer",
    )
    assert (r["config.devices"], r["config.ep_size"], r["config.microbatches"]) == (160, 320, 2)
    assert r["tpot_s"] == pytest.approx(0.0500, abs=0.002)
    assert r["binding_op"] == "moe/mla.attention" and r["binding_ceiling"] == "compute"


def test_decode_cell_equals_the_cmperf_decode_command(tmp_path):
    p = write(tmp_path, "one", DECODE)
    rows = list(csv.DictReader(io.StringIO(run("sweep", p).stdout)))
    r = rows[13]  # dgx-h800, batch 96, output 256, no-overlap
    assert (r["system"], r["deployment.batch_per_device"], r["workload.output_len"], r["framework"]) == (
        "dgx-h800",
        "96",
        "256",
        "no-overlap",
    )
    cli = run(
        "decode", "--system", "dgx-h800", "--batch", "96", "--prompt-len", "4096", "--output-len", "256",
        "--microbatches", "1", "--mtp", "0", "--format", "json",
    )  # fmt: skip
    js = json.loads(cli.stdout)
    assert float(r["tpot_s"]) == pytest.approx(js["tpot_s"], rel=1e-11)
    assert float(r["tokens_per_s_per_device"]) == pytest.approx(js["tokens_per_s_per_device"], rel=1e-11)
    assert int(r["config.devices"]) == js["deployment"]["devices"] == 144


def test_paper_points_through_every_cell_type(tmp_path):
    """decode at the paper's 50 ms setup, prefill at its defaults, serve at 40 req/s, optimize under 50 ms:
    the README's numbers, through the sweep."""
    dec = write(
        tmp_path,
        "paper",
        'command = "decode"\n[deployment]\ndevices = 160\nep_size = 320\nbatch_per_device = 96\n'
        "kv_len = 4096\nmicrobatches = [1, 2]\nmtp = 1\n",
    )
    d1, d2 = sweep.run(sweep.load(str(dec)), jobs=1)
    assert d2["tpot_s"] == pytest.approx(0.04949, abs=5e-6)
    assert d2["tokens_per_s_per_device"] == pytest.approx(1940, abs=1)
    assert d1["tpot_s"] == pytest.approx(0.05107, abs=5e-6)  # README: 51.07 ms with 1 microbatch
    pf = write(tmp_path, "pf", 'command = "prefill"\n[deployment]\ntokens_per_device = 16384\n')
    (r,) = sweep.run(sweep.load(str(pf)), jobs=1)
    system, model = cmperf.load_system("cloudmatrix384"), cmperf.load_model("deepseek-r1")
    p = prefill.predict(system, model, Deployment(phase="prefill"))
    assert r["tokens_per_s_per_device"] == p.tokens_per_s_per_device == pytest.approx(7173, abs=1)
    assert r["ttft_s"] == p.ttft_s == pytest.approx(2.30, abs=0.005)
    sv = write(tmp_path, "sv", 'command = "serve"\n[workload]\nrate_per_s = [40, 400]\n')
    ok, over = sweep.run(sweep.load(str(sv)), jobs=1)
    res = serving.evaluate(
        system, model, serving.Workload(rate_per_s=40), serving.default_pools(system, model)
    )
    assert ok["ttft_s"] == res.prefill.ttft_slo_quantile_s == pytest.approx(0.114, abs=0.0005)
    assert ok["goodput_rps"] == pytest.approx(40.0) and ok["slo_met"] is True and ok["binding"] == "prefill"
    assert ok["slo_limit_rps"] == pytest.approx(165.0, abs=0.05)  # README: TTFT 2 s holds to 165.0 req/s
    assert (ok["config.prefill_devices"], ok["config.decode_devices"]) == (96, 160)
    assert over["status"] == "infeasible" and "exceeds the pool's capacity" in over["message"]
    assert over["ttft_s"] is None  # an overloaded pool has no finite TTFT: an empty cell
    op = write(tmp_path, "op", 'command = "optimize"\n[slo]\ntpot_s = 0.05\nttft_s = 2.0\n')
    (o,) = sweep.run(sweep.load(str(op)), jobs=1)
    assert o["status"] == "ok"
    assert (o["config.devices"], o["config.ep_size"], o["config.batch_per_device"]) == (48, 96, 104)
    assert (o["config.prefill_devices"], o["config.decode_devices"]) == (304, 72)
    assert o["tpot_s"] == pytest.approx(0.04971, abs=5e-6) and o["goodput_rps"] == pytest.approx(
        523.9, abs=0.05
    )


MIXED = """\
command = "decode"
system = ["cloudmatrix384", "dgx-h800"]
[deployment]
ep_size = [320, 144]
batch_per_device = [16, 300]
microbatches = [1, "auto"]
"""


def test_csv_byte_identical_across_runs_and_executors(tmp_path):
    sw = sweep.load(str(write(tmp_path, "mixed", MIXED)))
    serial = sweep.to_csv(sweep.run(sw, jobs=1))
    assert serial == sweep.to_csv(sweep.run(sw, jobs=1))
    assert sweep.to_csv(sweep.run(sw, jobs=2)) == serial
    assert sweep.to_csv(sweep.run(sw, executor="dask", jobs=2, dask_processes=False)) == serial
    rows = list(csv.DictReader(io.StringIO(serial)))
    assert len(rows) == 16 and {r["status"] for r in rows} == {"ok", "infeasible", "error"}
    bad = rows[4]  # cloudmatrix384 at EP144: refused by the model, the sweep goes on
    assert bad["status"] == "error" and bad["message"].startswith("--ep: EP144 must divide the 320 ranks")
    assert bad["tpot_s"] == "" and "\n" not in bad["message"]
    big = rows[2]  # cloudmatrix384, EP320, batch 300: does not fit in HBM (250 does)
    assert big["status"] == "infeasible" and big["message"].startswith("HBM: needs")


def test_cli_same_bytes_on_local_processes_and_dask_localcluster(tmp_path):
    p = write(tmp_path, "mixed", MIXED)
    local, dask = tmp_path / "local.csv", tmp_path / "dask.csv"
    r = run("sweep", p, "--jobs", "2", "-o", local)
    assert r.exit_code == 0 and r.output == "", r.output
    r = run("sweep", p, "--executor", "dask", "--jobs", "2", "-o", dask)
    assert r.exit_code == 0 and r.output == "", r.output
    assert dask.read_bytes() == local.read_bytes()
    assert local.read_bytes() == run("sweep", p, "--jobs", "1").stdout_bytes


def test_parquet_round_trips(tmp_path):
    import pyarrow.parquet as pq

    p = write(tmp_path, "mixed", MIXED)
    out = tmp_path / "r.parquet"
    r = run("sweep", p, "-o", out, "--jobs", "1")
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    rows = sweep.run(sweep.load(str(p)), jobs=1)
    assert table.column_names == list(rows[0])
    types = {f.name: str(f.type) for f in table.schema}
    assert types["cell"] == types["config.ep_size"] == "int64" and types["tpot_s"] == "double"
    assert types["status"] == "string" and types["deployment.microbatches"] == "string"  # 1 and "auto"
    back = table.to_pylist()
    for got, want in zip(back, rows, strict=True):
        assert got["status"] == want["status"] and got["message"] == want["message"]
        assert got["deployment.microbatches"] == str(want["deployment.microbatches"])
        for c in ("tpot_s", "tokens_per_s_per_device"):
            assert (got[c] is None) == (want[c] is None)
            if want[c] is not None:
                assert got[c] == pytest.approx(want[c], rel=1e-11)
    assert out.read_bytes() == sweep.to_parquet(rows)  # deterministic bytes too


@pytest.mark.parametrize(
    "text,key",
    [
        ('command = "decode"\nfoo = 1\n', "key foo: unknown key"),
        ('command = "decode"\nsystem = ["dgx-h800", "nope"]\n', "key system: unknown system 'nope'"),
        ('command = "decode"\nmodel = "nope"\n', "key model: unknown model 'nope'"),
        (
            'command = "decode"\n[deployment]\nbatch_per_device = []\n',
            "key deployment.batch_per_device: an empty",
        ),
        (
            'command = "decode"\n[deployment]\nbatch = 8\n',
            "key deployment.batch: a decode cell does not read",
        ),
        ('command = "decode"\n[deployment]\ncache_hit = 0.5\n', "key deployment.cache_hit: a decode cell"),
        (
            'command = "decode"\n[deployment]\nmtp_accept = [0.5, 2]\n',
            "key deployment.mtp_accept: 2 is out of",
        ),
        ('command = "decode"\n[deployment]\nmicrobatches = "two"\n', "key deployment.microbatches: 'two'"),
        ('command = "decode"\n[deployment]\nkv_len = [1, 1]\n', "key deployment.kv_len: 1 appears twice"),
        ('command = "decode"\n[options]\nweights = "fp9"\n', "key options.weights: 'fp9' is not a datatype"),
        ('command = "decode"\n[slo]\ntpot_s = 0.05\n', "key slo.tpot_s: a decode cell does not read it"),
        (
            'command = "decode"\n[workload]\noutput_len = 256\n',
            "key workload.output_len: a decode cell needs",
        ),
        ('command = "serve"\n[pools]\ndecode_devices = 0\n', "key pools.decode_devices: 0 is out of range"),
        ('command = "serve"\n[deployment]\ndevices = 8\n', "key deployment.devices: a serve cell does not"),
        ('command = "optimize"\n[deployment]\nbatch_per_device = 8\n', "key deployment.batch_per_device: a"),
        (
            'command = "decode"\n[deployment]\nmtp = 1\n[frameworks.a]\nmtp = 0\n',
            "key frameworks.a.mtp: also",
        ),
        ('command = "decode"\n[frameworks.a]\nmtp = [0, 1]\n', "key frameworks.a.mtp: a framework holds one"),
        (
            'command = "decode"\n[deployment]\nframework = ["sglang", "bogus"]\n',
            "key deployment.framework: unknown framework 'bogus'",
        ),
        (
            'command = "decode"\n[frameworks.a]\nframework = "bogus"\n',
            "key frameworks.a.framework: unknown framework 'bogus'",
        ),
        ('command = "explain"\n', "key command: 'explain' is not one of"),
        ('system = "dgx-h800"\n', "key command is missing"),
        ('name = "other"\ncommand = "decode"\n', "key name: 'other' must match the file name"),
    ],
)
def test_bad_file_is_one_line_naming_file_and_key_and_writes_nothing(tmp_path, text, key):
    p = write(tmp_path, "bad", text)
    out = tmp_path / "out.csv"
    r = run("sweep", p, "-o", out)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cmperf: error: {p}: {key}"), lines
    assert not out.exists() and r.stdout == ""


def test_bad_flags_exit_2(tmp_path):
    p = write(tmp_path, "ok", 'command = "decode"\n')
    for args, start in (
        (("--format", "parquet"), "--format parquet: Parquet is binary"),
        (("--scheduler", "tcp://127.0.0.1:1"), "--scheduler: a scheduler address needs --executor dask"),
        (("-o", tmp_path / "no" / "x.csv"), "--output: folder"),
    ):
        r = run("sweep", p, *args)
        assert r.exit_code == 2 and r.stderr.startswith(f"cmperf: error: {start}"), r.output
    r = run("sweep", tmp_path / "missing.toml")
    assert r.exit_code == 2 and "missing.toml does not exist" in r.stderr


def test_shipped_sweep_by_name():
    sw = sweep.load("decode-planner")
    assert sw.command == "decode" and sw.size == 108
    assert sw.axes["framework"] == ("cloudmatrix-infer", "sglang-large-ep", "no-overlap")
    assert Path(sw.path) == ROOT / "scenarios" / "sweeps" / "decode-planner.toml"


def test_thousand_cells_on_two_local_processes(tmp_path):
    """1,000 cheap decode cells (fixed microbatches) on 2 processes: every row, in order, each the model's."""
    batches = ", ".join(str(b) for b in range(1, 101))
    p = write(
        tmp_path,
        "k",
        f'command = "decode"\n[deployment]\nmicrobatches = 1\nbatch_per_device = [{batches}]\n'
        "kv_len = [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 6144, 8192]\n",
    )
    sw = sweep.load(str(p))
    assert sw.size == 1000
    rows = sweep.run(sw, jobs=2)
    assert [r["cell"] for r in rows] == list(range(1000)) and all(r["status"] == "ok" for r in rows)
    r = rows[959]  # batch 96 (index 95 of the slow axis), KV 8,192 (index 9 of the fast one)
    assert (r["deployment.batch_per_device"], r["deployment.kv_len"]) == (96, 8192)
    system, model = cmperf.load_system("cloudmatrix384"), cmperf.load_model("deepseek-r1")
    p1 = decode.predict(system, model, Deployment(batch_per_device=96, kv_len=8192, microbatches=1))
    assert r["tpot_s"] == p1.tpot_s and math.isfinite(p1.tpot_s)
    tpots = [x["tpot_s"] for x in rows if x["deployment.kv_len"] == 4096]
    assert tpots == sorted(tpots)  # TPOT grows with the batch at fixed KV


def test_framework_profile_axis_reaches_every_cell_type(tmp_path):
    """deployment.framework is an axis of every cell type: decode and prefill cells equal the commands
    with --framework; serve and optimize apply it to both phases (SGLang's 160.6 ms request overhead over
    TensorRT-LLM's 134.9 ms shows in the TTFT: dgx-h800 serve at 5 req/s 230 ms against 204 ms, the
    25.7 ms apart the two overheads are)."""
    text = 'command = "{}"\nsystem = "dgx-h800"\n[deployment]\nframework = ["sglang", "tensorrt-llm"]\n'
    serve = sweep.run(
        sweep.load(str(write(tmp_path, "s", text.format("serve") + "[workload]\nrate_per_s = 5\n")))
    )
    sg, trt = (r["ttft_s"] for r in serve)
    assert (sg, trt) == pytest.approx((0.230, 0.204), abs=0.002) and sg - trt == pytest.approx(
        0.0257, abs=1e-9
    )
    dec = sweep.run(sweep.load(str(write(tmp_path, "d", text.format("decode")))))
    want = decode.predict(
        cmperf.load_system("dgx-h800"), cmperf.load_model("deepseek-r1"), Deployment(framework="sglang")
    )
    assert dec[0]["tpot_s"] == want.tpot_s and dec[0]["deployment.framework"] == "sglang"
    opt = sweep.run(sweep.load(str(write(tmp_path, "o", text.format("optimize")))))
    assert all(r["status"] == "ok" for r in opt) and opt[0]["ttft_s"] > opt[1]["ttft_s"]
