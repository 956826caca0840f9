"""HBM per rank: weights by placement, KV cache, preallocated all-to-all buffers, activations.

    weights  = attention (every layer, data-parallel) + dense FFN + experts_per_rank * expert * MoE layers
               + gate + embedding + LM head (+ MTP module), each in its datatype
    kv       = sequences * kv_capacity_len * (layers + MTP layers) * (d_c + d_rope) * kv bytes
    buffers  = ep * max_tokens * (dispatch msg + combine msg),
               max_tokens = tokens per rank * min(top_k, experts per rank)   (CM384 §4.2)
    acts     = microbatches * the largest activation footprint (input + output) of any op

Worked number (CM384 decode, EP320, 48 sequences per die at 4K, BF16 KV): weights ~20 GB, KV ~14 GB.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .graph import Op, expert_split, kv_bytes_per_seq, layer_count, weight_params
from .specs import DTYPE_BYTES, Model

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .deployment import Precision


def expert_units(m: Model, experts_per_rank: ArrayLike, w: dict[str, float] | None = None) -> np.ndarray:
    """Expert weight sets on the busiest rank in routed-expert units: ``experts_per_rank`` (placement:
    routed slots + one shared set co-located, or 1 set on a dedicated rank, the busiest kind being a
    shared-expert rank) with the shared set counted at its size: n_shared x a shared expert / a routed
    expert = 1 for DeepSeek-V3's single same-size shared expert (the count unchanged, same bits); Kimi-K3's
    2 shared experts in hidden 7168 over routed ones in 3584: 4. ``w``: ``graph.weight_params(m)`` when the
    caller has it (its expert counts do not depend on the attention TP)."""
    units = np.asarray(experts_per_rank, dtype=float)
    w = w or weight_params(m)
    n_moe = max(layer_count(m, "moe"), 1)
    shared_units = w["experts_shared"] / n_moe / w["expert"] if m.n_shared_experts and w["expert"] else 1.0
    extra = shared_units - 1.0
    return units + extra if extra else units


def weight_bytes_per_rank(
    m: Model,
    prec: Precision,
    experts_per_rank: ArrayLike,
    mtp: int,
    attn_tp: int = 1,
    moe_tp: int = 1,
) -> dict[str, np.ndarray]:
    """Weight bytes held by one rank, by group: attention, dense layers, embedding and head replicated on
    every rank (data-parallel attention) or one ``attn_tp`` rank's share (graph.weight_params), each
    expert's FFN one ``moe_tp`` slice, the shared set at its own size (``expert_units``)."""
    w = weight_params(m, attn_tp)
    b = DTYPE_BYTES
    n_moe = layer_count(m, "moe")
    mtp_layers = min(mtp, m.num_mtp_modules) if mtp else 0
    attn = np.asarray(w["attention_per_layer"] * (m.num_layers + mtp_layers) * b[prec.gemm])
    return {
        "attention": attn,
        "dense_ffn": np.asarray(w["dense_ffn"] * b[prec.gemm]),
        "experts": expert_units(m, experts_per_rank, w)
        * (w["expert"] / expert_split(m, moe_tp))
        * (n_moe + mtp_layers)
        * b[prec.experts],
        "gate": np.asarray((n_moe + mtp_layers) * m.hidden_size * m.n_routed_experts * b[prec.head]),
        "embedding_head": np.asarray((w["embedding"] + w["lm_head"]) * b[prec.head]),
        "mtp_proj": np.asarray(mtp_layers * 2 * m.hidden_size**2 * b[prec.gemm]),
    }


def kv_bytes(
    m: Model, kv_dtype: str, seqs: ArrayLike, kv_capacity_len: float | np.ndarray, mtp: int, tp: int = 1
) -> np.ndarray:
    """KV cache of ``seqs`` sequences of ``kv_capacity_len`` tokens (graph.kv_bytes_per_seq); ``tp``:
    held by one rank of an attention-TP group whose ``seqs`` these are."""
    mtp_layers = min(mtp, m.num_mtp_modules) if mtp else 0
    return np.asarray(seqs, dtype=float) * kv_bytes_per_seq(m, kv_dtype, kv_capacity_len, mtp_layers, tp)


def buffer_bytes(
    ep: ArrayLike,
    tokens_per_rank: ArrayLike,
    top_k: int,
    experts_per_rank: ArrayLike,
    dispatch_msg: float | np.ndarray,
    combine_msg: float | np.ndarray,
) -> np.ndarray:
    max_tokens: np.ndarray = np.asarray(tokens_per_rank, dtype=float) * np.minimum(top_k, experts_per_rank)
    return np.asarray(ep, dtype=float) * max_tokens * (dispatch_msg + combine_msg)


def activation_bytes(ops: Iterable[Op], microbatches: ArrayLike) -> np.ndarray:
    """microbatches * the largest act_in + act_out of any op. An op listed twice (decode's attention block,
    shared by its layer groups) and ops without activations count once; the running maximum is kept in
    one array of its own (max is exact: the order of the ops does not change it, so the ops with the
    smallest arrays go first: they are maxed at their own size, not at the grid's)."""
    peak: Any = 0.0
    owned = False  # peak is an array of ours: updated in place
    buf = None  # a work array for a + b at peak's shape (the same sum as a new array)
    unique = list({id(op): op for op in ops}.values())
    unique.sort(key=lambda op: max(np.size(op.act_in_bytes), np.size(op.act_out_bytes)))  # (stable)
    for op in unique:
        a_in, a_out = op.act_in_bytes, op.act_out_bytes
        if np.ndim(a_in) == 0 and np.ndim(a_out) == 0 and a_in == 0.0 and a_out == 0.0:
            continue  # 0 + 0: cannot raise a peak of act bytes (>= 0)
        if owned and np.broadcast_shapes(np.shape(a_in), np.shape(a_out)) == peak.shape:
            buf = np.add(a_in, a_out, out=buf)
            np.maximum(peak, buf, out=peak)
            continue
        x = a_in + a_out
        if owned and np.shape(x) == peak.shape:
            np.maximum(peak, x, out=peak)
        else:
            peak = np.maximum(peak, x)
            owned, buf = isinstance(peak, np.ndarray), None
    mb = np.asarray(microbatches, dtype=float)
    if owned and np.broadcast_shapes(mb.shape, peak.shape) == peak.shape:
        return np.multiply(mb, peak, out=peak)  # (in place: the same products)
    return mb * peak


def draft_weight_bytes(draft: Model, prec: Precision) -> np.ndarray:
    """A dense draft model held whole on every rank: layers in the GEMM datatype, embedding and head in
    the head's."""
    w = weight_params(draft)
    b = DTYPE_BYTES
    layers = w["attention"] + w["dense_ffn"]
    return np.asarray(layers * b[prec.gemm] + (w["embedding"] + w["lm_head"]) * b[prec.head])
