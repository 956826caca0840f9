"""Attention TP, MoE TP and the aggregated (chunked-prefill) decode step (issue 13): the collectives'
costs, the KV memory effect of TP on MLA and GQA, the op structure, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import decode
from cmperf.cli import main
from cmperf.comm import allreduce_time, plane_collective_time
from cmperf.deployment import Deployment
from cmperf.specs import load_model, load_system

H200 = load_system("hgx-h200")
R1 = load_model("deepseek-r1")
LLAMA = load_model("llama-3.1-70b")


def _pred(model, **kw):
    kw = {"devices": 8, "batch_per_device": 16.0, "kv_len": 4096.0, "mtp": 0, "microbatches": 1, **kw}
    return decode.predict(H200, model, Deployment(**kw))


def test_allreduce_picks_the_cheapest_algorithm():
    """The docstring's worked number: TP8, 1.835 MB on H200 NVLink is two-shot, 13.9 us; a tiny message
    is one-shot (one latency step + fixed cost); a group of one costs nothing."""
    payload = 128 * 7168 * 2.0
    t = allreduce_time(H200, "nvlink", payload, 8)
    two_shot = 2 * 1.5e-6 + 2e-6 + 2 * 7 / 8 * payload / (450e9 * 0.8)
    assert float(t.time_s) == pytest.approx(two_shot, rel=1e-9)
    small = allreduce_time(H200, "nvlink", 2e4, 8)
    assert float(small.time_s) == pytest.approx(1.5e-6 + 2e-6 + 7 * 2e4 / 360e9, rel=1e-9)
    assert float(allreduce_time(H200, "nvlink", payload, 1).time_s) == 0.0


def test_allreduce_beyond_the_domain_is_hierarchical():
    """TP16 over two 8-GPU NVLink nodes (dgx-h100): a reduce-scatter and all-gather inside each node (two-
    shot over 8) around an all-reduce of each rank's 1/8 shard with its peer in the other node over IB
    (50 GB/s x 0.9, 4 us; two ranks: one-shot, one step). 1.835 MB: 14.0 + 11.0 = 25.0 us, not the 16-rank
    NVLink two-shot a flat model would give (14.6 us). A group inside the domain is unchanged. The
    generic collectives split their bytes the same way (``plane_collective_time``)."""
    h100 = load_system("dgx-h100")
    payload = 128 * 7168 * 2.0
    intra = 2 * 1.5e-6 + 2e-6 + 2 * 7 / 8 * payload / (450e9 * 0.8)
    inter = 4e-6 + 2e-6 + (payload / 8) / (50e9 * 0.9)
    t = allreduce_time(h100, "nvlink", np.array([payload, payload]), np.array([8.0, 16.0]))
    assert t.time_s == pytest.approx([intra, intra + inter], rel=1e-9)
    assert float(t.time_s[1]) == pytest.approx(25.0e-6, abs=0.05e-6)
    # the all-gather of the head's logits: 1/15 of them over IB from the other node, 14/15 over NVLink
    big = 1e7
    gather = plane_collective_time(h100, "nvlink", big, 16.0)
    want = (3 * 1.5e-6 + 2e-6 + big * 14 / 15 / 360e9) + (4e-6 + 2e-6 + big / 15 / 45e9)
    assert float(gather.time_s) == pytest.approx(want, rel=1e-9)
    a2a = plane_collective_time(h100, "nvlink", big, 16.0, "alltoall")  # direct: IB's 8/15 binds
    assert float(a2a.time_s) == pytest.approx(4 * 4e-6 + 2e-6 + big * 8 / 15 / 45e9, rel=1e-9)
    ok = CliRunner().invoke(
        main, ["decode", "--system", "dgx-h100", "--devices", "16", "--attn-tp", "16", "--batch", "4"]
    )
    assert ok.exit_code == 0, ok.output


def test_tp1_is_the_default():
    """--attn-tp 1 --moe-tp 1 is today's data-parallel, expert-parallel step, bit for bit."""
    a, b = _pred(R1), _pred(R1, attn_tp=1, moe_tp=1)
    assert a.tpot_s == b.tpot_s and a.hbm_bytes_per_rank == b.hbm_bytes_per_rank


def test_mla_tp_replicates_the_latent_cache():
    """MLA under TP: every TP rank holds the latent KV of all the group's sequences: at the same batch per
    device the KV per rank is TP times the data-parallel one."""
    dp, tp = _pred(R1), _pred(R1, attn_tp=8)
    kv_dp, kv_tp = dp.hbm_breakdown_bytes["kv_cache"], tp.hbm_breakdown_bytes["kv_cache"]
    assert kv_tp == pytest.approx(8 * kv_dp, rel=1e-12)
    # the head-split attention weights shrink 8-fold; the down projections (15.1 M of 187 M per layer)
    # stay whole: 8 x (15.1 + 172 / 8) / 187 = 1 / 5.1
    ratio = dp.hbm_breakdown_bytes["weights.attention"] / tp.hbm_breakdown_bytes["weights.attention"]
    assert ratio == pytest.approx(5.1, abs=0.1)


def test_gqa_tp_splits_the_kv_heads():
    """Llama-3.1-70B (8 KV heads) at TP8: each rank one KV head of 8 times the sequences: the same KV per
    rank as data-parallel attention at TP1, while the weights are split 8 ways."""
    dp, tp = _pred(LLAMA, devices=1), _pred(LLAMA, devices=8, attn_tp=8)
    assert tp.hbm_breakdown_bytes["kv_cache"] == pytest.approx(dp.hbm_breakdown_bytes["kv_cache"], rel=1e-12)
    w_dp = sum(v for k, v in dp.hbm_breakdown_bytes.items() if k.startswith("weights"))
    w_tp = sum(v for k, v in tp.hbm_breakdown_bytes.items() if k.startswith("weights"))
    assert w_tp == pytest.approx(w_dp / 8, rel=1e-4)  # the norms stay whole
    assert not dp.feasible or dp.hbm_bytes_per_rank > tp.hbm_bytes_per_rank


def test_tp_ops_and_collectives():
    """TP adds the attention / dense all-reduces and the logits all-gather; MoE TP replaces the
    all-to-all by the all-gather + reduce-scatter, so the EP all-to-all bound is 0."""
    names = {op.name for op in _pred(R1, attn_tp=8).ops}
    assert {"attn.tp_allreduce", "dense.tp_allreduce", "head.tp_allgather", "moe.dispatch"} <= names
    p = _pred(R1, attn_tp=8, moe_tp=8)
    names = {op.name for op in p.ops}
    assert {"moe.tp_allgather", "moe.tp_reducescatter"} <= names and "moe.dispatch" not in names
    assert p.comm_bound_tpot_s == 0.0
    assert p.deployment["ep_size"] == 1


def test_tp_tpot_grows_with_batch_and_costs_more_than_dp_at_large_batch():
    """At 128 sequences per device, TP8's replicated latent reads make it slower than DP attention; TPOT is
    non-decreasing in the batch for both."""
    for tp in (1, 8):
        tpots = [_pred(R1, attn_tp=tp, batch_per_device=b).tpot_s for b in (1.0, 16.0, 128.0)]
        assert tpots == sorted(tpots)
    assert (
        _pred(R1, attn_tp=8, batch_per_device=128.0).tpot_s > 1.5 * _pred(R1, batch_per_device=128.0).tpot_s
    )


def test_chunk_adds_prefill_work_to_the_step():
    """The aggregated step: TPOT grows with the chunk; chunk 0 is plain decode; the chunk's causal attention
    is its own kernel, the projections are shared (one op, more flops)."""
    base = _pred(R1)
    steps = [_pred(R1, prefill_chunk_tokens=c, prompt_len=1024.0).step_s for c in (64.0, 256.0, 1024.0)]
    assert base.step_s < steps[0] < steps[1] < steps[2]
    p = _pred(R1, prefill_chunk_tokens=256.0, prompt_len=1024.0)
    names = [op.name for op in p.ops if op.stage == "moe"]
    assert "chunk.mla.attention" in names and names.count("mla.q_up") == 1
    assert _pred(R1, prefill_chunk_tokens=0.0).tpot_s == base.tpot_s


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--attn-tp", "3"], "--attn-tp"),  # does not divide 8 ranks / 128 heads
        (["--moe-tp", "5"], "--moe-tp"),
        (["--moe-tp", "2", "--ep", "8"], "--ep"),  # 2 x 8 > 8 ranks
        (["--slots-per-rank", "2"], "--slots-per-rank"),  # 16 slots for 256 experts
        (["--chunk-tokens", "-1"], "--chunk-tokens"),
    ],
)
def test_bad_parallel_degrees_are_one_line(args, flag):
    r = CliRunner().invoke(main, ["decode", "--system", "hgx-h200", "--devices", "8", *args])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith(f"cmperf: error: {flag}"), err


def test_moe_tp_refused_on_dense_models():
    dep = Deployment(devices=8, moe_tp=8)
    assert any(r.startswith("--moe-tp") for r in dep.check(H200, LLAMA))
    pre = Deployment(phase="prefill", devices=8, moe_tp=3)  # does not divide the 8 ranks
    assert any(r.startswith("--moe-tp") for r in pre.check(H200, R1))


def _prefill(**kw):
    from cmperf import prefill

    kw = {"phase": "prefill", "devices": 8, "prompt_len": 8192.0, "tokens_per_device": 16384.0, **kw}
    return prefill.predict(H200, R1, Deployment(**kw))


def test_prefill_moe_tp_all_gathers_and_reduce_scatters():
    """Prefill under MoE TP8 on 8 H200s (TensorRT-LLM's and SGLang's --tp 8 without EP): no all-to-all,
    each rank all-gathers the other 7 ranks' tokens (FP8 dispatch message) and reduce-scatters their partial
    outputs; the expert GEMMs' flops per rank are the EP8 ones (the same token-expert pairs spread over
    the same 8 ranks, perfect balance), but every rank reads a slice of all 256 experts."""
    from cmperf.comm import ep_message_bytes

    ep, tp = _prefill(), _prefill(moe_tp=8)
    assert tp.deployment["ep_size"] == 1 and tp.deployment["moe_tp"] == 8
    by = {o.name: o for o in tp.ops if o.stage == "moe"}
    assert {"moe.tp_allgather", "moe.tp_reducescatter"} <= set(by) and "moe.dispatch" not in by
    prec = Deployment(phase="prefill").resolve(H200, R1).precision
    d_msg, c_msg = ep_message_bytes(H200, R1.hidden_size, prec, phase="prefill")
    tokens = 16384.0 / 2  # per rank and microbatch
    assert by["moe.tp_allgather"].comm_bytes == pytest.approx(7 * tokens * d_msg, rel=1e-12)
    assert by["moe.tp_reducescatter"].comm_bytes == pytest.approx(7 * tokens * c_msg, rel=1e-12)
    e_by = {o.name: o for o in ep.ops if o.stage == "moe"}
    for name in ("moe.experts.up", "moe.experts.down"):
        assert by[name].compute_s == pytest.approx(e_by[name].compute_s, rel=1e-9), name
    # each rank holds 1/8 of all 256 routed + 1 shared experts' FFNs (FP8) in 58 MoE layers; EP8 holds 36
    # whole routed experts (its 32 redundant slots) + the shared one
    ffn = 3 * R1.hidden_size * R1.moe_intermediate_size
    assert tp.hbm_breakdown_bytes["weights.experts"] == pytest.approx(58 * 257 * ffn / 8, rel=1e-12)
    assert ep.hbm_breakdown_bytes["weights.experts"] == pytest.approx(58 * 37 * ffn, rel=1e-12)
    # the all-gather moves 8x the tokens over NVLink: slower than the all-to-all here, TTFT up 5-20%
    assert 1.05 < tp.ttft_s / ep.ttft_s < 1.2, (tp.ttft_s, ep.ttft_s)


def test_prefill_cli_moe_tp():
    import json

    args = ["prefill", "--system", "hgx-h200", "--devices", "8", "--moe-tp", "8"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "MoE TP8 x EP1" in r.stdout
    doc = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).stdout)
    assert doc["deployment"]["moe_tp"] == 8


def test_serve_prefill_moe_tp():
    """``serve --prefill-moe-tp 8``: 8-GPU prefill instances at MoE TP8 (EP1), named in the JSON inputs and
    the pools row, the prefill batch slower than at EP8 (the all-gather of 8x the tokens); a degree that
    does not divide the instance names --prefill-moe-tp; --mode agg refuses it."""
    import json

    base = ["serve", "--system", "hgx-h200", "--rate", "5", "--prompt-len", "8192", "--output-len", "1024"]
    base += ["--prefill-instance-devices", "8"]
    runner = CliRunner()
    docs = {}
    for m in ("1", "8"):
        r = runner.invoke(main, [*base, "--prefill-moe-tp", m, "--format", "json"])
        assert r.exit_code == 0, r.output
        docs[m] = json.loads(r.stdout)
    assert docs["8"]["inputs"]["prefill_moe_tp"] == 8 and docs["8"]["inputs"]["prefill_ep_size"] == 1
    assert docs["1"]["inputs"]["prefill_moe_tp"] == 1 and docs["1"]["inputs"]["prefill_ep_size"] == 8
    assert docs["8"]["prefill"]["batch_s"] > 1.05 * docs["1"]["prefill"]["batch_s"]
    table = runner.invoke(main, [*base, "--prefill-moe-tp", "8"])
    assert "= 4 x 8 (MoE TP8)" in table.stdout, table.stdout
    bad = runner.invoke(main, [*base, "--prefill-moe-tp", "3"])
    assert bad.exit_code == 2 and bad.stderr.startswith("cmperf: error: --prefill-moe-tp: 3 must divide")
    agg = runner.invoke(main, ["serve", "--mode", "agg", "--concurrency", "4", "--prefill-moe-tp", "8"])
    assert agg.exit_code == 2 and "--prefill-moe-tp" in agg.stderr


def test_vector_evaluate_matches_scalar_under_tp():
    """A batch grid at TP8 equals its scalar points."""
    dep = Deployment(
        devices=8, batch_per_device=np.array([1.0, 16.0, 64.0]), mtp=0, microbatches=1, attn_tp=8
    )
    ev = decode.evaluate(H200, R1, dep)
    for i, b in enumerate((1.0, 16.0, 64.0)):
        assert ev.tpot_s[i] == _pred(R1, attn_tp=8, batch_per_device=b).tpot_s


def test_search_over_attention_tp():
    """The decode search takes attention-TP degrees as an axis: on 8 H200s Llama-3.1-70B is best with TP
    attention (TP1 holds 70 GB of weights per GPU and stops at 80 sequences, TP2 halves them: 134 per
    device, 3,490 against 2,160 tokens/s per device), DeepSeek-R1 at DP attention (its latent cache would
    be replicated 8 times); TP1 alone gives the same best as before the axis existed. By default
    (``deployment.search_attn_tp``) the search tries DP attention only for the MoE model and every power
    of two of the NVLink domain for the dense one, so the default finds the TP layout."""
    from cmperf import search

    kw = {"prompt_len": 1024.0, "output_len": 1024.0, "devices": 8, "tpot_slo_s": 0.05}
    r1_dp, _ = search.search_decode(H200, R1, **kw)
    r1_both, _ = search.search_decode(H200, R1, attn_tp=(1, 8), **kw)
    assert r1_both.best == r1_dp.best and r1_dp.best.attn_tp == 1 and r1_dp.space["attn_tp"] == [1]
    llama_dp, _ = search.search_decode(H200, LLAMA, attn_tp=(1,), **kw)
    llama, _ = search.search_decode(H200, LLAMA, attn_tp=(1, 2, 4, 8), **kw)
    assert llama.best.attn_tp > 1 and llama.best.tpot_s <= 0.05
    assert llama.best.tokens_per_s_per_device > 1.3 * llama_dp.best.tokens_per_s_per_device
    assert llama.space["attn_tp"] == [1, 2, 4, 8]
    default, _ = search.search_decode(H200, LLAMA, **kw)
    assert default.space["attn_tp"] == [1, 2, 4, 8] and default.best == llama.best


def test_optimize_cli_attention_tp_axis():
    """``cmperf optimize --attn-tp 1,8`` searches both degrees and names the winner's; a bad list is one
    line naming the flag."""
    import json

    args = ["optimize", "--system", "hgx-h200", "--model", "llama-3.1-70b", "--devices", "16"]
    r = CliRunner().invoke(main, [*args, "--attn-tp", "1,8", "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["space"]["attn_tp"] == [1, 8]
    assert doc["best"]["attn_tp"] in (1, 8)
    bad = CliRunner().invoke(main, [*args, "--attn-tp", "1,x"])
    assert bad.exit_code == 2 and bad.stderr.startswith("cmperf: error: --attn-tp")


def test_serve_disagg_decode_pool_takes_tp():
    """``serve --attn-tp/--moe-tp`` (disaggregated) set the decode pool's degrees: its JSON says so, and
    at 2 req/s TP8 attention + MoE TP8 decode is faster per token than the DP/EP pool (batch ~1 per GPU:
    weight reads bind, and TP spreads them)."""
    import json

    base = ["serve", "--system", "hgx-h200", "--rate", "2", "--format", "json"]
    dp = json.loads(CliRunner().invoke(main, base).stdout)
    tp = json.loads(CliRunner().invoke(main, [*base, "--attn-tp", "8", "--moe-tp", "8"]).stdout)
    assert (tp["decode"]["attn_tp"], tp["decode"]["moe_tp"], dp["decode"]["attn_tp"]) == (8, 8, 1)
    assert tp["tpot_s"]["mean"] < dp["tpot_s"]["mean"]


def test_moe_tp_not_dividing_the_ranks_names_moe_tp():
    """The default EP follows --moe-tp: a degree that does not divide the ranks is reported as --moe-tp,
    not as the EP it implies."""
    r = CliRunner().invoke(main, ["decode", "--moe-tp", "3"])
    assert r.exit_code == 2 and r.stderr.startswith("cmperf: error: --moe-tp: 3 must divide the 320 ranks")


def test_uneven_mla_head_split_is_timed_at_its_busiest_rank():
    """TP72 over DeepSeek-R1's 128 heads (a layout TensorRT-LLM and SGLang run on GB200 NVL72): the busiest
    rank holds ceil(128 / 72) = 2 heads, so its attention ops are TP64's (also 2 heads), not 128/72 = 1.78;
    MoE TP72 over the 2048-wide experts gives slices of ceil(2048 / 72) = 29. A GQA model keeps the rule
    that the degree divides its heads (its KV heads split with them), and no degree exceeds the heads."""
    from cmperf import graph

    assert [graph.heads_per_rank(R1, t) for t in (1, 8, 48, 64, 72, 128)] == [128, 16, 3, 2, 2, 1]
    assert graph.expert_split(R1, 8) == 8.0 and graph.expert_split(R1, 72) == pytest.approx(2048 / 29)
    from cmperf.deployment import default_precision

    prec = default_precision(H200)
    ops72, ops64 = (graph.mla_decode_ops(R1, prec, 512.0, 256.0, 2048.0, t) for t in (72, 64))
    assert [(o.name, o.flops) for o in ops72] == [(o.name, o.flops) for o in ops64]
    gb = load_system("gb200-nvl72")
    dep = Deployment(devices=72, attn_tp=72, moe_tp=72, ep_size=1, batch_per_device=4.0, kv_len=2048.0)
    assert dep.check(gb, R1) == []
    p = decode.predict(gb, R1, dep)
    assert p.deployment["attn_heads_per_rank"] == 2 and p.deployment["moe_intermediate_per_rank"] == 29
    assert "attn_heads_per_rank" not in _pred(R1, attn_tp=8).deployment  # an even split adds no key
    cmd = ["decode", "--system", "gb200-nvl72", "--devices", "72", "--attn-tp", "72", "--batch", "4"]
    r = CliRunner().invoke(main, cmd)
    assert r.exit_code == 0 and "attention TP72 (2 heads on the busiest rank)" in " ".join(r.output.split())
    bad = Deployment(devices=72, attn_tp=72).check(gb, load_model("qwen3-235b-a22b"))  # 64 heads, GQA
    assert any(x.startswith("--attn-tp: 72 must divide the 72 ranks and the 64 heads") for x in bad), bad


def test_serve_prefill_attention_tp_knob():
    """``serve --prefill-attn-tp``: CloudMatrix384's prefill instances run SP-TP-SP at TP16 by default (the
    system's attention_tp_devices, 8 NPUs: a stated assumption), shown in the pools row and the JSON
    inputs; TP2 is a different prefill batch time (the all-gather / all-to-all spans 2 dies, attention's
    per-rank work is the same); a degree that does not divide the instance names --prefill-attn-tp."""
    import json

    runner = CliRunner()
    base = ["serve", "--rate", "40"]
    docs = {}
    for tp in (None, "2"):
        extra = [] if tp is None else ["--prefill-attn-tp", tp]
        r = runner.invoke(main, [*base, *extra, "--format", "json"])
        assert r.exit_code == 0, r.output
        docs[tp] = json.loads(r.stdout)
    assert docs[None]["inputs"]["prefill_attn_tp"] == 16 and docs["2"]["inputs"]["prefill_attn_tp"] == 2
    assert docs[None]["prefill"]["batch_s"] != docs["2"]["prefill"]["batch_s"]
    assert "= 6 x 16 (attention TP16)" in runner.invoke(main, base).stdout
    bad = runner.invoke(main, [*base, "--prefill-attn-tp", "3"])
    assert bad.exit_code == 2 and bad.stderr.startswith("cmperf: error: --prefill-attn-tp: 3 must divide")
