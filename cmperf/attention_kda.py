"""Kimi Delta Attention hybrids (``attention = "kda"``: Kimi-K3, Kimi-Linear): op builders, state and cache
bytes, parameters, and the latent MoE.

No paper on Kimi-K3 is in the references; every formula cites the serving engine's model code, SGLang 0.5.23
(``sglang/srt/...`` and ``sglang/kernels/...`` paths below; cited, not vendored). Notation: h hidden, H MLA
heads, Hk = Hv KDA heads of dk = dv (``linear_num_*_heads``, ``linear_*_head_dim``), K the conv kernel,
Pk = Hk*dk, Pv = Hv*dv; R routed experts of width r = ``routed_expert_hidden_size`` and intermediate I,
top-k, s shared experts; B = ``attn_res_block_size``; T tokens, S sequences (per rank and microbatch, as in
cmperf.graph).

Layer variants (``[layers] attention``; configs/kimi_linear.py KimiLinearConfig.is_kda_layer: layer i is a
KDA layer when i + 1 is in ``linear_attn_config.kda_layers``):

* ``kda``: Kimi Delta Attention (models/kimi_k3.py KimiK3DeltaAttention). Projections: the merged
  ``fused_qkvg_proj`` h -> 2*Pk + 2*Pv (q, k, v and the full-rank output gate g; with
  ``kda_full_rank_gate`` 0 the gate is the low-rank g_a h -> dv, g_b dv -> Pv of kimi_linear.py), the
  merged [f_a | b] h -> dk + Hv (``_merge_bfa_weights``: the forget gate's down projection and the per-head
  beta), f_b dk -> Pk (the forget gate, one value per key channel: KDA's channel-wise decay). Decode: one
  kernel (kernels/ops/attention/kda_fused_decode.py: "causal_conv1d_update -> kda_packed_decode ->
  rms_norm_gated" fused) shifts the conv state, runs the delta rule on the Hv x dk x dv state and applies
  the sigmoid-gated RMSNorm; per token and head ~4 MACs per state entry (the channel-wise decay diag(a) S,
  k^T S, the rank-1 update, q^T S; Gated DeltaNet's scalar decay folds into one of them, cmperf.graph's
  3). Prefill: the chunked form (kernels/ops/attention/fla/kda.py chunk_kda_fwd, ``chunk_size = 64``):
  per token and head C*(3*dk + 2*dv) MACs inside the chunk (A_kk = beta k k^T and A_qk = q k^T over the
  decayed keys, w = A (k*g), u = A v, the intra-chunk output A_qk v_new), C^2/3 for the triangular solve,
  3*dk*dv against the chunk state (w h, the state update kg^T v_new, q h); w, kg, u, v_new (BF16) and
  A_kk, A_qk (FP32, C per head) and the gate's FP32 cumsum (kda_gate_chunk_cumsum) are written and read
  back once, and each chunk's Hv x dk x dv state (BF16) once. o_proj Pv -> h.
* ``full``: MLA (KimiK3MLAAttention, a DeepseekV2AttentionMLA: cmperf.graph.mla_decode_ops /
  mla_prefill_ops, weight-absorbed in decode, MHA form in prefill) with ``skip_rope=True`` when
  ``mla_use_nope`` (the rope slice is still projected and cached: only its rotation, inside the MLA prolog,
  is skipped: counted as graph counts it) and, with ``attn_output_gate`` (``mla_use_output_gate``), the
  output gate g_proj h -> H*dv and x * sigmoid(g) before o_proj (``_gated_o_proj_forward``: one
  ``mla_output_gate`` kernel).

State per sequence and KDA layer (configs/mamba_utils.py KimiLinearStateShape.create and
mamba2_state_dtype: the temporal state FP32 by default, the conv state BF16): Hv*dk*dv*4 + (K-1)*(2*Pk +
Pv)*2 = 6,291,456 + 221,184 = 6,512,640 B for Kimi-K3 (cmperf.graph.linear_state_bytes, the Gated DeltaNet
formula: the same shapes). The MLA layers cache d_c + d_rope values per token (cmperf.graph).

Attention residuals (``attn_res_block_size`` B; layers/attn_residual.py AttnResidual, layer_boundary/
residual/attn_bank.py AttnBankState, models/kimi_k3.py KimiK3DecoderLayer): each sublayer's input is an
RMSNorm of a softmax mixture of the bank of block snapshots and the running prefix (scores: an RMSNorm'd
dot product with a learned vector), the pending residual add folded in; every B-th layer's attention read
snapshots the prefix into the bank (``is_block_write_layer``) and restarts it. A read streams its rows
(h wide, BF16) once and writes the prefix and the normed input (the fused TMA / Triton kernels); rows:
the bank's valid blocks + the prefix + a pending contribution. Costed as the mean over the layers and the
model's final read (AttnBankOutputRead) of these rows (``bank_reads``), in place of graph's input norm and
residual add. A latent MoE layer adds the residual in its own tail (``_latent_moe_writes_stream``: add3 of
up_proj, the shared experts and the prefix), so the next read has no pending add.

Latent MoE (KimiK3MoE, ``routed_expert_hidden_size`` r): the router gate h -> R and routed_expert_down_proj
h -> r read the same input (one merged front GEMM, ``_merge_front_weights`` / ``_ep_front``); the routed
experts run in r (FusedMoE hidden_size=moe_hidden_size: up r -> 2I, SiTU, down I -> r), so the EP dispatch
and combine move r-wide rows (``run_experts(routed_input, ...)``); the combine's weighted sum and the
latent RMSNorm (``_reduce_latent``: ``latent_moe_use_norm``) then routed_expert_up_proj r -> h. The shared
experts run on the rank's own tokens in h (KimiK3MLP of s*I). Latent projections are ReplicatedLinear:
costed in the GEMM datatype and counted with the replicated per-layer weights (``weight_params``'
"attention").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import graph
from .graph import LINEAR_CHUNK, Op, _b, fuse, gemm, linear_state_bytes, vector
from .specs import Model

#: Chunk length of the chunked KDA prefill (kernels/ops/attention/fla/kda.py chunk_kda_fwd: chunk_size = 64).
KDA_CHUNK = LINEAR_CHUNK
#: MACs per state entry per decoded token: channel-wise decay, k^T S, rank-1 update, q^T S.
KDA_DECODE_MACS = 4.0


def _mla(m: Model) -> Model:
    """The model as cmperf.graph's plain MLA builds it (the kda kind's full-attention layers are MLA)."""
    return replace(m, attention="mla")


# ---------------------------------------------------------------------------------------- cache, state


def kv_bytes_per_token_layer(m: Model, kv_dtype: str) -> float:
    """Cache bytes per token of a full-attention (MLA) layer: (d_c + d_rope) values, 1,152 B in BF16."""
    return (m.kv_lora_rank + m.qk_rope_head_dim) * _b(kv_dtype)


def kv_bytes_per_seq(m: Model, kv_dtype: str, kv_len, mtp_layers: int = 0, tp: int = 1):
    """One sequence's cache at context ``kv_len``: the MLA layers' latents (whole on every rank of a TP
    group) + each KDA layer's fixed state (split with its heads over ``tp``). Kimi-K3 at 4,096 tokens,
    BF16: 24 x 4,096 x 1,152 + 69 x 6,512,640 = 562.6 MB (137.4 KB per token, 80% of it KDA state)."""
    n_kda = m.layer_attention.count("kda")
    full = m.num_layers - n_kda + mtp_layers
    per = kv_bytes_per_token_layer(m, kv_dtype)
    return full * np.asarray(kv_len, dtype=float) * per + n_kda * linear_state_bytes(m) / tp


# ------------------------------------------------------------------------------------ residual reads


def bank_reads(m: Model) -> tuple[float, float, float]:
    """(mean rows an attention-side read streams, mean rows an FFN-side read streams, bank rows written per
    layer) of the attention-residual bank, over the layers and the final read (module docstring). Layer i
    (0-based) writes a block when i % B == 0 and sees ceil(i / B) banked blocks before it
    (KimiK3DecoderLayer.prev_valid_blocks); layer 0's attention reads the embedding alone. Kimi-K3 (B = 12,
    93 layers, 92 latent MoE layers): 5.41 and 6.30 rows, 8 / 93 writes."""
    B, n = m.attn_res_block_size, m.num_layers
    writes_stream = [
        f == "moe" and bool(m.routed_expert_hidden_size) for f in m.layer_ffn
    ]  # _latent_moe_writes_stream
    attn = ffn = 0.0
    for i in range(n):
        banked = -(-i // B)
        write = i % B == 0
        if i == 0:
            attn += 1.0
        else:  # bank + prefix (+ the previous FFN's output when it did not add it itself)
            attn += banked + 1.0 + (0.0 if writes_stream[i - 1] else 1.0)
        # bank (+ this layer's snapshot) + the attention output (+ the prefix, unless this layer restarted it)
        ffn += banked + (1.0 if write else 0.0) + (1.0 if write else 2.0)
    attn += -(-n // B) + 1.0 + (0.0 if writes_stream[-1] else 1.0)  # the final read (AttnBankOutputRead)
    return attn / n, ffn / n, -(-n // B) / n


def _attn_read(m: Model, prec, tokens) -> list[Op]:
    """The attention sublayer's input: the bank read (AttnBankState._attn_aggregate) or the input norm."""
    h, g = m.hidden_size, prec.gemm
    if not m.attn_res_block_size:
        return [vector("attn.norm", "attn", tokens, h, h, "bf16", g)]
    rows, _, writes = bank_reads(m)
    return [
        Op(
            "attnres.attn_read",
            "vector",
            "attn",
            "bf16",
            act_in_bytes=tokens * rows * h * 2.0,
            act_out_bytes=tokens * h * (2.0 + _b(g) + writes * 2.0),  # prefix, normed input, snapshots
        )
    ]


def _ffn_read(m: Model, prec, tokens) -> Op:
    """The FFN sublayer's input: the bank read with the attention output's add folded in
    (AttnBankState.update_and_read_ffn_input), or the post-attention norm."""
    h = m.hidden_size
    if not m.attn_res_block_size:
        return vector("ffn.norm", "moe", tokens, h, h, "bf16", prec.experts)
    _, rows, _ = bank_reads(m)
    return Op(
        "attnres.ffn_read",
        "vector",
        "moe",
        "bf16",
        act_in_bytes=tokens * rows * h * 2.0,
        act_out_bytes=tokens * h * 4.0,  # the prefix and the normed input, BF16
    )


def _residual(m: Model, tokens, stream: str = "attn") -> list[Op]:
    """graph's residual add after the sublayer; none with attention residuals (the next read folds it)."""
    if m.attn_res_block_size:
        return []
    h = m.hidden_size
    return [vector("attn.residual", stream, tokens, 2 * h, h)]


# ---------------------------------------------------------------------------------------------- KDA ops


def _kda_dims(m: Model, tp: int = 1) -> tuple[float, float, float, int, int]:
    """(Pk, Pv, Hv, dk, dv) of one rank of a ``tp`` group (the heads split)."""
    hk, hv, dk, dv = (
        m.linear_num_key_heads / tp,
        m.linear_num_value_heads / tp,
        m.linear_key_head_dim,
        m.linear_value_head_dim,
    )
    return hk * dk, hv * dv, hv, dk, dv


def _kda_proj_ops(m: Model, prec, tokens, tp: int = 1) -> list[Op]:
    """The attention read and KDA's input projections (KimiK3DeltaAttention.forward_qkvbfg_fused; over a
    ``tp`` group all but the replicated f_a and g_a column-parallel: attn_tp)."""
    h, g = m.hidden_size, prec.gemm
    kd, vd, hv, dk, dv = _kda_dims(m, tp)
    ops = _attn_read(m, prec, tokens)
    if m.kda_full_rank_gate:
        ops.append(gemm("kda.qkvg_proj", "attn", tokens, h, 2 * kd + 2 * vd, g))
    else:  # kimi_linear.py KimiDeltaAttention: g_a_proj (replicated) then g_b_proj
        ops += [
            gemm("kda.qkv_proj", "attn", tokens, h, 2 * kd + vd, g),
            gemm("kda.g_a_proj", "attn", tokens, h, dv, g),
            gemm("kda.g_b_proj", "attn", tokens, dv, vd, g),
        ]
    ops += [
        gemm("kda.bfa_proj", "attn", tokens, h, dk + hv, g),  # [f_a | b] merged (_merge_bfa_weights)
        gemm("kda.f_b_proj", "attn", tokens, dk, kd, g),
    ]
    return ops


def _kda_decode_ops(m: Model, prec, tokens, seqs, tp: int = 1) -> list[Op]:
    """One KDA layer's decode: projections, the fused conv + recurrence + gated norm kernel reading and
    writing each sequence's whole state once per step (kda_fused_decode), o_proj. Over an attention-TP
    group of ``tp`` ranks (``tokens``/``seqs``: the group's; cmperf.deployment admits only TP1 for this
    kind today) each rank holds 1/tp of the heads and their states (the mamba state cache sized with
    attn_tp_size: KimiLinearConfig.mamba2_cache_params), o_proj row-parallel, then the group's all-reduce."""
    h, g = m.hidden_size, prec.gemm
    kd, vd, hv, dk, dv = _kda_dims(m, tp)
    state = linear_state_bytes(m) / tp
    ops = _kda_proj_ops(m, prec, tokens, tp)
    ops.append(
        Op(
            "kda.recurrence",  # conv update, delta rule and gated RMSNorm: one kernel
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * hv * KDA_DECODE_MACS * dk * dv,
            # raw q, k, v; the forget gate (Pk), beta (Hv), the output gate (Pv)
            act_in_bytes=tokens * (2 * kd + vd + kd + hv + vd) * 2.0,
            act_out_bytes=tokens * vd * 2.0,
            kv_read_bytes=seqs * state,
            kv_write_bytes=seqs * state,
        )
    )
    ops.append(gemm("kda.o_proj", "attn", tokens, vd, h, g))
    ops += graph.tp_allreduce_ops("attn.tp_allreduce", tokens * h * 2.0, tp)
    return ops + _residual(m, tokens)


def _kda_prefill_ops(m: Model, prec, new_tokens, seqs, tp) -> list[Op]:
    """One KDA layer's prefill: projections (sequence-parallel), the causal conv, the TP group's
    all-to-all of q, k, v, the forget gate and beta in and of the outputs back (SP-TP-SP, as
    cmperf.graph's Gated DeltaNet and MLA prefill), the chunked delta rule (module docstring), the gated
    norm and o_proj on the tokens' ranks."""
    h, g, C = m.hidden_size, prec.gemm, float(KDA_CHUNK)
    kd, vd, hv, dk, dv = _kda_dims(m)
    tp = np.asarray(tp, dtype=float)
    ops = _kda_proj_ops(m, prec, new_tokens)
    ops.append(vector("kda.conv", "attn", new_tokens, 2 * kd + vd, 2 * kd + vd))
    ops.append(
        Op(
            "kda.tp_alltoall",
            "comm",
            "moe",
            "bf16",
            collective="alltoall",
            comm_bytes=new_tokens * (3 * kd + vd + hv + vd) * 2.0 * (tp - 1) / tp,  # in, and outputs back
            ep_size=tp,
        )
    )
    macs = C * (3 * dk + 2 * dv) + C * C / 3.0 + 3.0 * dk * dv
    # written and read back: w, kg, u, v_new (BF16), the gate's FP32 cumsum, A_kk and A_qk (FP32), the chunk
    # states (BF16, one per C tokens)
    inter = 2.0 * ((2 * kd + 2 * vd) * 2.0 + kd * 4.0 + 2 * hv * C * 4.0 + hv * dk * dv * 2.0 / C)
    ops.append(
        Op(
            "kda.chunk_recurrence",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * new_tokens * hv * macs,
            act_in_bytes=new_tokens * ((2 * kd + vd + kd + hv) * 2.0 + inter / 2.0),
            act_out_bytes=new_tokens * (vd * 2.0 + inter / 2.0),
            kv_read_bytes=seqs * linear_state_bytes(m),
            kv_write_bytes=seqs * linear_state_bytes(m),
        )
    )
    ops += [
        vector("kda.gated_norm", "attn", new_tokens, 2 * vd, vd, "bf16", g),
        gemm("kda.o_proj", "attn", new_tokens, vd, h, g),
    ]
    return ops + _residual(m, new_tokens)


# ------------------------------------------------------------------------------------- gated MLA ops


def _gate_ops(m: Model, prec, tokens, tp: int = 1) -> list[Op]:
    """MLA's output gate: g_proj h -> H*dv (column-parallel over attention TP) and x * sigmoid(g) (one
    kernel) before o_proj."""
    if not m.attn_output_gate:
        return []
    h, Hdv, g = m.hidden_size, graph.heads_per_rank(m, tp) * m.v_head_dim, prec.gemm
    return [
        gemm("mla.g_proj", "attn", tokens, h, Hdv, g),
        vector("mla.output_gate", "attn", tokens, 2 * Hdv, Hdv),
    ]


def _gated_mla(m: Model, prec, tokens, ops: list[Op], before: str, tp: int = 1) -> list[Op]:
    """graph's MLA block with the attention read in place of its input norm (the next op then starts its
    fused kernel), the output gate before the op named ``before``, and no residual add under attention
    residuals."""
    out: list[Op] = []
    starts = False
    for op in ops:
        if op.name == "attn.norm":
            out += _attn_read(m, prec, tokens)
            starts = bool(m.attn_res_block_size)
            continue
        if starts:
            op, starts = replace(op, fused=False), False
        if op.name == before:
            out += _gate_ops(m, prec, tokens, tp)
        if op.name == "attn.residual" and m.attn_res_block_size:
            continue
        out.append(op)
    return out


# ------------------------------------------------------------------------------------ graph dispatch


def decode_ops(m: Model, prec, tokens, seqs, kv_len, variant: str = "full", tp: int = 1) -> list[Op]:
    """The decode attention block of a ``variant`` layer ("kda" or "full": gated MLA) on one rank of an
    attention-TP group of ``tp`` (1: data-parallel attention; cmperf.deployment refuses more for this kind
    today, the optimizer's TP axis masks it as placement invalid)."""
    if variant == "kda":
        return _kda_decode_ops(m, prec, tokens, seqs, tp)
    ops = graph.mla_decode_ops(_mla(m), prec, tokens, seqs, kv_len, tp)
    return _gated_mla(m, prec, tokens, ops, "mla.o_proj", tp)


def prefill_ops(m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant="full") -> list[Op]:
    """The prefill attention block of a ``variant`` layer: KDA's chunked form or MLA's MHA form (SP-TP-SP;
    the output gate on the tokens' ranks, after the heads' all-to-all, before the o_proj quantization)."""
    if variant == "kda":
        return _kda_prefill_ops(m, prec, new_tokens, seqs, tp)
    ops = graph.mla_prefill_ops(_mla(m), prec, new_tokens, seqs, prompt_len, cached_len, tp)
    return _gated_mla(m, prec, new_tokens, ops, "mla.o_quant")


# --------------------------------------------------------------------------------------- latent MoE


def moe_ops(
    m: Model,
    prec,
    tokens,
    expert_tokens,
    experts_read,
    copies_per_token,
    ep_size,
    dispatch_msg_bytes,
    combine_msg_bytes,
    *args,
    **kwargs,
) -> list[Op]:
    """A kda model's MoE layer on the busiest rank (module docstring): cmperf.graph.moe_ops of the routed
    experts in their width r (its dispatch, expert GEMMs and combine, messages r wide), with the FFN read,
    the gate and the latent down projection in front, the shared experts in h on the rank's own tokens
    (KimiK3MLP of s * I), the latent sum and norm, the up projection and the residual add behind. ``*args``,
    ``**kwargs``: graph.moe_ops' own (the MoE TP degree).

    Messages: the callers size them h wide; r-wide ones are (h - r) elements fewer (exact when (h - r)
    elements fill whole alignment blocks: 3,584 B on CM384's 512-B INT8 messages: 7,680 -> 4,096 B).
    Dedicated expert ranks (EP above the routed experts: copies_per_token > top-k, the shared experts on
    ranks of their own) send the shared copies h wide and cost the busiest rank's one expert in h (the
    shared expert's width: an upper estimate when it holds a routed one)."""
    h, k, ns = m.hidden_size, m.num_experts_per_tok, m.n_shared_experts
    r = m.routed_expert_hidden_size or h
    g = prec.gemm
    moe_tp = args[0] if args else kwargs.get("moe_tp", 1)
    inter = m.moe_intermediate_size / graph.expert_split(m, moe_tp)
    d_lat = dispatch_msg_bytes - (h - r) * _b(prec.dispatch)
    c_lat = combine_msg_bytes - (h - r) * _b(prec.combine)
    ded = np.asarray(copies_per_token, dtype=float) > k if ns else np.asarray(False)
    shared_tok = np.where(ded, 0.0, tokens * ns)
    shared_read = np.where(ded, 0.0, float(ns))
    # graph's MoE of the routed experts alone, in their width (an MLA view: no dispatch back here)
    rv = replace(m, attention="mla", arch={**m.arch, "hidden_size": r})
    core = graph.moe_ops(
        rv,
        prec,
        tokens,
        expert_tokens - shared_tok,
        experts_read - shared_read,
        copies_per_token,
        ep_size,
        d_lat,
        c_lat,
        *args,
        **kwargs,
    )
    latent = r < h
    out: list[Op] = []
    for op in core:
        if op.name == "ffn.norm":
            out.append(_ffn_read(m, prec, tokens))
        elif op.name == "moe.gate":
            gate = gemm(
                "moe.gate", "moe", tokens, h, m.n_routed_experts, prec.head, a_dtype="bf16", out_dtype="fp32"
            )
            out.append(replace(gate, fused=not m.attn_res_block_size))  # fused with a plain norm, as graph's
            if latent:  # one merged front GEMM with the gate (_merge_front_weights, _ep_front)
                out.append(replace(gemm("latent.down", "moe", tokens, h, r, g), fused=True))
        elif op.name == "moe.dispatch" and ns and np.any(ded):
            extra = np.where(ded, tokens * ns * (dispatch_msg_bytes - d_lat), 0.0)
            out.append(replace(op, comm_bytes=op.comm_bytes + extra))
        elif op.name in ("moe.experts.up", "moe.experts.down") and ns and latent and np.any(ded):
            w = np.where(ded, h / r, 1.0)
            side = "act_in_bytes" if op.name.endswith("up") else "act_out_bytes"
            widened = {
                "flops": op.flops * w,
                "weight_bytes": op.weight_bytes * w,
                side: getattr(op, side) * w,
            }
            out.append(replace(op, **widened))
        elif op.name == "moe.residual" and latent:  # combine's weighted sum of the r-wide copies
            out.append(replace(op, name="moe.latent_sum"))
        else:
            out.append(op)
        if op.name == "moe.experts.down" and ns and not np.all(ded):  # KimiK3MLP of s * I, in h
            out += fuse(
                [
                    gemm(
                        "moe.shared.up",
                        "moe",
                        shared_tok,
                        h,
                        2 * inter,
                        prec.experts,
                        num_weights=shared_read,
                    ),
                    vector("moe.shared.act", "moe", shared_tok, 2 * inter, inter, "bf16", prec.experts),
                ]
            )
            out.append(
                gemm("moe.shared.down", "moe", shared_tok, inter, h, prec.experts, num_weights=shared_read)
            )
    if latent:
        if m.latent_moe_norm:
            out.append(replace(vector("latent.norm", "moe", tokens, r, r), fused=True))  # in the sum's kernel
        out.append(gemm("latent.up", "moe", tokens, r, h, g))
        # the tail add3 of the up projection, the shared experts and the residual (_add3)
        out.append(vector("moe.residual", "moe", tokens, (3 if ns else 2) * h, h))
    return out


# ---------------------------------------------------------------------------------------- parameters


def kda_layer_params(m: Model, tp: int = 1) -> float:
    """One KDA layer's attention weights (KimiK3DeltaAttention.__init__; one rank's of a ``tp`` group: all
    but f_a and the norm head-split): fused_qkvg_proj h*(2Pk + 2Pv) (or qkv h*(2Pk + Pv) + g_a h*dv + g_b
    dv*Pv), b_proj h*Hv, f_a_proj h*dk, f_b_proj dk*Pk, dt_bias Pk, qkv_conv1d K*(2Pk + Pv), A_log Hv,
    o_norm dv, o_proj Pv*h; + the input and post-attention RMSNorms 2h."""
    h, K = m.hidden_size, m.linear_conv_kernel_dim
    kd, vd, hv, dk, dv = _kda_dims(m)
    proj = h * (2 * kd + 2 * vd) if m.kda_full_rank_gate else h * (2 * kd + vd) + dv * vd
    split = proj + h * hv + dk * kd + kd + K * (2 * kd + vd) + hv + vd * h
    whole = h * dk + dv + 2 * h + (0 if m.kda_full_rank_gate else h * dv)
    return split / tp + whole


def mla_layer_params(m: Model, tp: int = 1) -> float:
    """One MLA layer's weights (DeepseekV2AttentionMLA + K3's g_proj): q_a h*q, its norm q, q_b q*H*(dn+dr),
    kv_a h*(dc+dr), its norm dc, kv_b dc*H*(dn+dv), o_proj H*dv*h, g_proj h*H*dv; + 2h of layer norms."""
    h, H = m.hidden_size, m.num_attention_heads
    dn, dr, dc, dv, q = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim, m.q_lora_rank
    split = (q * H * (dn + dr) if q else h * H * (dn + dr)) + dc * H * (dn + dv) + H * dv * h
    split += h * H * dv if m.attn_output_gate else 0
    whole = (h * q + q if q else 0) + h * (dc + dr) + dc + 2 * h
    return split / tp + whole


def weight_params(m: Model, tp: int = 1) -> dict[str, float]:
    """cmperf.graph.weight_params of a kda model. "attention" holds every replicated per-layer weight: the
    attention's (kda_layer_params / mla_layer_params), the attention-residual norms and score vectors (4h
    per layer, 2h for the final read: KimiK3DecoderLayer, KimiK3LinearModel) and the latent MoE's down and
    up projections and norm (2*h*r + r per MoE layer); "expert" is one routed expert in r (3*r*I), the
    shared experts are s experts in h (3*h*I each); no MTP modules."""
    h, n = m.hidden_size, m.num_layers
    n_kda = m.layer_attention.count("kda")
    n_moe = m.layer_ffn.count("moe")
    attn = n_kda * kda_layer_params(m, tp) + (n - n_kda) * mla_layer_params(m, tp)
    if m.attn_res_block_size:
        attn += 4 * h * n + 2 * h
    r = m.routed_expert_hidden_size
    if r:
        attn += n_moe * (2 * h * r + (r if m.latent_moe_norm else 0))
    expert = 3 * (r or h) * m.moe_intermediate_size
    gate = h * m.n_routed_experts
    return {
        "attention": attn,
        "dense_ffn": m.layer_ffn.count("dense") * 3 * h * m.intermediate_size / tp,
        "experts_routed": n_moe * m.n_routed_experts * expert,
        "experts_shared": n_moe * m.n_shared_experts * 3 * h * m.moe_intermediate_size,
        "gate": n_moe * gate,
        "embedding": m.vocab_size * h / tp,
        "lm_head": m.vocab_size * h / tp,
        "mtp": 0.0,
        "expert": expert,
        "attention_per_layer": attn / n,
    }
