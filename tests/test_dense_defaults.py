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


def test_default_is_one_tp_group():
    """A dense model's default instance, decode and prefill, is one TP8 group (the 8-GPU NVLink domain,
    Llama's 8 KV heads: deployment.dense_tp), prefill as Megatron TP: the weights split 8 ways (8.8 GB of
    the 70 GB per GPU). DeepSeek-R1 keeps its EP units and the SP-TP-SP prefill layout."""
    h200, llama = load_system("hgx-h200"), load_model("llama-3.1-70b")
    assert deployment.dense_tp(h200, llama, "decode") == deployment.dense_tp(h200, llama, "prefill") == 8
    assert deployment.dense_tp(h200, load_model("deepseek-r1")) == 0
    dec = json.loads(run("decode", *LLAMA, "--format", "json").output)
    assert (dec["deployment"]["devices"], dec["deployment"]["attn_tp"]) == (8, 8)
    pre = json.loads(run("prefill", *LLAMA, "--format", "json").output)
    d = pre["deployment"]
    assert (d["devices"], d["attn_tp"], d["tp_layout"]) == (8, 8, "megatron") and pre["feasible"]
    weights = sum(v for k, v in pre["hbm_breakdown_bytes"].items() if k.startswith("weights."))
    assert 9.0e9 < weights < 9.8e9  # 73.2 GB (FP8 GEMMs, BF16 embedding and head) / 8
    r1 = json.loads(run("prefill", "--system", "cloudmatrix384", "--format", "json").output)["deployment"]
    assert (r1["attn_tp"], r1["tp_layout"]) == (16, "sp-tp-sp")


def test_default_batch_is_the_largest_that_fits():
    """96 sequences at 4K KV need 201.6 GB on one H200 (137.4 GB usable): without --batch decode predicts
    at the largest whole batch that fits (48) and says so; an explicit --batch 96 is still refused (exit
    3), and a batch that fits is predicted as given."""
    one = (*LLAMA, "--devices", "1")
    r = run("decode", *one, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["feasible"] and d["batch_per_device"] == 48.0 and d["deployment"]["batch_fitted_from"] == 96.0
    assert d["hbm_bytes_per_rank"] <= d["hbm_capacity_bytes_per_rank"]
    table = run("decode", *one)
    assert "batch 48/device (the largest that fits: the default 96 does not)" in table.output
    assert run("decode", *one, "--batch", "96").exit_code == 3
    given = json.loads(run("decode", *one, "--batch", "40", "--format", "json").output)
    assert given["batch_per_device"] == 40.0 and "batch_fitted_from" not in given["deployment"]
    # an MoE default that fits is untouched
    r1 = json.loads(run("decode", "--system", "cloudmatrix384", "--format", "json").output)
    assert r1["batch_per_device"] == 96.0 and "batch_fitted_from" not in r1["deployment"]


def test_dense_output_names_no_expert_parallelism():
    """A dense model's decode and prefill tables name no EP and no routed load (it has no experts)."""
    dec = run("decode", *LLAMA, "--batch", "40").output
    assert "8 devices, TP8 (attention and MLP), batch 40/device" in dec
    assert "EP" not in dec.split("streams per layer")[0] and "routed load" not in dec
    assert "1 device, batch 40/device" in run("decode", *LLAMA, "--batch", "40", "--devices", "1").output
    pre = run("prefill", *LLAMA).output
    assert "EP" not in pre.split("streams per layer")[0]
    assert "8 devices, 16384 tokens/device" in pre and "TP8 (attention and MLP)" in pre
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
    assert "TP8" in table and "EP all-to-all" not in table and "binding (layer)" in table
    # prefill: the same group, Megatron TP (70 GB of FP8 weights fit on no 80 GB GPU whole: was infeasible)
    r = run("compare", "--model", "llama-3.1-70b", "--phase", "prefill", "--format", "json")
    assert r.exit_code == 0, r.output
    pre = json.loads(r.output)["rows"]
    assert all(x["feasible"] and x["attn_tp"] == 8 and x["hbm_bytes_per_rank"] < 30e9 for x in pre)
    # one microbatch in both phases (no stack overlaps a dense model's TP all-reduce)
    assert all(x["workload"]["microbatches"] == 1.0 for x in pre)
    assert all(x["workload"]["microbatches"] == 1.0 for x in rows.values())
    r1 = json.loads(run("compare", "--format", "json").output)["rows"]
    assert all(x["moe"] and "batch_fitted_from" not in x["workload"] for x in r1)


def test_optimize_on_a_small_total_reports_the_split_it_cannot_form():
    """4 H100s: the best decode is one TP4 group of all 4 (Llama does not fit fewer at its batch), so no
    prefill instance fits beside it: the two searches stand and the split is a note (exit 0; it was a
    '--devices-total' error naming a flag optimize does not have). 6 H100s hold 2 one-GPU TP1 prefill
    instances beside the TP4 decode group."""
    r = run(
        "optimize", "--model", "llama-3.1-70b", "--system", "dgx-h100", "--devices", "4", "--format", "json"
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["best"]["attn_tp"] == 4 and d["serving"] is None
    assert any("serving split skipped: 4 devices hold no 1-device prefill instance" in n for n in d["notes"])
    six = json.loads(
        run(
            "optimize",
            "--model",
            "llama-3.1-70b",
            "--system",
            "dgx-h100",
            "--devices",
            "6",
            "--format",
            "json",
        ).output
    )
    split = six["serving"]["best"]
    assert (split["prefill_devices"], split["decode_devices"]) == (2, 4)
