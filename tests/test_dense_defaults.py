"""Defaults for a dense model: the decode batch that fits, the search's TP axis, the output's rows.

Llama-3.1-70B (FP8 weights, BF16 KV) on hgx-h200, spec files of this writing."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cmperf import deployment
from cmperf.cli import main
from cmperf.specs import load_model, load_system


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "160"})


LLAMA = ("--model", "llama-3.1-70b", "--system", "hgx-h200")


def test_default_batch_is_the_largest_that_fits():
    """96 sequences at 4K KV need 201.6 GB on one H200 (137.4 GB usable): without --batch decode predicts
    at the largest whole batch that fits (48) and says so; an explicit --batch 96 is still refused (exit
    3), and a batch that fits is predicted as given."""
    r = run("decode", *LLAMA, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["feasible"] and d["batch_per_device"] == 48.0 and d["deployment"]["batch_fitted_from"] == 96.0
    assert d["hbm_bytes_per_rank"] <= d["hbm_capacity_bytes_per_rank"]
    table = run("decode", *LLAMA)
    assert "batch 48/device (the largest that fits: the default 96 does not)" in table.output
    assert run("decode", *LLAMA, "--batch", "96").exit_code == 3
    given = json.loads(run("decode", *LLAMA, "--batch", "40", "--format", "json").output)
    assert given["batch_per_device"] == 40.0 and "batch_fitted_from" not in given["deployment"]
    # an MoE default that fits is untouched
    r1 = json.loads(run("decode", "--system", "cloudmatrix384", "--format", "json").output)
    assert r1["batch_per_device"] == 96.0 and "batch_fitted_from" not in r1["deployment"]


def test_dense_output_names_no_expert_parallelism():
    """A dense model's decode and prefill tables name no EP and no routed load (it has no experts)."""
    dec = run("decode", *LLAMA, "--batch", "40", "--devices", "8", "--attn-tp", "8").output
    assert "8 devices, attention TP8, batch 40/device" in dec
    assert "EP" not in dec.split("streams per layer")[0] and "routed load" not in dec
    assert "1 device, batch 40/device" in run("decode", *LLAMA, "--batch", "40").output
    pre = run("prefill", *LLAMA).output
    assert "EP32" not in pre and "32 devices, 16384 tokens/device" in pre
    moe = run("decode", "--system", "cloudmatrix384").output
    assert "EP320" in moe and "routed load max/mean" in moe


def test_search_tries_tensor_parallel_degrees_for_a_dense_model():
    """The default attention-TP axis: 1 for an MoE model, every power of two of the NVLink domain (8
    GPUs) that splits the heads for a dense one (64 heads, 8 KV heads: 1, 2, 4, 8)."""
    h200 = load_system("hgx-h200")
    assert deployment.search_attn_tp(h200, load_model("llama-3.1-70b")) == (1, 2, 4, 8)
    assert deployment.search_attn_tp(h200, load_model("deepseek-r1")) == (1,)
    r = run("optimize", *LLAMA, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["space"]["attn_tp"] == [1, 2, 4, 8] and d["best"]["attn_tp"] > 1


def test_compare_gives_a_dense_model_a_tp_group_and_a_batch_that_fits():
    """compare's rule for a dense model: one TP8 group (the NVLink domain, Llama's 8 KV heads; 4 dual-die
    910Cs on CloudMatrix384) at the largest batch that fits on 80 GB GPUs (96 does not: 50 per H800),
    all feasible, with no EP rows; DeepSeek-R1 keeps its one-expert-per-rank rule."""
    r = run("compare", "--model", "llama-3.1-70b", "--format", "json")
    assert r.exit_code == 0, r.output
    rows = {x["system"]: x for x in json.loads(r.output)["rows"]}
    assert all(x["feasible"] and x["attn_tp"] == 8 and not x["moe"] for x in rows.values())
    assert (rows["cloudmatrix384"]["devices"], rows["dgx-h800"]["devices"]) == (4, 8)
    h800 = rows["dgx-h800"]["workload"]
    assert h800["batch_fitted_from"] == 96.0 and 1 <= h800["batch_per_device"] < 96
    table = run("compare", "--model", "llama-3.1-70b").output
    assert "attention TP8" in table and "EP all-to-all" not in table and "binding (layer)" in table
    r1 = json.loads(run("compare", "--format", "json").output)["rows"]
    assert all(x["moe"] and "batch_fitted_from" not in x["workload"] for x in r1)
