"""DeepSeek-V4 compressed attention (``attention = "dsv4"``): op builders, cache bytes and parameters.

No paper on V4 is in the references; every formula cites the serving engine's model code, SGLang 0.5.23
(``sglang/srt/...`` paths below; cited, not vendored). Notation: h hidden, H heads, d = head_dim (512:
one KV head, K and V share it), dr = qk_rope_head_dim, q = q_lora_rank, R = o_lora_rank, G = o_groups,
W = sliding_window, m = hc_mult, hi/di = index heads/dim, K = index_topk; T tokens, S sequences, L
context per sequence (per rank and microbatch, as in cmperf.graph).

Layer variants (``[layers] attention``, from ``compress_ratios``; models/deepseek_v4.py MQALayer.__init__
asserts the ratio is one of 0, 1, 2, 4, 128; 1 and 2 are V4.1's and are refused by cmperf.hf):

* ``sliding`` (ratio 0): MQA over the last W keys only (the SWA branch every layer has).
* ``c128``: the SWA keys + every compressed entry, one per 128 tokens (deepseek_v4_backend.py
  DSV4AttnMetadata.sparse_page_indices: "every compressed block up to the position for c128").
* ``c4``: the SWA keys + the K compressed entries (one per 4 tokens) the C4 indexer selects
  (sparse_page_indices: "the indexer's top-k for c1 / c2 / c4").

Per layer (models/deepseek_v4.py MqaAttentionBase.__init__, MQALayer.__init__):

* wq_a + wkv, fused as wqkv_a: h -> q + d; q_norm, kv_norm (RMSNorm), RoPE on the dr slice.
* wq_b: q -> H*d (ColumnParallelLinear over the attention TP group), a per-head RMSNorm and RoPE of q.
* Attention: MQA with one shared K=V of d per key (deepseek_v4_backend.py _forward_attention: "DeepseekV4
  shares k and v"): 2*d MACs per head per key (scores over d, values over d); an attention sink per head
  (negligible). The output's RoPE slice is rotated back (inverse RoPE), fused into wo_a's quantization.
* wo_a, grouped low rank: G groups, each (H*d/G) -> R (ColumnParallelLinear(H*d/G, G*R) applied per group,
  an einsum): H*d*R MACs per token; wo_b: G*R -> h (RowParallelLinear).
* Compressor (c4, c128; layers/attention/dsv4/compressor.py Compressor): wkv_gate h -> 2*c*d in BF16
  (c = 2 for ratio 4, overlapping windows; 1 for 128), a learned position bias ``ape`` (ratio x c*d) and
  a gated pooling of the window into one entry of d, RMSNorm, RoPE. Each token's kv and score (2*c*d FP32)
  go to a per-sequence state ring; a window's c*ratio rows are pooled when it completes.
* C4 indexer (layers/attention/dsv4/indexer.py C4Indexer): wq_b q -> hi*di, weights_proj h -> hi (BF16),
  its own ratio-4 Compressor over di; FP8 scores of the query's hi heads against every compressed indexer
  key (L/4 per query), a top-K pass. Indexer key: di FP8 + FP32 scale per 128 = 132 B
  (mem_cache/deepseek_v4_memory_pool.py get_dsv4_indexer_bytes_per_token).
* Hyper-connections, hc_mult = m residual streams (models/deepseek_v4.py DeepseekV4DecoderLayerBase:
  make_hc_mixing_params, hc_pre, hc_post): before each sublayer hc_pre reads the m*h residual, projects it
  through hc_fn ((2+m)*m x m*h, FP32) to the mixing weights (Sinkhorn-normalized) and writes the h-wide
  sublayer input (the RMSNorm fused); hc_post mixes the sublayer output back into the m streams. Assumed
  BF16 residual streams; the mixing GEMV's FLOPs (2*(2+m)*m*m*h per token) are counted as vector work.
* MoE: DeepseekV2MoE (models/deepseek_v2.py) with routed + shared experts as cmperf.graph.moe_ops costs
  it. The first num_hash_layers layers route by token id (HashTopK, ``is_hash``) instead of the learned
  top-k: the same expert work per token; the MoEGate is still built for them (DeepseekV2MoE.__init__), so
  the gate GEMM is kept (an upper estimate). The token-id -> expert table is a buffer, not a weight.

Cache per sequence and layer (mem_cache/deepseek_v4_memory_pool.py): an entry (SWA or compressed) is
(d - dr) FP8 + dr BF16 + (d - dr)/64 FP8 tile scales + 1 pad byte = 448 + 128 + 7 + 1 = 584 B
(DeepSeekV4SingleKVPool.get_bytes_per_token and its assert "584 bytes/token") with an FP8 KV cache, d*2 =
1,024 B in BF16 (dsv4_unified_row_bytes, fp8=False). Every layer keeps a ring of the last W SWA entries
(get_swa_ring_size); c4 adds L/4 entries + L/4 indexer keys, c128 L/128 entries; c4 and c128 layers hold
the compressor state ring (get_compress_state_ring_size without speculation: 8 rows for ratio 4, 128 for
128, offline compression, SGLANG_OPT_USE_ONLINE_COMPRESS's default) of 2*c*d values (+ 8 rows of 2*2*di for
the C4 indexer's compressor), assumed FP32 (the compressor's linear_bf16_fp32 output). The counts use L/ratio
(not the floor), so every cost is smooth and non-decreasing in L.
"""

from __future__ import annotations

import numpy as np

from .graph import INDEX_SCALE_BLOCK, Op, _b, causal_pairs, fuse, gemm, vector
from .specs import Model

#: Compression ratio of each compressed layer variant (the variant names follow SGLang's c4 / c128).
RATIO = {"c4": 4, "c128": 128}
#: Layer variants of the dsv4 attention kind, and the variant of a compress_ratios entry.
VARIANTS = ("sliding", "c4", "c128")
VARIANT_OF_RATIO = {0: "sliding", 4: "c4", 128: "c128"}
#: FP8 tile of the NoPE part's scales (KVLayout V4 tile_size; 448 / 64 = 7 scale bytes + 1 pad).
KV_TILE = 64
#: Compressor state ring rows per sequence (get_compress_state_ring_size, no speculative decoding).
STATE_RING = {"c4": 8, "c128": 128}
STATE_BYTES = 4.0  # FP32 kv + score rows (assumed; the compressor GEMM outputs FP32)


def _coff(variant: str) -> int:
    """Overlapping windows for ratio 4 (Compressor: ``coff = 1 + (ratio == 4)``)."""
    return 2 if variant == "c4" else 1


def mtp_variant(m: Model) -> str:
    """The MTP layer's variant: compress_ratios' entry past the main layers (0: sliding window only)."""
    return VARIANT_OF_RATIO[m.mtp_compress_ratio]


def _variant(m: Model, variant: str) -> str:
    # graph calls the MTP layer's block with the default variant "full"
    return mtp_variant(m) if variant == "full" else variant


def entry_bytes(m: Model, kv_dtype: str) -> float:
    """Bytes of one cached K=V entry (SWA or compressed): 584 with an FP8 cache, 1,024 in BF16."""
    d, dr = m.head_dim, m.qk_rope_head_dim
    b = _b(kv_dtype)
    if b >= 2.0:
        return d * b
    return (d - dr) * b + dr * 2.0 + -(-(d - dr) // KV_TILE) + 1.0


def index_entry_bytes(m: Model) -> float:
    """One compressed indexer key: index_head_dim FP8 + an FP32 scale per 128 values (132 B)."""
    d = m.index_head_dim
    return d + 4.0 * -(-d // INDEX_SCALE_BLOCK)


def state_bytes(m: Model, variant: str) -> float:
    """Compressor state of one sequence in one layer (constant in L): c4 8 x 2*2*512*4 + the indexer's
    8 x 2*2*128*4 = 81,920 B; c128 128 x 2*512*4 = 524,288 B; sliding 0."""
    if variant not in RATIO:
        return 0.0
    c = _coff(variant)
    s = STATE_RING[variant] * 2 * c * m.head_dim * STATE_BYTES
    if variant == "c4":
        s += STATE_RING["c4"] * 2 * 2 * m.index_head_dim * STATE_BYTES
    return s


def attended_keys(m: Model, variant: str, kv_len):
    """Keys a query at context kv_len reads: min(L, W) SWA + c4 min(L/4, K) / c128 L/128 compressed."""
    L = np.asarray(kv_len, dtype=float)
    swa = np.minimum(L, m.sliding_window)
    if variant == "c4":
        return swa + np.minimum(L / 4.0, m.index_topk)
    if variant == "c128":
        return swa + L / 128.0
    return swa


def kv_bytes_layer(m: Model, variant: str, kv_dtype: str, kv_len):
    """Cache bytes of one sequence at context kv_len in one ``variant`` layer (module docstring)."""
    L = np.asarray(kv_len, dtype=float)
    e = entry_bytes(m, kv_dtype)
    total = np.minimum(L, m.sliding_window) * e + state_bytes(m, variant)
    if variant in RATIO:
        per = e + (index_entry_bytes(m) if variant == "c4" else 0.0)
        total = total + L / RATIO[variant] * per
    return total


def kv_bytes_per_seq(m: Model, kv_dtype: str, kv_len, mtp_layers: int = 0):
    """Cache bytes of one sequence over every layer and ``mtp_layers`` MTP layers (their variant:
    mtp_variant). DeepSeek-V4-Pro, FP8 cache, 4,096 tokens: 61 x 128 x 584 SWA + 30 x 1,024 x 716 (c4)
    + 31 x 32 x 584 (c128) + states 30 x 81,920 + 31 x 524,288 = 45.9 MB (11.2 KB per token)."""
    total = mtp_layers * kv_bytes_layer(m, mtp_variant(m), kv_dtype, kv_len)
    for variant in set(m.layer_attention):
        total = total + m.layer_attention.count(variant) * kv_bytes_layer(m, variant, kv_dtype, kv_len)
    return total


# ------------------------------------------------------------------------------------------------- ops


def _hc_pre(m: Model, name: str, stream: str, tokens) -> list[Op]:
    """hc_pre (+ the sublayer's RMSNorm): read the m*h residual and hc_fn, write the h-wide input."""
    h, hc = m.hidden_size, max(m.hc_mult, 1)
    if hc <= 1:
        return [vector("attn.norm", stream, tokens, h, h)]
    mix = (2 + hc) * hc
    return [
        Op(
            name,
            "vector",
            stream,
            "bf16",
            weight_bytes=np.float64(mix * hc * h * 4.0),
            act_in_bytes=tokens * hc * h * 2.0,
            act_out_bytes=tokens * (h * 2.0 + mix * 4.0),
        )
    ]


def _hc_post(m: Model, name: str, stream: str, tokens) -> list[Op]:
    """hc_post: the sublayer output (h) mixed into the m residual streams (read m*h + h, write m*h)."""
    h, hc = m.hidden_size, max(m.hc_mult, 1)
    return [vector(name, stream, tokens, (hc + 1) * h, hc * h)]


def _proj_ops(m: Model, prec, tokens) -> list[Op]:
    """hc_pre + norm, wqkv_a, the q / kv norms and RoPE, wq_b and the per-head q norm + RoPE."""
    h, H, d, q, g = m.hidden_size, m.num_attention_heads, m.head_dim, m.q_lora_rank, prec.gemm
    ops = _hc_pre(m, "mhc.attn_pre", "attn", tokens)
    ops += fuse(
        [
            gemm("v4.wqkv_a", "attn", tokens, h, q + d, g),
            vector("v4.qkv_norm_rope", "attn", tokens, q + d, q + d, "bf16", g),
        ]
    )
    ops += fuse(
        [
            gemm("v4.wq_b", "attn", tokens, q, H * d, g),
            vector("v4.q_norm_rope", "attn", tokens, H * d, H * d),
        ]
    )
    return ops


def _compressor_ops(m: Model, name: str, tokens, variant: str, d: int, out_bytes: float) -> list[Op]:
    """A Compressor over ``tokens`` tokens: wkv_gate h -> 2*c*d (BF16 weight, FP32 out), then the state
    ring write, the pooling of each completed window (c*ratio rows of c*d kv + c*d scores read per
    ``ratio`` tokens: 2*c*d*c per token) and the compressed entry written every ratio tokens."""
    h, c, r = m.hidden_size, _coff(variant), RATIO[variant]
    row = 2 * c * d * STATE_BYTES
    return [
        gemm(f"{name}.wkv_gate", "attn", tokens, h, 2 * c * d, "bf16", out_dtype="fp32"),
        Op(
            f"{name}.pool",
            "vector",
            "attn",
            "fp32",
            act_in_bytes=tokens * 2 * c * d * 4.0 + tokens * row * c,
            act_out_bytes=tokens * row + tokens / r * out_bytes,
        ),
    ]


def _indexer_ops(m: Model, prec, tokens, seqs, ctx_len, scored) -> list[Op]:
    """The C4 indexer of ``tokens`` queries: q and head-weight projections, its compressor, FP8 scores of
    ``scored`` compressed keys per query over ``ctx_len/4`` cached keys per sequence, the top-K pass."""
    hi, di, h, g = m.index_n_heads, m.index_head_dim, m.hidden_size, prec.gemm
    ib = index_entry_bytes(m)
    ops = [
        gemm("v4.index_q", "attn", tokens, m.q_lora_rank, hi * di, g),
        gemm("v4.index_weights", "attn", tokens, h, hi, "bf16", out_dtype="fp32"),
        *_compressor_ops(m, "v4.index_compressor", tokens, "c4", di, ib),
        Op(
            "v4.index_scores",
            "attention",
            "attn",
            g,
            flops=2.0 * tokens * hi * di * scored,
            act_in_bytes=tokens * hi * di * _b(g),
            act_out_bytes=tokens * scored * 4.0,
            kv_read_bytes=seqs * np.asarray(ctx_len, dtype=float) / 4.0 * ib,
        ),
        vector("v4.index_topk", "attn", tokens * scored, 1, 0, "fp32", "fp32"),
    ]
    return ops


def _out_ops(m: Model, prec, tokens) -> list[Op]:
    """Inverse RoPE + quantization fused into the grouped wo_a, then wo_b and hc_post."""
    h, H, d, R, G, g = m.hidden_size, m.num_attention_heads, m.head_dim, m.o_lora_rank, m.o_groups, prec.gemm
    ops = fuse(
        [
            vector("v4.o_rope_quant", "attn", tokens, H * d, H * d, "bf16", g),
            gemm("v4.wo_a", "attn", tokens * G, H * d // G, R, g, num_weights=G),
        ]
    )
    ops.append(gemm("v4.wo_b", "attn", tokens, G * R, h, g))
    return ops


def _ffn_hc_ops(m: Model, tokens) -> list[Op]:
    """The FFN sublayer's hyper-connection work beyond moe_ops' own norm and residual (none without
    hyper-connections)."""
    if m.hc_mult <= 1:
        return []
    return _hc_pre(m, "mhc.ffn_pre", "moe", tokens) + _hc_post(m, "mhc.ffn_post", "moe", tokens)


def decode_ops(m: Model, prec, tokens, seqs, kv_len, variant: str = "full") -> list[Op]:
    """One V4 attention block (and the layer's hyper-connection work) for ``tokens`` query tokens of
    ``seqs`` sequences at context ``kv_len``: every query attends attended_keys(variant, L) keys."""
    variant = _variant(m, variant)
    H, d = m.num_attention_heads, m.head_dim
    e = entry_bytes(m, prec.kv)
    ops = _proj_ops(m, prec, tokens)
    if variant in RATIO:
        ops += _compressor_ops(m, "v4.compressor", tokens, variant, d, e)
    if variant == "c4":
        L = np.asarray(kv_len, dtype=float)
        ops += _indexer_ops(m, prec, tokens, seqs, L, L / 4.0)
    keys = attended_keys(m, variant, kv_len)
    ops.append(
        Op(
            "v4.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * tokens * H * 2 * d * keys,
            act_in_bytes=tokens * H * d * 2.0,
            act_out_bytes=tokens * H * d * 2.0,
            kv_read_bytes=seqs * keys * e,
            kv_write_bytes=tokens * e,
        )
    )
    ops += _out_ops(m, prec, tokens)
    ops += (
        _hc_post(m, "mhc.attn_post", "attn", tokens)
        if m.hc_mult > 1
        else [vector("attn.residual", "attn", tokens, 2 * m.hidden_size, m.hidden_size)]
    )
    return ops + _ffn_hc_ops(m, tokens)


def prefill_ops(m: Model, prec, new_tokens, seqs, prompt_len, cached_len, tp, variant="full") -> list[Op]:
    """V4 prefill of ``seqs`` prompts of ``prompt_len`` tokens (``cached_len`` of each from the context
    cache). Query-key pairs: causal_pairs(P, c, W) SWA pairs + c4 sum_i min(i/4, K) =
    causal_pairs(P, c, 4K)/4 (the indexer scores all causal_pairs(P, c)/4 compressed keys) / c128
    causal_pairs(P, c)/128. SP-TP-SP as cmperf.graph's MLA (CM384 §4.3): projections sequence-parallel;
    the TP group all-gathers the q latent and the kv row of the new tokens and the cached entries, splits
    the heads (wq_b and wo_a column-parallel over the attention TP group: MqaAttentionBase), and returns
    the G*R-wide wo_a outputs to the tokens' ranks by an all-to-all before wo_b. Each cached key is read
    once per sequence (a lower estimate, as for DSA prefill)."""
    variant = _variant(m, variant)
    H, d, q, W = m.num_attention_heads, m.head_dim, m.q_lora_rank, m.sliding_window
    R, G = m.o_lora_rank, m.o_groups
    e = entry_bytes(m, prec.kv)
    P = np.asarray(prompt_len, dtype=float)
    cached = np.asarray(cached_len, dtype=float)
    tp = np.asarray(tp, dtype=float)
    all_pairs = seqs * causal_pairs(P, cached)
    pairs = seqs * causal_pairs(P, cached, window=W)
    keys_read = np.minimum(P, W)
    if variant == "c4":
        pairs = pairs + seqs * causal_pairs(P, cached, window=4.0 * m.index_topk) / 4.0
        keys_read = keys_read + P / 4.0
    elif variant == "c128":
        pairs = pairs + all_pairs / 128.0
        keys_read = keys_read + P / 128.0
    ops = _proj_ops(m, prec, new_tokens)
    cached_b = seqs * (kv_bytes_layer(m, variant, prec.kv, cached) - state_bytes(m, variant))
    ops.insert(
        len(ops) - 2,  # before wq_b: the gather moves the q latent, not the H*d queries
        Op(
            "v4.tp_allgather",
            "comm",
            "moe",
            "bf16",
            collective="allgather",
            comm_bytes=(new_tokens * (q + d) * 2.0 + cached_b) * (tp - 1),
            ep_size=tp,
        ),
    )
    if variant in RATIO:
        ops += _compressor_ops(m, "v4.compressor", new_tokens, variant, d, e)
    if variant == "c4":
        ops += _indexer_ops(m, prec, new_tokens, seqs, P, all_pairs / 4.0 / np.maximum(new_tokens, 1e-12))
    ops.append(
        Op(
            "v4.attention",
            "attention",
            "attn",
            prec.attention,
            flops=2.0 * H * 2 * d * pairs,
            act_in_bytes=new_tokens * H * d * 2.0,
            act_out_bytes=new_tokens * H * d * 2.0,
            kv_read_bytes=seqs * keys_read * e,
            kv_write_bytes=new_tokens * e,
        )
    )
    out = _out_ops(m, prec, new_tokens)
    ops += out[:2]  # inverse RoPE + wo_a on the rank's heads
    ops.append(
        Op(
            "v4.tp_alltoall",
            "comm",
            "moe",
            "bf16",
            collective="alltoall",
            comm_bytes=new_tokens * G * R * 2.0 * (tp - 1) / tp,
            ep_size=tp,
        )
    )
    ops += out[2:]
    ops += (
        _hc_post(m, "mhc.attn_post", "attn", new_tokens)
        if m.hc_mult > 1
        else [vector("attn.residual", "attn", new_tokens, 2 * m.hidden_size, m.hidden_size)]
    )
    return ops + _ffn_hc_ops(m, new_tokens)


# ------------------------------------------------------------------------------------------ parameters


def _compressor_params(m: Model, variant: str, d: int) -> float:
    """Compressor: ape (ratio x c*d), wkv_gate h x 2*c*d, the norm (d)."""
    c, r = _coff(variant), RATIO[variant]
    return r * c * d + m.hidden_size * 2 * c * d + d


def hc_params(m: Model) -> float:
    """One sublayer's hyper-connection parameters: hc_fn (2+m)*m x m*h, base (2+m)*m, scale 3."""
    hc = m.hc_mult
    if hc <= 1:
        return 0.0
    mix = (2 + hc) * hc
    return mix * hc * m.hidden_size + mix + 3


def layer_params(m: Model, variant: str = "full") -> float:
    """Attention weights of one ``variant`` layer + the layer's norms and hyper-connection mixes:
    wqkv_a h*(q + d), q/kv norms, wq_b q*H*d, wo_a H*d*R, wo_b G*R*h, sinks H, the compressor and the
    C4 indexer (wq_b q*hi*di, weights_proj h*hi, its compressor over di)."""
    variant = _variant(m, variant)
    h, H, d, q = m.hidden_size, m.num_attention_heads, m.head_dim, m.q_lora_rank
    R, G = m.o_lora_rank, m.o_groups
    p = h * (q + d) + q + d + q * H * d + H * d * R + G * R * h + H + 2 * h + 2 * hc_params(m)
    if variant in RATIO:
        p += _compressor_params(m, variant, d)
    if variant == "c4":
        hi, di = m.index_n_heads, m.index_head_dim
        p += q * hi * di + h * hi + _compressor_params(m, "c4", di)
    return float(p)


def mean_layer_params(m: Model) -> float:
    """layer_params averaged over the main layers (cmperf.graph.weight_params' attention_per_layer)."""
    return sum(layer_params(m, v) for v in m.layer_attention) / m.num_layers
