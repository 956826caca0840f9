"""`cmperf optimize --emit`: the launch settings realize the chosen pools, use only flags from each engine's
checked table, and refuse by name what an engine cannot express."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from cmperf import engines, search, serving, specs
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.errors import CmperfError


def _pool(**kw) -> engines.Pool:
    base = dict(
        role="decode",
        instances=1,
        devices=16,
        ranks=16,
        ep_size=16,
        attn_tp=1,
        microbatches=1,
        mtp=1,
        kv_dtype="fp8",
        redundant=32,
        slots=288,
        dedicated=False,
        attention_cube_cores=None,
        batch_per_device=64.0,
        tokens_per_device=None,
        nodes=2,
    )
    return engines.Pool(**{**base, **kw})


def _flags(text: str) -> set[str]:
    return {
        f
        for line in text.splitlines()
        if not line.startswith("#")
        for f in re.findall(r"(?<![\w-])--[a-z0-9_-]+", line)
    }


@pytest.fixture(scope="module")
def h800():
    sysm, mod = specs.load_system("dgx-h800"), specs.load_model("deepseek-r1")
    res = search.optimize(sysm, mod, workload=serving.Workload(rate_per_s=None), slo=serving.SLO(2.0, 0.05))
    return sysm, mod, res


def test_pools_are_the_serving_split(h800):
    sysm, mod, res = h800
    dec, pre = engines.pools(sysm, mod, res, "bf16")
    best = res.serving.best
    assert (dec.devices, dec.ep_size, dec.instances) == (best["decode_devices"], best["decode_devices"], 1)
    assert (pre.instances, pre.devices) == (best["prefill_instances"], res.prefill.best.devices)
    assert dec.batch_per_device == res.decode.best.batch_per_device
    assert dec.microbatches == res.decode.best.microbatches and dec.mtp == res.decode.best.mtp
    assert pre.tokens_per_device == res.prefill.best.tokens_per_device
    assert dec.nodes == -(-dec.devices // 8)


def test_sglang_script_realizes_the_pools(h800):
    sysm, mod, _ = h800
    # searched under SGLang's profile, as `optimize --emit sglang` does: at most 2 microbatches
    dep = Deployment(framework="sglang")
    res = search.optimize(
        sysm, mod, workload=serving.Workload(rate_per_s=None), slo=serving.SLO(2.0, 0.05), decode=dep
    )
    ps = engines.pools(sysm, mod, res, "bf16")
    text = engines.emit("sglang", sysm, mod, ps)
    dec, pre = ps
    assert f"--tp-size {dec.ranks} --attn-dp-size {dec.ranks} --ep-size {dec.ep_size}" in text
    assert f"--max-running-requests {int(dec.batch_per_device * dec.devices)}" in text
    toks = int(pre.tokens_per_device * pre.devices)
    assert f"--chunked-prefill-size {toks} --max-prefill-tokens {toks}" in text
    assert "--deepep-mode low_latency" in text and "--deepep-mode normal" in text
    assert text.count("--speculative-num-draft-tokens 2") == 2  # MTP 1 on both pools
    assert text.count("--disaggregation-mode") == 2
    assert _flags(text) <= set(engines.FLAGS["sglang"])
    assert text == engines.emit("sglang", sysm, mod, ps)  # deterministic


def test_vllm_script_is_per_engine_core(h800):
    sysm, mod, res = h800
    dec, pre = engines.pools(sysm, mod, res, "fp8")
    text = engines.emit("vllm", sysm, mod, [dec, pre])
    assert f"--data-parallel-size {dec.ranks} --enable-expert-parallel" in text
    assert f"--max-num-seqs {int(dec.batch_per_device)}" in text  # one rank per GPU: per device = per core
    assert f"--max-num-batched-tokens {int(pre.tokens_per_device)}" in text
    assert "--kv-cache-dtype fp8" in text and '"method": "mtp"' in text
    assert _flags(text) <= set(engines.FLAGS["vllm"])


def test_trtllm_yaml_on_blackwell():
    sysm, mod = specs.load_system("hgx-b200"), specs.load_model("deepseek-r1")
    text = engines.emit("trtllm", sysm, mod, [_pool()])
    assert "max_batch_size: 64\n" in text and "max_num_tokens: 128\n" in text  # batch x (1 + MTP) per rank
    assert "  backend: WIDEEP\n    " not in text and "  backend: WIDEEP\n" in text
    assert "    num_slots: 288\n" in text and "  dtype: fp8\n" in text
    assert "num_nextn_predict_layers: 1" in text and "enable_attention_dp: true" in text
    keys = set()
    stack: list[tuple[int, str]] = []
    for line in text.split("<<'EOF'\n")[1].split("\nEOF")[0].splitlines():
        indent, key = len(line) - len(line.lstrip()), line.strip().split(":")[0]
        stack = [s for s in stack if s[0] < indent]
        keys.add(".".join([s[1] for s in stack] + [key]))
        stack.append((indent, key))
    leaves = {k for k in keys if not any(o.startswith(k + ".") for o in keys)}
    assert leaves <= set(engines.FLAGS["trtllm"]), leaves - set(engines.FLAGS["trtllm"])
    assert _flags(text) == {"--extra_llm_api_options"}


@pytest.mark.parametrize(
    "engine, system, pool, words",
    [
        ("sglang", "hgx-b200", {"microbatches": 3}, "3 microbatches"),
        ("trtllm", "hgx-b200", {"microbatches": 2}, "2 microbatches"),
        ("sglang", "hgx-b200", {"kv_dtype": "int8"}, "int8"),
        ("vllm", "hgx-b200", {"ep_size": 8}, "EP8 on 16 ranks"),
        ("sglang", "hgx-b200", {"dedicated": True, "ep_size": 16}, "shared expert"),
        ("trtllm", "hgx-h200", {}, "WIDEEP"),  # redundant experts need the Blackwell-only load balancer
        ("vllm", "cloudmatrix384", {}, "vllm-ascend"),
        ("trtllm", "mi355x-cluster", {}, "NVIDIA GPUs only"),
        ("sglang", "tpu7x-pod", {}, "sglang-jax"),
        ("sglang", "cloudmatrix384", {"attention_cube_cores": 18, "microbatches": 2}, "18"),
    ],
)
def test_what_an_engine_cannot_express_is_refused(engine, system, pool, words):
    sysm, mod = specs.load_system(system), specs.load_model("deepseek-r1")
    with pytest.raises(CmperfError, match=f"--emit {engine}") as e:
        engines.emit(engine, sysm, mod, [_pool(**pool)])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_sglang_on_ascend_names_the_npu_backends():
    sysm, mod = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    ps = [_pool(devices=16, ranks=32, ep_size=32, attn_tp=16, role="prefill", tokens_per_device=16384.0)]
    text = engines.emit("sglang", sysm, mod, ps)
    assert "--tp-size 32 --attn-dp-size 2 --ep-size 32" in text  # SP-TP-SP attention over 16 dies
    assert (
        "--device npu --attention-backend ascend" in text
        and "--disaggregation-transfer-backend ascend" in text
    )
    assert "--chunked-prefill-size 262144" in text


def test_cli_emit_and_its_errors():
    r = CliRunner().invoke(main, ["optimize", "--system", "dgx-h800", "--emit", "vllm"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("#!/bin/sh\n") and r.output.count("vllm serve") == 2
    r = CliRunner().invoke(main, ["optimize", "--emit", "sglang"])  # CloudMatrix384: split cores
    assert r.exit_code == 2 and "--emit sglang" in r.output and "split-cores" in r.output
    r = CliRunner().invoke(main, ["optimize", "--system", "dgx-h800", "--emit", "sglang", "--format", "json"])
    assert r.exit_code == 2 and "--emit" in r.output


def test_pools_without_a_split_use_the_searched_instances():
    sysm, mod = specs.load_system("dgx-h800"), specs.load_model("deepseek-r1")
    res = search.optimize(sysm, mod, slo=serving.SLO(2.0, 0.05), decode=Deployment())
    res = type(res)(res.decode, res.prefill, None, [])
    dec, pre = engines.pools(sysm, mod, res, "bf16")
    assert (dec.devices, dec.ep_size) == (res.decode.best.devices, res.decode.best.ep_size)
    assert pre.instances == 1 and pre.devices == res.prefill.best.devices


def test_emit_searches_under_the_engines_profile():
    """`optimize --emit sglang` without --framework searches under SGLang's profile (at most 2 microbatches):
    on dgx-h800 the unconstrained best decode pool runs 3, which SGLang cannot launch."""
    args = ["optimize", "--system", "dgx-h800", "--emit", "sglang"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("#!/bin/sh") and r.output.count("--disaggregation-mode") == 2
    best = search.optimize(
        specs.load_system("dgx-h800"), specs.load_model("deepseek-r1"), workload=serving.Workload(None)
    ).decode.best
    assert best is not None and best.microbatches == 3  # why the default matters
