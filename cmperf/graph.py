"""Op lists for DeepSeek-style models: FLOPs and an HBM byte split per op, per rank and per microbatch.

No time here. Each op carries numpy arrays, so one graph describes a whole grid of operating points.
Notation (per rank, per microbatch): T tokens, S sequences, h hidden, L KV length. Byte counts use
the op's datatype; FLOPs count a multiply-add as 2.

* MLA, decode (weight absorption, DeepSeek-V3 §2.1.1): q_down h->q_lora, q_up q_lora->H*(d_nope+d_rope),
  kv_down h->(d_c+d_rope), k_absorb (q_nope x W_UK: H*d_nope->H*d_c), attention over the latent cache
  (H*(2*d_c + d_rope) MACs per key: scores over d_c+d_rope, values over d_c), v_absorb (H*d_c->H*d_v),
  o_proj H*d_v->h. The cache holds d_c + d_rope = 576 values per token and layer.
* MLA, prefill (MHA form): kv_up d_c->H*(d_nope+d_v) over the whole context, causal attention with
  H*(d_nope+d_rope+d_v) MACs per (query, key) pair over the lower triangle.
* MoE: gate (BF16, h->R), dispatch, expert up (h->2*I, gate and up fused), SwiGLU, down (I->h), combine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .specs import DTYPE_BYTES, Model

Array = np.ndarray | np.float64
ZERO = np.float64(0.0)


@dataclass(frozen=True)
class Op:
    """One kernel on one rank for one microbatch. ``kind``: gemm | attention | vector | comm."""

    name: str
    kind: str
    stream: str  # "attn" or "moe": the stream the op runs on when microbatches overlap on split cores
    dtype: str
    flops: Array = ZERO
    weight_bytes: Array = ZERO
    act_in_bytes: Array = ZERO
    act_out_bytes: Array = ZERO
    kv_read_bytes: Array = ZERO
    kv_write_bytes: Array = ZERO
    # comm ops: which collective and the per-rank payload (all copies, local ones included)
    collective: str = ""
    comm_bytes: Array = ZERO
    ep_size: Array = ZERO
    fused: bool = False  # runs inside the previous op's kernel: no fixed per-kernel cost of its own

    @property
    def hbm_bytes(self) -> Array:
        return (
            self.weight_bytes
            + self.act_in_bytes
            + self.act_out_bytes
            + self.kv_read_bytes
            + self.kv_write_bytes
        )


@dataclass(frozen=True)
class Stage:
    """A group of identical layers: ``count`` repetitions of ``ops`` per step (per microbatch each).

    ``count`` is an int, or an array over the operating points (decode's MTP stage on a grid that mixes
    MTP depths: min(mtp, num_mtp_modules), 0 where MTP is off)."""

    name: str
    count: int | Array
    ops: tuple[Op, ...]
    overlapped: bool = True  # False: runs once on the whole batch with all cores (embedding, head)


def fuse(ops: list[Op]) -> list[Op]:
    """Mark ``ops`` as one fused kernel: only the first pays the fixed per-kernel cost."""
    return [ops[0]] + [replace(op, fused=True) for op in ops[1:]]


def _b(dtype: str) -> float:
    return DTYPE_BYTES[dtype]


def gemm(
    name: str,
    stream: str,
    tokens,
    k_in: int,
    n_out: int,
    w_dtype: str,
    a_dtype: str | None = None,
    out_dtype: str = "bf16",
    num_weights=1.0,
    weight_rows=None,
) -> Op:
    """y[tokens, n_out] = x[tokens, k_in] @ W[k_in, n_out]; ``num_weights`` distinct weight matrices read."""
    a_dtype = a_dtype or w_dtype
    return Op(
        name,
        "gemm",
        stream,
        w_dtype,
        flops=2.0 * tokens * k_in * n_out,
        weight_bytes=np.asarray(num_weights, dtype=float) * k_in * n_out * _b(w_dtype),
        act_in_bytes=tokens * k_in * _b(a_dtype),
        act_out_bytes=tokens * n_out * _b(out_dtype),
    )


def vector(
    name: str, stream: str, tokens, width_in: float, width_out: float, in_dtype="bf16", out_dtype="bf16"
) -> Op:
    """An elementwise/normalization kernel streaming tokens x width through HBM."""
    return Op(
        name,
        "vector",
        stream,
        in_dtype,
        act_in_bytes=tokens * width_in * _b(in_dtype),
        act_out_bytes=tokens * width_out * _b(out_dtype),
    )


def kv_bytes_per_token_layer(m: Model, kv_dtype: str) -> float:
    """MLA latent cache per token per layer: (d_c + d_rope) * bytes = 576 * 2 = 1,152 B in BF16."""
    return (m.kv_lora_rank + m.qk_rope_head_dim) * _b(kv_dtype)


def _mla_down_ops(m: Model, tokens, g: str) -> list[Op]:
    """Input RMSNorm, the q (if q_lora_rank) and kv down-projections and the prolog vector work (latent
    norms, RoPE on the rope slice) of ``tokens`` tokens: the part decode and prefill MLA share."""
    h, dc, dr, qk = m.hidden_size, m.kv_lora_rank, m.qk_rope_head_dim, m.q_lora_rank
    ops = [vector("attn.norm", "attn", tokens, h, h, "bf16", g)]
    if qk:
        ops.append(gemm("mla.q_down", "attn", tokens, h, qk, g))
    ops += [
        gemm("mla.kv_down", "attn", tokens, h, dc + dr, g),
        vector("mla.prolog", "attn", tokens, qk + dc + dr, qk + dr, "bf16", g),
    ]
    return ops


def mla_decode_ops(m: Model, prec, tokens, seqs, kv_len) -> list[Op]:
    """Absorbed MLA for ``tokens`` query tokens of ``seqs`` sequences attending ``kv_len`` cached tokens."""
    h, H = m.hidden_size, m.num_attention_heads
    dn, dr, dc, dv = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
    g = prec.gemm
    qk = m.q_lora_rank
    ops = _mla_down_ops(m, tokens, g)
    if qk:
        ops.append(gemm("mla.q_up", "attn", tokens, qk, H * (dn + dr), g))
    else:
        ops.append(gemm("mla.q_proj", "attn", tokens, h, H * (dn + dr), g))
    ops.append(gemm("mla.k_absorb", "attn", tokens * H, dn, dc, g, num_weights=H))
    ops = fuse(ops)  # CM384 §4.2: one fused MLAProlog kernel (norms, projections, RoPE, absorption)
    kvb = kv_bytes_per_token_layer(m, prec.kv)
    ops.append(
        Op(
            "mla.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * H * (2 * dc + dr) * kv_len,
            act_in_bytes=tokens * H * (dc + dr) * 2.0,
            act_out_bytes=tokens * H * dc * 2.0,
            kv_read_bytes=seqs * kv_len * kvb,
            kv_write_bytes=tokens * kvb,
        )
    )
    ops.append(gemm("mla.v_absorb", "attn", tokens * H, dc, dv, g, a_dtype="bf16", num_weights=H))
    ops.append(gemm("mla.o_proj", "attn", tokens, H * dv, h, g))
    ops.append(vector("attn.residual", "attn", tokens, 2 * h, h))
    return ops


def mla_prefill_ops(m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp) -> list[Op]:
    """MHA-form MLA for a microbatch of ``seqs`` prompts of ``prompt_len`` tokens, ``cached_len`` of each
    loaded from the context cache (their latent KV is read, their projections are not recomputed).

    Causal attention MACs per sequence: H*(d_nope+d_rope+d_v) * sum_{i=c+1..P} i
    = H*(d_qk+d_v) * (P(P+1) - c(c+1)) / 2 (masked blocks skipped, FlashAttention-style).
    Worked number: P = 4096, c = 0: 128*320*8.39e6 = 3.44e11 MACs = 0.69 TFLOP per sequence and layer.
    SP-TP-SP (CM384 §4.3): projections sequence-parallel, attention core tensor-parallel over ``tp``
    ranks (an all-gather of the latents in, cached prefix latents included, an all-to-all of head
    outputs back). MHA form needs two vector passes the absorbed decode form does not: RoPE on q_pe and
    assembling K = [k_nope | k_pe broadcast to H heads] over the whole context (vLLM/SGLang MLA prefill
    do exactly this concat), and the BF16 attention output is quantized for the W8A8 o_proj.
    """
    h, H = m.hidden_size, m.num_attention_heads
    dn, dr, dc, dv = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
    g, qk = prec.gemm, m.q_lora_rank
    ctx_tokens = seqs * prompt_len  # latent context re-expanded by kv_up (cached prefix included)
    cached_tokens = seqs * np.asarray(cached_len, dtype=float)
    ops = _mla_down_ops(m, new_tokens, g)
    tp = np.asarray(tp, dtype=float)
    lat = (qk + dc + dr) * 2.0
    gathered = new_tokens * lat + cached_tokens * kv_bytes_per_token_layer(m, prec.kv)
    ops.append(
        Op(
            "mla.tp_allgather",
            "comm",
            "moe",
            "bf16",
            collective="allgather",
            comm_bytes=gathered * (tp - 1),
            ep_size=tp,
        )
    )
    ops.append(gemm("mla.q_up", "attn", new_tokens, qk or h, H * (dn + dr), g))
    ops.append(gemm("mla.kv_up", "attn", ctx_tokens, dc, H * (dn + dv), g))
    # RoPE on the H rope slices of q (in place) + K assembly over the context (read k_nope, write k)
    ops.append(
        Op(
            "mla.rope_k_concat",
            "vector",
            "attn",
            "bf16",
            act_in_bytes=new_tokens * H * dr * 2.0 + ctx_tokens * (H * dn + dr) * 2.0,
            act_out_bytes=new_tokens * H * dr * 2.0 + ctx_tokens * H * (dn + dr) * 2.0,
        )
    )
    pairs = seqs * (prompt_len * (prompt_len + 1.0) - cached_len * (cached_len + 1.0)) / 2.0
    ops.append(
        Op(
            "mla.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * H * (dn + dr + dv) * pairs,
            act_in_bytes=new_tokens * H * (dn + dr) * 2.0,
            act_out_bytes=new_tokens * H * dv * 2.0,
            kv_read_bytes=ctx_tokens * H * (dn + dr + dv) * 2.0,
            kv_write_bytes=new_tokens * kv_bytes_per_token_layer(m, prec.kv),
        )
    )
    ops.append(
        Op(
            "mla.tp_alltoall",
            "comm",
            "moe",
            "bf16",
            collective="alltoall",
            comm_bytes=new_tokens * H * dv * 2.0 * (tp - 1) / tp,
            ep_size=tp,
        )
    )
    ops += fuse(
        [
            vector("mla.o_quant", "attn", new_tokens, H * dv, H * dv, "bf16", g),
            gemm("mla.o_proj", "attn", new_tokens, H * dv, h, g),
        ]
    )
    ops.append(vector("attn.residual", "attn", new_tokens, 2 * h, h))
    return ops


def dense_ffn_ops(m: Model, prec, tokens) -> list[Op]:
    """SwiGLU MLP of the first_k_dense layers, data-parallel (whole weights on every rank)."""
    h, i, g = m.hidden_size, m.intermediate_size, prec.gemm
    return [
        vector("ffn.norm", "moe", tokens, h, h, "bf16", g),
        gemm("dense.up", "moe", tokens, h, 2 * i, g),
        vector("dense.act", "moe", tokens, 2 * i, i, "bf16", g),
        gemm("dense.down", "moe", tokens, i, h, g),
        vector("ffn.residual", "moe", tokens, 2 * h, h),
    ]


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
) -> list[Op]:
    """MoE layer on the busiest rank: ``expert_tokens`` token-copies through ``experts_read`` weight sets.

    ``copies_per_token``: dispatch messages per token (top-k, +1 when the shared expert is remote).
    """
    h, inter, r, e = m.hidden_size, m.moe_intermediate_size, m.n_routed_experts, prec.experts
    # Fused kernels (CM384 §4.2): norm + gating top-k; grouped matmul with SwiGLU and quantization;
    # the weighted sum and residual inside the combine kernel.
    return [
        *fuse(
            [
                vector("ffn.norm", "moe", tokens, h, h, "bf16", e),
                gemm("moe.gate", "moe", tokens, h, r, prec.head, a_dtype="bf16", out_dtype="fp32"),
            ]
        ),
        Op(
            "moe.dispatch",
            "comm",
            "moe",
            prec.dispatch,
            collective="dispatch",
            comm_bytes=tokens * copies_per_token * dispatch_msg_bytes,
            ep_size=ep_size,
        ),
        *fuse(
            [
                gemm("moe.experts.up", "moe", expert_tokens, h, 2 * inter, e, num_weights=experts_read),
                vector("moe.experts.act", "moe", expert_tokens, 2 * inter, inter, "bf16", e),
            ]
        ),
        gemm("moe.experts.down", "moe", expert_tokens, inter, h, e, num_weights=experts_read),
        *fuse(
            [
                Op(
                    "moe.combine",
                    "comm",
                    "moe",
                    prec.combine,
                    collective="combine",
                    comm_bytes=tokens * copies_per_token * combine_msg_bytes,
                    ep_size=ep_size,
                ),
                vector("moe.residual", "moe", tokens, (copies_per_token + 1) * h, h),
            ]
        ),
    ]


def head_ops(m: Model, prec, embed_tokens, head_tokens, mtp_tokens) -> list[Op]:
    """Embedding gather, LM head (+ the MTP module's shared head and its h x 2h projection), sampling."""
    h, v, hd = m.hidden_size, m.vocab_size, prec.head
    ops = [
        vector("embed", "attn", embed_tokens, h, h, hd, "bf16"),
        gemm("lm_head", "attn", head_tokens, h, v, hd, out_dtype="fp32"),
        vector("sample", "attn", head_tokens, v, 1, "fp32", "fp32"),
    ]
    if np.any(np.asarray(mtp_tokens) > 0):
        ops += [
            gemm("mtp.proj", "attn", mtp_tokens, 2 * h, h, prec.gemm),
            gemm("mtp.lm_head", "attn", mtp_tokens, h, v, hd, out_dtype="fp32"),
        ]
    return ops


def weight_params(m: Model) -> dict[str, float]:
    """Parameter counts by group (for memory and the 671B / 37B check)."""
    h, H = m.hidden_size, m.num_attention_heads
    dn, dr, dc, dv, qk = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim, m.q_lora_rank
    attn = (
        (h * qk + qk * H * (dn + dr) if qk else h * H * (dn + dr))
        + h * (dc + dr)
        + dc * H * (dn + dv)
        + H * dv * h
        + (qk + dc + 2 * h)
    )  # + norms
    expert = 3 * h * m.moe_intermediate_size
    dense = 3 * h * m.intermediate_size
    gate = h * m.n_routed_experts
    n_moe = m.num_layers - m.first_k_dense
    mtp = m.num_mtp_modules * (
        attn + gate + (m.n_routed_experts + m.n_shared_experts) * expert + 2 * h * h + 2 * h
    )
    return {
        "attention": m.num_layers * attn,
        "dense_ffn": m.first_k_dense * dense,
        "experts_routed": n_moe * m.n_routed_experts * expert,
        "experts_shared": n_moe * m.n_shared_experts * expert,
        "gate": n_moe * gate,
        "embedding": m.vocab_size * h,
        "lm_head": m.vocab_size * h,
        "mtp": mtp,
        "expert": expert,
        "attention_per_layer": attn,
    }


def param_totals(m: Model) -> tuple[float, float]:
    """(total, activated per token) parameters of the main model, MTP excluded (671B / 37B for V3)."""
    w = weight_params(m)
    total = sum(
        w[k]
        for k in (
            "attention",
            "dense_ffn",
            "experts_routed",
            "experts_shared",
            "gate",
            "embedding",
            "lm_head",
        )
    )
    n_moe = m.num_layers - m.first_k_dense
    active = total - w["experts_routed"] + n_moe * m.num_experts_per_tok * w["expert"]
    return total, active
