"""Sensitivities of decode throughput to the hardware: elasticities, numeric and symbolic.

The elasticity of tokens/s per device T to a parameter p (a peak, a bandwidth, an efficiency, a fixed
cost, a collective latency) is

    eps_p = d ln T / d ln p                                     (dimensionless; T = b / TPOT)

so 10% more of p buys about 10 * eps_p percent more tokens/s. Two estimates, compared row by row:

* numeric: central differences of ``cmperf.decode.evaluate`` with the spec record scaled by 1 +- h
  (``dataclasses.replace``), eps ~ [ln T(p (1+h)) - ln T(p (1-h))] / [ln(1+h) - ln(1-h)], h = 1%;
* symbolic: the sympy derivative (p / T) dT/dp of the closed form ``cmperf.symbolic.decode_forms``
  (which drops vector ops, the A+M and shared-HBM terms and the MTP layer) at the same deployment.

A speed (a peak, a bandwidth, an efficiency) divides a time, so its elasticity lies in [0, 1]; a fixed
cost or a latency adds to a time, so its elasticity is <= 0. Worked number (CloudMatrix384, the paper's
50 ms decode setup, scenario cm384-decode-50ms: batch 96, KV 4,096, EP320, two microbatches): HBM
bandwidth +0.263 numeric, +0.246 symbolic (10% more HBM bandwidth buys 2.6% tokens/s); the BF16 peak of
the MLA core +0.698 / +0.731 (in this model the compute-bound MLA core is the largest term at batch 96).

sympy is imported lazily (inside ``cmperf.symbolic``'s functions and here): importing this module does
not pay for it, and the numeric path (``cmperf.decode``) never imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import decode, symbolic
from .deployment import Deployment, Precision
from .specs import Model, System

# |numeric - symbolic| allowed before a row is flagged: max(0.05, 20% of numeric). The closed form drops
# vector ops, the A+M / shared-HBM terms and the MTP layer (TPOT within ~10% of the numeric model).
ELASTICITY_ATOL, ELASTICITY_RTOL = 0.05, 0.20


@dataclass(frozen=True)
class Elasticity:
    """d ln(tokens/s per device) / d ln(parameter) of one hardware parameter."""

    parameter: str  # "HBM bandwidth", "peak bf16", "ub plane latency", ...
    symbol: str  # the closed form's symbol ("B_HBM"), "" when the closed form has none
    numeric: float  # central difference of decode.evaluate
    symbolic: float | None  # the closed form's derivative; None without a symbol
    agree: bool | None  # |numeric - symbolic| <= max(ELASTICITY_ATOL, ELASTICITY_RTOL |numeric|)


def decode_forms(system: System, model: Model, dep: Deployment, imbalance: float) -> symbolic.Forms:
    """The closed forms (``cmperf.symbolic.decode_forms``) at a decode deployment ``dep`` (scalar knobs,
    microbatches a count) with the experts' load imbalance max/mean ``imbalance`` of the numeric model."""
    return symbolic.decode_forms(
        system,
        model,
        batch_per_device=float(dep.batch_per_device),
        kv_len=float(dep.kv_len),
        ep_size=dep.ep_size,
        microbatches=dep.microbatches,
        mtp=dep.mtp,
        mtp_accept=dep.mtp_accept,
        precision=dep.precision,
        imbalance=float(imbalance),
        attention_cube_cores=dep.attention_cube_cores,
    )


Scale = Callable[[System, float], System]


def perturbations(system: System, prec: Precision) -> list[tuple[str, str, Scale]]:
    """(label, closed-form symbol or "", function(system, factor) -> system with that parameter scaled)
    for every hardware parameter: peaks per dtype, HBM bandwidth, bandwidth / efficiency / latency of
    every plane an EP collective uses, efficiencies, fixed costs, collective alphas."""
    chip = system.chip
    out: list[tuple[str, str, Scale]] = []

    def chip_dict(attr, key):
        return lambda s, f: replace(
            s, chip=replace(s.chip, **{attr: {**getattr(s.chip, attr), key: getattr(s.chip, attr)[key] * f}})
        )

    for dt in sorted(chip.peak_flops):
        sym = "P_g" if dt == prec.gemm else ("P_a" if dt == prec.attention else "")
        out.append((f"peak {dt}", sym, chip_dict("peak_flops", dt)))
    out.append(
        (
            "HBM bandwidth",
            "B_HBM",
            lambda s, f: replace(s, chip=replace(s.chip, hbm_bytes_per_s=s.chip.hbm_bytes_per_s * f)),
        )
    )
    ep_planes = sorted(
        {c.plane for c in system.collectives.values()}
        | {c.scaleout_plane for c in system.collectives.values() if c.scaleout_plane}
    )
    disp_plane = system.collectives["dispatch"].plane if "dispatch" in system.collectives else ""
    for pn in ep_planes:
        for attr, label, sym in (
            ("bytes_per_s_per_rank", "bandwidth", "B_EP"),
            ("efficiency", "efficiency", "e_EP"),
            ("latency_s", "latency", ""),
        ):

            def fn(s, f, pn=pn, attr=attr):
                p = s.planes[pn]
                return replace(s, planes={**s.planes, pn: replace(p, **{attr: getattr(p, attr) * f})})

            out.append((f"{pn} plane {label}", sym if pn == disp_plane else "", fn))
    eff_sym = {
        "gemm_compute": "e_gc",
        "gemm_memory": "e_gm",
        "expert_memory": "e_em",
        "attention_compute": "e_ac",
        "attention_memory": "e_am",
        "pipeline_compute": "e_p",
    }
    for k in sorted(chip.eff):
        out.append((f"efficiency {k}", eff_sym.get(k, ""), chip_dict("eff", k)))
    ov_sym = {"gemm": "c_g", "attention": "c_a"}
    for k in sorted(chip.overhead_s):
        out.append((f"fixed cost {k}", ov_sym.get(k, ""), chip_dict("overhead_s", k)))
    for cn in sorted(system.collectives):
        for attr, sym in (
            ("alpha_s", {"dispatch": "alpha_d", "combine": "alpha_c"}.get(cn, "")),
            ("alpha_per_log2_ep_s", ""),
        ):

            def fn(s, f, cn=cn, attr=attr):
                c = s.collectives[cn]
                return replace(
                    s, collectives={**s.collectives, cn: replace(c, **{attr: getattr(c, attr) * f})}
                )

            out.append((f"{cn} {attr.removesuffix('_s')}", sym, fn))
    return out


def elasticities(
    system: System, model: Model, dep: Deployment, forms: symbolic.Forms, h: float = 0.01
) -> list[Elasticity]:
    """d ln(tokens/s per device) / d ln(parameter) for every ``perturbations`` row at decode deployment
    ``dep``: numeric (central differences of decode.evaluate at 1 +- h) and, where the parameter has a
    symbol, symbolic (the derivative of ``forms.tokens_per_s`` at ``forms.values``)."""
    rows = []
    dep = dep.resolve(system, model)
    assert dep.precision is not None  # resolve fills it
    for label, sym, fn in perturbations(system, dep.precision):
        lo = decode.evaluate(fn(system, 1 - h), model, dep).tokens_per_s_per_device
        hi = decode.evaluate(fn(system, 1 + h), model, dep).tokens_per_s_per_device
        num = float((np.log(hi) - np.log(lo)).reshape(-1)[0]) / (math.log(1 + h) - math.log(1 - h))
        s_val = symbolic.elasticity(forms.tokens_per_s, forms.symbols[sym], forms.values) if sym else None
        agree = (
            None if s_val is None else abs(num - s_val) <= max(ELASTICITY_ATOL, ELASTICITY_RTOL * abs(num))
        )
        rows.append(Elasticity(label, sym, num, s_val, agree))
    return rows


def closed_form_values(forms: symbolic.Forms) -> dict[str, float]:
    """The closed forms evaluated at their deployment: tokens/s per device, the batch per device where
    the MLA projections turn compute-bound (b*), the queries per sequence per step above which the MLA
    core is compute-bound (q*). CM384 50 ms setup: 2,038 tokens/s (numeric model 1,940), b* = 220, q* =
    0.351."""
    return {
        "symbolic_tokens_per_s_per_device": symbolic.evaluate(forms.tokens_per_s, forms.values),
        "ridge_batch_per_device": symbolic.evaluate(forms.ridge_batch, forms.values),
        "core_compute_bound_queries_per_sequence": symbolic.evaluate(forms.core_queries, forms.values),
    }


def plain_forms(forms: symbolic.Forms) -> list[str]:
    """The closed forms of ``symbolic.latex_forms`` (same order) as plain text, constants to 4 digits."""
    import sympy as sp

    exprs = [
        forms.t_core,
        forms.attn_stream,
        forms.moe_stream,
        forms.tpot,
        sp.Symbol("b") / sp.Symbol("TPOT"),
        forms.ridge_tokens,
        forms.ridge_batch,
        forms.core_queries,
    ]
    return [sp.sstr(sp.N(e, 4)) for e in exprs]
