"""Serving-framework profiles (frameworks/*.toml, cmperf.frameworks): values with sources, the default
unchanged, the step overhead added exactly, auto microbatches within the framework's counts, and one-line
errors for an unknown name or a knob the framework cannot run."""

import dataclasses
import math

import pytest
from click.testing import CliRunner

from cmperf import decode, frameworks, points, prefill
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.errors import CmperfError
from cmperf.specs import load_model, load_system

CM = load_system("cloudmatrix384")
H800 = load_system("dgx-h800")
R1 = load_model("deepseek-r1")


def test_profiles_load_with_a_source_for_every_value():
    assert frameworks.known() == ["cloudmatrix-infer", "sglang", "tensorrt-llm", "vllm"]
    for name in frameworks.known():
        fw = frameworks.load(name)
        assert {"microbatches", "mtp_chains", "step_overhead", "cache_prefetch"} <= set(fw.sources)
        assert set(fw.sources) <= {
            "microbatches",
            "mtp_chains",
            "step_overhead",
            "request_overhead",
            "chunk_tokens",
            "chunk_scope",
            "kv_reserve_ratio",
            "kv_reserve_clip_tokens",
            "cache_prefetch",
            "cache_block_tokens",
            "expert_redundancy",
        }
        assert all(s.strip() for s in fw.sources.values())
        assert 3 not in fw.microbatches  # every shipped framework overlaps two microbatches at most
    assert frameworks.load("sglang").step_overhead_s == pytest.approx(3.055e-3, abs=1e-12)
    assert frameworks.load("tensorrt-llm").step_overhead_s == pytest.approx(0.535e-3, abs=1e-12)
    assert (
        "fitted jointly with the GPUs' expert_memory (scripts/fit_gpu_pipeline.py joint_fit"
        in frameworks.load("sglang").sources["step_overhead"]
    )
    assert not frameworks.load("cloudmatrix-infer").mtp_chains and frameworks.load("sglang").mtp_chains


def test_no_framework_is_bit_identical_and_a_zero_overhead_profile_too():
    base = decode.predict(CM, R1, Deployment())
    assert base.deployment["framework"] is None
    assert base.tpot_s == decode.predict(CM, R1, Deployment(framework=None)).tpot_s
    # CloudMatrix-Infer: 0 ms of its own, microbatches 1 or 2 (auto picks 2 at batch 96 either way)
    cmi = decode.predict(CM, R1, Deployment(framework="cloudmatrix-infer"))
    assert cmi.tpot_s == base.tpot_s and cmi.deployment["microbatches"] == 2
    assert cmi.tpot_s == pytest.approx(0.04949, rel=1e-3)  # the paper's 49.4 ms headline


def test_step_overhead_adds_exactly_its_value_to_the_step():
    dep = Deployment(microbatches=2, mtp=1, num_redundant=32)  # the placement set: SGLang's would differ
    base = decode.predict(CM, R1, dep)
    sg = decode.predict(CM, R1, dataclasses.replace(dep, framework="sglang"))
    over = frameworks.load("sglang").step_overhead_s
    assert sg.step_s - base.step_s == pytest.approx(over, rel=1e-9)
    per_step = base.step_s / base.tpot_s  # 1 + accepted drafts (1.7 at MTP 1 @ 0.7)
    assert per_step == pytest.approx(1.7, rel=1e-12)
    assert sg.tpot_s - base.tpot_s == pytest.approx(over / per_step, rel=1e-9)
    row = next(o for o in sg.ops if o.name == "step.overhead")
    assert row.total_s == pytest.approx(over, rel=1e-12)
    # on top of --step-overhead, not instead of it
    both = decode.predict(CM, R1, dataclasses.replace(dep, framework="sglang", step_overhead_s=1e-3))
    assert both.step_s - base.step_s == pytest.approx(over + 1e-3, rel=1e-9)
    # the vectorized path agrees with the scalar one
    ev = decode.evaluate(CM, R1, dataclasses.replace(dep, framework="sglang", batch_per_device=96.0))
    assert float(ev.step_s) == sg.step_s


def test_request_overhead_adds_exactly_its_value_to_every_ttft():
    """The request path outside the engine (fitted on the development half's low-concurrency aggregated
    rows, scripts/fit_framework.py: TensorRT-LLM 134.9 ms, SGLang 160.6 ms) adds to the prefill command's
    TTFT, the aggregated engine's (steady state and first wave) and the disaggregated prefill pool's."""
    from cmperf import aggregated as agg
    from cmperf import prefill, serving

    trt, sg = frameworks.load("tensorrt-llm"), frameworks.load("sglang")
    assert (trt.request_overhead_s, sg.request_overhead_s) == pytest.approx((0.1349, 0.1606), abs=1e-12)
    assert frameworks.load("cloudmatrix-infer").request_overhead_s == 0.0
    pdep = Deployment(phase="prefill", devices=32, ep_size=32)
    base = prefill.predict(H800, R1, pdep)
    with_sg = prefill.predict(H800, R1, dataclasses.replace(pdep, framework="sglang"))
    assert with_sg.ttft_s - base.ttft_s == pytest.approx(0.1606, rel=1e-9)
    assert (
        with_sg.ttft_breakdown_s["request_overhead_s"] == pytest.approx(0.1606, rel=1e-12)
        and with_sg.batch_s == base.batch_s
    )
    h200 = load_system("hgx-h200")
    wl = serving.Workload(rate_per_s=None, concurrency=8, prompt_len=1024, output_len=1024)
    curve = agg._Curve(h200, R1, wl, agg.Engine(Deployment(devices=8, framework="tensorrt-llm")))
    assert curve.request_s == pytest.approx(0.1349, rel=1e-12)
    first = agg._first_wave(curve, 8.0)
    assert curve.service(0.01, 0.02) == pytest.approx(curve.prompt_steps * 0.02 + 0.005 + 0.1349, rel=1e-12)
    curve.request_s = 0.0
    assert first - agg._first_wave(curve, 8.0) == pytest.approx(0.1349, rel=1e-9)
    pools = serving.default_pools(H800, R1)
    pools = dataclasses.replace(pools, prefill=dataclasses.replace(pools.prefill, framework="sglang"))
    grid = serving.prefill_grid(H800, R1, serving.Workload(rate_per_s=1.0), pools, 0.0)
    assert grid.after_s(0) - float(grid.kv_transfer_s[0]) == pytest.approx(0.1606, rel=1e-12)


def test_auto_microbatches_stay_within_the_framework_counts():
    # dgx-h800 batch 192: auto picks 3 without a framework (70.0 ms against 73.6 ms at 2)
    dep = Deployment(batch_per_device=192.0)
    free = decode.predict(H800, R1, dep)
    assert free.deployment["microbatches"] == 3
    for name in ("sglang", "tensorrt-llm", "vllm"):
        p = decode.predict(H800, R1, dataclasses.replace(dep, framework=name))
        assert p.deployment["microbatches"] == 2
        assert set(p.deployment["microbatches_auto_tpot_s"]) == {"1", "2"}
        over = frameworks.load(name).step_overhead_s
        # the count-2 TPOT is the free run's count-2 TPOT plus the framework's step time per token
        per_step = 1.7
        assert p.tpot_s == pytest.approx(free.deployment["microbatches_auto_tpot_s"]["2"] + over / per_step)


def test_forbidden_knobs_and_unknown_names_are_one_line_errors():
    with pytest.raises(
        CmperfError, match=r"--microbatches: framework sglang runs 1 or 2 microbatches, got 3"
    ):
        decode.predict(CM, R1, Deployment(framework="sglang", microbatches=3))
    with pytest.raises(CmperfError, match=r"--mtp: framework cloudmatrix-infer runs MTP chains of one"):
        decode.predict(CM, R1, Deployment(framework="cloudmatrix-infer", mtp=2))
    decode.predict(CM, R1, Deployment(framework="sglang", mtp=2))  # SGLang runs deeper chains
    with pytest.raises(CmperfError, match=r"--framework: unknown framework 'nope'; known: cloudmatrix-infer"):
        decode.predict(CM, R1, Deployment(framework="nope"))
    with pytest.raises(CmperfError, match=r"--microbatches: framework vllm runs 1 or 2"):
        prefill.predict(CM, R1, Deployment(phase="prefill", framework="vllm", microbatches=3))
    runner = CliRunner()
    for args, text in (
        (["--framework", "sglang", "--microbatches", "3"], "--microbatches: framework sglang runs 1 or 2"),
        (["--framework", "nope"], "known: cloudmatrix-infer, sglang, tensorrt-llm, vllm"),
    ):
        for cmd in ("decode", "prefill"):
            r = runner.invoke(main, [cmd, "--system", "cloudmatrix384", *args])
            assert r.exit_code == 2, (cmd, args, r.output)
            err = r.stderr.strip()
            assert err.count("\n") == 0 and text in err, err


def test_points_pick_the_framework_from_the_backend():
    assert points.BACKEND_FRAMEWORKS == {"trtllm": "tensorrt-llm", "sglang": "sglang", "vllm": "vllm"}
    system, model = load_system("hgx-h200"), R1
    dep = Deployment(devices=8, ep_size=8, batch_per_device=16.0, mtp=0, kv_len=1536.0, num_redundant=0)
    a = decode.predict(system, model, dep)
    b = decode.predict(system, model, dataclasses.replace(dep, framework="sglang"))
    assert b.tpot_s - a.tpot_s == pytest.approx(3.055e-3, rel=1e-9)  # MTP 0: one token per step
    assert math.isfinite(b.tpot_s)


def test_serve_takes_the_framework_in_both_modes():
    """--framework on serve reaches the decode pool (disagg) and the engine (agg): SGLang's 3.055 ms per
    step raises the decode TPOT by that over the tokens per step (MTP 1 at 0.7: 1.7)."""
    import json

    def tpot(*args):
        out = CliRunner().invoke(main, ["serve", "--rate", "10", "--format", "json", *args])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["tpot_s"]["mean"]

    base, sg = tpot(), tpot("--framework", "sglang")
    assert sg - base == pytest.approx(3.055e-3 / 1.7, rel=0.05)
    agg, agg_sg = tpot("--mode", "agg"), tpot("--mode", "agg", "--framework", "sglang")
    assert agg_sg > agg + 0.5e-3
    bad = CliRunner().invoke(main, ["serve", "--rate", "10", "--framework", "nope"])
    assert bad.exit_code == 2 and "--framework: unknown framework 'nope'" in bad.output


def test_optimize_searches_within_the_framework():
    """optimize --framework: the decode grid keeps the profile's microbatch counts (1 or 2: the grid loses
    every 3-microbatch point) and its step time enters the predictions (SGLang: lower tokens/s at the same
    TPOT SLO than without a profile)."""
    import json

    def run(*args):
        out = CliRunner().invoke(main, ["optimize", "--format", "json", *args])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)

    base, cmi, sg = run(), run("--framework", "cloudmatrix-infer"), run("--framework", "sglang")
    assert cmi["evaluated"] < base["evaluated"] and cmi["best"] == base["best"]  # the best runs 2 anyway
    assert sg["best"]["microbatches"] in (1, 2)
    assert sg["best"]["tokens_per_s_per_device"] < 0.99 * base["best"]["tokens_per_s_per_device"]


def test_pareto_and_report_take_the_framework():
    """--framework on pareto (the profile's microbatch counts bound the frontier's search: dgx-h800 decode
    evaluates 13,608 configurations instead of 20,412, none at 3 microbatches) and on report (every
    section: the CM384 default scenario at SGLang's 3.055 ms per step, and without EPLB's 32 redundant
    experts, goes over the 50 ms SLO)."""
    import json

    runner = CliRunner()
    base = ["pareto", "--system", "dgx-h800", "--format", "json"]
    free, sg = (json.loads(runner.invoke(main, base + x).stdout) for x in ([], ["--framework", "sglang"]))
    assert (free["evaluated"], sg["evaluated"]) == (20412, 13608)
    assert {p["microbatches"] for p in sg["pareto"]} <= {1, 2}
    bad = runner.invoke(main, ["pareto", "--framework", "nope"])
    assert bad.exit_code == 2 and bad.stderr.startswith("cmperf: error: --framework: unknown framework")
    rep = runner.invoke(main, ["report", "--framework", "sglang"])
    assert rep.exit_code == 0, rep.output
    assert "TPOT 54.36 ms (OVER the 50.00 ms TPOT SLO)" in rep.stdout and "framework sglang" in rep.stdout


def test_admission_reserves_what_the_framework_reserves():
    """The aggregated engine's batch cap holds each running sequence at its framework's reservation:
    P + O without a profile or under TensorRT-LLM (GUARANTEED_NO_EVICT), and under SGLang (0.5.8 scheduler:
    new_token_ratio 0.098 of min(remaining, 4,096)) P + O/2 + 0.098 (C - C^2/2O): 1K/8K holds 5,421 tokens,
    not 9,216, so hgx-b200's TP8 engine (default precision, 180 GiB) caps at 24 sequences per GPU instead of
    14 (at 32 redundant experts; with the frameworks' own placement, no redundant copies, at 27 and 16)."""
    from cmperf import aggregated as agg
    from cmperf import serving

    assert frameworks.reserved_kv_len(1024, 8192, None) == 9216.0
    assert frameworks.reserved_kv_len(1024, 8192, "tensorrt-llm") == 9216.0
    assert frameworks.reserved_kv_len(1024, 8192, "sglang") == pytest.approx(1024 + 4096 + 0.098 * 3072)
    assert frameworks.reserved_kv_len(1024, 1024, "sglang") == pytest.approx(1024 + 512 + 0.098 * 512)
    b200 = load_system("hgx-b200")
    wl = serving.Workload(rate_per_s=None, concurrency=256, prompt_len=1024, output_len=8192)

    def top(fw, red=None):
        dep = Deployment(devices=8, attn_tp=8, framework=fw, num_redundant=red)
        return agg._Curve(b200, R1, wl, agg.Engine(dep)).top

    assert top(None) == pytest.approx(14.0, abs=0.5) and top("tensorrt-llm", 32) == pytest.approx(top(None))
    assert top("sglang", 32) == pytest.approx(24.0, abs=0.5)
    assert (top("tensorrt-llm"), top("sglang")) == pytest.approx((16.0, 27.0), abs=0.5)


def test_framework_places_no_redundant_experts_unless_asked():
    """SGLang, TensorRT-LLM and vLLM run EPLB only when asked (frameworks/*.toml expert_redundancy "even"):
    at EP8 each GPU holds 32 routed experts + the shared one, not the CM384 rule's 36 + 1; at EP72 the 32
    copies that make 256 split evenly (4 per rank); MoE TP (EP1) holds every expert once under any rule.
    --redundant still wins. What it moves: the expert weights each rank holds and reads."""
    from cmperf.deployment import even_redundant, placement_arrays, redundant_for

    assert [even_redundant(R1, e) for e in (1, 8, 48, 72, 256, 320)] == [0, 0, 32, 32, 0, 0]
    assert {frameworks.load(n).expert_redundancy for n in ("sglang", "tensorrt-llm", "vllm")} == {"even"}
    assert frameworks.load("cloudmatrix-infer").expert_redundancy == "eplb"
    h200 = load_system("hgx-h200")
    dep = Deployment(devices=8, ep_size=8, batch_per_device=16.0, mtp=0, kv_len=1536.0)
    sg = dataclasses.replace(dep, framework="sglang")
    assert redundant_for(dep, R1, 8) is None and redundant_for(sg, R1, 8) == 0
    assert redundant_for(dataclasses.replace(sg, num_redundant=32), R1, 8) == 32
    assert float(placement_arrays(R1, 8.0, redundant_for(sg, R1, 8))["experts_per_rank"]) == 33.0
    assert float(placement_arrays(R1, 8.0)["experts_per_rank"]) == 37.0
    assert float(placement_arrays(R1, 1.0)["experts_per_rank"]) == 257.0  # EP1: no copy beside its original
    assert float(placement_arrays(R1, 72.0, even_redundant(R1, 72))["slots"]) == 4.0
    a, b = (decode.predict(h200, R1, d).hbm_breakdown_bytes["weights.experts"] for d in (dep, sg))
    assert b / a == pytest.approx(33 / 37, rel=1e-12)


def test_bad_choice_in_a_profile_is_one_line_naming_its_key(tmp_path, monkeypatch):
    """A profile's choice keys (cache_prefetch, expert_redundancy) outside their choices: one CmperfError
    naming the file and key (specs._Table.choice)."""
    from cmperf.errors import CmperfError

    text = (frameworks.framework_dir() / "sglang.toml").read_text()
    bad = text.replace('expert_redundancy = { value = "even"', 'expert_redundancy = { value = "most"')
    assert bad != text
    (tmp_path / "sglang.toml").write_text(bad)
    monkeypatch.setattr(frameworks, "framework_dir", lambda: tmp_path)
    frameworks.known.cache_clear()
    frameworks.load.cache_clear()
    try:
        with pytest.raises(
            CmperfError, match=r"sglang.toml: key expert_redundancy: expected one of eplb, even"
        ):
            frameworks.load("sglang")
    finally:
        frameworks.known.cache_clear()
        frameworks.load.cache_clear()
