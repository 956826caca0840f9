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
* GQA (grouped-query attention; MHA when KV heads = H, MQA when 1): qkv_proj h->(H + 2*KV)*d, RoPE,
  attention (2*d MACs per head per key: scores and values), o_proj H*d->h. The cache holds 2*KV*d values
  per token and layer.
* Sliding-window / chunked layers (gpt-oss, Step-3.7; Llama-4): a query attends at most ``sliding_window``
  keys (the last W) or the keys of its own ``attention_chunk_size`` chunk; the cache holds as many.
* Top-k sparse attention (DeepSeek-V3.2's DSA, GLM-5.1): a lightning indexer of index_n_heads heads of
  index_head_dim scores every cached key in FP8 (quantized like the GEMMs here), a top-k pass keeps
  index_topk keys per query, and MLA (MQA mode, weight-absorbed, in prefill too: DeepSeek-V3.2 report §2.1)
  attends those. The indexer caches one FP8 key of index_head_dim per token and layer plus an FP32 scale
  per 128 values (DeepSeek-V3.2 inference code, ``act_quant`` block 128).
* Linear attention (Gated DeltaNet: Qwen3-Next / Qwen3.5 "linear_attention" layers): in_proj h->(2*Hk*dk
  + 2*Hv*dv + 2*Hv) (q, k; v, output gate; decay a, step b), a depthwise causal conv over q, k, v, the
  delta-rule recurrence on a per-head dk x dv state (decode: ~3 MACs per state entry per token: S k, the
  rank-1 update, q S), a gated RMSNorm, out_proj Hv*dv->h. No KV cache: each sequence holds its FP32
  state (Qwen3.5's mamba_ssm_dtype) and the conv's last kernel-1 inputs. Prefill runs the chunked form
  (flash-linear-attention's chunk_gated_delta_rule, chunk 64): per token and head ~64*(dk + dv) MACs
  inside the chunk plus ~3*dk*dv for the state.
* MoE: gate (BF16, h->R), dispatch, expert up (h->2*I, gate and up fused), SwiGLU, down (I->h), combine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .specs import DTYPE_BYTES, EXPERT_MEMORY, Model

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
    memory_key: str = ""  # the chip efficiency of its memory ceiling ("": ``kind``_memory)

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
    k_in: float,
    n_out: float,
    w_dtype: str,
    a_dtype: str | None = None,
    out_dtype: str = "bf16",
    num_weights=1.0,
    weight_rows=None,
    memory_key: str = "",
) -> Op:
    """y[tokens, n_out] = x[tokens, k_in] @ W[k_in, n_out]; ``num_weights`` distinct weight matrices read;
    ``memory_key``: the chip efficiency of its memory ceiling ("": gemm_memory)."""
    a_dtype = a_dtype or w_dtype
    return Op(
        name,
        "gemm",
        stream,
        w_dtype,
        flops=tokens * (2.0 * k_in * n_out),  # (per-op constants folded: one pass over the points)
        weight_bytes=np.asarray(num_weights, dtype=float) * (k_in * n_out * _b(w_dtype)),
        act_in_bytes=tokens * (k_in * _b(a_dtype)),
        act_out_bytes=tokens * (n_out * _b(out_dtype)),
        memory_key=memory_key,
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
        act_in_bytes=tokens * (width_in * _b(in_dtype)),
        act_out_bytes=tokens * (width_out * _b(out_dtype)),
    )


def layer_groups(m: Model) -> list[tuple[str, str, str, int]]:
    """(stage name, attention variant, FFN kind, layer count) of the model's layers, grouped in order of
    first appearance: DeepSeek-R1 -> ("dense", "full", "dense", 3), ("moe", "full", "moe", 58); a variant
    other than full attention names its stage "<ffn>.<variant>" (gpt-oss: "moe.sliding", "moe")."""
    counts: dict[tuple[str, str], int] = {}
    for key in zip(m.layer_attention, m.layer_ffn, strict=True):
        counts[key] = counts.get(key, 0) + 1
    return [(f if a == "full" else f"{f}.{a}", a, f, c) for (a, f), c in counts.items()]


def principal_stage(m: Model) -> str:
    """The stage a one-line summary reports (layer period, binding): "moe" (full-attention MoE layers)
    where the model has them, else its most numerous layer group (a dense model: "dense")."""
    groups = layer_groups(m)
    names = [g[0] for g in groups]
    return "moe" if "moe" in names else max(groups, key=lambda g: g[3])[0]


def layer_count(m: Model, ffn: str) -> int:
    """Layers whose FFN is ``ffn`` ("dense" or "moe")."""
    return m.layer_ffn.count(ffn)


#: Bytes per cached indexer key beyond its index_head_dim FP8 values: one FP32 scale per 128 values.
INDEX_SCALE_BLOCK = 128


def _attention_kv_bytes(m: Model, kv_dtype: str) -> float:
    """Cache bytes per token and layer of the attention proper: MLA latent (d_c + d_rope) = 576 values
    (1,152 B in BF16), GQA K and V 2 * KV * d."""
    if m.attention == "mla":
        return (m.kv_lora_rank + m.qk_rope_head_dim) * _b(kv_dtype)
    return 2.0 * m.num_key_value_heads * m.head_dim * _b(kv_dtype)


def _index_kv_bytes(m: Model) -> float:
    """Indexer key cache per token and layer (DSA): index_head_dim FP8 + FP32 scales: 128 + 4 = 132 B."""
    d = m.index_head_dim
    return d + 4.0 * -(-d // INDEX_SCALE_BLOCK) if d else 0.0


#: Bytes per recurrent-state value: FP32 (Qwen3.5 config.json mamba_ssm_dtype "float32").
LINEAR_STATE_BYTES = 4.0
#: Chunk length of the chunked delta-rule prefill kernel (flash-linear-attention chunk_gated_delta_rule).
LINEAR_CHUNK = 64


def linear_state_bytes(m: Model) -> float:
    """Per sequence and linear layer: Hv * dk * dv FP32 state + the conv's (kernel - 1) BF16 inputs of
    2*Hk*dk + Hv*dv channels. Qwen3.5-397B: 64*128*128*4 + 3*(2*2,048 + 8,192)*2 = 4.27 MB."""
    hk, hv, dk, dv = (
        m.linear_num_key_heads,
        m.linear_num_value_heads,
        m.linear_key_head_dim,
        m.linear_value_head_dim,
    )
    conv = (m.linear_conv_kernel_dim - 1) * (2 * hk * dk + hv * dv) * 2.0
    return hv * dk * dv * LINEAR_STATE_BYTES + conv


def kv_bytes_per_token_layer(m: Model, kv_dtype: str) -> float:
    """Cache bytes per token per layer that caches it, from the attention kind and the KV dtype (the one
    place this is computed): DeepSeek-R1 in BF16 1,152 B; V3.2 adds the indexer's 132 B; DeepSeek-V4 one
    K=V entry (cmperf.attention_v4.entry_bytes: 584 B in FP8)."""
    if m.attention == "dsv4":
        from . import attention_v4

        return attention_v4.entry_bytes(m, kv_dtype)
    if m.attention == "kda":  # Kimi-K3: its MLA layers' latent (cmperf.attention_kda)
        from . import attention_kda

        return attention_kda.kv_bytes_per_token_layer(m, kv_dtype)
    return _attention_kv_bytes(m, kv_dtype) + _index_kv_bytes(m)


def attended_keys(m: Model, variant: str, kv_len):
    """Keys a query at context length ``kv_len`` attends (and a sequence caches) in a ``variant`` layer:
    full kv_len, sliding min(kv_len, W), chunked min(kv_len, C) (the whole chunk: an upper bound, the mean
    over a long sequence is C/2). Top-k sparse attention caps what the attention reads, not the cache."""
    kv_len = np.asarray(kv_len, dtype=float)
    if variant == "linear":  # a recurrent state, no keys
        return np.zeros_like(kv_len)
    if variant == "sliding":
        return np.minimum(kv_len, m.sliding_window)
    if variant == "chunked":
        return np.minimum(kv_len, m.attention_chunk_size)
    return kv_len


def kv_bytes_per_seq(m: Model, kv_dtype: str, kv_len, mtp_layers: int = 0, tp: int = 1):
    """Cache bytes of one sequence at context ``kv_len`` over every layer (and ``mtp_layers`` MTP layers,
    full attention): sum over layers of attended_keys * kv_bytes_per_token_layer. DeepSeek-V4:
    cmperf.attention_v4.kv_bytes_per_seq (SWA ring, compressed entries, indexer keys, compressor state).

    ``tp``: the bytes one rank of an attention-TP group holds for each of the group's sequences: MLA's
    latent and the indexer keys whole on every rank (``mla_decode_ops``), GQA's K and V for
    ``kv_heads_per_rank`` heads, a linear layer's state split with its heads."""
    if m.attention == "dsv4":
        from . import attention_v4

        return attention_v4.kv_bytes_per_seq(m, kv_dtype, kv_len, mtp_layers)
    if m.attention == "kda":  # Kimi-K3: MLA latents + KDA states (cmperf.attention_kda)
        from . import attention_kda

        return attention_kda.kv_bytes_per_seq(m, kv_dtype, kv_len, mtp_layers, tp)
    per = kv_bytes_per_token_layer(m, kv_dtype)
    if tp > 1 and m.attention == "gqa":
        per = _attention_kv_bytes(m, kv_dtype) * kv_heads_per_rank(m, tp) / m.num_key_value_heads
        per += _index_kv_bytes(m)
    if all(a == "full" for a in m.layer_attention):  # every layer caches the whole context
        return np.asarray(kv_len, dtype=float) * (m.num_layers + mtp_layers) * per
    total = mtp_layers * np.asarray(kv_len, dtype=float) * per
    for _, variant, _, count in layer_groups(m):
        if variant == "linear":  # constant in the context length
            total = total + count * linear_state_bytes(m) / tp
        else:
            total = total + count * attended_keys(m, variant, kv_len) * per
    return total


def causal_pairs(prompt_len, cached_len, window: float = 0.0, chunk: float = 0.0):
    """(query, key) pairs of causal attention over positions c+1..P: sum_i min(i, W) with W the window
    (0: none), or (i - 1) mod C + 1 inside chunks of C; = (P(P+1) - c(c+1)) / 2 with neither."""
    p, c = np.asarray(prompt_len, dtype=float), np.asarray(cached_len, dtype=float)

    def upto(n):
        if chunk:
            q = np.floor(n / chunk)
            r = n - q * chunk
            return q * chunk * (chunk + 1.0) / 2.0 + r * (r + 1.0) / 2.0
        if window:
            w = np.minimum(n, window)
            return w * (w + 1.0) / 2.0 + (n - w) * window
        return n * (n + 1.0) / 2.0

    if not chunk and not window:
        return (p * (p + 1.0) - c * (c + 1.0)) / 2.0
    return upto(p) - upto(c)


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


def mla_decode_ops(m: Model, prec, tokens, seqs, kv_len, tp: int = 1) -> list[Op]:
    """Absorbed MLA for ``tokens`` query tokens of ``seqs`` sequences attending ``kv_len`` cached tokens.

    Tensor-parallel over ``tp`` ranks (``tokens``/``seqs``: the whole TP group's): the heads split, the
    down projections (ReplicatedLinear), the indexer and the latent KV cache are replicated on every TP
    rank: one latent head cannot be split (SGLang deepseek_v2.py, vLLM MLA, TensorRT-LLM MLA; the reason
    DP attention exists, SGLang v0.4 blog), so each rank reads the whole latent of all the group's
    sequences; o_proj is row-parallel and ``tp_allreduce_op`` sums its outputs."""
    h, H = m.hidden_size, heads_per_rank(m, tp)
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
    kvb = _attention_kv_bytes(m, prec.kv)
    keys = kv_len
    if m.index_topk:
        ops += _index_ops(m, prec, tokens, seqs, kv_len, kv_len)
        keys = np.minimum(kv_len, m.index_topk)
    ops.append(
        Op(
            "mla.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * H * (2 * dc + dr) * keys,
            act_in_bytes=tokens * H * (dc + dr) * 2.0,
            act_out_bytes=tokens * H * dc * 2.0,
            kv_read_bytes=seqs * keys * kvb,
            kv_write_bytes=tokens * kvb,
        )
    )
    ops.append(gemm("mla.v_absorb", "attn", tokens * H, dc, dv, g, a_dtype="bf16", num_weights=H))
    ops.append(gemm("mla.o_proj", "attn", tokens, H * dv, h, g))
    ops += tp_allreduce_ops("attn.tp_allreduce", tokens * h * 2.0, tp)
    ops.append(vector("attn.residual", "attn", tokens, 2 * h, h))
    return ops


def comm_op(name: str, dtype: str, collective: str, comm_bytes, group, stream: str = "moe") -> Op:
    """A collective of ``comm_bytes`` per rank over ``group`` ranks (cmperf.step.op_time times it by its
    ``collective``: the EP kernels' dispatch/combine, an all-reduce, else a plane collective)."""
    return Op(name, "comm", stream, dtype, collective=collective, comm_bytes=comm_bytes, ep_size=group)


def tp_allreduce_ops(name: str, payload_bytes, tp: int, stream: str = "moe") -> list[Op]:
    """The all-reduce of a row-parallel projection's partial outputs (``payload_bytes`` per rank, BF16)
    over a TP group of ``tp`` ranks; none for TP1. Timed by cmperf.comm.allreduce_time (the cheapest of
    one-shot, two-shot and ring). Over attention TP with expert-parallel MoE the all-reduce is carried as
    a reduce-scatter before dispatch and an all-gather after combine (TensorRT-LLM attention-TP + EP):
    the same bytes and steps, costed here as one all-reduce."""
    if tp <= 1:
        return []
    return [comm_op(name, "bf16", "allreduce", payload_bytes, np.float64(tp), stream)]


def _mla_prefill_in(m: Model, prec, new_tokens, cached_tokens, tp) -> list[Op]:
    """The start of MLA's prefill block (both forms): the down projections of the new tokens, then the TP
    group's all-gather of their latents (q and kv, BF16) and of the cached prefix's latent KV (SP-TP-SP)."""
    lat = (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim) * 2.0
    gathered = new_tokens * lat + cached_tokens * kv_bytes_per_token_layer(m, prec.kv)
    return [
        *_mla_down_ops(m, new_tokens, prec.gemm),
        Op(
            "mla.tp_allgather",
            "comm",
            "moe",
            "bf16",
            collective="allgather",
            comm_bytes=gathered * (tp - 1),
            ep_size=tp,
        ),
    ]


def _mla_prefill_out(m: Model, prec, new_tokens, tp) -> list[Op]:
    """The end of MLA's prefill block (both forms): the all-to-all of head outputs back to the tokens'
    ranks (SP-TP-SP), the output quantization fused into o_proj, the residual."""
    h, H, dv, g = m.hidden_size, m.num_attention_heads, m.v_head_dim, prec.gemm
    return [
        Op(
            "mla.tp_alltoall",
            "comm",
            "moe",
            "bf16",
            collective="alltoall",
            comm_bytes=new_tokens * H * dv * 2.0 * (tp - 1) / tp,
            ep_size=tp,
        ),
        *fuse(
            [
                vector("mla.o_quant", "attn", new_tokens, H * dv, H * dv, "bf16", g),
                gemm("mla.o_proj", "attn", new_tokens, H * dv, h, g),
            ]
        ),
        vector("attn.residual", "attn", new_tokens, 2 * h, h),
    ]


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
    tp = np.asarray(tp, dtype=float)
    ops = _mla_prefill_in(m, prec, new_tokens, cached_tokens, tp)
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
    return ops + _mla_prefill_out(m, prec, new_tokens, tp)


def _index_ops(m: Model, prec, tokens, seqs, ctx_len, scored):
    """DSA's lightning indexer for ``tokens`` queries of ``seqs`` sequences over ``ctx_len`` cached keys
    each: q (from the q latent) and k projections, FP8 scores of ``scored`` keys per query (index heads x
    index_head_dim MACs each, weighted by a per-head gate), then a top-k pass over the FP32 scores."""
    hi, di, h = m.index_n_heads, m.index_head_dim, m.hidden_size
    g = prec.gemm  # DeepSeek-V3.2 runs the indexer in FP8: quantized like the projections
    return [
        gemm("dsa.index_q", "attn", tokens, m.q_lora_rank or h, hi * di, g),
        gemm("dsa.index_k", "attn", tokens, h, di + hi, g),  # the key and the per-head weights
        Op(
            "dsa.index_scores",
            "attention",
            "attn",
            g,
            flops=2.0 * tokens * hi * di * scored,
            act_in_bytes=tokens * hi * di * _b(g),
            act_out_bytes=tokens * scored * 4.0,
            kv_read_bytes=seqs * ctx_len * _index_kv_bytes(m),
            kv_write_bytes=tokens * _index_kv_bytes(m),
        ),
        vector("dsa.topk", "attn", tokens * scored, 1, 0, "fp32", "fp32"),
    ]


def _qkv_width(m: Model, heads, kv_heads):
    """Output width of GQA's fused q, k, v projection over ``heads`` query and ``kv_heads`` KV heads (one
    rank's); an output gate (Qwen3.5 attn_output_gate) doubles q."""
    return ((2 if m.attn_output_gate else 1) * heads + 2 * kv_heads) * m.head_dim


def heads_per_rank(m: Model, tp) -> int:
    """Query heads on the busiest rank of an attention-TP group: ceil(H / tp). A degree that does not divide
    the heads (TP72 over DeepSeek's 128: 2 heads on 56 ranks, 1 on 16; TensorRT-LLM and SGLang run such
    layouts on GB200 NVL72) is timed at its busiest rank, which is also the time of padding the heads to a
    multiple of tp (128 -> 144); a divisor gives H / tp."""
    return -(-m.num_attention_heads // int(tp))


def expert_inter_per_rank(m: Model, moe_tp: int) -> int:
    """Intermediate width of the busiest rank's slice of an expert under MoE TP: ceil(I / moe_tp), as
    ``heads_per_rank`` (TP72 over 2048: 29)."""
    return -(-m.moe_intermediate_size // int(moe_tp))


def expert_split(m: Model, moe_tp: int) -> float:
    """How many times smaller one rank's slice of an expert's FFN is than the expert under MoE TP: moe_tp
    when it divides the intermediate size I, else I / ``expert_inter_per_rank`` (2048 / 29 = 70.6 at TP72)."""
    inter = m.moe_intermediate_size
    return float(moe_tp) if inter % moe_tp == 0 else inter / expert_inter_per_rank(m, moe_tp)


def kv_heads_per_rank(m: Model, tp: int) -> float:
    """KV heads a TP rank holds: KV / TP when TP divides them, else 1 (each KV head replicated TP / KV
    times: vLLM and SGLang QKVParallelLinear replicate KV heads when tp_size > num_key_value_heads)."""
    return max(m.num_key_value_heads / tp, 1.0)


def gqa_decode_ops(m: Model, prec, tokens, seqs, keys, tp: int = 1) -> list[Op]:
    """GQA for ``tokens`` query tokens of ``seqs`` sequences attending ``keys`` cached tokens each.

    Tensor-parallel over ``tp`` ranks (``tokens``/``seqs``: the TP group's): query heads split, KV heads
    split or replicated (``kv_heads_per_rank``), QKV column- and o_proj row-parallel, then the group's
    all-reduce (Megatron-LM attention TP, Shoeybi et al. 2019 §3)."""
    h, g = m.hidden_size, prec.gemm
    H, kv, d = heads_per_rank(m, tp), kv_heads_per_rank(m, tp), m.head_dim
    kvb = _attention_kv_bytes(m, prec.kv) * kv / m.num_key_value_heads
    width = _qkv_width(m, H, kv)  # this rank's heads
    return [
        vector("attn.norm", "attn", tokens, h, h, "bf16", g),
        gemm("gqa.qkv_proj", "attn", tokens, h, width, g),
        vector("gqa.rope", "attn", tokens, (H + kv) * d, (H + kv) * d),
        Op(
            "gqa.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * H * 2 * d * keys,
            act_in_bytes=tokens * H * d * 2.0,
            act_out_bytes=tokens * H * d * 2.0,
            kv_read_bytes=seqs * keys * kvb,
            kv_write_bytes=tokens * kvb,
        ),
        *fuse(
            [
                vector("gqa.o_quant", "attn", tokens, H * d, H * d, "bf16", g),
                gemm("gqa.o_proj", "attn", tokens, H * d, h, g),
            ]
        ),
        *tp_allreduce_ops("attn.tp_allreduce", tokens * h * 2.0, tp),
        vector("attn.residual", "attn", tokens, 2 * h, h),
    ]


def gqa_prefill_ops(
    m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant, layout: str = "sp-tp-sp"
) -> list[Op]:
    """GQA prefill of ``seqs`` prompts of ``prompt_len`` tokens, ``cached_len`` of each from the context
    cache: causal_pairs(P, c, window or chunk) query-key pairs of 2*d MACs per head.

    ``layout`` "sp-tp-sp" as for MLA (CM384 §4.3): projections sequence-parallel over a rank's own
    ``new_tokens``; the TP group all-gathers K and V of the context (the cached prefix included) and
    exchanges query heads in and outputs back (two all-to-alls). "megatron" (a dense model,
    ``deployment.megatron_prefill``; ``tp`` one integer, ``new_tokens``/``seqs`` the TP group's): query
    heads split, KV heads split or replicated (``kv_heads_per_rank``), QKV column- and o_proj
    row-parallel, then the group's all-reduce, as decode (``gqa_decode_ops``; Megatron-LM attention TP,
    Shoeybi et al. 2019 §3)."""
    h, d, g = m.hidden_size, m.head_dim, prec.gemm
    megatron = layout == "megatron"
    H, kv = m.num_attention_heads, float(m.num_key_value_heads)
    if megatron:
        H, kv = heads_per_rank(m, tp), kv_heads_per_rank(m, int(tp))
    kvb = _attention_kv_bytes(m, prec.kv) * kv / m.num_key_value_heads
    cached = np.asarray(cached_len, dtype=float)
    ctx_tokens = seqs * attended_keys(m, variant, prompt_len)
    pairs = seqs * causal_pairs(
        prompt_len,
        cached,
        m.sliding_window if variant == "sliding" else 0.0,
        m.attention_chunk_size if variant == "chunked" else 0.0,
    )
    width = _qkv_width(m, H, kv)  # this rank's heads
    proj = [
        vector("attn.norm", "attn", new_tokens, h, h, "bf16", g),
        gemm("gqa.qkv_proj", "attn", new_tokens, h, width, g),
        vector("gqa.rope", "attn", new_tokens, (H + kv) * d, (H + kv) * d),
    ]
    attention = Op(
        "gqa.attention",
        "attention",
        "attn",
        prec.attention,
        flops=2.0 * H * 2 * d * pairs,
        act_in_bytes=new_tokens * H * d * 2.0,
        act_out_bytes=new_tokens * H * d * 2.0,
        kv_read_bytes=ctx_tokens * 2 * kv * d * 2.0,
        kv_write_bytes=new_tokens * kvb,
    )
    out = fuse(
        [
            vector("gqa.o_quant", "attn", new_tokens, H * d, H * d, "bf16", g),
            gemm("gqa.o_proj", "attn", new_tokens, H * d, h, g),
        ]
    )
    residual = vector("attn.residual", "attn", new_tokens, 2 * h, h)
    if megatron:
        reduce = tp_allreduce_ops("attn.tp_allreduce", new_tokens * h * 2.0, tp)
        return [*proj, attention, *out, *reduce, residual]
    tp = np.asarray(tp, dtype=float)
    gathered = new_tokens * 2 * kv * d * 2.0 + seqs * attended_keys(m, variant, cached) * kvb
    return [
        *proj,
        Op(
            "gqa.tp_allgather",
            "comm",
            "moe",
            "bf16",
            collective="allgather",
            comm_bytes=gathered * (tp - 1),
            ep_size=tp,
        ),
        attention,
        Op(
            "gqa.tp_alltoall",
            "comm",
            "moe",
            "bf16",
            collective="alltoall",
            comm_bytes=2.0 * new_tokens * H * d * 2.0 * (tp - 1) / tp,
            ep_size=tp,
        ),
        *out,
        residual,
    ]


def linear_attention_ops(m: Model, prec, tokens, seqs, prefill_tp=None, tp: int = 1) -> list[Op]:
    """A Gated DeltaNet layer for ``tokens`` tokens of ``seqs`` sequences (module docstring). Decode
    (``prefill_tp`` None): the recurrence reads and writes each sequence's state once per step; with
    decode attention TP ``tp`` the heads (and their states) split, in_proj column- and out_proj
    row-parallel, then the group's all-reduce (SGLang Qwen3-Next). Prefill: the chunked form, with the
    TP group's all-to-all of q, k, v heads in and outputs back as for GQA."""
    h, g = m.hidden_size, prec.gemm
    hk, hv, dk, dv = (
        m.linear_num_key_heads / tp,
        m.linear_num_value_heads / tp,
        m.linear_key_head_dim,
        m.linear_value_head_dim,
    )
    kd, vd = hk * dk, hv * dv
    state = hv * dk * dv * LINEAR_STATE_BYTES
    macs = 3.0 * dk * dv if prefill_tp is None else LINEAR_CHUNK * (dk + dv) + 3.0 * dk * dv
    ops = [
        vector("attn.norm", "attn", tokens, h, h, "bf16", g),
        gemm("gdn.in_proj", "attn", tokens, h, 2 * kd + 2 * vd + 2 * hv, g),
        vector("gdn.conv", "attn", tokens, 2 * kd + vd, 2 * kd + vd),
    ]
    if prefill_tp is not None:
        ptp = np.asarray(prefill_tp, dtype=float)
        ops.append(
            Op(
                "gdn.tp_alltoall",
                "comm",
                "moe",
                "bf16",
                collective="alltoall",
                comm_bytes=tokens * (2 * kd + 2 * vd) * 2.0 * (ptp - 1) / ptp,
                ep_size=ptp,
            )
        )
    ops += [
        Op(
            "gdn.recurrence",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * hv * macs,
            act_in_bytes=tokens * (2 * kd + vd) * 2.0,
            act_out_bytes=tokens * vd * 2.0,
            kv_read_bytes=seqs * state,
            kv_write_bytes=seqs * state,
        ),
        vector("gdn.gated_norm", "attn", tokens, 2 * vd, vd, "bf16", g),
        gemm("gdn.out_proj", "attn", tokens, vd, h, g),
        *tp_allreduce_ops("attn.tp_allreduce", tokens * h * 2.0, tp),
        vector("attn.residual", "attn", tokens, 2 * h, h),
    ]
    return ops


def attention_decode_ops(
    m: Model, prec, tokens, seqs, kv_len, variant: str = "full", tp: int = 1
) -> list[Op]:
    """The decode attention block of a ``variant`` layer, by the model's attention kind; ``tp``: the
    attention TP degree (``tokens``/``seqs`` the TP group's; 1: data-parallel attention)."""
    if m.attention == "dsv4":
        from . import attention_v4

        return attention_v4.decode_ops(m, prec, tokens, seqs, kv_len, variant)
    if m.attention == "kda":  # Kimi-K3: KDA or gated MLA layers (cmperf.attention_kda)
        from . import attention_kda

        return attention_kda.decode_ops(m, prec, tokens, seqs, kv_len, variant, tp)
    if variant == "linear":
        return linear_attention_ops(m, prec, tokens, seqs, tp=tp)
    keys = attended_keys(m, variant, kv_len)
    if m.attention == "mla":
        return mla_decode_ops(m, prec, tokens, seqs, keys, tp)
    return gqa_decode_ops(m, prec, tokens, seqs, keys, tp)


def attention_prefill_ops(
    m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant="full", layout="sp-tp-sp"
):
    """The prefill attention block of a ``variant`` layer, by the model's attention kind (``layout``: GQA's
    TP layout, ``gqa_prefill_ops``)."""
    if m.attention == "dsv4":
        from . import attention_v4

        return attention_v4.prefill_ops(m, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant)
    if m.attention == "kda":  # Kimi-K3: KDA or gated MLA layers (cmperf.attention_kda)
        from . import attention_kda

        return attention_kda.prefill_ops(m, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant)
    if variant == "linear":
        return linear_attention_ops(m, prec, new_tokens, seqs, prefill_tp=tp)
    if m.attention == "gqa":
        return gqa_prefill_ops(m, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant, layout)
    if m.index_topk:
        return mla_sparse_prefill_ops(m, prec, new_tokens, seqs, prompt_len, cached_len, tp)
    return mla_prefill_ops(m, prec, new_tokens, seqs, prompt_len, cached_len, tp)


def mla_sparse_prefill_ops(m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp) -> list[Op]:
    """DSA prefill (DeepSeek-V3.2 §2.1: MLA in MQA mode, absorbed, over the index_topk selected keys):
    the indexer scores every causal pair, attention covers causal_pairs(P, c, window = index_topk).
    The TP exchange is MLA's (latents gathered, head outputs back). Each selected latent is read once
    per sequence from HBM (neighbouring queries select overlapping keys; a lower estimate)."""
    h, H = m.hidden_size, m.num_attention_heads
    dn, dr, dc, dv, qk, g = (
        m.qk_nope_head_dim,
        m.qk_rope_head_dim,
        m.kv_lora_rank,
        m.v_head_dim,
        m.q_lora_rank,
        prec.gemm,
    )
    cached = np.asarray(cached_len, dtype=float)
    all_pairs = seqs * causal_pairs(prompt_len, cached)
    pairs = seqs * causal_pairs(prompt_len, cached, window=m.index_topk)
    kvb = _attention_kv_bytes(m, prec.kv)
    tp = np.asarray(tp, dtype=float)
    ops = _mla_prefill_in(m, prec, new_tokens, seqs * cached, tp)
    ops.append(gemm("mla.q_up", "attn", new_tokens, qk or h, H * (dn + dr), g))
    ops.append(gemm("mla.k_absorb", "attn", new_tokens * H, dn, dc, g, num_weights=H))
    # per-query scores over the causal keys, summed: the indexer's work is all_pairs / new_tokens per query
    index = _index_ops(m, prec, new_tokens, seqs, prompt_len, all_pairs / np.maximum(new_tokens, 1e-12))
    ops += index
    ops.append(
        Op(
            "mla.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * H * (2 * dc + dr) * pairs,
            act_in_bytes=new_tokens * H * (dc + dr) * 2.0,
            act_out_bytes=new_tokens * H * dc * 2.0,
            kv_read_bytes=seqs * np.asarray(prompt_len, dtype=float) * kvb,
            kv_write_bytes=new_tokens * kvb,
        )
    )
    ops.append(gemm("mla.v_absorb", "attn", new_tokens * H, dc, dv, g, a_dtype="bf16", num_weights=H))
    return ops + _mla_prefill_out(m, prec, new_tokens, tp)


def dense_ffn_ops(m: Model, prec, tokens, tp: int = 1) -> list[Op]:
    """SwiGLU MLP of the dense layers: data-parallel (whole weights on every rank), or tensor-parallel
    over the attention's ``tp`` ranks (``tokens``: the group's; up column-, down row-parallel, then the
    group's all-reduce: Megatron-LM MLP TP, as SGLang runs dense layers beside TP attention)."""
    h, i, g = m.hidden_size, m.intermediate_size / tp, prec.gemm
    return [
        vector("ffn.norm", "moe", tokens, h, h, "bf16", g),
        gemm("dense.up", "moe", tokens, h, 2 * i, g),
        vector("dense.act", "moe", tokens, 2 * i, i, "bf16", g),
        gemm("dense.down", "moe", tokens, i, h, g),
        *tp_allreduce_ops("dense.tp_allreduce", tokens * h * 2.0, tp),
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
    moe_tp: int = 1,
) -> list[Op]:
    """MoE layer on the busiest rank: ``expert_tokens`` token-copies through ``experts_read`` weight sets.

    ``copies_per_token``: dispatch messages per token (top-k, +1 when the shared expert is remote).
    ``moe_tp`` > 1 (MoE TP x EP over G = moe_tp * ep_size ranks): each expert's FFN split moe_tp ways
    along its intermediate size; no all-to-all: the G ranks all-gather every token (quantized, as the
    dispatch message), each computes its experts' slices, and a reduce-scatter returns the summed
    outputs (TensorRT-LLM's MoE TP/EP all-gather + reduce-scatter path; aiconfigurator models it so).
    """
    if m.attention == "kda":  # Kimi-K3's latent MoE and shared experts in h (cmperf.attention_kda)
        from . import attention_kda

        args = (tokens, expert_tokens, experts_read, copies_per_token, ep_size, dispatch_msg_bytes)
        return attention_kda.moe_ops(m, prec, *args, combine_msg_bytes, moe_tp)
    h, r, e = m.hidden_size, m.n_routed_experts, prec.experts
    inter = m.moe_intermediate_size / expert_split(m, moe_tp)  # one rank's slice of an expert
    if moe_tp > 1:
        group = np.asarray(ep_size, dtype=float) * moe_tp
        shares = (group - 1.0) * tokens  # every other rank's tokens in, their partial outputs out
        dispatch = comm_op("moe.tp_allgather", prec.dispatch, "allgather", shares * dispatch_msg_bytes, group)
        combine = comm_op(
            "moe.tp_reducescatter", prec.combine, "reducescatter", shares * combine_msg_bytes, group
        )
        copies_per_token = 0.0  # the residual adds the reduced output only
    else:
        # tokens x copies x message, the per-EP-group factors first (one pass over the points each)
        sent_d = tokens * (copies_per_token * np.asarray(dispatch_msg_bytes, dtype=float))
        sent_c = tokens * (copies_per_token * np.asarray(combine_msg_bytes, dtype=float))
        dispatch = comm_op("moe.dispatch", prec.dispatch, "dispatch", sent_d, ep_size)
        combine = comm_op("moe.combine", prec.combine, "combine", sent_c, ep_size)
    return [
        *fuse(
            [
                vector("ffn.norm", "moe", tokens, h, h, "bf16", e),
                gemm("moe.gate", "moe", tokens, h, r, prec.head, a_dtype="bf16", out_dtype="fp32"),
            ]
        ),
        dispatch,
        *fuse(
            [
                gemm(
                    "moe.experts.up",
                    "moe",
                    expert_tokens,
                    h,
                    2 * inter,
                    e,
                    num_weights=experts_read,
                    memory_key=EXPERT_MEMORY,
                ),
                vector("moe.experts.act", "moe", expert_tokens, 2 * inter, inter, "bf16", e),
            ]
        ),
        gemm(
            "moe.experts.down",
            "moe",
            expert_tokens,
            inter,
            h,
            e,
            num_weights=experts_read,
            memory_key=EXPERT_MEMORY,
        ),
        *fuse(
            [
                combine,
                vector("moe.residual", "moe", tokens, (copies_per_token + 1) * h, h),
            ]
        ),
    ]


def head_ops(m: Model, prec, embed_tokens, head_tokens, mtp_tokens, tp: int = 1) -> list[Op]:
    """Embedding gather, LM head (+ the MTP module's shared head and its h x 2h projection), sampling.

    With attention TP ``tp`` (token counts: the TP group's) the embedding and the LM head are
    vocabulary-parallel and the logits are all-gathered before sampling (SGLang VocabParallelEmbedding,
    ParallelLMHead, LogitsProcessor's all-gather; vLLM the same)."""
    h, v, hd = m.hidden_size, m.vocab_size / tp, prec.head
    ops = [
        vector("embed", "attn", embed_tokens, h, h, hd, "bf16"),
        gemm("lm_head", "attn", head_tokens, h, v, hd, out_dtype="fp32"),
    ]
    if tp > 1:
        logits = (head_tokens + np.asarray(mtp_tokens, dtype=float)) * v * 4.0
        ops.append(
            comm_op("head.tp_allgather", "fp32", "allgather", logits * (tp - 1), np.float64(tp), "attn")
        )
    ops.append(vector("sample", "attn", head_tokens, v * tp, 1, "fp32", "fp32"))
    if np.any(np.asarray(mtp_tokens) > 0):
        ops += [
            gemm("mtp.proj", "attn", mtp_tokens, 2 * h, h, prec.gemm),
            gemm("mtp.lm_head", "attn", mtp_tokens, h, v, hd, out_dtype="fp32"),
        ]
    return ops


def attention_params(m: Model, tp: int = 1) -> float:
    """Attention weights of one layer: MLA's down/up projections (+ the DSA indexer's q, k and head-weight
    projections) or GQA's q, k, v and o; norms included. DeepSeek-V4: its MTP layer's
    (cmperf.attention_v4.layer_params). ``tp``: what one rank of a TP group holds (the head-split parts
    divided, MLA's down projections, norms and indexer whole; GQA's KV heads per ``kv_heads_per_rank``)."""
    h, H = m.hidden_size, heads_per_rank(m, tp)
    if m.attention == "dsv4":
        from . import attention_v4

        return attention_v4.layer_params(m)
    if m.attention == "gqa":
        q = (2 if m.attn_output_gate else 1) * H * m.head_dim
        return h * (q + 2 * kv_heads_per_rank(m, tp) * m.head_dim) + H * m.head_dim * h + h
    dn, dr, dc, dv, qk = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim, m.q_lora_rank
    attn = (
        (h * qk + qk * H * (dn + dr) if qk else h * H * (dn + dr))
        + h * (dc + dr)
        + dc * H * (dn + dv)
        + H * dv * h
        + (qk + dc + 2 * h)
    )  # + norms
    if m.index_topk:
        attn += (qk or h) * m.index_n_heads * m.index_head_dim + h * (m.index_head_dim + m.index_n_heads)
    return attn


def linear_attention_params(m: Model, tp: int = 1) -> float:
    """Gated DeltaNet weights of one layer: in_proj, the conv, out_proj, the gated norm, A and dt (of one
    rank of a ``tp`` group: heads split)."""
    h, hk, hv = m.hidden_size, m.linear_num_key_heads / tp, m.linear_num_value_heads / tp
    kd, vd = hk * m.linear_key_head_dim, hv * m.linear_value_head_dim
    return h * (2 * kd + 2 * vd + 2 * hv) + m.linear_conv_kernel_dim * (2 * kd + vd) + vd * h + h + 2 * hv


def weight_params(m: Model, tp: int = 1) -> dict[str, float]:
    """Parameter counts by group (for memory and the 671B / 37B check). ``attention_per_layer`` is the
    mean over layers (a model mixing linear and full attention layers). ``tp``: the attention TP degree:
    the attention, dense-FFN, embedding and LM-head counts are one TP rank's (experts unchanged)."""
    if m.attention == "kda":  # Kimi-K3 (cmperf.attention_kda)
        from . import attention_kda

        return attention_kda.weight_params(m, tp)
    h = m.hidden_size
    n_linear = m.layer_attention.count("linear")
    full = attention_params(m, tp)
    attn = (
        full
        if not n_linear
        else ((m.num_layers - n_linear) * full + n_linear * linear_attention_params(m, tp)) / m.num_layers
    )
    if m.attention == "dsv4":
        from . import attention_v4

        attn = attention_v4.mean_layer_params(m)
    expert = 3 * h * m.moe_intermediate_size
    dense = 3 * h * m.intermediate_size
    gate = h * m.n_routed_experts
    n_moe = layer_count(m, "moe")
    mtp = m.num_mtp_modules * (
        full + gate + (m.n_routed_experts + m.n_shared_experts) * expert + 2 * h * h + 2 * h
    )
    vocab = m.vocab_size / tp
    return {
        "attention": m.num_layers * attn,
        "dense_ffn": layer_count(m, "dense") * dense / tp,
        "experts_routed": n_moe * m.n_routed_experts * expert,
        "experts_shared": n_moe * m.n_shared_experts * expert,
        "gate": n_moe * gate,
        "embedding": vocab * h,
        "lm_head": vocab * h,
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
    active = total - w["experts_routed"] + layer_count(m, "moe") * m.num_experts_per_tok * w["expert"]
    return total, active
