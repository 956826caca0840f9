"""Closed forms of the decode model in sympy (imported lazily: only `cmperf report` / `cmperf explain`).

Simplified from cmperf.decode for one MoE layer (symbols: b batch per device, L KV length, P_g / P_a the
GEMM / attention peaks per rank, B_HBM HBM bandwidth, B_EP scale-up bandwidth per rank, e_* efficiencies
(e_gc and e_ac below stand for the microbenchmark figure times e_p, the chip's pipeline_compute),
c_* fixed costs, alpha_* collective latencies), with T = b(1+d)/(n r) query tokens and S = b/(n r)
sequences per microbatch per rank (n microbatches, r ranks per device, d MTP drafts), s_a the
attention stream's share of the cube cores (split-cores, CM384 §4.2) and s_m = 1 - s_a:

    t_core  = max(2 T H (2 d_c + d_r) L / (P_a e_ac s_a),  S L kv / (B_HBM e_am)) + c_a       (MLA core)
    t_proj  = max(2 T W_att / (P_g e_gc s_a),  W_att w / (B_HBM e_gm)) + 2 c_g        (MLA projections)
    A       = t_proj + t_core                                                     (attention stream)
    t_exp   = max(2 x 3 h I / (P_g e_gc s_m),  n_read 3 h I w / (B_HBM e_em)) + 2 c_g   (experts; x tokens)
    t_a2a   = alpha + T k_c m (E-1)/E / (B_EP e_EP)                        (dispatch, combine each)
    M       = t_exp + t_disp + t_comb                                               (MoE stream)
    TPOT    = (N_moe n max(A, M) + N_dense n max(A, D) + t_head) / (1 + accept)
    tokens/s per device = b / TPOT

Dropped against the numeric path: activation bytes of GEMMs, vector ops (norms, residuals, SwiGLU,
gate), the A+M and shared-HBM terms of the layer period, the MTP layer. ``x`` (tokens through the
busiest expert rank) uses the imbalance max/mean from the numeric model. The compute-comm policy
(prefill-style overlap, non-Ascend systems) uses A = all compute, M = dispatch + combine.

Worked number (CM384, batch 96, KV 4096): T = 48, t_core = 2*48*128*1088*4096/(353.9e12*0.654*0.74*2/3)
+ 5 us = 485 us; tokens/s per device within ~10% of the numeric model (tests/test_symbolic.py).

Ridges: the MLA projections turn compute-bound at T* = w P_g e_gc s_a / (2 B_HBM e_gm) tokens per
microbatch (b* = n r T* / (1+d) per device); the MLA core's intensity 2(1+d) H (2 d_c + d_r) / kv
FLOP/B does not depend on batch or KV length: it is compute-bound when the queries per sequence per
step exceed q* = kv P_a e_ac s_a / (2 H (2 d_c + d_r) B_HBM e_am) (0.35 on a 910C die in BF16, e_p = 0.74).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .comm import message_bytes
from .deployment import Precision, placement_arrays
from .errors import CmperfError
from .graph import kv_bytes_per_token_layer
from .specs import DTYPE_BYTES, Model, System

# hardware symbol -> (description, accessor path into the System) used by explain for elasticities
HW_SYMBOLS = {
    "P_g": "GEMM peak per rank (GEMM dtype)",
    "P_a": "attention peak per rank (attention dtype)",
    "B_HBM": "HBM bandwidth per rank",
    "B_EP": "EP plane bandwidth per rank",
    "e_gc": "gemm_compute efficiency",
    "e_gm": "gemm_memory efficiency",
    "e_em": "expert_memory efficiency (routed experts' grouped GEMMs)",
    "e_ac": "attention_compute efficiency",
    "e_am": "attention_memory efficiency",
    "e_p": "pipeline_compute (in-pipeline share of the compute efficiencies)",
    "e_EP": "EP plane efficiency",
    "c_g": "fixed cost per GEMM",
    "c_a": "fixed cost per attention kernel",
    "alpha_d": "dispatch latency alpha",
    "alpha_c": "combine latency alpha",
}


@dataclass(frozen=True)
class Forms:
    """sympy expressions and the numeric values of every symbol at the scenario."""

    symbols: dict[str, Any]  # name -> sympy Symbol (sympy ships no type hints)
    t_core: object
    attn_stream: object
    moe_stream: object
    tpot: object
    tokens_per_s: object
    ridge_tokens: object  # T* of the MLA projections
    ridge_batch: object  # b* per device
    core_queries: object  # q* queries per sequence per step where the MLA core turns compute-bound
    values: dict[Any, float]  # Symbol -> float at the scenario
    policy: str


def _f(x: ArrayLike) -> float:
    return float(np.asarray(x).reshape(-1)[0])


def hardware_values(system: System, prec: Precision) -> dict[str, float]:
    """Numeric values of the hardware symbols for a system (the names of HW_SYMBOLS)."""
    chip = system.chip
    disp = system.collectives["dispatch"]
    comb = system.collectives["combine"]
    plane = system.planes[disp.plane]
    return {
        "P_g": chip.peak(prec.gemm),
        "P_a": chip.peak(prec.attention),
        "B_HBM": chip.hbm_bytes_per_s,
        "B_EP": plane.bytes_per_s_per_rank,
        "e_gc": chip.eff["gemm_compute"],
        "e_gm": chip.eff["gemm_memory"],
        "e_em": chip.eff["expert_memory"],
        "e_ac": chip.eff["attention_compute"],
        "e_am": chip.eff["attention_memory"],
        "e_p": chip.eff["pipeline_compute"],
        "e_EP": plane.efficiency,
        "c_g": chip.overhead_s["gemm"],
        "c_a": chip.overhead_s["attention"],
        "alpha_d": disp.alpha_s,
        "alpha_c": comb.alpha_s,
    }


def closed_form_reason(model: Model) -> str | None:
    """Why the closed forms do not describe ``model`` (None: they do). They are written for the
    DeepSeek-V3 family: MLA with dense attention in every layer, dense-first layers, then MoE."""
    if model.attention != "mla" or model.index_topk:
        return f"{model.name} has {'sparse ' if model.index_topk else ''}{model.attention.upper()} attention"
    if any(a != "full" for a in model.layer_attention):
        return f"{model.name} mixes attention variants per layer"
    if not model.is_moe or list(model.layer_ffn) != sorted(model.layer_ffn):
        return f"{model.name} is not dense-first then MoE"
    return None


def decode_forms(
    system: System,
    model: Model,
    *,
    batch_per_device: float,
    kv_len: float,
    ep_size: int,
    microbatches: int = 2,
    mtp: int = 1,
    mtp_accept: float = 0.7,
    precision: Precision | None = None,
    imbalance: float = 1.0,
    attention_cube_cores: int | None = None,
) -> Forms:
    """Build the closed forms for a decode deployment; ``values`` evaluates them at that deployment."""
    import sympy as sp

    why = closed_form_reason(model)
    if why is not None:
        raise CmperfError(
            f"--model: the closed forms describe MLA + MoE models of the DeepSeek-V3 family; {why} "
            "(its numeric breakdown: cmperf decode --ops all)"
        )

    prec = precision or Precision()
    names = ["b", "L", *HW_SYMBOLS]
    sy = {n: sp.Symbol(n, positive=True) for n in names}
    b, L = sy["b"], sy["L"]
    P_g, P_a, B_HBM, B_EP = sy["P_g"], sy["P_a"], sy["B_HBM"], sy["B_EP"]
    e_gm, e_em, e_am, e_EP = sy["e_gm"], sy["e_em"], sy["e_am"], sy["e_EP"]
    e_gc, e_ac = sy["e_gc"] * sy["e_p"], sy["e_ac"] * sy["e_p"]  # microbenchmark x in-pipeline share
    c_g, c_a = sy["c_g"], sy["c_a"]

    m = model
    h, H, I, Id = m.hidden_size, m.num_attention_heads, m.moe_intermediate_size, m.intermediate_size  # noqa: E741
    dn, dr, dc, dv, q = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim, m.q_lora_rank
    k = m.num_experts_per_tok
    n, r, d = int(microbatches), system.ranks_per_device, int(mtp)
    ov = system.overlap_for("decode")
    policy = ov.policy
    cores = attention_cube_cores if attention_cube_cores is not None else ov.attention_cube_cores
    split = policy == "split-cores" and n > 1
    s_a = sp.Rational(int(cores), system.chip.cube_cores) if split else sp.Integer(1)
    s_m = 1 - s_a if split else sp.Integer(1)
    w = sp.nsimplify(DTYPE_BYTES[prec.gemm])
    kv = sp.nsimplify(kv_bytes_per_token_layer(m, prec.kv))
    T = b * (1 + d) / (n * r)
    S = b / (n * r)

    t_core = sp.Max(2 * T * H * (2 * dc + dr) * L / (P_a * e_ac * s_a), S * L * kv / (B_HBM * e_am)) + c_a
    w_att = (
        (h * q + h * (dc + dr) + q * H * (dn + dr) if q else h * H * (dn + dr) + h * (dc + dr))
        + H * dn * dc
        + H * dc * dv
        + H * dv * h
    )
    t_proj = sp.Max(2 * T * w_att / (P_g * e_gc * s_a), w_att * w / (B_HBM * e_gm)) + 2 * c_g
    A = t_proj + t_core

    E = float(ep_size)
    pl = placement_arrays(m, np.asarray(E), None)
    dedicated = bool(pl["dedicated"])
    n_read: float
    routed_mean = E * T * k / _f(pl["routed_ranks"])
    if dedicated:
        shared = E * T * m.n_shared_experts / max(_f(pl["shared_ranks"]), 1.0)
        x = (
            sp.Max(sp.nsimplify(imbalance) * routed_mean, shared)
            if m.n_shared_experts
            else imbalance * routed_mean
        )
        n_read, copies = 1, k + m.n_shared_experts
    else:
        x = sp.nsimplify(imbalance) * routed_mean + T * m.n_shared_experts
        n_read, copies = _f(pl["slots"]) + m.n_shared_experts, k  # every slot active at decode batch sizes
    t_exp = sp.Max(2 * x * 3 * h * I / (P_g * e_gc * s_m), n_read * 3 * h * I * w / (B_HBM * e_em)) + 2 * c_g
    dcol, ccol = system.collectives["dispatch"], system.collectives["combine"]
    m_d = message_bytes(h, prec.dispatch, dcol.scale_bytes, dcol.message_align_bytes)
    m_c = message_bytes(h, prec.combine, ccol.scale_bytes, ccol.message_align_bytes)
    log_e = float(np.log2(E)) if E > 1 else 0.0
    remote = (E - 1) / E
    t_disp = (
        sy["alpha_d"] + sp.Float(dcol.alpha_per_log2_ep_s * log_e) + T * copies * m_d * remote / (B_EP * e_EP)
    )
    t_comb = (
        sy["alpha_c"] + sp.Float(ccol.alpha_per_log2_ep_s * log_e) + T * copies * m_c * remote / (B_EP * e_EP)
    )
    if E <= 1:
        t_disp = t_comb = sp.Integer(0)
    D = sp.Max(2 * T * 3 * h * Id / (P_g * e_gc * s_m), 3 * h * Id * w / (B_HBM * e_gm)) + 2 * c_g
    if policy == "split-cores":
        M, Md, Aa, Ad = t_exp + t_disp + t_comb, D, A, A
    else:  # compute-comm: all compute in one stream, the collectives in the other
        M, Md, Aa, Ad = t_disp + t_comb, sp.Integer(0), A + t_exp, A + D
    head = (
        (1 + (1 if d > 0 else 0)) * m.vocab_size * h * sp.nsimplify(DTYPE_BYTES[prec.head]) / (B_HBM * e_gm)
    )
    n_moe, n_dense = m.num_layers - m.first_k_dense, m.first_k_dense
    per_step = 1 + sum(sp.nsimplify(mtp_accept) ** i for i in range(1, d + 1))
    tpot = (n_moe * n * sp.Max(Aa, M) + n_dense * n * sp.Max(Ad, Md) + head) / per_step
    tps = b / tpot
    ridge_T = w * P_g * e_gc * s_a / (2 * B_HBM * e_gm)
    ridge_b = n * r * ridge_T / (1 + d)
    core_q = kv * P_a * e_ac * s_a / (2 * H * (2 * dc + dr) * B_HBM * e_am)
    vals = {sy[k2]: v for k2, v in hardware_values(system, prec).items()}
    vals[b], vals[L] = float(batch_per_device), float(kv_len)
    return Forms(sy, t_core, A, M, tpot, tps, ridge_T, ridge_b, core_q, vals, policy)


def evaluate(expr: Any, values: dict[Any, float]) -> float:
    return float(expr.subs(values).evalf())


def elasticity(expr: Any, symbol: Any, values: dict[Any, float]) -> float:
    """d ln(expr) / d ln(symbol) at ``values``: symbol/expr * d expr/d symbol (0 on a flat max branch)."""
    import sympy as sp

    d = sp.diff(expr, symbol)
    d = d.replace(sp.Heaviside, lambda *a: sp.Heaviside(a[0], sp.Rational(1, 2)))
    return float((d * symbol / expr).subs(values).evalf())


def latex_forms(f: Forms) -> list[tuple[str, str]]:
    """(title, LaTeX) of the key closed forms, with the model constants folded in."""
    import sympy as sp

    names = {
        f.symbols["B_HBM"]: r"B_{\mathrm{HBM}}",
        f.symbols["B_EP"]: r"B_{\mathrm{EP}}",
        f.symbols["e_EP"]: r"e_{\mathrm{EP}}",
    }

    def tex(e: object) -> str:
        return str(sp.latex(sp.N(e, 6), symbol_names=names))

    return [
        ("MLA attention core per microbatch, t_core(b, L)", tex(f.t_core)),
        ("Attention stream per microbatch, A(b, L)", tex(f.attn_stream)),
        ("MoE stream per microbatch, M(b)", tex(f.moe_stream)),
        ("TPOT(b, L)", tex(f.tpot)),
        ("Tokens/s per device(b, L) = b / TPOT", r"\frac{b}{\mathrm{TPOT}(b, L)}"),
        ("Query tokens per microbatch where the MLA projections turn compute-bound, T*", tex(f.ridge_tokens)),
        ("Batch per device where the MLA projections turn compute-bound, b*", tex(f.ridge_batch)),
        ("Queries per sequence per step above which the MLA core is compute-bound, q*", tex(f.core_queries)),
    ]
