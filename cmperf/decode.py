"""Decode phase: TPOT, tokens/s per device, per-op breakdown and bounds for a DeepSeek-style model.

Per rank (die on CloudMatrix384) with b = batch_per_device / ranks_per_device sequences and MTP depth
d: T = b * (1 + d) tokens per step (the d draft tokens are verified with the real one), T/n per
microbatch. The step runs the dense layers, the MoE layers and the MTP module as overlapped stages,
then embedding, LM heads and sampling once on the whole batch (serial):

    step_s = makespan of the list schedule over dense, MoE, MTP layers (cmperf.step.compose) + head_s
             + step_overhead_s (the deployment's host time per step: graph launch, sampling, scheduling)
    TPOT   = step_s / (1 + sum_{i=1..d} accept^i)         (CM384 §4.2.4: 1.7 tokens per step at 70%)
    tokens_per_s_per_device = batch_per_device / TPOT

The attention ops see the slowest rank's KV when the sequences' lengths spread (``kv_cv``,
``straggler_kv_len``), the expert ops the most loaded expert rank (``routed_imbalance``): the EP dispatch
waits for every rank each layer.

The list schedule (cmperf.step) cuts each layer into segments of one stream (CloudMatrix384, split
cores: [attention][gate + dispatch + experts + combine]; GPUs, compute-comm: [residual + attention +
gate][dispatch][experts][combine], ``rotate=True``: the residual joins the next layer's attention, as a
two-batch-overlap runtime runs them) and schedules the n microbatches' segments on the two streams in
order over all layers. The per-stage period (``moe_layer_s``) is its steady state; the coarse
max(n*a, n*m, a+m, n*hbm) of ``cmperf.step.stage_time`` is kept as the "ideal" period and step
(``ideal_step_s``, ``streams[stage]["ideal_period_s"]``). For speed each point's MoE stage is simulated
until its schedule is periodic and then extrapolated (fill + (L - k) * period + drain, exact:
cmperf.step.pipeline_s; tests/test_step.py compares it with the all-layer simulation).

Everything is numpy-vectorized: every knob of ``evaluate`` (batch, KV length, EP size, microbatches,
MTP depth and acceptance, attention cube cores, imbalance) broadcasts, and each point equals the scalar
call; the scalar ``predict`` adds the per-op breakdown and the memory verdict, and with
``microbatches="auto"`` picks the count (1, 2, 3) with the lowest TPOT (``best_microbatches``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from . import frameworks, memory
from .comm import ep_message_bytes
from .deployment import AUTO, Deployment, placement_arrays, redundant_for
from .graph import (
    Stage,
    attention_decode_ops,
    attention_prefill_ops,
    dense_ffn_ops,
    expert_inter_per_rank,
    head_ops,
    heads_per_rank,
    layer_count,
    layer_groups,
    moe_ops,
    principal_stage,
)
from .imbalance import imbalance_constants, imbalance_from
from .roofline import BOUNDS, OpTime
from .specs import Model, System
from .step import StageTime, binding_names, compose, op_time, schedule_binding, step_time


def accepted_per_step(mtp, accept):
    """Expected accepted draft tokens per step for a chain of ``mtp`` drafts.

    ``accept``: the acceptance rate at every depth (a number or array: draft i is accepted with
    probability accept^i, a chain stopping at its first rejection) or a tuple of per-depth conditional
    rates (a_1, a_2, ...): sum_i prod_{j<=i} a_j (draft i needs drafts 1..i-1 accepted; EAGLE, Li et al.
    2024, §4; DeepSeek-V3 §5.4.3 reports 85-90% for the first). A tuple shorter than ``mtp`` repeats its
    last rate."""
    mtp = np.asarray(mtp, dtype=float)
    depth = int(np.max(mtp)) if mtp.size else 0
    if isinstance(accept, tuple):
        rates = [accept[min(i, len(accept) - 1)] for i in range(max(depth, 1))]
        total: np.ndarray = np.zeros(mtp.shape)
        p = 1.0
        for i, a in enumerate(rates, 1):
            p *= a
            total = total + np.where(mtp >= i, p, 0.0)
        return total
    a = np.asarray(accept, dtype=float)
    total = np.where(mtp >= 1, a, 0.0)
    for i in range(2, depth + 1):
        total = total + np.where(mtp >= i, a**i, 0.0)
    return total


def routing_constants(model: Model, pl: dict, ep):
    """Per point, the routing model's constants of its EP group (``imbalance.imbalance_constants``: the
    busiest rank's share, z_R, routed ranks), each in the shape of ``ep`` broadcast with the placement.

    They are computed once per distinct EP size, with the placement of the first point of that size (in
    C order; the same point on any grid the arrays broadcast to), and gathered per point: a sorted set
    of the sizes and searchsorted, no mask per size."""
    keys = ("slots", "redundant", "routed_ranks")
    ep = np.asarray(ep, dtype=float)
    small = np.broadcast_shapes(ep.shape, *(np.shape(pl[k]) for k in keys))
    ep_s = np.broadcast_to(ep, small).ravel()
    if not ep_s.size:
        return None
    e_int = ep_s.astype(np.int64)
    if ep_s.min() >= 0 and ep_s.max() < 1 << 20 and np.array_equal(e_int, ep_s):
        # integer sizes (the usual case): a bincount gives the sorted set, a lookup table the positions
        present = np.bincount(e_int) > 0
        vals = np.flatnonzero(present).astype(float)
        pos = (np.cumsum(present) - 1)[e_int]
    else:
        vals = np.array(sorted(set(ep_s.tolist())))  # not np.unique: it imports numpy.ma (~6 ms)
        pos = np.searchsorted(vals, ep_s)
    first = np.full(vals.size, ep_s.size)
    np.minimum.at(first, pos, np.arange(ep_s.size))
    slots, red, routed = (np.broadcast_to(pl[k], small).ravel()[first] for k in keys)
    consts = np.array(
        [
            imbalance_constants(
                model.n_routed_experts, int(red[i]), int(routed[i]), int(slots[i]), model.popularity_zipf
            )
            for i in range(vals.size)
        ],
        dtype=float,
    ).reshape(vals.size, 3)
    pos = pos.reshape(small)
    return consts[:, 0][pos], consts[:, 1][pos], consts[:, 2][pos]


def routed_imbalance(model: Model, pl: dict, ep, copies_total, eplb: str, imbalance=None, constants=None):
    """max/mean routed load: 1 (perfect EPLB), the given value, or the routing model (cmperf.imbalance;
    ``constants``: ``routing_constants(model, pl, ep)`` when the caller has them)."""
    if imbalance is not None:
        return np.asarray(imbalance, dtype=float)
    if eplb == "perfect" or not model.is_moe:  # a dense model routes nothing: 1
        return np.ones(np.shape(copies_total))
    n = np.asarray(copies_total, dtype=float)
    full = np.broadcast_shapes(np.shape(ep), n.shape)
    if constants is None:
        constants = routing_constants(model, pl, ep)
    if constants is None or not int(np.prod(full)):
        return np.ones(full)
    return np.broadcast_to(imbalance_from(n, *constants), full)


#: ``--eplb`` modes priced by the measured-statistics routing model (cmperf.routing, docs/routing.md):
#: none (experts in id order), static (planned on another dataset), dynamic (planned on a recent
#: window); "model" (Zipf + EPLB on the scored distribution) and "perfect" (max/mean 1) stay as they were.
MEASURED_EPLB = ("none", "static", "dynamic")
#: The routing statistics the measured modes use: DeepSeek-R1 on a translation set (TensorRT-LLM's EP
#: blog, the one measured with and without EPLB; ../shared/reference/routing.md).
ROUTING_DATASET = "translation"


def measured_imbalance(model: Model, pl: dict, eplb: str, tokens_mb, seqs_mb):
    """(max/mean expert load of the busiest rank, all-to-all volume factor) of the measured routing model
    (cmperf.routing.rank_load_stats) for ``tokens_mb`` tokens of ``seqs_mb`` sequences per rank and
    microbatch. The all-to-all waits for its busiest rank: dispatch moves max(busiest sender's copies,
    busiest receiver's copies), combine the same in reverse, so both scale by max(send, receive) max/mean
    (issue 14 item 1)."""
    from . import routing

    st = routing.rank_load_stats(
        model.n_routed_experts,
        model.num_experts_per_tok,
        pl["routed_ranks"],
        pl["slots"],
        eplb,
        ROUTING_DATASET,
        tokens_mb,
        np.maximum(seqs_mb, 1e-9),
        n_groups=model.n_group,
        n_layers=max(layer_count(model, "moe"), 1),
    )
    recv = st["recv_max_over_mean"]
    return recv, np.maximum(recv, st["send_max_over_mean"])


@dataclass(frozen=True)
class CountFold:
    """The microbatch counts ``n`` of an open mesh folded to their distinct values along the one axis
    they vary on (the optimizer's mode axis: CloudMatrix384's 23 (count, core split) modes hold 3
    counts), for what depends on the count but not on the split: the expert side of a step (routing
    imbalance, expert load, the MoE ops' arrays; ``_stages``), built on ``counts`` and gathered back
    to every entry of n by ``expand``. Where nothing folds (n varies along several axes, another input
    varies along its axis, or few counts repeat), ``counts`` is n itself and ``expand`` returns its input.

    Exact: every array of that side is computed per point from the count and inputs constant along the
    axis (``of`` checks them), so the gathered entry holds the bits its own count gives; the any/all
    branches on the way (imbalance_from, moe_load) see the same set of values either way."""

    counts: np.ndarray  # the distinct counts, shaped as n with the folded axis of their number
    axis: int = 0  # the folded axis, counted from the end (negative)
    index: np.ndarray | None = None  # per entry of n along the axis, its count's position; None: no fold
    folded: list = field(default_factory=list)  # (collective, its folded op) of every expand_ops call

    @classmethod
    def of(cls, n, *inputs) -> CountFold:
        """The fold of ``n`` when it varies along one axis only, none of ``inputs`` varies along it, and
        that axis holds at most half as many distinct counts as entries (else no fold: nothing to gain)."""
        n = np.asarray(n, dtype=float)
        long = [ax - n.ndim for ax, d in enumerate(n.shape) if d > 1]
        if len(long) != 1 or any(_spans(x, long[0]) for x in inputs):
            return cls(n)
        line = n.reshape(-1).tolist()
        vals = sorted(set(line))  # (not np.unique: it imports numpy.ma)
        if 2 * len(vals) > len(line):
            return cls(n)
        pos = {v: i for i, v in enumerate(vals)}
        shape = list(n.shape)
        shape[long[0]] = len(vals)
        index = np.array([pos[v] for v in line], dtype=np.intp)
        return cls(np.array(vals, dtype=float).reshape(shape), long[0], index)

    def expand(self, x):
        """``x`` computed on ``counts``, gathered to n's entries (as it is where it does not span the axis;
        a view where it is constant along it, e.g. a collective's broadcast zeros)."""
        if self.index is None or not _spans(x, self.axis):
            return x
        if x.strides[self.axis] == 0:
            shape = list(x.shape)
            shape[self.axis] = self.index.size
            first = (Ellipsis, slice(0, 1), *(slice(None),) * (-1 - self.axis))
            return np.broadcast_to(x[first], tuple(shape))
        return np.take(x, self.index, axis=self.axis)

    def expand_ops(self, ops: list) -> list:
        """``ops`` built on ``counts``, each with its arrays gathered (``expand``). The collectives among
        them are remembered with their folded selves: ``collective_times`` times those."""
        if self.index is None:
            return ops
        out = []
        for op in ops:
            arrays = {f.name: getattr(op, f.name) for f in fields(op)}
            new = {k: self.expand(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
            out.append(replace(op, **{k: v for k, v in new.items() if v is not arrays[k]}))
            if op.kind == "comm":
                self.folded.append((out[-1], op))
        return out

    def collective_times(self, system: System) -> dict:
        """{id(op): OpTime} of the collectives ``expand_ops`` returned (``step.step_time``'s ``op_times``),
        each timed on its folded op and gathered: a collective's time depends on its bytes and group, not
        on the cores' split (``step.op_time``), so these are the bits of timing the gathered op."""
        out = {}
        for op, op_q in self.folded:
            t = op_time(op_q, system)
            done: dict[int, Any] = {}  # (an array two fields share, e.g. time_s and serial_s: gathered once)
            for f in fields(t):
                x = getattr(t, f.name)
                if id(x) not in done:
                    done[id(x)] = self.expand(x)
            out[id(op)] = OpTime(*(done[id(getattr(t, f.name))] for f in fields(t)))
        return out


def _spans(x, axis: int) -> bool:
    """Whether ``x`` has more than one entry along ``axis`` (counted from the end of a broadcast)."""
    sx = np.shape(x)
    return len(sx) >= -axis and sx[axis] > 1


def moe_load(model: Model, pl: dict, ep, tokens_mb, imb):
    """(token-copies through the busiest rank's experts, weight sets it reads, dispatch copies per token).

    Every per-EP-group factor (ranks, slots, shared ranks) is folded into one small array before it meets
    the per-point ``tokens_mb``: one full-size pass per product."""
    k, r, ns = model.num_experts_per_tok, model.n_routed_experts, model.n_shared_experts
    ep = np.asarray(ep, dtype=float)
    tokens_mb = np.asarray(tokens_mb, dtype=float)
    dedicated = pl["dedicated"]
    # the busiest routed rank's token-copies: imb * ep * tokens_mb * k / routed_ranks
    # (a dense model: k = 0 and no routed ranks, so no copies rather than 0/0)
    routed = tokens_mb * (ep * k / np.maximum(pl["routed_ranks"], 1)) * imb
    any_ded, all_ded = bool(np.any(dedicated)), bool(np.all(dedicated))
    # each branch only where some point takes it (np.where picks per point)
    if any_ded:
        shared = pl["shared_ranks"]
        per_token = np.where(shared > 0, ep * ns / np.maximum(shared, 1), 0.0)
        ded_tokens = np.maximum(routed, tokens_mb * per_token)
    if not all_ded:
        co_tokens = routed + tokens_mb * ns
        # an expert copy receives at least one of the group's tokens: 1 - miss**(ep * tokens_mb), as an exp
        miss = 1.0 - k / max(r, 1)
        if miss > 0:  # exp of at least -40: 1 - exp(-40) is 1.0 already (and exp's underflow path is slow)
            y = tokens_mb * (ep * np.log(miss))
            p_miss = np.exp(np.maximum(y, -40.0, out=y if np.ndim(y) else None))
        else:
            p_miss = np.power(miss, ep * tokens_mb)
        co_read = pl["slots"] * (1.0 - p_miss) + ns
    if all_ded:
        expert_tokens, experts_read = ded_tokens, np.ones(np.shape(dedicated))
    elif not any_ded:
        expert_tokens, experts_read = co_tokens, co_read
    else:
        expert_tokens = np.where(dedicated, ded_tokens, co_tokens)
        experts_read = np.where(dedicated, 1.0, co_read)
    copies = k + np.where(dedicated, ns, 0.0)
    return expert_tokens, experts_read, copies


@dataclass(frozen=True)
class DecodeEval:
    """Arrays over the operating points (broadcast of the inputs)."""

    step_s: np.ndarray
    tpot_s: np.ndarray
    tokens_per_s_per_device: np.ndarray
    lower_tpot_s: np.ndarray
    upper_tpot_s: np.ndarray
    moe_layer_s: np.ndarray
    dense_layer_s: np.ndarray
    imbalance: np.ndarray
    hbm_bytes_per_rank: np.ndarray
    hbm_capacity_bytes: float
    max_batch_per_device: np.ndarray
    feasible: np.ndarray
    comm_bound_tpot_s: np.ndarray
    # the per-op breakdown: kept on grids of at most DETAIL_MAX_POINTS points (or keep_ops=True), else empty
    stages: tuple[StageTime, ...] = field(repr=False)
    memory_parts: dict = field(repr=False)
    ideal_step_s: np.ndarray = field(repr=False)  # coarse composition: sum count * max(n*a, n*m, a+m, n*hbm)
    periods: dict = field(repr=False)  # list-schedule steady-state period per overlapped stage name
    system: System = field(repr=False)
    model: Model = field(repr=False)
    deployment: Deployment = field(repr=False)  # resolved; its knobs broadcast to ``shape``

    @property
    def shape(self) -> tuple[int, ...]:
        return np.shape(self.tpot_s)

    def at(self, i: int = 0, auto_tpot_s: dict[int, float] | None = None) -> DecodePrediction:
        """Point ``i`` (flat index into ``shape``) with its full breakdown: ops, streams, bounds and the
        memory verdict. ``auto_tpot_s``: the TPOT of every microbatch count ``auto`` tried. Without a
        kept breakdown (a large grid) point i is evaluated again on its own: the same numbers, since
        every point's arithmetic is independent of the others'."""
        if not self.stages:
            one = point_deployment(self.deployment, self.shape, i)
            return evaluate(self.system, self.model, one, keep_ops=True).at(0, auto_tpot_s)
        return _point_prediction(self, i, auto_tpot_s)


def mtp_layers(model: Model, mtp):
    """MTP module executions per step: ``mtp`` (one per draft token, run one after another). A chain deeper
    than the model's modules reuses its last module for the remaining drafts, as SGLang (EAGLE with
    DeepSeek's NextN module, ``--speculative-num-steps``) and TensorRT-LLM ("MTP Eagle":
    ``num_nextn_predict_layers`` above the checkpoint's one module, the default over ``use_mtp_vanilla``)
    run it. An int when every point has the same depth, else an array (0 where a point has no MTP)."""
    steps = mtp_layers_of(mtp)
    return steps if model.num_mtp_modules else steps * 0


def _draft_stages(draft: Model, prec, m_tok, s_mb, kv_len, mtp) -> list[Stage]:
    """A separate dense draft model's share of a step: ``mtp`` autoregressive forwards of one token per
    sequence (each of its layer groups ``mtp`` times, then its head: embedding, LM head, sampling), on
    every rank with the whole draft (replicated, data-parallel like the attention). Speculative decoding
    with a draft model: Leviathan et al. 2023, §3 (the draft proposes, the target verifies 1 + mtp)."""
    steps = mtp_layers_of(mtp)
    out = [
        Stage(
            f"draft.{name}",
            count * steps,
            tuple(
                attention_decode_ops(draft, prec, m_tok, s_mb, kv_len, variant)
                + dense_ffn_ops(draft, prec, m_tok)
            ),
        )
        for name, variant, _, count in layer_groups(draft)
    ]
    out.append(Stage("draft.head", steps, tuple(head_ops(draft, prec, m_tok, m_tok, 0.0))))
    return out


def mtp_layers_of(mtp):
    """Draft executions per step: ``mtp`` as an int when every point has the same depth, else the array."""
    mtp = np.asarray(mtp, dtype=float)
    if mtp.size and np.all(mtp == mtp.flat[0]):
        return int(mtp.flat[0])
    return mtp


def _stages(system, model, prec, b_rank, kv_len, ep, n, mtp, pl, imb_args, kv_cv=0.0, draft=None, par=None):
    """Stages of one decode step and the per-rank quantities they need (``draft``: a separate draft
    model instead of the model's MTP modules, ``_draft_stages``; ``par``: ``Parallel`` degrees and the
    aggregated step's prefill chunk, default data-parallel attention, expert-parallel MoE, no chunk).

    Returns (stages, head_off, imbalance, dispatch and combine message bytes, the ``CountFold`` the
    expert side was built on: its collectives' times go to step.step_time as ``op_times``). The head
    stage comes last. With a mix of MTP depths (some points 0) a second head stage without the MTP head
    ops is returned too (``head_off``): ``evaluate`` picks per point which one the step adds.

    Attention TP t: a group of t ranks holds t times a rank's sequences; the attention ops see the
    group's tokens with 1/t of the heads (graph.attention_decode_ops), dense FFN and head likewise; the
    MoE sees each rank's own tokens (after the group's reduce-scatter). MoE TP m: the EP group of
    ``ep`` ranks becomes m x ep ranks, each expert split m ways (graph.moe_ops)."""
    par = par or Parallel()
    t, m = par.attn_tp, par.moe_tp
    h, k = model.hidden_size, model.num_experts_per_tok
    disp_msg, comb_msg = ep_message_bytes(system, h, prec)
    d = system.collectives["dispatch"]
    tokens = b_rank * (1.0 + mtp)
    t_mb, s_mb = tokens / n, b_rank / n
    # the slowest attention group's KV (DP straggler): m * ep / t groups of t * s_mb sequences
    kv_len = straggler_kv_len(kv_len, kv_cv, t * s_mb, ep * m / t)
    chunk = np.asarray(par.chunk_tokens, dtype=float)
    c_mb = chunk / n  # the aggregated step's prompt tokens per rank
    f_mb = t_mb + c_mb if par.chunked else t_mb  # tokens through the FFN layers (MoE, dense)
    eplb, given = imb_args
    measured = eplb in MEASURED_EPLB and given is None and model.is_moe
    consts = (
        routing_constants(model, pl, ep)
        if given is None and eplb not in ("perfect", *MEASURED_EPLB) and model.is_moe
        else None
    )
    # the expert side (routing imbalance, expert load, the MoE ops) depends on the microbatch count, not
    # on a mode's core split: built once per distinct count (``CountFold``), gathered to every mode
    fold = CountFold.of(n, tokens, b_rank, chunk, ep, given, *pl.values())
    nq = fold.counts
    f_q, s_q = f_mb, s_mb  # f_mb and s_mb at the fold's counts (themselves where nothing folds)
    if fold.index is not None:
        f_q, s_q = (tokens / nq + chunk / nq if par.chunked else tokens / nq), b_rank / nq
    a2a: Any = 1.0  # all-to-all volume at its busiest rank / the sender's mean (measured routing only)
    if measured:  # cmperf.routing: the busiest rank's receive load, and the all-to-all timed at it
        imb, a2a = measured_imbalance(model, pl, eplb, m * f_q, m * s_q)
    else:
        imb = routed_imbalance(model, pl, ep, f_q * (ep * (m * k)), eplb, given, consts)
    exp_tok, exp_read, copies = moe_load(model, pl, ep, m * f_q, imb)
    if d.copies == "per-rank":
        copies = np.where(pl["dedicated"], copies, ep * (1.0 - (1.0 - 1.0 / ep) ** k))
    ffn = {"dense": dense_ffn_ops(model, prec, t * f_mb, t)}
    if model.is_moe:
        d_msg, c_msg = (disp_msg * a2a, comb_msg * a2a) if measured else (disp_msg, comb_msg)
        ffn["moe"] = fold.expand_ops(
            moe_ops(model, prec, f_q, exp_tok, exp_read, copies, ep, d_msg, c_msg, m)
        )
    imb = fold.expand(imb)
    # one attention block per variant: layer groups of one variant share its ops (the same objects, so
    # cmperf.step and cmperf.memory compute their times and footprints once)
    attn: dict[str, list] = {}
    stages = []
    for name, variant, kind, count in layer_groups(model):
        if variant not in attn:
            attn[variant] = attention_decode_ops(model, prec, t * t_mb, t * s_mb, kv_len, variant, t)
            if par.chunked:
                attn[variant] = chunk_attention(model, prec, attn[variant], c_mb, par.prompt_len, variant)
        stages.append(Stage(name, count, tuple(attn[variant] + ffn[kind])))
    on = mtp > 0
    if draft is not None and np.any(on):
        stages += _draft_stages(draft, prec, b_rank / n, s_mb, kv_len, mtp)
    elif np.any(on):
        m_tok = b_rank / n  # each MTP module runs on one token per sequence
        m_q = m_tok if fold.index is None else b_rank / nq  # m_tok per distinct count
        md_msg, mc_msg = disp_msg, comb_msg
        if measured:  # the MTP module's own all-to-all: one token per sequence
            m_imb, m_a2a = measured_imbalance(model, pl, eplb, m * m_q, m * m_q)
            md_msg, mc_msg = disp_msg * m_a2a, comb_msg * m_a2a
        else:
            m_imb = routed_imbalance(model, pl, ep, m_q * (ep * (m * k)), eplb, given, consts)
        m_exp, m_read, _ = moe_load(model, pl, ep, m * m_q, m_imb)
        m_moe = moe_ops(model, prec, m_q, m_exp, m_read, copies, ep, md_msg, mc_msg, m)
        stages.append(
            Stage(
                "mtp",
                mtp_layers(model, mtp),
                tuple(
                    attention_decode_ops(model, prec, t * m_tok, t * s_mb, kv_len, tp=t)
                    + fold.expand_ops(m_moe)
                ),
            )
        )
    # each draft execution runs the MTP module's projection and shared head on one token per sequence
    mtp_head = 0.0 if draft is not None else np.where(on, t * b_rank * mtp_layers(model, mtp), 0.0)
    head = tuple(head_ops(model, prec, t * tokens, t * tokens, mtp_head, t))
    stages.append(Stage("head", 1, head, overlapped=False))
    head_off = None
    if np.any(on) and not np.all(on):
        head_off = Stage(
            "head", 1, tuple(head_ops(model, prec, t * tokens, t * tokens, 0.0, t)), overlapped=False
        )
    return stages, head_off, imb, disp_msg, comb_msg, fold


@dataclass(frozen=True)
class Parallel:
    """Parallel degrees of a decode step beyond EP, and the aggregated step's prefill chunk (scalars):
    ``attn_tp`` ranks per attention group (1: data-parallel attention), ``moe_tp`` ranks per expert,
    ``chunk_tokens`` prompt tokens per rank each step carries (in-flight batching) of prompts of
    ``prompt_len`` tokens."""

    attn_tp: int = 1
    moe_tp: int = 1
    chunk_tokens: Any = 0.0
    prompt_len: Any = 4096.0

    @property
    def chunked(self) -> bool:
        return bool(np.any(np.asarray(self.chunk_tokens) > 0))


def chunk_attention(model: Model, prec, ops: list, c_mb, prompt_len, variant: str) -> list:
    """The attention block of an aggregated step: the decode block ``ops`` plus the prefill attention of
    ``c_mb`` prompt tokens per rank (graph.attention_prefill_ops on c/P prompts of P tokens: the mean
    work of a chunk along its prompt; each rank prefills its own prompts, no SP-TP-SP exchange). The
    projections and vector kernels run once over decode + chunk tokens (one GEMM, weights read once:
    the chunk's flops and activations join the decode op of the same name); the prefill-only kernels
    (MLA's MHA-form up projection, the causal attention over the prompt) are added as ``chunk.*``
    (TensorRT-LLM and vLLM run context and generation attention as separate kernels in one step)."""
    p = np.asarray(prompt_len, dtype=float)
    pre = attention_prefill_ops(model, prec, c_mb, c_mb / p, p, 0.0, 1, variant)
    by_name = {op.name: i for i, op in enumerate(ops)}
    out, extra = list(ops), []
    for op in pre:
        if op.kind == "comm":  # TP1: no exchange
            continue
        i = by_name.get(op.name)
        if i is not None and op.kind in ("gemm", "vector"):
            o = out[i]
            out[i] = replace(
                o,
                flops=o.flops + op.flops,
                act_in_bytes=o.act_in_bytes + op.act_in_bytes,
                act_out_bytes=o.act_out_bytes + op.act_out_bytes,
            )
        else:
            extra.append(replace(op, name="chunk." + op.name))
    # the prompt's own attention runs beside the decode attention: before the output projection
    cut = next((i for i, op in enumerate(out) if op.kind == "attention"), len(out)) + 1
    return out[:cut] + extra + out[cut:]


def parallel_of(dep: Deployment, system: System) -> Parallel:
    """The ``Parallel`` record of a resolved decode deployment: TP degrees (scalars: a grid over them is
    one evaluation per value, cmperf.search) and the chunk per rank."""
    t, m = np.asarray(dep.attn_tp), np.asarray(dep.moe_tp)
    if t.size != 1 or m.size != 1:
        raise ValueError("decode.evaluate: attn_tp and moe_tp are one value per call")
    chunk = np.asarray(dep.prefill_chunk_tokens, dtype=float) / system.ranks_per_device
    return Parallel(int(t.reshape(())), int(m.reshape(())), chunk, dep.prompt_len)


def _select_stage(on, st_on: StageTime, st_off: StageTime) -> StageTime:
    """Per point: ``st_on`` where ``on``, else ``st_off``, whose ops are a prefix of ``st_on``'s (the ops
    only ``st_on`` has are zeroed where off)."""
    k = len(st_off.op_times)
    extra = tuple(
        None if t is None else OpTime(*(np.where(on, getattr(t, f.name), 0) for f in fields(OpTime)))
        for t in st_on.op_times[k:]
    )
    arrays = {
        f.name: np.where(on, getattr(st_on, f.name), getattr(st_off, f.name))
        for f in fields(StageTime)
        if f.name not in ("stage", "op_times", "binding", "runs")
    }
    binding = None
    if st_on.binding is not None and st_off.binding is not None:
        binding = np.where(on, st_on.binding, st_off.binding)
    # runs: () since the head runs serially, outside the list schedule
    return StageTime(st_on.stage, st_on.op_times[:k] + extra, binding=binding, **arrays)


def _per_mtp(mtp, fn):
    """``fn(depth: int)`` (an array or a dict of arrays) for every distinct MTP depth in ``mtp``, picked
    per point; cmperf.memory takes one integer depth."""
    vals = sorted(set(np.asarray(mtp).ravel().tolist()))  # not np.unique: it imports numpy.ma
    res = [fn(int(v)) for v in vals]
    if len(res) == 1:
        return res[0]

    def pick(xs):
        out = xs[0]
        for v, x in zip(vals[1:], xs[1:], strict=True):
            out = np.where(mtp == v, x, out)
        return out

    if isinstance(res[0], dict):
        return {key: pick([r[key] for r in res]) for key in res[0]}
    return pick(res)


def expected_max_normal(count) -> np.ndarray:
    """E[max of ``count`` iid standard normals] by Blom's approximation Phi^-1((R - 0.375) / (R + 0.25))
    (exact values by quadrature: 0.564 for 2, 1.424 for 8, 2.898 for 320; Blom gives 0.590, 1.434, 2.886):
    0 for one rank."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    r = np.maximum(np.asarray(count, dtype=float), 1.0)
    vals = {float(x): (inv((x - 0.375) / (x + 0.25)) if x > 1 else 0.0) for x in set(r.ravel().tolist())}
    if r.ndim == 0:
        return np.asarray(vals[float(r)])
    return np.vectorize(lambda x: vals[float(x)], otypes=[float])(r)


def straggler_kv_len(kv_len, kv_cv, seqs_per_microbatch, ranks):
    """KV length per sequence that the slowest rank's attention sees, per microbatch.

    Data-parallel attention ends in the EP dispatch, which waits for every rank: each layer and microbatch
    runs at the pace of the rank whose sequences hold the most KV. With S sequences per rank and
    microbatch whose KV lengths have mean L and coefficient of variation c (independent), a rank's total is
    ~ Normal(S L, c L sqrt(S)), and the expected maximum over R ranks is S L (1 + z_R c / sqrt(S)), z_R =
    ``expected_max_normal(R)``. Worked number: L = 4,608, c = 0.064 (outputs of 1,024 tokens at uniformly
    spread positions: 1024/sqrt(12)/4608), S = 24, R = 320: 4,608 x (1 + 2.886 x 0.0642 / 4.9) = 4,782
    (+3.8%). c = 0 (every sequence at the same length, the paper's benchmark) leaves L."""
    kv = np.asarray(kv_len, dtype=float)
    cv = np.asarray(kv_cv, dtype=float)
    if not np.any(cv > 0):
        return kv
    s = np.maximum(np.asarray(seqs_per_microbatch, dtype=float), 1e-9)
    return kv * (1.0 + expected_max_normal(ranks) * cv / np.sqrt(np.maximum(s, 1.0)))


def attention_cores(system: System, attention_cube_cores=None) -> np.ndarray:
    """Cube cores of the attention stream: the given array, None or NaN entries = the system's
    ``[overlap.decode] attention_cube_cores`` (16 of 24 on a 910C die, CM384 §4.2)."""
    default = float(system.overlap_for("decode").attention_cube_cores)
    if attention_cube_cores is None:
        return np.asarray(default)
    c = np.asarray(attention_cube_cores, dtype=float)
    return np.where(np.isnan(c), default, c)


#: Points per block of a large grid's evaluation: its transient arrays (~2 kB per point of a block) then
#: stay bounded whatever the grid's size, and a block's working set stays near the CPU caches.
CHUNK_POINTS = 1 << 16
#: Block size for a 1-D grid of scattered points (issue 18 bench: 0.88 -> 1.02 M points/s against 65,536;
#: an open mesh needs the big blocks: its small axes stay small inside a block).
SCATTERED_CHUNK_POINTS = 1 << 14

#: Grids of at most this many points keep the per-op breakdown (``stages``, ``memory_parts``, ``periods``);
#: a larger grid keeps only the per-point summary arrays (~120 bytes per point) unless asked for.
DETAIL_MAX_POINTS = 64

_SUMMARY = (
    "step_s",
    "tpot_s",
    "tokens_per_s_per_device",
    "lower_tpot_s",
    "upper_tpot_s",
    "moe_layer_s",
    "dense_layer_s",
    "imbalance",
    "hbm_bytes_per_rank",
    "max_batch_per_device",
    "feasible",
    "comm_bound_tpot_s",
    "ideal_step_s",
)


def grid_shape(dep: Deployment) -> tuple[int, ...]:
    """Broadcast shape of a record's array knobs (() for a scalar record)."""
    return np.broadcast_shapes(*(np.shape(v) for v in vars(dep).values() if isinstance(v, np.ndarray)))


def grid_blocks(shape: tuple[int, ...], chunk_points: int):
    """Index tuples (slices, every axis kept) that cut ``shape`` into blocks of at most ``chunk_points``
    points: the trailing axes that fit whole, the next one cut in steps, the leading ones one index at a
    time. An open mesh stays a mesh inside each block (its knob arrays are sliced, never flattened).
    Worked case: (2, 23, 40, 300) at 65,536: blocks of 5 x 40 x 300 = 60,000 points, 2 x 5 of them."""
    inner, ax = 1, len(shape)
    while ax > 0 and inner * shape[ax - 1] <= chunk_points:
        ax -= 1
        inner *= shape[ax]
    if ax == 0:
        yield tuple(slice(None) for _ in shape)
        return
    ax -= 1  # the axis cut in steps
    step = max(1, chunk_points // inner)
    rest = tuple(slice(None) for _ in shape[ax + 1 :])
    for outer in np.ndindex(*shape[:ax]):
        for a in range(0, shape[ax], step):
            yield (*(slice(j, j + 1) for j in outer), slice(a, min(a + step, shape[ax])), *rest)


def block_deployment(dep: Deployment, shape: tuple[int, ...], index: tuple[slice, ...]) -> Deployment:
    """``dep`` with every array knob cut to the block ``index`` of ``shape`` (axes of length 1 kept)."""
    vals: dict[str, Any] = {}
    for name, v in vars(dep).items():
        if isinstance(v, np.ndarray):
            v = v.reshape((1,) * (len(shape) - v.ndim) + v.shape)
            vals[name] = v[tuple(sl if d > 1 else slice(None) for sl, d in zip(index, v.shape, strict=True))]
    return replace(dep, **vals)


def evaluate(
    system: System,
    model: Model,
    dep: Deployment,
    *,
    keep_ops: bool | None = None,
    chunk_points: int | None = None,
) -> DecodeEval:
    """Vectorized decode prediction of ``dep`` over any grid size, in bounded memory: a grid of more than
    ``chunk_points`` points is evaluated block by block (``grid_blocks``) into the per-point summary
    arrays (the fields; each point's numbers are those of evaluating it alone, so the cut changes no bit).
    ``keep_ops``: keep the per-op breakdown (``stages``, ``memory_parts``, ``periods``; one block, ~5 kB
    per point); default: only on grids of at most DETAIL_MAX_POINTS points. ``.at(i)`` works either way.
    ``chunk_points`` None: CHUNK_POINTS on an open mesh, SCATTERED_CHUNK_POINTS when the grid is one axis
    of scattered points (every op array is then full-size: smaller blocks stay in cache).
    """
    dep = dep.resolve(system, model)
    shape = grid_shape(dep)
    size = int(np.prod(shape))
    if chunk_points is None:
        chunk_points = SCATTERED_CHUNK_POINTS if len(shape) == 1 else CHUNK_POINTS
    if keep_ops is None:
        keep_ops = size <= min(DETAIL_MAX_POINTS, chunk_points)
    if keep_ops or size <= chunk_points:  # one block; the summary broadcast to the grid's shape (views)
        ev = _evaluate_block(system, model, dep, keep_ops)
        full: dict[str, Any] = {k: np.broadcast_to(getattr(ev, k), shape) for k in _SUMMARY}
        if keep_ops:
            return replace(ev, **full)
        return replace(ev, **full, stages=(), memory_parts={}, periods={})
    dtypes = {k: bool if k == "feasible" else float for k in _SUMMARY}
    out, ev = blockwise(
        dep, shape, chunk_points, lambda d, v: _evaluate_block(system, model, d, False, v), _SUMMARY, dtypes
    )
    return DecodeEval(
        **{k: v for k, v in out.items() if k != "ideal_step_s"},
        hbm_capacity_bytes=ev.hbm_capacity_bytes,
        stages=(),
        memory_parts={},
        ideal_step_s=out["ideal_step_s"],
        periods={},
        system=system,
        model=model,
        deployment=dep,
    )


def blockwise(dep: Deployment, shape: tuple[int, ...], chunk_points: int, block, names, dtypes=None):
    """({name: array over ``shape``}, the last block's result): ``block(record)`` evaluated on every block
    of ``grid_blocks(shape, chunk_points)``, its fields ``names`` written into arrays allocated once (the
    summary of the grid; nothing else of a block outlives it). ``dtypes`` ({name: dtype}): the arrays are
    allocated up front and ``block(record, views)`` gets the block's views of them to compute its results
    straight into (a field that is its view is already in place; any other is copied in)."""
    out: dict[str, np.ndarray] = {}
    if dtypes is not None:
        out = {k: np.empty(shape, dtype=dtypes[k]) for k in names}
    ev = None
    for index in grid_blocks(shape, chunk_points):
        ev = None  # the previous block's arrays go before the next block allocates its own
        views = {k: out[k][index] for k in names} if dtypes is not None else {}
        record = block_deployment(dep, shape, index)
        ev = block(record) if dtypes is None else block(record, views)
        for k in names:
            x = getattr(ev, k)
            if k in views and x is views[k]:
                continue  # computed in place (ufunc ``out=``: the same bits as a copy)
            x = np.asarray(x)
            if k not in out:
                out[k] = np.empty(shape, dtype=x.dtype)
            view = out[k][index]
            view[...] = np.broadcast_to(x, view.shape)
    return out, ev


def _evaluate_block(
    system: System, model: Model, dep: Deployment, keep_ops: bool, out: dict | None = None
) -> DecodeEval:
    """Vectorized decode prediction of ``dep`` (a decode ``Deployment``); its numeric knobs may be numpy
    arrays and broadcast together; ``microbatches`` is a count here (``predict`` resolves "auto").

    Knobs read: batch_per_device, kv_len, ep_size, microbatches, mtp, mtp_accept, attention_cube_cores
    (NaN entries = the system default), imbalance (None = ``eplb``), num_redundant, kv_capacity_len,
    kv_cv (spread of the sequences' KV lengths: the attention runs at the slowest rank's KV,
    ``straggler_kv_len``; memory holds the mean), precision. Each point of the broadcast gives exactly
    the numbers a scalar call with that point's knobs gives (tests/test_decode_vector.py): a mix of MTP
    depths adds the MTP stage with 0 executions where MTP is off, and cube-core shares broadcast through
    cmperf.step (share = cores / cube_cores, e.g. 16/24 on 910C). ``.at(i)`` gives point i's breakdown.
    ``out``: {summary field: array of the block's shape} to compute those fields into (``blockwise``).
    """
    dep = dep.resolve(system, model)
    prec = dep.precision
    assert prec is not None
    policy = system.overlap_for("decode").policy
    share: float | np.ndarray = attention_cores(system, dep.attention_cube_cores) / system.chip.cube_cores
    share = share if policy == "split-cores" else 1.0
    rpd = system.ranks_per_device
    b_rank = np.asarray(dep.batch_per_device, dtype=float) / rpd
    kv_len = np.asarray(dep.kv_len, dtype=float)
    ep = np.asarray(dep.ep_size, dtype=float)
    n = np.asarray(dep.microbatches, dtype=float)
    mtp_a = np.asarray(dep.mtp, dtype=float)
    on = mtp_a > 0
    pl = placement_arrays(model, ep, redundant_for(dep, model, ep), dep.slots_per_rank)
    draft = dep.draft_model
    par = parallel_of(dep, system)
    t, m = par.attn_tp, par.moe_tp
    stages, head_off, imb, disp_msg, comb_msg, fold = _stages(
        system,
        model,
        prec,
        b_rank,
        kv_len,
        ep,
        n,
        mtp_a,
        pl,
        (dep.eplb, dep.imbalance),
        dep.kv_cv,
        draft,
        par,
    )
    # the head runs last; summing it on its own keeps the scalar path's order of additions (same bits)
    op_times = fold.collective_times(system)
    sts, ideal, lower, upper = step_time(
        stages[:-1], system, n, policy, share, keep_ops=keep_ops, op_times=op_times
    )
    chain, periods = compose(sts, n, policy, rotate=True, extrapolate=True)
    (h_st,), h_step, h_lower, h_upper = step_time(stages[-1:], system, n, policy, share, keep_ops=keep_ops)
    if head_off is not None:
        (o_st,), o_step, o_lower, o_upper = step_time([head_off], system, n, policy, share, keep_ops=keep_ops)
        h_st = _select_stage(on, h_st, o_st)
        h_step, h_lower, h_upper = (
            np.where(on, x, y) for x, y in ((h_step, o_step), (h_lower, o_lower), (h_upper, o_upper))
        )
    sts = [*sts, h_st]
    # host time per step outside the layers (graph launch, sampling, scheduling): serial, in every bound
    over = np.asarray(dep.step_overhead_s, dtype=float)
    fw = frameworks.of(dep)
    if fw is not None:  # the framework's own host time per step (frameworks/*.toml), beyond --step-overhead
        over = over + fw.step_overhead_s
    # ``into(name)``: the output array (view) to compute a summary field straight into (blockwise), else
    # None: a ufunc with ``out=`` computes the same elementwise numbers, broadcast to the block's shape
    into = (out or {}).get
    step = _plus(chain, h_step, over, into("step_s"))
    ideal = _plus(ideal, h_step, over, into("ideal_step_s"))
    lower, upper = _plus(lower, h_lower, over), _plus(upper, h_upper, over)
    per_step = 1.0 + accepted_per_step(mtp_a, dep.mtp_accept)
    tpot = np.divide(step, per_step, out=into("tpot_s"))
    # memory
    kv_cap = kv_len if dep.kv_capacity_len is None else np.asarray(dep.kv_capacity_len, dtype=float)
    # batch-independent parts, computed once for the two batches mem_at is called with
    # with a draft model the target's MTP modules stay unused (no weights, no MTP KV): the draft's instead
    target_mtp = np.zeros_like(mtp_a) if draft is not None else mtp_a
    weights = _per_mtp(
        target_mtp, lambda d: memory.weight_bytes_per_rank(model, prec, pl["experts_per_rank"], d, t, m)
    )
    if draft is not None:
        weights["draft"] = memory.draft_weight_bytes(draft, prec)
    act = memory.activation_bytes([op for s in stages for op in s.ops], n)
    if head_off is not None:  # points without MTP: the activations of the ops they run
        ops_off = [op for s in stages[:-1] if not s.name.startswith(("mtp", "draft.")) for op in s.ops]
        ops_off += list(head_off.ops)
        act = np.where(on, act, memory.activation_bytes(ops_off, n))

    def mem_at(b):
        parts = {f"weights.{k}": v for k, v in weights.items()}
        # an attention-TP rank holds its share of the cache of all the group's t * b sequences
        parts["kv_cache"] = _per_mtp(
            target_mtp, lambda d: memory.kv_bytes(model, prec.kv, t * b, kv_cap + mtp_a, d, t)
        )
        if draft is not None:
            parts["kv_cache.draft"] = memory.kv_bytes(draft, prec.kv, b, kv_cap + mtp_a, 0)
        parts["comm_buffers"] = memory.buffer_bytes(
            ep, b * (1 + mtp_a), model.num_experts_per_tok, pl["experts_per_rank"], disp_msg, comb_msg
        )
        scale = np.asarray(b, dtype=float) / np.maximum(b_rank, 1e-12)
        ones = np.all(scale == 1.0) and np.broadcast_shapes(np.shape(act), scale.shape) == np.shape(act)
        parts["activations"] = act if ones else act * scale  # (act * 1.0 is act: no pass at b = b_rank)
        return parts

    parts = mem_at(b_rank)
    vals = list(parts.values())
    total = np.add(sum(vals[:-1]), vals[-1], out=into("hbm_bytes_per_rank"))  # = sum(vals), in order
    cap = system.chip.hbm_bytes - system.chip.hbm_reserved_bytes
    slope = sum(mem_at(b_rank + 1.0).values()) - total
    b_max = np.floor((cap - (total - slope * b_rank)) / slope)
    max_batch = np.multiply(np.maximum(b_max, 0.0), rpd, out=into("max_batch_per_device"))
    feasible = np.less_equal(total, cap, out=into("feasible"))
    # the Insights bound: the EP all-to-all of the (first) MoE stage in every layer; 0 for a dense model
    main = principal_stage(model)  # "moe" (R1); a dense model: "dense", no all-to-all
    moe_st = next((s for s in sts if s.stage.name == main), None) if model.is_moe else None
    comm_bound_step = _comm_bound_s(moe_st, n, model.num_layers) if moe_st else np.zeros_like(step)
    return DecodeEval(
        step,
        tpot,
        np.divide(np.asarray(dep.batch_per_device, dtype=float), tpot, out=into("tokens_per_s_per_device")),
        np.divide(lower, per_step, out=into("lower_tpot_s")),
        np.divide(upper, per_step, out=into("upper_tpot_s")),
        periods[main],
        periods.get("dense", 0.0),
        imb,
        total,
        cap,
        max_batch,
        feasible,
        np.divide(comm_bound_step, per_step, out=into("comm_bound_tpot_s")),
        tuple(sts),
        parts,
        ideal,
        periods,
        system,
        model,
        dep,
    )


def _plus(x, y, over, out=None):
    """(x + y) + over, into ``out`` (None: a new array); no pass for an ``over`` of 0 (x + 0.0 is x)."""
    if np.ndim(over) == 0 and over == 0.0:
        return np.add(x, y, out=out)
    return np.add(x + y, over, out=out)


def _comm_bound_s(moe_st: StageTime, n, layers: int = 1):
    """EP all-to-all bound ("Insights into DeepSeek-V3", ISCA'25): n * (dispatch + combine) per layer,
    times ``layers``.

    Over num_layers and divided by tokens per step it bounds TPOT: 2 * 61 * 120.96 us = 14.76 ms for
    32 tokens x 9 copies x 7,000 B x (1 + 2) over 50 GB/s."""
    total: Any = None
    for op, t in zip(moe_st.stage.ops, moe_st.op_times, strict=True):
        if op.collective in ("dispatch", "combine"):
            assert t is not None  # stage_time keeps the collectives' times
            total = t.time_s if total is None else total + t.time_s
    scale = np.asarray(n, dtype=float) * layers  # (the scalars first: one pass over the points)
    return scale * (0.0 if total is None else total)


# ---------------------------------------------------------------------------------------------- scalar record


@dataclass(frozen=True)
class OpRow:
    """One op of the breakdown: per execution ceilings and the total over a step."""

    stage: str
    name: str
    stream: str
    count: int
    time_s: float  # per execution (one microbatch of one layer)
    total_s: float  # count * time_s: serial time over a step, before overlap
    bound: str
    compute_s: float
    memory_s: float
    link_s: float
    fixed_s: float
    flops: float
    hbm_bytes: float
    comm_bytes: float


@dataclass(frozen=True)
class DecodePrediction:
    system: str
    model: str
    deployment: dict
    tpot_s: float
    tokens_per_s_per_device: float
    step_s: float
    moe_layer_s: float
    dense_layer_s: float
    tokens_per_step: float
    batch_per_device: float
    imbalance: float
    feasible: bool
    reasons: list[str]
    hbm_bytes_per_rank: float
    hbm_capacity_bytes_per_rank: float
    hbm_breakdown_bytes: dict[str, float]
    max_batch_per_device: float
    lower_tpot_s: float
    upper_tpot_s: float
    comm_bound_tpot_s: float
    streams: dict[str, dict[str, float | str]]
    ops: list[OpRow]
    straggler_kv_len: float = 0.0  # KV per sequence the slowest rank's attention sees (kv_cv > 0)


def fit_default_batch(system: System, model: Model, dep: Deployment, p: DecodePrediction) -> DecodePrediction:
    """``p`` (the prediction of ``dep`` at the default batch, 96 per device: CM384 §5.1's) or, when that
    batch does not fit in HBM and a whole batch does, the prediction at the largest whole batch that fits:
    a large dense model's KV (Llama-3.1-70B at 4K on one H200: 48) or a large MoE on few devices. Its
    deployment records ``batch_fitted_from`` (the batch it replaced). For defaults only: ``cmperf decode``
    without --batch and ``compare``'s rule; a batch the user gives is predicted as given."""
    if p.feasible or p.max_batch_per_device < 1 or any(not r.startswith("HBM") for r in p.reasons):
        return p
    fit = predict(system, model, replace(dep, batch_per_device=float(math.floor(p.max_batch_per_device))))
    if not fit.feasible:
        return p
    fit.deployment["batch_fitted_from"] = p.batch_per_device
    return fit


def op_rows(sts, n) -> list[OpRow]:
    rows = []
    for st in sts:
        reps = st.stage.count * (int(n) if st.stage.overlapped else 1)
        for op, t in zip(st.stage.ops, st.op_times, strict=True):
            f = lambda x: float(np.asarray(x).reshape(-1)[0])  # noqa: E731
            rows.append(
                OpRow(
                    st.stage.name,
                    op.name,
                    op.stream if st.stage.overlapped else "serial",
                    reps,
                    f(t.time_s),
                    reps * f(t.time_s),
                    BOUNDS[int(np.asarray(t.bound).reshape(-1)[0])],
                    f(t.compute_s),
                    f(t.memory_s),
                    f(t.link_s),
                    f(t.fixed_s),
                    f(op.flops),
                    f(op.hbm_bytes),
                    f(op.comm_bytes),
                )
            )
    return rows


AUTO_MICROBATCHES = (1, 2, 3)


def microbatch_candidates(system: System, batch_per_device: float) -> tuple[int, ...]:
    """Microbatch counts ``auto`` tries: 1, 2, 3, each above 1 only when every microbatch still holds
    at least one sequence per rank (n <= batch_per_device / ranks_per_device; 910C batch 8: 4 per die)."""
    per_rank = batch_per_device / system.ranks_per_device
    return tuple(n for n in AUTO_MICROBATCHES if n == 1 or n <= per_rank)


def best_microbatches(ev: DecodeEval, counts) -> int:
    """Index of the best point of an evaluation over the microbatch ``counts`` (one vectorized call).

    Why it is a choice: the two-stream pipeline on split cores (CM384 §4.2) re-reads every weight once
    per microbatch and gives each stream only a fraction of the cube cores (16 + 8 of 24 on a 910C die).
    At large batch the overlap of attention with dispatch/experts/combine pays for that; at small batch
    the step is weight-read and latency bound, the extra reads and the smaller core share cost more than
    the overlap saves, and an operator runs one microbatch. ``auto`` keeps the lowest TPOT, preferring
    configurations that fit in HBM (activations grow with the count); ties go to fewer microbatches. The
    TPOTs are exactly those of ``--microbatches N`` (same arithmetic per point, tests/
    test_decode_vector.py). Worked numbers (CloudMatrix384, DeepSeek-R1, EP320, KV 4096, MTP 1 @ 0.7;
    spec files of this writing): batch 8 per NPU gives 1: 15.20 ms, 2: 17.04 ms, 3: 23.19 ms -> 1;
    batch 96 gives 51.07, 49.49, 55.12 ms -> 2.
    """
    n = np.asarray(counts, dtype=float)
    tpot = np.broadcast_to(ev.tpot_s, n.shape)
    fits = np.broadcast_to(ev.feasible, n.shape)
    return int(np.lexsort((n, tpot, ~fits))[0])  # fits first, then TPOT, then fewer microbatches


def predict(system: System, model: Model, dep: Deployment) -> DecodePrediction:
    """Scalar prediction with the per-op breakdown (validates ``dep`` first: CmperfError naming the
    flag). ``dep.microbatches`` may be ``"auto"``: the candidate counts are one axis of one ``evaluate``
    call (``best_microbatches``); the record then holds the chosen count, and its ``deployment`` adds
    ``microbatches_auto: True`` and ``microbatches_auto_tpot_s`` (TPOT of every count tried)."""
    dep, _ = dep.validate(system, model)
    if dep.microbatches != AUTO:
        return evaluate(system, model, dep).at(0)
    cands = microbatch_candidates(system, dep.batch_per_device)
    fw = frameworks.of(dep)
    if fw is not None:  # only the counts the framework runs (SGLang's two-batch overlap: 1 or 2)
        cands = frameworks.runnable(fw, model, cands)
    ev = evaluate(system, model, replace(dep, microbatches=np.array(cands)))
    best = best_microbatches(ev, cands)
    tpot = np.broadcast_to(ev.tpot_s, (len(cands),))
    return ev.at(best, {c: float(t) for c, t in zip(cands, tpot, strict=True)})


def _point_prediction(ev: DecodeEval, i: int, auto_tpot_s: dict[int, float] | None) -> DecodePrediction:
    system, model = ev.system, ev.model
    shape = ev.shape
    dep = point_deployment(ev.deployment, shape, i)
    f = lambda x: point(x, shape, i)  # noqa: E731
    sts = [point_stage(st, shape, i) for st in ev.stages]
    reasons = []
    if not bool(point(ev.feasible, shape, i)):
        reasons.append(
            f"HBM: needs {f(ev.hbm_bytes_per_rank) / 1e9:.1f} GB per {system.chip.rank}, "
            f"{ev.hbm_capacity_bytes / 1e9:.1f} GB usable; the largest batch that fits is "
            f"{f(ev.max_batch_per_device):.0f} per device"
        )
    streams = {}
    policy = system.overlap_for("decode").policy
    names = binding_names(policy)
    for st in sts:
        # overlapped stages: the list schedule's period and verdict; the head: serial (coarse = exact)
        name = st.stage.name
        period = f(ev.periods[name]) if name in ev.periods else f(st.period_s)
        binding = (
            schedule_binding(st, policy, dep.microbatches, period, rotate=True)
            if name in ev.periods
            else st.binding
        )
        streams[name] = {
            "count": int(np.asarray(st.stage.count)),
            "a_s": f(st.a_s),
            "m_s": f(st.m_s),
            "period_s": period,
            "binding": names[int(binding)],  # type: ignore[arg-type]  # kept with the ops
            "ideal_period_s": f(st.period_s),
            "ideal_binding": names[int(st.binding)],  # type: ignore[arg-type]  # kept with the ops
        }
    ops = op_rows(sts, dep.microbatches)
    fw = frameworks.of(dep)
    t = float(dep.step_overhead_s) + (fw.step_overhead_s if fw is not None else 0.0)
    if t > 0:  # the deployment's (and its framework's) per-step host time, a serial latency of its own
        ops.append(
            OpRow("step", "step.overhead", "serial", 1, t, t, "latency", 0.0, 0.0, 0.0, t, 0.0, 0.0, 0.0)
        )
    dep_d = dep.phase_knobs()
    tp, m_tp = int(dep.attn_tp or 1), int(dep.moe_tp or 1)
    if model.num_attention_heads % tp:  # an uneven head split: what its busiest rank holds
        dep_d["attn_heads_per_rank"] = heads_per_rank(model, tp)
    if model.is_moe and model.moe_intermediate_size % m_tp:
        dep_d["moe_intermediate_per_rank"] = expert_inter_per_rank(model, m_tp)
    if auto_tpot_s is not None:
        dep_d["microbatches_auto"] = True
        dep_d["microbatches_auto_tpot_s"] = {str(k): v for k, v in auto_tpot_s.items()}
    seqs_mb = dep.batch_per_device / system.ranks_per_device / dep.microbatches
    return DecodePrediction(
        system.name,
        model.name,
        dep_d,
        f(ev.tpot_s),
        f(ev.tokens_per_s_per_device),
        f(ev.step_s),
        f(ev.moe_layer_s),
        f(ev.dense_layer_s),
        dep.batch_per_device * (1 + dep.mtp),
        dep.batch_per_device,
        f(ev.imbalance),
        bool(point(ev.feasible, shape, i)),
        reasons,
        f(ev.hbm_bytes_per_rank),
        ev.hbm_capacity_bytes,
        {k: f(v) for k, v in ev.memory_parts.items()},
        f(ev.max_batch_per_device),
        f(ev.lower_tpot_s),
        f(ev.upper_tpot_s),
        f(ev.comm_bound_tpot_s),
        streams,
        ops,
        float(straggler_kv_len(dep.kv_len, dep.kv_cv, seqs_mb, dep.ep_size)),
    )


# ------------------------------------------------------------------------------------- point extraction


def point(x, shape: tuple[int, ...], i: int):
    """Element ``i`` (flat index) of ``x`` broadcast to ``shape``, as a Python float (bool for bools)."""
    a = np.asarray(x)
    if a.size == 1:  # a scalar, or one value for every point
        v = a.reshape(-1)[0]
    elif a.shape == shape:
        v = a.reshape(-1)[i]
    else:
        v = np.broadcast_to(a, shape).flat[i]
    return bool(v) if a.dtype == bool else float(v)


_OP_ARRAYS = (
    "flops",
    "weight_bytes",
    "act_in_bytes",
    "act_out_bytes",
    "kv_read_bytes",
    "kv_write_bytes",
    "comm_bytes",
    "ep_size",
)


def point_stage(st: StageTime, shape: tuple[int, ...], i: int) -> StageTime:
    """Stage timing of point ``i``: every array of the stage, its ops and their times taken at ``i``."""
    ops = tuple(
        replace(op, **{k: point(getattr(op, k), shape, i) for k in _OP_ARRAYS}) for op in st.stage.ops
    )
    count = st.stage.count
    stage = replace(st.stage, ops=ops, count=int(point(count, shape, i)) if np.ndim(count) else count)
    times = tuple(
        OpTime(*(np.asarray(point(getattr(t, f.name), shape, i)) for f in fields(OpTime)))
        for t in st.op_times
    )
    arrays = {
        f.name: np.asarray(point(getattr(st, f.name), shape, i))
        for f in fields(StageTime)
        if f.name not in ("stage", "op_times", "runs")
    }
    runs = tuple((in_m, np.asarray(point(t, shape, i))) for in_m, t in st.runs)
    return StageTime(stage, times, **arrays, runs=runs)


def point_deployment(dep: Deployment, shape: tuple[int, ...], i: int) -> Deployment:
    """The scalar record of point ``i`` of a (resolved) grid record: array knobs taken at ``i``, integer
    knobs as ints."""
    vals: dict[str, Any] = {}
    for f in fields(dep):
        v = getattr(dep, f.name)
        if isinstance(v, np.ndarray):
            x = point(v, shape, i)
            if f.name in _INT_KNOBS and np.isnan(x):  # NaN entries: the system default (None)
                vals[f.name] = None
                continue
            vals[f.name] = int(x) if f.name in _INT_KNOBS and x == int(x) else x
    return replace(dep, **vals)


_INT_KNOBS = ("devices", "ep_size", "microbatches", "mtp", "attention_cube_cores", "attn_tp", "num_redundant")
