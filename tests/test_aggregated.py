"""Issue 13 item 3: aggregated serving (cmperf.aggregated, `serve --mode agg`, `optimize --compare-modes`).

Numbers are DeepSeek-R1 on one 8-GPU hgx-h200 engine (EP8, FP8, MTP 1 @ 0.7, SGLang's 8,192-token chunk
budget), spec files of this writing; the tolerances say what each comparison allows and why."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import aggregated as agg
from cmperf import decode, serving
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.specs import load_model, load_system


@pytest.fixture(scope="module")
def h200():
    return load_system("hgx-h200"), load_model("deepseek-r1")


ENGINE = agg.Engine(Deployment(devices=8))


def wl(rate=None, n=None, p=1024, o=1024):
    return serving.Workload(rate_per_s=rate, concurrency=n, prompt_len=p, output_len=o)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "160"})


def test_default_chunk_follows_sglang(h200):
    """SGLang 0.5.23 by device memory: 8,192 on H200 (141 GB), 16,384 on B200 (192 GB); 8,192 on a 64 GB
    910C die (the NPU rule)."""
    assert agg.default_chunk_tokens(h200[0]) == 8192
    assert agg.default_chunk_tokens(load_system("hgx-b200")) == 16384
    assert agg.default_chunk_tokens(load_system("cloudmatrix384")) == 8192
    # a profile's own budget wins: TensorRT-LLM's max_num_tokens 8,192 on B200 too; SGLang's is the rule
    b200 = load_system("hgx-b200")
    assert agg.default_chunk_tokens(b200, "tensorrt-llm") == 8192
    assert agg.default_chunk_tokens(b200, "sglang") == 16384
    engine = agg.Engine(Deployment(devices=8, framework="tensorrt-llm"))
    assert engine.chunk(b200) == 8192.0 and agg.Engine(Deployment(devices=8)).chunk(b200) == 16384.0


def test_ttft_grows_with_the_prefill_share(h200):
    """Poisson 1 -> 15 req/s: the prefill chunk's share of the mean step rises (1.4% -> 9.7%) and with it
    the TTFT (62.8 -> 91.3 ms) and the TPOT, strictly."""
    rs = [agg.evaluate(*h200, wl(rate), ENGINE, limits=False) for rate in (1, 4, 8, 12, 15)]
    share = [r.prefill_share for r in rs]
    ttft = [r.ttft_s["mean"] for r in rs]
    tpot = [r.tpot_s["mean"] for r in rs]
    assert all(np.diff(share) > 0) and all(np.diff(ttft) > 0) and all(np.diff(tpot) > 0)
    assert share[0] == pytest.approx(0.0145, abs=0.002) and share[-1] == pytest.approx(0.097, abs=0.01)
    assert ttft[0] == pytest.approx(0.0628, rel=0.05) and ttft[-1] == pytest.approx(0.0913, rel=0.05)
    # a smaller chunk budget: 2,048 over 8 groups is 256 tokens per step, 4 chunk steps per prompt
    small = agg.evaluate(*h200, wl(8), agg.Engine(Deployment(devices=8), 2048), limits=False)
    assert (small.chunk_tokens_per_group, small.prefill_steps_per_prompt) == (256.0, 4)
    assert small.ttft_s["mean"] > rs[2].ttft_s["mean"]


def test_tpot_grows_with_isl_at_fixed_batch(h200):
    """Batch 16 per GPU, output 1,024: ISL 1,024 / 4,096 / 8,192 give TPOT 25.8 / 30.4 / 38.1 ms above the
    decode-only 24.9 / 26.4 / 28.4 ms (the longer prompt's chunk steps and KV)."""
    tpot, zero = [], []
    for p in (1024, 4096, 8192):
        c = agg._Curve(*h200, wl(1.0, p=p), ENGINE)
        mean, _, z, _, _, _ = c.point(np.array([16.0]))
        tpot.append(float(mean[0]) / c.per_step)
        zero.append(float(z[0]) / c.per_step)
    assert all(np.diff(tpot) > 0)
    assert tpot == pytest.approx([0.0258, 0.0304, 0.0381], rel=0.03)
    assert all(t > z for t, z in zip(tpot, zero, strict=True))


def test_littles_law_poisson(h200):
    """Poisson 8 req/s: D b = lambda O TPOT (the curve is interpolated on CURVE_POINTS batches, the reported
    TPOT evaluated exactly: 1e-3) and concurrency = lambda (TTFT + O TPOT) (exact by construction)."""
    r = agg.evaluate(*h200, wl(8), ENGINE, limits=False)
    assert 8 * r.batch_per_device == pytest.approx(8 * 1024 * r.tpot_s["mean"], rel=1e-3)
    assert r.concurrency == pytest.approx(8 * (r.ttft_s["mean"] + 1024 * r.tpot_s["mean"]), rel=1e-12)
    assert r.load == "poisson" and not r.overloaded and r.slo_met
    assert r.input_tokens_per_s_per_device == pytest.approx(8 * 1024 / 8)


def test_closed_loop_identity(h200):
    """64 users: throughput X = N / (TTFT + O TPOT) and the decode part D b = X O TPOT (interpolated curve:
    1e-3); 2.56 req/s, 8 x 7.98 sequences; the first wave (64 users at once) waits longer than the steady
    state."""
    r = agg.evaluate(*h200, wl(n=64), ENGINE, limits=False)
    assert r.rate_rps == pytest.approx(64 / (r.ttft_s["mean"] + 1024 * r.tpot_s["mean"]), rel=1e-3)
    assert 8 * r.batch_per_device == pytest.approx(r.rate_rps * 1024 * r.tpot_s["mean"], rel=1e-3)
    assert r.rate_rps == pytest.approx(2.56, rel=0.03) and r.concurrency == 64
    assert r.load == "closed-loop" and r.ttft_first_wave_s > r.ttft_s["mean"]


def test_first_wave_beyond_kv_memory_waits_in_rounds(h200):
    """Past the HBM cap (162 per GPU: 1,296 sequences) the closed loop runs in rounds of the users that
    fit: the first wave is the wave of those 1,296 plus every request's wait for KV memory, (N - 1,296) / X
    as in the steady state, so 1,000 more users add 1,000 / X (39.0 s at X = 25.6 req/s) exactly, and 2,000
    users wait the 1,296 users' wave (8.9 s) plus 704 / X (27.5 s)."""
    r2, r3 = (agg.evaluate(*h200, wl(n=n), ENGINE, limits=False) for n in (2000, 3000))
    assert r2.waits_for_memory and r3.waits_for_memory and r2.rate_rps == r3.rate_rps
    assert r3.ttft_first_wave_s - r2.ttft_first_wave_s == pytest.approx(1000 / r2.rate_rps, rel=1e-9)
    fits = agg.evaluate(*h200, wl(n=1296), ENGINE, limits=False)
    assert not fits.waits_for_memory and fits.ttft_first_wave_s == pytest.approx(8.92, rel=0.02)
    assert r2.ttft_first_wave_s == pytest.approx(fits.ttft_first_wave_s + 704 / r2.rate_rps, rel=0.01)
    args = ("--system", "hgx-h200", "--devices", "8", "--prompt-len", "1024", "--output-len", "1024")
    out = run("serve", "--mode", "agg", "--concurrency", "2000", *args)
    assert out.exit_code == 0, out.output
    assert "36.374 s (rounds of the 1,296 users that fit in KV memory)" in out.output


def test_first_wave_grows_with_the_users_across_the_memory_cap(h200):
    """The first wave never shrinks as users are added, on either side of the HBM cap (1,296 sequences)
    and across it: the rounds' memory wait picks up where the wave of the users that fit leaves off."""
    waves = [
        agg.evaluate(*h200, wl(n=n), ENGINE, limits=False).ttft_first_wave_s for n in range(64, 2600, 128)
    ]
    assert all(b >= a for a, b in itertools.pairwise(waves)) and waves[-1] > 2 * waves[0]


def test_zero_prompt_is_plain_decode(h200):
    """A one-token prompt (the smallest a workload takes) with 16K outputs: the chunk steps are 7e-5 of the
    step, so the engine's TPOT is `cmperf decode`'s at its batch and KV within 1e-4; the decode-only step
    is decode.predict's exactly."""
    w = wl(0.05, p=1, o=16384)
    r = agg.evaluate(*h200, w, ENGINE, limits=False)
    dep = Deployment(
        devices=8,
        batch_per_device=r.batch_per_device,
        kv_len=w.kv_mean_len,
        kv_capacity_len=16385,
        kv_cv=w.kv_cv,
        microbatches=r.microbatches,
    )
    p = decode.predict(*h200, dep)
    assert r.decode_step_s == pytest.approx(p.step_s, rel=1e-12)
    assert r.tpot_s["mean"] == pytest.approx(p.tpot_s, rel=1e-4)
    assert r.prefill_share < 1e-4


def test_overload_and_slo_limits(h200):
    """Past its capacity (25.6 req/s: the HBM batch cap of 162 per GPU of 141 GiB) the engine is
    overloaded: inf TTFT and TPOT, exit 3 from the CLI; the SLO limits are at most the capacity."""
    r = agg.evaluate(*h200, wl(40), ENGINE)
    assert r.overloaded and r.limited_by == "HBM" and r.ttft_s["mean"] == float("inf")
    assert r.capacity_rps == pytest.approx(25.65, rel=0.02) and r.max_batch_per_device == 162
    lim = agg.slo_limits(*h200, wl(1), ENGINE, serving.SLO(ttft_s=2.0, tpot_s=0.03))
    assert 0 < lim["tpot_slo_rps"] < lim["capacity_rps"] and lim["binding_slo"] == "tpot"
    ok = agg.evaluate(*h200, wl(0.999 * lim["tpot_slo_rps"]), ENGINE, serving.SLO(tpot_s=0.03))
    assert ok.tpot_s["p99"] <= 0.03 * (1 + 2e-3)


def test_serve_agg_formats():
    base = ("serve", "--mode", "agg", "--system", "hgx-h200", "--devices", "8", "--rate", "2")
    base += ("--prompt-len", "1024", "--output-len", "1024")
    j = run(*base, "--format", "json")
    assert j.exit_code == 0, j.output
    from test_fuzz_cli import check_json  # the documented nulls (docs/json.md) and finite numbers

    check_json(j.stdout, "serve --mode agg")
    closed = run(*base[:-6], "--concurrency", "64", "--format", "json")
    assert closed.exit_code == 0, closed.output
    check_json(closed.stdout, "serve --mode agg --concurrency")
    doc = json.loads(j.stdout)
    assert doc["kind"] == "serve-agg" and doc["load"] == "poisson" and doc["chunk_tokens"] == 8192
    assert set(doc["ttft_s"]) == {"mean", "p50", "p90", "p99"} and set(doc["tpot_s"]) == {"mean", "p99"}
    assert run(*base, "--format", "json").stdout == j.stdout  # deterministic
    t = run(*base)
    assert t.exit_code == 0 and "prefill share" in t.stdout and "chunk budget" in t.stdout
    md = run(*base, "--format", "markdown")
    assert md.stdout.startswith("# cmperf serve --mode agg")
    csv = run(*base, "--format", "csv").stdout.splitlines()
    assert len(csv) == 2 and "ttft_s.mean" in csv[0] and "prefill_share" in csv[0]
    over = run("serve", "--mode", "agg", "--system", "hgx-h200", "--devices", "8", "--rate", "400")
    assert over.exit_code == 3 and "overloaded" in over.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (("--chunk", "0"), "--chunk: '0' is out of range"),
        (("--chunk", "-512"), "--chunk: '-512' is out of range"),
        (("--chunk", "4"), "--chunk: 4 tokens per step over 8 attention-DP groups"),
        (("--prefill-devices", "32"), "--prefill-devices: applies to --mode disagg only"),
        (("--size",), "--size: applies to --mode disagg only"),
        (("--cache-hit", "0.5"), "--cache-hit: applies to --mode disagg only"),
        (("--devices", "3"), "--devices: not even one"),
    ],
)
def test_serve_agg_bad_input_is_one_line_exit_2(args, message):
    r = run("serve", "--mode", "agg", "--system", "hgx-h200", "--devices", "8", "--rate", "2", *args)
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cmperf: error: {message}"), lines


def test_disagg_refuses_agg_flags():
    r = run("serve", "--system", "hgx-h200", "--rate", "2", "--chunk", "4096")
    assert r.exit_code == 2 and r.stderr.strip() == (
        "cmperf: error: --chunk: applies to --mode agg only; leave it out with --mode disagg"
    )
    r = run("serve", "--mode", "agg", "--system", "hgx-h200", "--devices", "8")
    assert r.exit_code == 2 and r.stderr.startswith("cmperf: error: --rate:")


def test_optimize_compare_modes():
    """hgx-h200, 1K/1K, TTFT p99 <= 2 s, TPOT p99 <= 50 ms: the disaggregated split (8 prefill + 16 decode,
    3.48 req/s per GPU) beats the best aggregated layout (16 engines of 8 GPUs, 3.21 req/s per GPU): the
    engines' TTFT p99 binds (prompts queue for the chunk budget), the prefill chunks taking 20% of the
    step."""
    r = run(
        "optimize", "--system", "hgx-h200", "--prompt-len", "1024", "--output-len", "1024",
        "--compare-modes", "--format", "json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from test_fuzz_cli import check_json

    check_json(r.stdout, "optimize --compare-modes")
    m = json.loads(r.stdout)["modes"]
    assert m["winner"] == "disaggregated" and m["objective"] == "total"
    assert m["ratio"] == pytest.approx(1.085, rel=0.05)
    assert m["aggregated"]["engine_devices"] == 8 and m["aggregated"]["binding_slo"] == "ttft"
    assert m["disaggregated"]["rate_rps_per_device"] == pytest.approx(3.48, rel=0.03)
    assert m["why"].startswith("disaggregated wins: aggregated (16 x 8-device engines) is held by its TTFT")
    t = run(
        "optimize", "--system", "hgx-h200", "--prompt-len", "1024", "--output-len", "1024", "--compare-modes"
    )
    assert "aggregated vs disaggregated (128 devices)" in t.stdout and "disaggregated: 1.09x" in t.stdout


def test_engine_chunks_are_the_workloads_prompts():
    """The chunk's causal attention is over the workload's prompts whatever the engine record's prompt_len
    (regression: the record's default 4,096 priced every chunk: 8 H200s, 64 users, the 8K prompts' first
    wave was 3.84 s, now 4.41 s, and the 1K prompts' 0.477 s, now 0.423 s)."""
    s, m = load_system("hgx-h200"), load_model("deepseek-r1")
    rec = Deployment(devices=8, mtp=0)
    wave = {}
    for p in (1024.0, 8192.0):
        wl = serving.Workload(rate_per_s=None, concurrency=64, prompt_len=p, output_len=1024.0)
        a = agg.evaluate(s, m, wl, agg.Engine(rec), limits=False)
        b = agg.evaluate(s, m, wl, agg.Engine(replace(rec, prompt_len=p)), limits=False)
        assert a.tpot_s == b.tpot_s and a.ttft_first_wave_s == b.ttft_first_wave_s, p
        wave[p] = a.ttft_first_wave_s
    # 8x the prompt, more than 8x the wave (the quadratic attention): 10.4x (8.05x at 4K-token chunks)
    assert wave[8192.0] > 9 * wave[1024.0], wave


def test_tensorrt_llm_budget_is_each_attention_dp_groups(h200, monkeypatch):
    """TensorRT-LLM's max_num_tokens bounds every attention-DP rank's own forward (chunk_scope "group"):
    on 8 GPUs in attention DP8 each group has 8,192 tokens (the engine's step up to 65,536), so an 8K
    prompt is one chunk step; under SGLang's rule (the same budget split over the groups) it is 1,024 per
    group and 8 steps, and the first wave of 16 users waits longer. Under attention TP8 (one group) both
    rules are the same budget, so the results are bit-identical."""
    trt = Deployment(devices=8, framework="tensorrt-llm")
    r = agg.evaluate(*h200, wl(n=16, p=8192), agg.Engine(trt), limits=False)
    assert (r.chunk_tokens_per_group, r.chunk_tokens, r.prefill_steps_per_prompt) == (8192.0, 65536.0, 1)
    assert r.inputs["chunk_scope"] == "group" and r.inputs["chunk_tokens"] == 8192  # the knob, as given
    split = agg.evaluate(*h200, wl(n=16, p=8192), agg.Engine(replace(trt, framework="sglang"), 8192), False)
    assert (split.chunk_tokens_per_group, split.prefill_steps_per_prompt) == (1024.0, 8)
    assert split.inputs["chunk_scope"] == "engine"
    assert r.ttft_first_wave_s < split.ttft_first_wave_s
    # one attention-DP group: the scope changes nothing
    tp8 = agg.Engine(replace(trt, attn_tp=8))
    a = agg.evaluate(*h200, wl(n=16, p=8192), tp8, limits=False)
    monkeypatch.setattr(agg.frameworks, "chunk_scope", lambda name: "engine")
    b = agg.evaluate(*h200, wl(n=16, p=8192), tp8, limits=False)
    assert a.chunk_tokens == a.chunk_tokens_per_group == 8192.0
    assert (a.ttft_s, a.tpot_s, a.ttft_first_wave_s) == (b.ttft_s, b.tpot_s, b.ttft_first_wave_s)
