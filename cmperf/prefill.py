"""Prefill phase: input tokens/s per device, batch time, TTFT, context caching, per-op breakdown.

Per rank (die on CloudMatrix384) a batch holds T = tokens_per_device / ranks_per_device prompt tokens
of prompts of P tokens (T/P prompts; SP-TP-SP spreads a prompt over ranks, so T/P may be fractional),
split into n microbatches of T/n tokens. A fraction h of every prompt (its first h*P tokens) is a
context-cache hit: its latent KV is loaded from the EMS pool instead of computed, but the new tokens'
attention still reads it (kv_up re-expands it in MHA form).

    per MoE layer and microbatch:  attention (MHA-form MLA, SP-TP-SP)  ->  gate  ->  dispatch  ->
                                   experts (EP32: 8+1 routed slots + 1 shared per die)  ->  combine
    batch_s   = two-stream pipeline of the n microbatches over all 61 layers (cmperf.step) + head
    tokens_per_s_per_device          = tokens_per_device / batch_s            (all prompt tokens)
    computed_tokens_per_s_per_device = (1 - h) * tokens_per_device / batch_s
    ttft_s    = batch_s + kv_transfer_s + request_overhead_s
    kv_transfer_s = latency + KV bytes per prompt / (bw * eff); request_overhead_s: the framework
    profile's request path outside the engine (HTTP, tokenization, admission; frameworks/*.toml, else 0)

MoE TP m (``Deployment.moe_tp``, TensorRT-LLM's and SGLang's --tp without EP): each expert's FFN is split m
ways over m x EP ranks; no all-to-all: each rank all-gathers the group's other tokens (dispatch message
size) and reduce-scatters their partial outputs (combine message size), and an EP rank's experts see the
tokens of m ranks (cmperf.graph.moe_ops, as in decode).

The KV transfer rides ``System.kv_transfer_plane()``: the spec's ``kv_transfer_plane``, else the scale-out
plane (CM384 §4: RDMA; DGX/HGX: the InfiniBand NIC). Worked number (dgx-h800, 4,096-token prompt, BF16
KV): 4096 x 70,272 B = 287.8 MB / (50 GB/s x 0.9) + 4 us = 6.40 ms.

EP kernels: prefill uses the system's prefill kernels when the spec has them ([collectives.prefill.*]:
DeepEP's normal kernels on NVIDIA systems, one InfiniBand message per destination node, NVLink forwarding,
``copies = "per-domain"``), else the decode ones (CloudMatrix384: Table 7's kernels serve both phases).
Cores: with the compute-comm policy and n > 1, ``[overlap.prefill] comm_cube_cores`` (DeepEP normal
kernels: 20 of 132 H800 SMs, DeepSeek-V3 report §3.2.2) are taken from the compute stream, whose GEMMs and
attention then run on (cores - comm_cube_cores)/cores of the chip; CloudMatrix384 sets none (its
dispatch/combine run on AIV + SDMA, not on the AIC).

Overlap (CM384 §4.3, policy ``[overlap.prefill] = "compute-comm"``): the AI cores run all compute
(attention, MLP; the vector kernels on the critical path of a microbatch too) in one stream, the
DMA engines run the all-to-alls (TP all-gather/all-to-all, dispatch, combine) in the other. The
period is not the coarse max(n*a, n*m, a+m) of ``cmperf.step`` (kept as ``ideal_overlap_batch_s``):
one layer alternates compute and comm *segments* (prolog | all-gather | q/kv up + attention |
all-to-all | o_proj + gate | dispatch | experts | combine), microbatch i's segment k needs its
own segment k-1, and each stream takes the segments in order (mb0, mb1, mb0, ...).
``cmperf.step.compose`` (the step composition decode uses too) simulates that list schedule exactly over
all layers (vectorized over the operating points; every layer, no extrapolation; as in decode the
layer's trailing residual add runs at the head of the next layer's compute, ``rotate=True``), so a long
comm segment behind a short compute one (the all-gather behind the 0.3 ms prolog, the combine behind the
next layer's prolog) stalls the AI cores as it does on the device.

Context-cache loading: the cached prefix's KV moves from the pool (EMS on CM384, host memory elsewhere)
over the cache plane in blocks (``cache_load_layer``): alpha-beta per block message, the plane's latency
per block plus bytes / (bandwidth x host_read_eff), the messages of one rank issued back to back. How far
the load overlaps the compute is the serving framework's (``Deployment.cache_prefetch``, cmperf.frameworks):
* "prefix" (without a profile, and CloudMatrix-Infer, TensorRT-LLM, vLLM + LMCache): every cached block
  is in HBM before the batch computes, one message per block (a block holds all layers); the whole load is
  on the critical path of the batch (TTFT and throughput; no overlap with another batch is assumed).
* "layer" (SGLang HiCache): layer l+1's blocks are prefetched while layer l computes, one message per block
  per layer, on the DMA engines next to the all-to-all. It waits on no microbatch, so it is a background
  transfer that fills the port's idle time and binds only when the port saturates: per layer at least
  n * load over its own plane (VPC), or n * (all-to-all + load) over a plane the EP kernels use (UB on
  CM384, the InfiniBand NIC on DGX/HGX). Only the first layer's load is exposed.
Default cache plane (``default_cache_plane``): "ub" where the system has it, else its scale-out plane.
The crossover (``cache_crossover_*``) is computed from the same model: the hit rate that minimizes
batch time on the chosen plane (beyond it loading is slower than the compute it saves), and the
per-rank plane bandwidth below which a fully cached prompt takes longer than recomputing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from . import memory
from .comm import DomainDedupOp, distinct_destinations, domain_scaleout_bytes, ep_message_bytes, transfer_s
from .decode import (
    CHUNK_POINTS,
    DETAIL_MAX_POINTS,
    MEASURED_EPLB,
    OpRow,
    blockwise,
    grid_shape,
    measured_imbalance,
    moe_load,
    op_rows,
    point,
    point_deployment,
    point_stage,
    routed_imbalance,
)
from .deployment import Deployment, megatron_prefill, placement_arrays, redundant_for
from .frameworks import cache_facts, request_overhead_s
from .graph import (
    Stage,
    attention_prefill_ops,
    dense_ffn_ops,
    head_ops,
    kv_bytes_per_seq,
    layer_groups,
    moe_ops,
    principal_stage,
)
from .roofline import BOUNDS
from .specs import Model, System
from .step import StageTime, binding_names, compose, segments, step_time


@dataclass(frozen=True)
class PrefillEval:
    """Arrays over the operating points (broadcast of the inputs). Times are per batch unless named."""

    batch_s: np.ndarray
    tokens_per_s_per_device: np.ndarray
    computed_tokens_per_s_per_device: np.ndarray
    ttft_s: np.ndarray
    kv_transfer_s: np.ndarray
    kv_bytes_per_sequence: np.ndarray
    cache_load_s: np.ndarray  # all cached latents of the batch on the cache plane, per rank
    cache_load_exposed_s: np.ndarray  # the part not hidden behind compute (all of it, or the first layer)
    layer_s: np.ndarray  # one MoE layer, all microbatches (steady-state pipeline period)
    dense_layer_s: np.ndarray
    head_s: np.ndarray
    ideal_overlap_batch_s: np.ndarray  # cmperf.step's coarse max(n*a, n*m, a+m) composition
    lower_batch_s: np.ndarray
    upper_batch_s: np.ndarray
    imbalance: np.ndarray
    hbm_bytes_per_rank: np.ndarray
    hbm_capacity_bytes: float
    max_tokens_per_device: np.ndarray
    feasible: np.ndarray
    # the per-op breakdown: kept on grids of at most decode.DETAIL_MAX_POINTS points (or keep_ops=True)
    stages: tuple[StageTime, ...] = field(repr=False)
    memory_parts: dict = field(repr=False)
    system: System = field(repr=False)
    model: Model = field(repr=False)
    deployment: Deployment = field(repr=False)  # resolved; its knobs broadcast to ``shape``
    load_cache: bool = field(default=True, repr=False)  # ``evaluate``'s flag, for ``at`` to evaluate again

    @property
    def shape(self) -> tuple[int, ...]:
        return np.shape(self.batch_s)

    def at(self, i: int = 0) -> PrefillPrediction:
        """Point ``i`` (flat index into ``shape``) with its full breakdown: ops (the cache load among them),
        streams, bounds, the memory verdict and the cache crossover. Without a kept breakdown (a large
        grid) point i is evaluated again on its own: the same numbers (every point's arithmetic is its own).
        """
        if not self.stages:
            one = point_deployment(self.deployment, self.shape, i)
            return evaluate(self.system, self.model, one, load_cache=self.load_cache, keep_ops=True).at(0)
        return _point_prediction(self, i)


_SUMMARY = tuple(
    f.name
    for f in fields(PrefillEval)
    if f.name not in ("hbm_capacity_bytes", "stages", "memory_parts", "system", "model", "deployment")
    and f.name != "load_cache"
)


def _domain_dedup(system: System, model: Model, ops, pl, ep, tokens, msg: dict[str, float]):
    """Dispatch/combine ops of ``copies = "per-domain"`` kernels (DeepEP normal) with their scale-out bytes
    (cmperf.comm.domain_scaleout_bytes, under the model's group-limited routing)."""
    out = []
    k = model.num_experts_per_tok + np.where(pl["dedicated"], model.n_shared_experts, 0)
    for op in ops:
        out_b = (
            domain_scaleout_bytes(system, op.collective, "prefill", ep, tokens, k, msg[op.collective], model)
            if op.collective in msg
            else None
        )
        if out_b is None:
            out.append(op)
            continue
        kw = {f.name: getattr(op, f.name) for f in fields(op)}
        out.append(DomainDedupOp(**kw, scaleout_bytes=out_b))
    return out


def evaluate(
    system: System,
    model: Model,
    dep: Deployment,
    *,
    load_cache: bool = True,
    keep_ops: bool | None = None,
    chunk_points: int = CHUNK_POINTS,
) -> PrefillEval:
    """``_evaluate_block`` over any grid size in bounded memory, as ``cmperf.decode.evaluate``: blocks of at
    most ``chunk_points`` points into the per-point summary arrays; ``keep_ops`` (default: grids of at
    most DETAIL_MAX_POINTS points) keeps the per-op breakdown (``stages``, ``memory_parts``)."""
    dep = dep.resolve(system, model)
    shape = grid_shape(dep)
    size = int(np.prod(shape))
    if keep_ops is None:
        keep_ops = size <= min(DETAIL_MAX_POINTS, chunk_points)
    if keep_ops or size <= chunk_points:
        ev = _evaluate_block(system, model, dep, load_cache, keep_ops)
        full: dict[str, Any] = {k: np.broadcast_to(getattr(ev, k), shape) for k in _SUMMARY}  # (views)
        return replace(ev, **full) if keep_ops else replace(ev, **full, stages=(), memory_parts={})
    out, ev = blockwise(
        dep, shape, chunk_points, lambda d: _evaluate_block(system, model, d, load_cache, False), _SUMMARY
    )
    summary: dict[str, Any] = out
    return replace(ev, **summary, stages=(), memory_parts={}, deployment=dep)


def _evaluate_block(
    system: System, model: Model, dep: Deployment, load_cache: bool, keep_ops: bool
) -> PrefillEval:
    """Vectorized prefill prediction of ``dep`` (a prefill ``Deployment``); every numeric knob may be a
    numpy array (they broadcast). ``load_cache=False`` makes context-cache loads free (the limit of an
    infinitely fast plane, used by ``cache_crossover``).

    Worked point (CM384 §5 prefill, --eplb perfect): 16 NPUs, EP32, 16,384 tokens per NPU of 4,096-token
    prompts, 2 microbatches -> 8,192 tokens per die, 4,096 per microbatch (one prompt).
    """
    dep = dep.resolve(system, model)
    prec = dep.precision
    assert prec is not None and dep.cache_plane is not None and dep.eplb is not None
    cache_plane = dep.cache_plane
    ov = system.overlap_for("prefill")
    policy = ov.policy
    cores = system.chip.cube_cores
    share = ov.attention_cube_cores / cores if policy == "split-cores" else 1.0
    # compute-comm with n > 1: SMs held by the comm kernels are taken from the compute stream (cmperf.step)
    compute_share = (cores - ov.comm_cube_cores) / cores
    rpd = system.ranks_per_device
    t_rank = np.asarray(dep.tokens_per_device, dtype=float) / rpd
    p = np.asarray(dep.prompt_len, dtype=float)
    h = np.asarray(dep.cache_hit, dtype=float)
    n = np.asarray(dep.microbatches, dtype=float)
    ep = np.asarray(dep.ep_size, dtype=float)
    tp = np.asarray(dep.attn_tp, dtype=float)
    m_tp = np.asarray(dep.moe_tp)
    if m_tp.size != 1:
        raise ValueError("prefill.evaluate: moe_tp is one value per call")
    m = int(m_tp.reshape(()))  # MoE TP: each expert split m ways over m x EP ranks (graph.moe_ops)
    k, hid = model.num_experts_per_tok, model.hidden_size
    disp_msg, comb_msg = ep_message_bytes(system, hid, prec, phase="prefill")
    d = system.collective("dispatch", "prefill")
    pl = _placement(model, dep, ep)
    t_mb = t_rank / n  # prompt tokens per microbatch per rank
    seqs_mb = t_mb / p
    cached_len = h * p
    new_mb = t_mb * (1.0 - h)
    # routed copies over the EP group per microbatch: computed tokens only. The measured-statistics modes
    # (--eplb none|static|dynamic, cmperf.routing) also time the all-to-all at its busiest rank (a2a), as
    # decode does; a prompt's tokens are one routing sample (its microbatch's prompts are the sequences).
    # MoE TP m: an EP rank's experts see the tokens of m ranks (all-gathered over the m x EP group), as
    # in decode (cmperf.decode._stages)
    a2a: Any = 1.0
    if dep.eplb in MEASURED_EPLB and dep.imbalance is None and model.is_moe:
        imb, a2a = measured_imbalance(model, pl, dep.eplb, m * new_mb, m * seqs_mb)
        disp_msg, comb_msg = disp_msg * a2a, comb_msg * a2a
    else:
        imb = routed_imbalance(model, pl, ep, ep * (m * k) * new_mb, dep.eplb, dep.imbalance)
    exp_tok, exp_read, copies = moe_load(model, pl, ep, m * new_mb, imb)
    # (MoE TP has no all-to-all: graph.moe_ops all-gathers the tokens and reduce-scatters the outputs)
    if m == 1 and d.copies == "per-rank":
        copies = np.where(pl["dedicated"], copies, ep * (1.0 - (1.0 - 1.0 / ep) ** k))
    elif m == 1 and d.copies == "per-domain":  # distinct destination ranks, group-limited routing
        routed = distinct_destinations(ep, k, model.n_group, model.topk_group, model.n_routed_experts)
        copies = np.where(pl["dedicated"], copies, routed)
    # a dense GQA model under TP runs Megatron TP (deployment.megatron_prefill): every rank of a TP group of t
    # computes the group's t x new_mb tokens on 1/t of every weight, two all-reduces per layer
    if megatron_prefill(model) and tp.size > 1:
        if np.any(tp != tp.flat[0]):
            raise ValueError("prefill.evaluate: a dense model's attn_tp (Megatron TP) is one value per call")
        tp = tp.reshape(-1)[:1].reshape(())
    g = megatron_degree(model, tp)
    layout = "megatron" if g > 1 else "sp-tp-sp"
    ffn = {"dense": dense_ffn_ops(model, prec, g * new_mb, g)}
    if model.is_moe:
        moe = moe_ops(model, prec, new_mb, exp_tok, exp_read, copies, ep, disp_msg, comb_msg, m)
        ffn["moe"] = _domain_dedup(
            system, model, moe, pl, ep, new_mb, {"dispatch": disp_msg, "combine": comb_msg}
        )
    stages = [
        Stage(
            name,
            count,
            tuple(
                attention_prefill_ops(model, prec, g * new_mb, g * seqs_mb, p, cached_len, tp, a, layout)
                + ffn[f]
            ),
        )
        for name, a, f, count in layer_groups(model)
    ]
    # LM head only on each prompt's last token (vocabulary-parallel over a Megatron group's tokens)
    head = head_ops(model, prec, g * t_rank * (1.0 - h), g * t_rank / p, 0.0, g)
    stages.append(Stage("head", 1, tuple(head), overlapped=False))
    sts, ideal_step, lower, upper = step_time(
        stages, system, n, policy, share, "prefill", compute_share, keep_ops=keep_ops
    )
    shape = np.broadcast(t_rank, p, h, n, ep, tp, imb).shape

    # context-cache load per layer and microbatch (module docstring: "prefix" before the compute, "layer"
    # prefetched one layer ahead)
    kv_seq = kv_bytes_per_seq(model, prec.kv, p)
    layerwise = dep.cache_prefetch == "layer"
    load_mb, load_b, _ = cache_load_layer(system, model, dep, seqs_mb, cached_len)
    loads = (h > 0) & load_cache  # (a recurrent state has bytes at cached length 0)
    load_mb = np.where(loads, load_mb, 0.0)
    shares_port = cache_plane in (d.plane, d.scaleout_plane)  # a plane the EP all-to-all uses
    layers, port_s = [], {}
    layer_sts = sts[:-1]  # every layer stage; the head comes last
    for st in layer_sts:
        segs = segments(st, policy, rotate=True)
        layers.append((st.stage.name, segs, st.stage.count))
        # busy time per microbatch of the port the prefetch runs on: the all-to-all's if it shares it
        comm_s = sum(dur for is_comm, dur in segs if is_comm) if shares_port else 0.0
        port_s[st.stage.name] = (st.stage.count, comm_s + load_mb * layerwise)
    # cmperf.step's list schedule over all layers, floored by the shared HBM (n * HBM time per layer)
    chain_s, periods = compose(layer_sts, n, policy, layers=layers)
    # The prefetch waits on no microbatch: a background transfer that fills the port's idle time, binding
    # only when the port saturates: per layer n * (all-to-all on that port + load) (module docstring; on a
    # GPU the whole all-to-all is counted against the NIC, an upper estimate of its busy time).
    floor = sum(count * n * busy for count, busy in port_s.values())
    chain_s = np.maximum(chain_s, floor)
    periods = {k_: np.maximum(v, n * port_s[k_][1]) for k_, v in periods.items()}
    head_s = sts[-1].period_s
    batch_s = np.broadcast_to(chain_s + head_s, shape)
    ideal_s = np.broadcast_to(ideal_step, shape)
    cache_load_s = n * load_mb * model.num_layers
    # layer-wise: the first layer's prefetch has nothing to hide behind; prefix: all of it comes first
    exposed = load_mb if layerwise else cache_load_s
    batch_s = batch_s + exposed
    # bounds: no overlap runs the whole load serially; speed of light hides a layer-wise load and moves a
    # prefix load at the plane's raw bandwidth
    upper = upper + cache_load_s
    if not layerwise:
        raw_bw = system.planes[cache_plane].bytes_per_s_per_rank
        lower = lower + np.where(loads, n * model.num_layers * load_b / raw_bw, 0.0)

    kv_xfer = np.broadcast_to(
        transfer_s(system, system.kv_transfer_plane(), kv_seq, where=f"{system.path}: kv_transfer_plane"),
        shape,
    )
    tps = np.asarray(dep.tokens_per_device, dtype=float) / batch_s

    # memory per rank
    all_ops = [op for s in stages for op in s.ops]

    def mem_at(scale):
        parts = memory.weight_bytes_per_rank(model, prec, pl["experts_per_rank"], 0, attn_tp=g, moe_tp=m)
        parts = {f"weights.{k_}": v for k_, v in parts.items()}
        # held until sent to decode; a Megatron rank holds its KV heads of the group's prompts
        kv_rank = kv_seq if g == 1 else g * kv_bytes_per_seq(model, prec.kv, p, tp=g)
        parts["kv_cache"] = t_rank / p * scale * kv_rank
        # dispatch/combine buffers sized by the actual counts (prefill kernels, not decode's worst case):
        # send = tokens x copies, receive = the busiest rank's copies, both message kinds, every microbatch;
        # MoE TP: the whole group's tokens gathered in, their partial outputs out
        held = m * ep * new_mb if m > 1 else new_mb * copies + exp_tok
        parts["comm_buffers"] = n * scale * held * (disp_msg + comb_msg)
        parts["activations"] = memory.activation_bytes(all_ops, n) * scale
        return parts

    parts = mem_at(1.0)
    total = sum(parts.values())
    fixed = sum(v for k_, v in parts.items() if k_.startswith("weights."))
    cap = system.chip.hbm_bytes - system.chip.hbm_reserved_bytes
    per_token = (total - fixed) / np.maximum(t_rank, 1e-12)
    max_tok = np.maximum(np.floor((cap - fixed) / per_token * rpd), 0.0)
    feasible = np.broadcast_to(total <= cap, shape)
    return PrefillEval(
        batch_s,
        tps,
        tps * (1.0 - h),
        batch_s + kv_xfer + request_overhead_s(dep.framework),
        kv_xfer,
        np.broadcast_to(kv_seq, shape),
        np.broadcast_to(cache_load_s, shape),
        np.broadcast_to(exposed, shape),
        np.broadcast_to(periods[principal_stage(model)], shape),
        np.broadcast_to(periods.get("dense", 0.0), shape),
        np.broadcast_to(head_s, shape),
        ideal_s,
        np.broadcast_to(lower, shape),
        np.broadcast_to(upper, shape),
        np.broadcast_to(imb, shape),
        np.broadcast_to(total, shape),
        cap,
        np.broadcast_to(max_tok, shape),
        feasible,
        tuple(sts),
        parts,
        system,
        model,
        dep,
        load_cache,
    )


def cache_load_layer(system: System, model: Model, dep: Deployment, seqs_mb, cached_len):
    """(seconds, bytes, block messages) of one layer's cached KV for one microbatch of ``seqs_mb`` sequences
    with ``cached_len`` cached tokens each, on ``dep.cache_plane`` (module docstring):

        bytes = seqs_mb * kv_bytes(cached_len) / layers  (mean over layers: a sliding layer reads its window)
        messages = seqs_mb * ceil(cached_len / block)  per layer ("layer"); / layers ("prefix": a block
                   holds all layers)
        seconds = messages * latency + bytes / (bandwidth * host_read_eff)

    ``dep`` is resolved (its cache_prefetch set); the block size is its framework's (cmperf.frameworks)."""
    assert dep.cache_plane is not None and dep.precision is not None
    plane = system.plane(dep.cache_plane, where="--cache-plane")
    block = cache_facts(dep.framework)[1]
    nbytes = seqs_mb * kv_bytes_per_seq(model, dep.precision.kv, cached_len) / model.num_layers
    msgs = seqs_mb * np.ceil(np.asarray(cached_len, dtype=float) / block)
    if dep.cache_prefetch != "layer":
        msgs = msgs / model.num_layers
    return msgs * plane.latency_s + nbytes / (plane.bytes_per_s_per_rank * plane.host_read_eff), nbytes, msgs


def cache_crossover(system: System, model: Model, dep: Deployment, grid: int = 201):
    """(hit rate minimizing batch time on dep.cache_plane, per-rank plane bandwidth at which loading a
    whole prompt's latents costs as much as recomputing it). Both from ``evaluate``, not assumed.

    Recompute time per token saved = (batch_s(h=0) - batch_s(h=1, free load)) / T; the break-even
    bandwidth = cached bytes per token (576 values x kv bytes x layers, per microbatch stream n) / that.
    """
    dep = dep.resolve(system, model)
    assert dep.precision is not None and dep.cache_plane is not None
    hs = np.linspace(0.0, 1.0, grid)
    ev = evaluate(system, model, replace(dep, cache_hit=hs))
    best_h = float(hs[int(np.argmin(ev.batch_s))])
    # compute saved per cached token, with loading made free (an infinitely fast plane is the limit)
    t_rank = dep.tokens_per_device / system.ranks_per_device
    kvb = float(kv_bytes_per_seq(model, dep.precision.kv, dep.prompt_len)) / dep.prompt_len
    ev0 = evaluate(system, model, replace(dep, cache_hit=np.array([0.0, 1.0])), load_cache=False)
    saved_per_token = (float(ev0.batch_s[0]) - float(ev0.batch_s[1])) / t_rank
    plane = system.planes[dep.cache_plane]
    bw = kvb / saved_per_token / plane.host_read_eff if saved_per_token > 0 else float("inf")
    return best_h, bw


# ---------------------------------------------------------------------------------------------- scalar record


@dataclass(frozen=True)
class PrefillPrediction:
    system: str
    model: str
    deployment: dict
    tokens_per_s_per_device: float  # over all prompt tokens, cache hits included (DeepSeek's convention)
    computed_tokens_per_s_per_device: float
    batch_s: float
    ttft_s: float
    ttft_breakdown_s: dict[str, float]
    kv_transfer_s: float
    kv_transfer_plane: str
    kv_bytes_per_sequence: float
    cache_load_s: float
    cache_crossover_hit: float
    cache_crossover_bytes_per_s_per_rank: float
    layer_s: float  # one MoE layer, all microbatches
    dense_layer_s: float
    head_s: float
    ideal_overlap_batch_s: float
    lower_batch_s: float
    upper_batch_s: float
    lower_tokens_per_s_per_device: float  # from upper_batch_s (no overlap)
    upper_tokens_per_s_per_device: float  # from lower_batch_s (speed of light)
    imbalance: float
    feasible: bool
    reasons: list[str]
    hbm_bytes_per_rank: float
    hbm_capacity_bytes_per_rank: float
    hbm_breakdown_bytes: dict[str, float]
    max_tokens_per_device: float
    streams: dict[str, dict[str, float | str]]
    ops: list[OpRow]


def predict(system: System, model: Model, dep: Deployment) -> PrefillPrediction:
    """Scalar prediction with the per-op breakdown (validates ``dep`` first: CmperfError naming the flag)."""
    dep, _ = dep.validate(system, model)
    return evaluate(system, model, dep).at(0)


def megatron_degree(model: Model, tp) -> int:
    """The Megatron TP group's degree of a scalar attention TP ``tp`` (``deployment.megatron_prefill``:
    a dense GQA model's), 1 where the layout is SP-TP-SP (weights whole on every rank)."""
    return int(tp) if megatron_prefill(model) and float(tp) > 1 else 1


def _placement(model: Model, dep: Deployment, ep) -> dict:
    """The framework's expert placement over ``ep`` ranks; prefill keeps its own rule for --redundant
    (none: its default)."""
    red = redundant_for(replace(dep, num_redundant=None), model, ep)
    return placement_arrays(model, ep, red, dep.slots_per_rank)


def weight_bytes_per_rank(system: System, model: Model, dep: Deployment) -> float:
    """Weight bytes one rank of the resolved scalar prefill record ``dep`` holds: ``evaluate``'s
    ``weights.*`` memory parts, without evaluating the layers (``serving.default_pools`` sizes its
    instance by it)."""
    assert dep.precision is not None
    pl = _placement(model, dep, np.asarray(dep.ep_size, dtype=float))
    g = megatron_degree(model, dep.attn_tp)
    parts = memory.weight_bytes_per_rank(
        model, dep.precision, pl["experts_per_rank"], 0, attn_tp=g, moe_tp=int(dep.moe_tp)
    )
    return float(sum(float(np.asarray(v).reshape(-1)[0]) for v in parts.values()))


def fit_defaults(
    system: System, model: Model, dep: Deployment, p: PrefillPrediction, *, devices: bool, tokens: bool
) -> PrefillPrediction:
    """``p`` (the prediction of ``dep``) or, when it does not fit in HBM and the knobs left to their
    defaults can make it fit, the prediction that does: with ``devices`` (no --devices, --ep or --moe-tp
    given) the instance doubles, up to the system, until one prompt per device fits beside the weights
    (EP over all its ranks: a 1.6T-2.8T MoE's experts do not fit 32 ranks); with ``tokens`` (no
    --tokens-per-device) the batch falls to the largest whole number of prompts per device that fits. The
    deployment records what it replaced (``devices_fitted_from``, ``tokens_fitted_from``). For defaults only:
    a knob the user gives is predicted as given (as ``decode.fit_default_batch``)."""
    if p.feasible or any(not r.startswith("HBM") for r in p.reasons):
        return p
    best, rec = p, dep
    n = int(p.deployment["devices"])
    while devices and best.max_tokens_per_device < p.deployment["prompt_len"] and 2 * n <= system.num_devices:
        n *= 2
        grown = replace(dep, devices=n, ep_size=None)
        if grown.check(system, model):
            break
        best, rec = predict(system, model, grown), grown
    prompt = float(best.deployment["prompt_len"])
    if not best.feasible and tokens and best.max_tokens_per_device >= prompt:
        rec = replace(rec, tokens_per_device=math.floor(best.max_tokens_per_device / prompt) * prompt)
        best = predict(system, model, rec)
    if not best.feasible:
        tried = int(best.deployment["devices"])
        if tried > int(p.deployment["devices"]):  # growing did not help: say how far it went
            p.reasons.append(
                f"--devices: no instance of up to {tried} devices (doubling the default "
                f"{p.deployment['devices']}) holds the weights beside one prompt per device"
            )
        return p
    if best.deployment["devices"] != p.deployment["devices"]:
        best.deployment["devices_fitted_from"] = p.deployment["devices"]
    if best.deployment["tokens_per_device"] != p.deployment["tokens_per_device"]:
        best.deployment["tokens_fitted_from"] = p.deployment["tokens_per_device"]
    return best


def _point_prediction(ev: PrefillEval, i: int) -> PrefillPrediction:
    system, model, shape = ev.system, ev.model, ev.shape
    dep = point_deployment(ev.deployment, shape, i)
    assert dep.precision is not None and dep.cache_plane is not None
    best_h, bw_cross = cache_crossover(system, model, dep)
    _f = lambda x: point(x, shape, i)  # noqa: E731
    feasible = bool(point(ev.feasible, shape, i))
    reasons = []
    if not feasible:
        reasons.append(
            f"HBM: needs {_f(ev.hbm_bytes_per_rank) / 1e9:.1f} GB per {system.chip.rank}, "
            f"{ev.hbm_capacity_bytes / 1e9:.1f} GB usable; the largest token budget that fits is "
            f"{_f(ev.max_tokens_per_device):.0f} tokens per device"
        )
    sts = [point_stage(st, shape, i) for st in ev.stages]
    streams = {}
    names = binding_names(system.overlap_for("prefill").policy)
    for st in sts:
        period = {"dense": ev.dense_layer_s, "moe": ev.layer_s}.get(st.stage.name, st.period_s)
        streams[st.stage.name] = {
            "count": st.stage.count,
            "a_s": _f(st.a_s),
            "m_s": _f(st.m_s),
            "period_s": _f(period),
            "ideal_period_s": _f(st.period_s),
            "ideal_binding": names[int(st.binding)],  # type: ignore[arg-type]  # kept with the ops
        }
    ops = op_rows(sts, dep.microbatches)
    if dep.cache_hit > 0:
        seqs_mb = dep.tokens_per_device / system.ranks_per_device / dep.microbatches / dep.prompt_len
        t, nbytes, msgs = (
            float(x) for x in cache_load_layer(system, model, dep, seqs_mb, dep.cache_hit * dep.prompt_len)
        )
        alpha = msgs * system.planes[dep.cache_plane].latency_s
        reps = model.num_layers * dep.microbatches
        ops.append(
            OpRow(
                "all",
                "cache.load",
                dep.cache_plane,
                reps,
                t,
                reps * t,
                BOUNDS[2],
                0.0,
                0.0,
                t - alpha,
                alpha,
                0.0,
                0.0,
                nbytes,
            )
        )
    dep_d = dep.phase_knobs()
    if dep.attn_tp > 1:  # how the TP group splits the layer (graph.gqa_prefill_ops)
        dep_d["tp_layout"] = "megatron" if megatron_prefill(model) else "sp-tp-sp"
    batch = _f(ev.batch_s)
    return PrefillPrediction(
        system.name,
        model.name,
        dep_d,
        _f(ev.tokens_per_s_per_device),
        _f(ev.computed_tokens_per_s_per_device),
        batch,
        _f(ev.ttft_s),
        {
            "prefill_batch_s": batch,
            "cache_load_exposed_s": _f(ev.cache_load_exposed_s),
            "kv_transfer_s": _f(ev.kv_transfer_s),
            "request_overhead_s": request_overhead_s(dep.framework),
        },
        _f(ev.kv_transfer_s),
        system.kv_transfer_plane(),
        _f(ev.kv_bytes_per_sequence),
        _f(ev.cache_load_s),
        best_h,
        bw_cross,
        _f(ev.layer_s),
        _f(ev.dense_layer_s),
        _f(ev.head_s),
        _f(ev.ideal_overlap_batch_s),
        _f(ev.lower_batch_s),
        _f(ev.upper_batch_s),
        dep.tokens_per_device / _f(ev.upper_batch_s),
        dep.tokens_per_device / _f(ev.lower_batch_s),
        _f(ev.imbalance),
        feasible,
        reasons,
        _f(ev.hbm_bytes_per_rank),
        ev.hbm_capacity_bytes,
        {k: _f(v) for k, v in ev.memory_parts.items()},
        _f(ev.max_tokens_per_device),
        streams,
        ops,
    )
