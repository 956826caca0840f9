"""Engine launch settings for an optimized deployment: ``cmperf optimize --emit sglang|vllm|trtllm``.

``pools`` turns an ``OptimizeResult`` into the pools to launch (the serving split's decode pool and prefill
instances, else the searched instances); ``emit`` writes them as a shell script for one engine. Every flag
comes from that engine's table below (``FLAGS``), each checked against the engine's own argument
definitions at the version recorded there. A setting the engine cannot express (a core split, three
microbatches, shared experts on their own ranks, a KV datatype it lacks) or a platform it does not run
on is a CmperfError naming ``--emit``: never a silent omission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .deployment import Deployment, place_experts
from .errors import CmperfError
from .specs import Model, System

#: Engine -> (version checked, where the flags are defined). TRT-LLM's wheel is not on PyPI (1.2.1 there is
#: a stub that downloads from NVIDIA's index), so its keys are checked against NVIDIA's own generator.
VERSIONS = {
    "sglang": ("0.5.23", "sglang 0.5.23 wheel: sglang/srt/arg_groups/fields/*.py (CLI = --field-name)"),
    "vllm": (
        "0.34.0",
        "vllm 0.34.0 wheel: vllm/engine/arg_utils.py, vllm/config/{parallel,cache,speculative}.py",
    ),
    "trtllm": (
        "1.3.0rc23",
        "aiconfigurator 0.12.0 backend_templates/trtllm/extra_engine_args.1.3.0rc23.yaml.j2 and trtllm.rule "
        "(the LlmArgs keys NVIDIA's generator writes for TensorRT-LLM 1.3.0rc23); trtllm-serve "
        "--extra_llm_api_options from TensorRT-LLM's docs, not checkable here",
    ),
}

#: Engine -> {flag or YAML key: where it is defined (file: field)}.
FLAGS: dict[str, dict[str, str]] = {
    "sglang": {
        "--model-path": "fields/model.py: model_path",
        "--tp-size": "fields/parallel.py: tp_size",
        "--attn-dp-size": "fields/parallel.py: attn_dp_size (replaces the deprecated --enable-dp-attention)",
        "--ep-size": "fields/parallel.py: ep_size (ep_size * moe_dp_size == tp_size, parallel_hook.py)",
        "--moe-dp-size": "fields/parallel.py: moe_dp_size",
        "--nnodes": "fields/parallel.py: nnodes",
        "--node-rank": "fields/parallel.py: node_rank",
        "--dist-init-addr": "fields/parallel.py: dist_init_addr",
        "--moe-a2a-backend": "fields/exec_.py: moe_a2a_backend (deepep, mori, ...)",
        "--deepep-mode": "fields/exec_.py: deepep_mode (normal, low_latency; also MoriEP)",
        "--ep-num-redundant-experts": "fields/exec_.py: ep_num_redundant_experts",
        "--enable-eplb": "fields/exec_.py: enable_eplb",
        "--enable-two-batch-overlap": "fields/exec_.py: enable_two_batch_overlap",
        "--max-running-requests": "fields/schedule.py: max_running_requests (server-wide)",
        "--chunked-prefill-size": "fields/schedule.py: chunked_prefill_size (server-wide; / attn_dp_size)",
        "--max-prefill-tokens": "fields/schedule.py: max_prefill_tokens",
        "--speculative-algorithm": "fields/spec.py: speculative_algorithm (builtin NEXTN)",
        "--speculative-num-steps": "fields/spec.py: speculative_num_steps",
        "--speculative-eagle-topk": "fields/spec.py: speculative_eagle_topk",
        "--speculative-num-draft-tokens": "fields/spec.py: speculative_num_draft_tokens",
        "--kv-cache-dtype": "fields/model.py: kv_cache_dtype (auto, bf16, fp8_e4m3, mxfp8, nvfp4, ...)",
        "--disaggregation-mode": "fields/disagg.py: disaggregation_mode (prefill, decode)",
        "--disaggregation-transfer-backend": "fields/disagg.py: disaggregation_transfer_backend",
        "--device": "fields/device.py: device (npu)",
        "--attention-backend": "fields/exec_.py: attention_backend (ascend: choices.py)",
    },
    "vllm": {
        "serve": "entry point vllm = vllm.entrypoints.cli.main:main",
        "--tensor-parallel-size": "arg_utils.py: parallel_group",
        "--data-parallel-size": "arg_utils.py: parallel_group",
        "--data-parallel-size-local": "arg_utils.py: parallel_group",
        "--data-parallel-start-rank": "arg_utils.py: parallel_group",
        "--data-parallel-address": "arg_utils.py: parallel_group",
        "--data-parallel-rpc-port": "arg_utils.py: parallel_group",
        "--enable-expert-parallel": "arg_utils.py: parallel_group (EP = TP x DP)",
        "--all2all-backend": "config/parallel.py: All2AllBackend (deepep_low_latency, ..., mori)",
        "--enable-dbo": "config/parallel.py: enable_dbo (dual batch overlap)",
        "--ubatch-size": "config/parallel.py: ubatch_size (microbatches)",
        "--enable-eplb": "arg_utils.py: parallel_group",
        "--eplb-config": "config/parallel.py: EPLBConfig.num_redundant_experts",
        "--max-num-seqs": "config/scheduler.py: max_num_seqs (per engine core = DP rank)",
        "--max-num-batched-tokens": "config/scheduler.py: max_num_batched_tokens (per engine core)",
        "--speculative-config": "config/speculative.py: method mtp, num_speculative_tokens",
        "--kv-cache-dtype": "config/cache.py: CacheDType (bfloat16, float16, fp8, nvfp4, ...)",
        "--kv-transfer-config": "config/kv_transfer.py: kv_connector, kv_role; NixlConnector: factory.py",
    },
    "trtllm": {
        "--extra_llm_api_options": "trtllm-serve option (TensorRT-LLM docs); not checked against source",
        "backend": "extra_engine_args template: backend: pytorch",
        "tensor_parallel_size": "extra_engine_args template",
        "moe_expert_parallel_size": "extra_engine_args template",
        "moe_tensor_parallel_size": "extra_engine_args template (moe_tp x moe_ep = tp, trtllm.rule)",
        "enable_attention_dp": "extra_engine_args template",
        "max_batch_size": "extra_engine_args template (per rank under attention DP)",
        "max_num_tokens": "extra_engine_args template (per rank under attention DP)",
        "enable_chunked_prefill": "extra_engine_args template",
        "kv_cache_config.dtype": "extra_engine_args template (bf16/fp16 -> auto: trtllm.rule)",
        "moe_config.backend": "template (CUTLASS on Hopper, WIDEEP on Blackwell: facts/hardware.yaml)",
        "moe_config.load_balancer.num_slots": "extra_engine_args template moe_config.load_balancer; "
        "cli/exps/deepseek_wideep_trtllm.yaml wideep_num_slots",
        "speculative_config.decoding_type": "extra_engine_args template (MTP on both pools: trtllm.rule)",
        "speculative_config.num_nextn_predict_layers": "extra_engine_args template",
        "cache_transceiver_config.backend": "extra_engine_args template (DEFAULT, UCX, NIXL, MPI)",
        "disable_overlap_scheduler": "extra_engine_args template (true on prefill: trtllm.rule)",
    },
}
ENGINES = tuple(FLAGS)
ENGINE_NAMES = {"sglang": "SGLang", "vllm": "vLLM", "trtllm": "TensorRT-LLM"}

#: Vendor words in a chip's name or description -> platform.
_PLATFORM_WORDS = (("nvidia", "cuda"), ("amd", "rocm"), ("ascend", "npu"), ("huawei", "npu"), ("tpu", "tpu"))
#: Engine -> platforms it runs on; the others are refused with the reason given here.
_RUNS_ON = {"sglang": ("cuda", "rocm", "npu"), "vllm": ("cuda", "rocm"), "trtllm": ("cuda",)}
_NOT_ON = {
    ("sglang", "tpu"): "SGLang does not run on TPUs (sglang-jax is a separate engine cmperf does not emit)",
    (
        "vllm",
        "npu",
    ): "vLLM runs on Ascend NPUs only through the vllm-ascend plugin, whose flags cmperf has not "
    "checked; use --emit sglang (SGLang runs on Ascend, --device npu)",
    (
        "vllm",
        "tpu",
    ): "vLLM runs on TPUs only through the tpu-inference plugin, whose flags cmperf has not checked",
    ("trtllm", "npu"): "TensorRT-LLM runs on NVIDIA GPUs only; use --emit sglang",
    ("trtllm", "rocm"): "TensorRT-LLM runs on NVIDIA GPUs only; use --emit sglang or --emit vllm",
    ("trtllm", "tpu"): "TensorRT-LLM runs on NVIDIA GPUs only",
}
#: cmperf KV datatype -> each engine's spelling (absent: the engine has no such KV cache datatype).
_KV = {
    "sglang": {"bf16": "bf16", "fp8": "fp8_e4m3", "mxfp8": "mxfp8", "nvfp4": "nvfp4"},
    "vllm": {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8", "nvfp4": "nvfp4"},
    "trtllm": {"bf16": "auto", "fp16": "auto", "fp8": "fp8"},
}


@dataclass(frozen=True)
class Pool:
    """One pool to launch: ``instances`` engine instances of ``devices`` devices each."""

    role: str  # "decode" | "prefill"
    instances: int
    devices: int
    ranks: int  # ranks per instance (devices x ranks per device)
    ep_size: int
    attn_tp: int  # ranks one attention group spans (1: data-parallel attention)
    microbatches: int
    mtp: int
    kv_dtype: str
    redundant: int  # redundant routed-expert copies
    slots: int  # routed-expert slots over the EP group (routed experts + redundant copies)
    dedicated: bool  # shared expert on its own ranks (EP > routed experts)
    attention_cube_cores: int | None  # split-cores pipeline: cube cores of the attention stream
    batch_per_device: float | None = None  # decode: concurrent sequences per device
    tokens_per_device: float | None = None  # prefill: tokens per device per step
    nodes: int = 1

    @property
    def requests(self) -> int:
        """Concurrent sequences of one decode instance (its batch per device x devices, rounded up)."""
        return math.ceil((self.batch_per_device or 0.0) * self.devices)

    @property
    def step_tokens(self) -> int:
        """Prompt tokens one prefill instance runs per step."""
        return int((self.tokens_per_device or 0.0) * self.devices)


def platform(system: System) -> str:
    """ "cuda", "rocm", "npu" or "tpu" from the vendor its chip's name or description names."""
    text = f"{system.chip.name} {system.chip.description}".lower()
    for word, plat in _PLATFORM_WORDS:
        if word in text:
            return plat
    raise CmperfError(
        f"--emit: cannot tell the platform of chip {system.chip.name} (its description names none of "
        "NVIDIA, AMD, Ascend, TPU); say the vendor in its description"
    )


def pools(system: System, model: Model, res, kv_dtype: str) -> list[Pool]:
    """The decode pool and prefill pool of ``res`` (a ``search.OptimizeResult``): the serving split where
    there is one (decode: one instance over the pool, EP over all its ranks, as ``search.serving_pools``),
    else the best searched instance of each phase."""
    d, pre = res.decode.best, res.prefill.best if res.prefill is not None else None
    if d is None:
        raise CmperfError("--emit: no decode configuration meets the SLOs; nothing to launch")
    split = res.serving.best if res.serving is not None else None
    rpd = system.ranks_per_device
    dec_devices = int(split["decode_devices"]) if split else d.devices
    dec_ep = dec_devices * rpd if split else d.ep_size
    out = [
        _pool(system, model, "decode", 1, dec_devices, dec_ep, d.attn_tp, d.microbatches, d.mtp, kv_dtype, d)
    ]
    if pre is not None:
        tp = Deployment(phase="prefill", devices=pre.devices).resolve(system, model).attn_tp
        n = int(split["prefill_instances"]) if split else 1
        out.append(
            _pool(
                system,
                model,
                "prefill",
                n,
                pre.devices,
                pre.ep_size,
                tp,
                pre.microbatches,
                d.mtp,
                kv_dtype,
                pre,
            )
        )
    return out


def _pool(system, model, role, n, devices, ep, attn_tp, mb, mtp, kv, c) -> Pool:
    place = place_experts(model, ep)
    return Pool(
        role,
        n,
        devices,
        devices * system.ranks_per_device,
        ep,
        attn_tp,
        mb,
        mtp,
        kv,
        place.num_redundant,
        model.n_routed_experts + place.num_redundant,
        place.dedicated and model.n_shared_experts > 0,
        getattr(c, "attention_cube_cores", None) if mb > 1 else None,
        getattr(c, "batch_per_device", None),
        getattr(c, "tokens_per_device", None),
        math.ceil(devices / system.devices_per_node),
    )


def _check(engine: str, system: System, model: Model, p: Pool) -> None:
    """CmperfError naming --emit when ``engine`` cannot express pool ``p`` on ``system``."""
    name, plat = ENGINE_NAMES[engine], platform(system)
    where = f"--emit {engine}: the {p.role} pool"
    if plat not in _RUNS_ON[engine]:
        raise CmperfError(
            f"--emit {engine}: {system.name} runs on {system.chip.name}; {_NOT_ON[(engine, plat)]}"
        )
    if p.attention_cube_cores is not None:
        raise CmperfError(
            f"{where} splits the {system.chip.cube_cores} cube cores of a {system.chip.rank} between the "
            f"attention ({p.attention_cube_cores}) and MoE streams ({system.name} [overlap.{p.role}] "
            f"split-cores, CloudMatrix-Infer); {name} has no setting for it"
        )
    if p.dedicated:
        raise CmperfError(
            f"{where} runs EP{p.ep_size} with the shared expert on ranks of its own (EP > "
            f"{model.n_routed_experts} routed experts); {name} replicates the shared expert on every rank"
        )
    if p.microbatches > {"sglang": 2, "vllm": 4, "trtllm": 1}[engine]:
        most = {"sglang": "2 (--enable-two-batch-overlap)", "vllm": "4 (--ubatch-size)", "trtllm": "1"}[
            engine
        ]
        raise CmperfError(f"{where} runs {p.microbatches} microbatches; {name} runs at most {most}")
    if p.kv_dtype not in _KV[engine]:
        raise CmperfError(
            f"{where} stores the KV cache in {p.kv_dtype}; {name} has no such KV cache datatype "
            f"(cmperf maps {', '.join(_KV[engine])}); give another --kv-dtype"
        )
    if p.ep_size * (p.ranks // p.ep_size) != p.ranks:
        raise CmperfError(f"{where}: EP{p.ep_size} does not divide its {p.ranks} ranks")
    if engine == "vllm" and p.ep_size != p.ranks:
        raise CmperfError(f"{where} runs EP{p.ep_size} on {p.ranks} ranks; vLLM's EP is TP x DP = all ranks")


def _sglang(system: System, p: Pool, plat: str) -> list[str]:
    a2a = "mori" if plat == "rocm" else "deepep"
    head = f"${p.role.upper()}_HEAD"
    args = [
        f'--model-path "$MODEL" --disaggregation-mode {p.role}',
        f"--tp-size {p.ranks} --attn-dp-size {p.ranks // p.attn_tp} --ep-size {p.ep_size}"
        + (f" --moe-dp-size {p.ranks // p.ep_size}" if p.ep_size != p.ranks else ""),
        f"--moe-a2a-backend {a2a} --deepep-mode {'low_latency' if p.role == 'decode' else 'normal'}",
    ]
    if p.redundant:
        args.append(f"--ep-num-redundant-experts {p.redundant} --enable-eplb")
    if p.role == "decode":
        args.append(f"--max-running-requests {p.requests}")
    else:
        toks = p.step_tokens
        args.append(f"--chunked-prefill-size {toks} --max-prefill-tokens {toks}")
    if p.microbatches == 2:
        args.append("--enable-two-batch-overlap")
    if p.mtp:
        args.append(
            f"--speculative-algorithm NEXTN --speculative-num-steps {p.mtp} --speculative-eagle-topk 1 "
            f"--speculative-num-draft-tokens {p.mtp + 1}"
        )
    args.append(f"--kv-cache-dtype {_KV['sglang'][p.kv_dtype]}")
    transfer = {"cuda": "mooncake", "rocm": "mori", "npu": "ascend"}[plat]
    args.append(f"--disaggregation-transfer-backend {transfer}")
    if plat == "npu":
        args.append("--device npu --attention-backend ascend")
    args.append(f"--nnodes {p.nodes} --node-rank $NODE_RANK --dist-init-addr {head}:5000")
    return ["python -m sglang.launch_server " + " \\\n    ".join(args)]


def _vllm(system: System, p: Pool, plat: str) -> list[str]:
    dp = p.ranks // p.attn_tp
    local = math.ceil(dp / p.nodes)
    if p.role == "decode":
        a2a = "mori" if plat == "rocm" else "deepep_low_latency"
        sched = f"--max-num-seqs {math.ceil(p.requests / dp)}"
    else:
        a2a = "mori" if plat == "rocm" else "deepep_high_throughput"
        sched = f"--max-num-batched-tokens {p.step_tokens // dp}"
    args = [
        f"--tensor-parallel-size {p.attn_tp} --data-parallel-size {dp} --enable-expert-parallel",
        f"--data-parallel-size-local {local} --data-parallel-start-rank $((NODE_RANK * {local})) "
        f"--data-parallel-address ${p.role.upper()}_HEAD --data-parallel-rpc-port 13345",
        f"--all2all-backend {a2a}",
    ]
    if p.redundant:
        args.append(f"--enable-eplb --eplb-config '{{\"num_redundant_experts\": {p.redundant}}}'")
    args.append(sched)
    if p.microbatches > 1:
        args.append("--enable-dbo" if p.microbatches == 2 else f"--ubatch-size {p.microbatches}")
    if p.mtp:
        args.append(f'--speculative-config \'{{"method": "mtp", "num_speculative_tokens": {p.mtp}}}\'')
    args.append(f"--kv-cache-dtype {_KV['vllm'][p.kv_dtype]}")
    args.append('--kv-transfer-config \'{"kv_connector": "NixlConnector", "kv_role": "kv_both"}\'')
    lines = ['vllm serve "$MODEL" ' + " \\\n    ".join(args)]
    if p.nodes > 1:
        lines.insert(0, "# on the other nodes of an instance (NODE_RANK > 0) add --headless")
    return lines


def _trtllm(system: System, p: Pool, plat: str) -> list[str]:
    dp = p.ranks // p.attn_tp
    blackwell = any(w in system.chip.description.lower() for w in ("blackwell", "rubin"))
    decode = p.role == "decode"
    per_rank_batch = math.ceil(p.requests / dp) if decode else 1
    tokens = per_rank_batch * (1 + p.mtp) if decode else p.step_tokens // dp
    y = [
        "backend: pytorch",
        f"tensor_parallel_size: {p.ranks}",
        f"moe_expert_parallel_size: {p.ep_size}",
        f"moe_tensor_parallel_size: {p.ranks // p.ep_size}",
        f"enable_attention_dp: {'true' if p.attn_tp == 1 else 'false'}",
        f"max_batch_size: {per_rank_batch}",
        f"max_num_tokens: {tokens}",
        f"enable_chunked_prefill: {'false' if decode else 'true'}",
        "kv_cache_config:",
        f"  dtype: {_KV['trtllm'][p.kv_dtype]}",
        "moe_config:",
        f"  backend: {'WIDEEP' if blackwell else 'CUTLASS'}",
    ]
    if p.redundant:
        if not blackwell:
            raise CmperfError(
                f"--emit trtllm: the {p.role} pool holds {p.redundant} redundant experts; TensorRT-LLM's "
                f"load balancer needs the WIDEEP MoE backend, which does not run on {system.chip.name}"
            )
        y += ["  load_balancer:", f"    num_slots: {p.slots}"]
    if p.mtp:
        y += ["speculative_config:", "  decoding_type: MTP", f"  num_nextn_predict_layers: {p.mtp}"]
    y += ["cache_transceiver_config:", "  backend: DEFAULT"]
    y.append(f"disable_overlap_scheduler: {'false' if decode else 'true'}")
    f = f"{p.role}.yaml"
    return [f"cat > {f} <<'EOF'", *y, "EOF", f'trtllm-serve "$MODEL" --extra_llm_api_options {f}']


_RENDER = {"sglang": _sglang, "vllm": _vllm, "trtllm": _trtllm}


def describe(system: System, p: Pool) -> str:
    """One comment line for pool ``p``: "# decode pool: instances 1 x 32 GPUs (nodes 4, ...)"."""
    unit = "NPUs" if platform(system) == "npu" else "GPUs" if platform(system) != "tpu" else "chips"
    what = (
        f"batch {p.batch_per_device:g}/device"
        if p.role == "decode"
        else f"{p.tokens_per_device:g} tokens/device per step"
    )
    attn = "data-parallel attention" if p.attn_tp == 1 else f"attention TP{p.attn_tp}"
    return (
        f"# {p.role} pool: instances {p.instances} x {p.devices} {unit} (nodes {p.nodes}, ranks {p.ranks}), "
        f"EP{p.ep_size}, {attn}, {what}, microbatches {p.microbatches}, MTP {p.mtp}, KV {p.kv_dtype}, "
        f"redundant experts {p.redundant}"
    )


def emit(engine: str, system: System, model: Model, ps: list[Pool], title: str = "") -> str:
    """The shell script that launches pools ``ps`` on ``engine`` (every pool checked first: one error, exit
    2, before anything is printed)."""
    if engine not in FLAGS:
        raise CmperfError(f"--emit: unknown engine {engine!r}; choose {', '.join(ENGINES)}")
    for p in ps:
        _check(engine, system, model, p)
    version, where = VERSIONS[engine]
    plat = platform(system)
    out = [
        "#!/bin/sh",
        f"# {title}" if title else f"# cmperf optimize --emit {engine}",
        f"# {ENGINE_NAMES[engine]} {version}; flags checked against {where}",
        f"# MODEL: the {model.name} checkpoint (path or Hugging Face id); NODE_RANK: this node's rank in its "
        "instance; DECODE_HEAD / PREFILL_HEAD: the first node of the instance",
        "# weights: the engine reads their datatype from the checkpoint's quantization config",
    ]
    for p in ps:
        out += ["", describe(system, p), *_RENDER[engine](system, p, plat)]
    return "\n".join(out) + "\n"
