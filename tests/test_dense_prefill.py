"""Megatron TP prefill of a dense model (deployment.megatron_prefill, graph.gqa_prefill_ops "megatron").

Llama-3.1-70B (80 layers, hidden 8192, 64 heads, 8 KV heads, FP8 GEMMs) on hgx-h200, spec files of this
writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import prefill, search
from cmperf.cli import main
from cmperf.deployment import Deployment, megatron_prefill
from cmperf.specs import load_model, load_system

H200, LLAMA = load_system("hgx-h200"), load_model("llama-3.1-70b")


def _eval(tp, **kw):
    dep = Deployment(phase="prefill", devices=8, attn_tp=tp, microbatches=1, **kw).resolve(H200, LLAMA)
    return prefill.evaluate(H200, LLAMA, dep, keep_ops=True)


def _ops(ev):
    return {op.name: op for st in ev.stages if st.stage.name == "dense" for op in st.stage.ops}


def test_only_a_dense_gqa_model_runs_megatron():
    assert megatron_prefill(LLAMA)
    assert not megatron_prefill(load_model("deepseek-r1")) and not megatron_prefill(
        load_model("qwen3-235b-a22b")
    )


def test_tp8_splits_weights_and_keeps_the_flops_per_rank():
    """TP8: each rank computes 8x the tokens on 1/8 of every weight, so its GEMM FLOPs equal TP1's and
    its weights are 1/8 (73.2 GB -> 9.15 GB); each layer adds two all-reduces of the group's tokens x
    hidden in BF16 (8 x 16,384 x 8,192 x 2 B = 2.15 GB), none at TP1."""
    one, eight = _eval(1), _eval(8)
    o1, o8 = _ops(one), _ops(eight)
    for name in ("gqa.qkv_proj", "gqa.o_proj", "dense.up", "dense.down", "gqa.attention"):
        assert float(o8[name].flops) == pytest.approx(float(o1[name].flops), rel=1e-12), name
    assert "attn.tp_allreduce" not in o1 and "dense.tp_allreduce" not in o1
    for name in ("attn.tp_allreduce", "dense.tp_allreduce"):
        assert float(o8[name].comm_bytes) == pytest.approx(8 * 16384 * 8192 * 2.0)

    def weights(ev):
        return sum(float(v) for k, v in ev.memory_parts.items() if k.startswith("weights."))

    assert weights(one) == pytest.approx(8 * weights(eight), rel=1e-4)  # norms stay whole
    assert 9.0e9 < weights(eight) < 9.2e9
    # KV per rank: 8x the prompts, 1/8 of the KV heads
    assert float(eight.memory_parts["kv_cache"]) == pytest.approx(float(one.memory_parts["kv_cache"]))
    # the all-reduces cost time: TP8 is slower per device than TP1 where both fit
    assert float(eight.tokens_per_s_per_device) < float(one.tokens_per_s_per_device)


def test_tp_degree_replicating_kv_heads_holds_one_kv_head():
    """TP16 over 8 KV heads (two 8-GPU nodes) replicates each KV head twice: a rank holds one."""
    dep = Deployment(phase="prefill", devices=16, attn_tp=16, microbatches=1).resolve(H200, LLAMA)
    ev = prefill.evaluate(H200, LLAMA, dep, keep_ops=True)
    attn = _ops(ev)["gqa.attention"]
    per_tok = float(attn.kv_write_bytes) / (16 * 16384)
    assert per_tok == pytest.approx(1 * 128 * 2 * 2.0)  # K and V of one head of 128, BF16


def test_prefill_search_tries_tp_degrees():
    """pareto/optimize search a dense model's TP degrees: on an 80 GB H100 TP1 holds the whole 73 GB model
    and fits only the smallest token budgets; TP8 fits them all. Evaluating a mix of degrees in one call is
    refused (one Megatron degree per call)."""
    h100 = load_system("dgx-h100")
    r = search.search_prefill(h100, LLAMA, prompt_len=4096, devices=8)
    assert r.space["attn_tp"] == [1, 2, 4, 8]
    tp1 = [c for c in r.top if c.attn_tp == 1]
    assert tp1 and all(c.tokens_per_device <= 8192 for c in tp1)
    # the frontier trades TTFT for throughput through the TP degree: one 4K prompt per TP8 group (512
    # tokens per GPU) has the lowest TTFT, TP1 the most tokens/s per GPU
    front = sorted(r.pareto, key=lambda c: c.ttft_s)
    assert (front[0].attn_tp, front[0].tokens_per_device) == (8, 512.0) and front[-1].attn_tp == 1
    assert front[0].ttft_s < 0.5 * front[-1].ttft_s
    mixed = Deployment(phase="prefill", devices=np.array([8, 16]), attn_tp=np.array([4, 8]))
    with pytest.raises(ValueError, match="one value per call"):
        prefill.evaluate(h100, LLAMA, mixed.resolve(h100, LLAMA))


def test_cli_prefill_on_an_80_gb_gpu():
    """The default (TP8 on 8 GPUs) fits an H100. TP1 holds the whole 73 GB model: the default 16K tokens
    per GPU do not fit beside it, so the batch falls to the largest whole number of prompts that does (2 x
    4,096, tokens_fitted_from 16,384); 16K tokens given is refused (exit 3, the HBM reason)."""
    run = CliRunner().invoke
    h100 = ["prefill", "--model", "llama-3.1-70b", "--system", "dgx-h100"]
    d = json.loads(run(main, [*h100, "--format", "json"]).output)
    assert d["feasible"] and d["deployment"]["tp_layout"] == "megatron"
    tp1 = json.loads(run(main, [*h100, "--attn-tp", "1", "--format", "json"]).output)
    assert tp1["feasible"] and tp1["deployment"]["tokens_per_device"] == 8192.0
    assert (
        tp1["deployment"]["tokens_fitted_from"] == 16384.0 and "devices_fitted_from" not in tp1["deployment"]
    )
    table = run(main, [*h100, "--attn-tp", "1"], env={"COLUMNS": "200"}).output
    assert "8192 tokens/device (the largest that fits: the default 16384 does not)" in table
    r = run(main, [*h100, "--attn-tp", "1", "--tokens-per-device", "16384"])
    assert r.exit_code == 3 and "HBM" in r.output


def test_default_instance_grows_until_the_weights_fit():
    """DeepSeek-V4-Pro (1.6T) on 80 GB H100s: the default EP32 unit does not hold its experts beside one
    prompt; without --devices the instance doubles to 64 GPUs (EP64) and says so; --devices 32 given is
    refused (exit 3). compare's rule grows the same way."""
    run = CliRunner().invoke
    v4 = ["prefill", "--model", "deepseek-v4-pro", "--system", "dgx-h100"]
    d = json.loads(run(main, [*v4, "--format", "json"]).output)
    dep = d["deployment"]
    assert d["feasible"] and (dep["devices"], dep["ep_size"], dep["devices_fitted_from"]) == (64, 64, 32)
    assert (
        "64 devices (the default 32 do not hold the weights)" in run(main, v4, env={"COLUMNS": "200"}).output
    )
    assert run(main, [*v4, "--devices", "32"]).exit_code == 3
    rows = json.loads(
        run(main, ["compare", "--model", "deepseek-v4-pro", "--phase", "prefill", "--format", "json"]).output
    )
    assert all(x["feasible"] and x["workload"].get("devices_fitted_from") for x in rows["rows"])
    assert all("(grown to fit)" in x["deployment_source"] for x in rows["rows"])


def test_serve_default_prefill_instance_holds_the_weights():
    """serve's default pools size the prefill instance the same way: Kimi-K3 (2.8T) fills 32 H200s' HBM
    with weights alone, so its instance is 64 GPUs; DeepSeek-R1 keeps the EP32 unit."""
    from cmperf import serving

    h200 = load_system("hgx-h200")
    assert serving.default_pools(h200, load_model("kimi-k3")).prefill_instance_devices == 64
    assert serving.default_pools(h200, load_model("deepseek-r1")).prefill_instance_devices == 32
    r = CliRunner().invoke(main, ["serve", "--rate", "5", "--system", "hgx-h200", "--model", "kimi-k3"])
    assert r.exit_code in (0, 1), r.output  # 1: an SLO missed, not an error


def test_sweep_cells_name_the_tp_degree_and_fit_like_the_commands(tmp_path):
    """A sweep's prefill cell of a dense model reports its TP degree and its layers' binding, and a cell
    that leaves the tokens to their default fits them as `cmperf prefill` does (1 H100: 8,192)."""
    import csv
    import io

    f = tmp_path / "llama.toml"
    f.write_text(
        'name = "llama"\ndescription = "d"\ncommand = "prefill"\nsystem = "dgx-h100"\n'
        'model = "llama-3.1-70b"\n\n[deployment]\ndevices = [1, 8]\n',
        encoding="utf-8",
    )
    r = CliRunner().invoke(main, ["sweep", str(f)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["config.attn_tp"], x["config.tokens_per_device"], x["status"]) for x in rows] == [
        ("1", "8192", "ok"),
        ("8", "16384", "ok"),
    ]
    # one microbatch (no stack overlaps a dense model's TP all-reduce): TP1's compute stream, TP8's serial
    # chain with the all-reduce its heaviest op
    assert [(x["config.microbatches"], x["binding"]) for x in rows] == [
        ("1", "compute stream"),
        ("1", "serial A+M"),
    ]
    assert rows[1]["binding_op"] == "dense/attn.tp_allreduce"


def test_a_dense_model_runs_one_microbatch_under_every_framework():
    """Every profile's microbatch overlap hides the MoE all-to-all: for a dense model each runs one (auto
    picks 1; 2 is refused naming the reason), and prefill defaults to one without a profile too, while an
    MoE model keeps its counts (SGLang: 1 or 2)."""
    from cmperf import frameworks

    sg = frameworks.load("sglang")
    assert frameworks.microbatch_counts(sg, LLAMA) == (1,)
    assert frameworks.microbatch_counts(sg, load_model("deepseek-r1")) == (1, 2)
    run = CliRunner().invoke
    dec = ["decode", "--model", "llama-3.1-70b", "--system", "hgx-h200", "--framework", "sglang"]
    d = json.loads(run(main, [*dec, "--format", "json"]).output)
    assert d["deployment"]["microbatches"] == 1
    r = run(main, [*dec, "--microbatches", "2"])
    assert r.exit_code == 2 and "runs 1 microbatches for a dense model" in r.output
    pre = json.loads(
        run(main, ["prefill", "--model", "llama-3.1-70b", "--system", "hgx-h200", "--format", "json"]).output
    )
    assert pre["deployment"]["microbatches"] == 1
    moe = json.loads(run(main, ["prefill", "--system", "hgx-h200", "--format", "json"]).output)
    assert moe["deployment"]["microbatches"] == 2


def test_dense_model_under_every_profile_computes_no_nan():
    """A dense model has no routed experts (k = 0, no routed ranks): the MoE load is 0, not 0/0 (numpy's
    'invalid value' warning reached the terminal under profiles that place experts evenly)."""
    import warnings

    from cmperf import decode

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fw in (None, "sglang", "tensorrt-llm", "vllm", "cloudmatrix-infer"):
            p = decode.predict(H200, LLAMA, Deployment(framework=fw, batch_per_device=32))
            assert np.isfinite(p.tpot_s) and p.feasible
            prefill.predict(H200, LLAMA, Deployment(phase="prefill", framework=fw))


def test_a_prompt_is_one_tp_groups():
    """A dense model's data-parallel TP groups prefill their own prompts, so each group must hold a whole
    one: TP1 on 8 H200s with 32K prompts and 16K tokens per GPU is refused naming --tokens-per-device and
    the least that works; TP8 (one group of 8) holds four."""
    run = CliRunner().invoke
    base = ["prefill", "--model", "llama-3.1-70b", "--system", "hgx-h200", "--prompt-len", "32768"]
    r = run(main, [*base, "--attn-tp", "1"])
    assert r.exit_code == 2
    assert (
        "--tokens-per-device: 16384 x 1 device (a TP1 group: a prompt is one group's) holds no whole"
        in r.output
    )
    assert "raise it to at least 32768" in r.output
    assert run(main, [*base, "--attn-tp", "1", "--tokens-per-device", "32768"]).exit_code in (0, 3)
    assert run(main, base).exit_code == 0


def test_growing_that_cannot_fit_says_how_far_it_went():
    """Kimi-K3 on CloudMatrix384: its attention weights are whole on every die under SP-TP-SP, so no
    doubling of the 16-NPU unit fits (up to 256 NPUs); the prediction stays the default's, infeasible
    (exit 3), with a second reason naming --devices and how far the growth went."""
    r = CliRunner().invoke(
        main, ["prefill", "--model", "kimi-k3", "--system", "cloudmatrix384", "--format", "json"]
    )
    assert r.exit_code == 3
    d = json.loads(r.stdout)
    assert d["deployment"]["devices"] == 16 and "devices_fitted_from" not in d["deployment"]
    assert d["reasons"][0].startswith("HBM") and d["reasons"][1].startswith(
        "--devices: no instance of up to 256"
    )
