"""`cmperf serve`: TTFT/TPOT percentiles, goodput and bottleneck of P/D/cache pools under load; `--size`."""

from __future__ import annotations

import math

import click

from ..domains import whole
from ..frameworks import CACHE_PREFETCH
from .common import (
    CheckFailed,
    Infeasible,
    emit,
    format_option,
    guarded,
    parse_quantity,
    progress,
    system_model_options,
)
from .knobs import check_mtp_accept, make_precision, precision_options
from .scenario_opt import scenario_option
from .types import (
    BYTES,
    MODEL_NAME,
    PLANE,
    RATE,
    SLO_PERCENTILE,
    SLO_TIME,
    Number,
    dep,
    flag_of,
    option,
    pools,
    workload,
)

#: ``--chunk``: a whole number of tokens >= 1.
CHUNK = Number(whole(1, 1e9))


def _fmt_rate(x) -> str:
    return "inf" if not math.isfinite(x) else f"{x:,.2f} req/s"


def _s(x) -> str:
    from ..units import fmt_s

    return "inf (overloaded)" if not math.isfinite(x) else fmt_s(x)


def slo_limit_row(m: dict) -> tuple[str, str]:
    """The "SLO holds up to" row of a serving result's ``max_rate_rps`` (disaggregated and aggregated)."""
    return (
        "SLO holds up to",
        f"TTFT {_fmt_rate(m['ttft_slo_rps'])}, TPOT {_fmt_rate(m['tpot_slo_rps'])} "
        f"→ {m['binding_slo']} binds",
    )


def _prefill_degrees(inputs: dict) -> str:
    """The pools row's note of a prefill instance's TP degrees above 1 (' (attention TP16)'), or ''."""
    degrees = (("attention " if inputs["moe"] else "", "prefill_attn_tp"), ("MoE ", "prefill_moe_tp"))
    parts = [f"{name}TP{inputs[k]}" for name, k in degrees if inputs[k] > 1]
    return f" ({', '.join(parts)})" if parts else ""


def serve_rows(r) -> list[tuple[str, str]]:
    from ..units import fmt_bytes, fmt_rate

    p, d, c = r.prefill, r.decode, r.cache
    rows = [
        ("system / model", f"{r.system} / {r.model}"),
        (
            "load",
            f"{r.rate_rps:.4g} req/s, prompt {r.inputs['prompt_len']:g} (CV {r.inputs['prompt_cv']:g}), "
            f"output {r.inputs['output_len']:g} (CV {r.inputs['output_cv']:g})",
        ),
        (
            "pools",
            f"prefill {r.inputs['prefill_devices']} devices = {p.instances} x "
            f"{r.inputs['prefill_instance_devices']}"
            + _prefill_degrees(r.inputs)
            + f", decode {r.inputs['decode_devices']} devices "
            + (
                f"(EP{d.ep_size}"
                + (f", MoE TP{d.moe_tp}" if (d.moe_tp or 1) > 1 else "")
                + (f", attention TP{d.attn_tp}" if (d.attn_tp or 1) > 1 else "")
                + "), "
                if r.inputs["moe"]
                else (f"(TP{d.attn_tp}), " if (d.attn_tp or 1) > 1 else "")
            )
            + f"cache {fmt_bytes(c['capacity_bytes'])} over {c['kv_load_plane']}",
        ),
        ("TTFT p50 / p90 / p99", " / ".join(_s(r.ttft_s[k]) for k in ("p50", "p90", "p99"))),
    ]
    if r.ttft_first_wave_s is not None:  # a closed loop: its users started at once (serving.first_wave_s)
        rows.append(("TTFT first wave", f"{_s(r.ttft_first_wave_s)} mean, the users started at once"))
    if r.ttft_memory_wait_s > 0:  # serving.evaluate: a closed loop beyond the decode pool's HBM cap
        rows.append(
            (
                "TTFT wait for KV memory",
                f"{_s(r.ttft_memory_wait_s)} in every TTFT: more users than the decode pool's HBM holds "
                "(the rest are waiting for KV memory)",
            )
        )
    rows += [
        ("TPOT mean / p99", f"{_s(r.tpot_s['mean'])} / {_s(r.tpot_s['p99'])}"),
        (
            "SLO",
            f"TTFT {_s(r.slo['ttft_s'])}, TPOT {_s(r.slo['tpot_s'])} on {r.slo['quantile']}: "
            f"{'met' if r.slo_met else 'MISSED'}",
        ),
        (
            "goodput",
            f"{r.goodput_rps:.4g} req/s ({100 * r.slo_attainment:.2f}% within both SLOs), "
            f"{r.goodput_rps_per_device:.4g} req/s per device",
        ),
        ("utilization", ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.utilization.items())),
        (
            "bottleneck",
            r.bottleneck + (" — OVERLOADED: " + "; ".join(r.overload_reasons) if r.overloaded else ""),
        ),
        (
            "prefill batch (scheduler's choice)",
            f"{p.batch_prompts:g} prompts per instance, {_s(p.batch_s)} per batch, "
            f"KV transfer {_s(p.kv_transfer_s)}, mean wait {_s(p.mean_wait_s)}"
            + (f", request path (framework) {_s(p.request_s)}" if p.request_s else ""),
        ),
        (
            "decode batch",
            f"{d.batch_per_device:.2f} per device (p99 {d.batch_p99_per_device:.2f}, cap "
            f"{d.max_batch_per_device:.0f}), KV {d.kv_mean_len:.0f} "
            f"(slowest rank {d.kv_slowest_rank_len:.0f})",
        ),
        (
            "cache",
            f"{c['model']}: token hit {100 * c['token_hit_rate']:.1f}%, saves "
            f"{c['prefill_tokens_saved_per_s']:,.0f} prefill tokens/s, "
            f"loads {fmt_rate(c['kv_load_bytes_per_s'])}",
        ),
    ]
    if r.max_rate_rps:
        m = r.max_rate_rps
        rows.append(slo_limit_row(m))
        rows.append(
            (
                "capacity (utilization 1)",
                f"prefill {_fmt_rate(m['prefill_capacity_rps'])}, "
                f"decode {_fmt_rate(m['decode_capacity_rps'])}",
            )
        )
    return rows


def agg_rows(r) -> list[tuple[str, str]]:
    """The summary of ``serve --mode agg`` (a ``cmperf.aggregated.AggregatedResult``)."""
    i = r.inputs
    q = r.slo["quantile"]
    load = (
        f"{r.rate_rps:.4g} req/s (Poisson)"
        if r.load == "poisson"
        else f"{i['concurrency']:g} concurrent users (closed loop): {r.rate_rps:.4g} req/s"
    )
    tp = f", {'attention ' if i['moe'] else ''}TP{i['attn_tp']}" if i["attn_tp"] > 1 else ""
    mtp = f", MoE TP{i['moe_tp']}" if i["moe_tp"] > 1 else ""
    chunk = "default" if i["chunk_default"] else "--chunk"
    scope = ", each its own budget" if i["chunk_scope"] == "group" else ""
    rows = [
        ("system / model", f"{r.system} / {r.model}"),
        (
            "load",
            f"{load}, prompt {i['prompt_len']:g} (CV {i['prompt_cv']:g}), output {i['output_len']:g} "
            f"(CV {i['output_cv']:g})",
        ),
        (
            "engine",
            f"one aggregated engine of {i['devices']} devices "
            + (f"(EP{i['ep_size']}{tp}{mtp})" if i["moe"] else f"({tp[2:]})" if tp else "(data-parallel)")
            + f", MTP {i['mtp']}, "
            f"{r.microbatches} microbatch{'es' if r.microbatches != 1 else ''}",
        ),
        (
            "chunk budget",
            f"{r.chunk_tokens:,.0f} prompt tokens per step ({chunk}), {r.chunk_tokens_per_group:,.4g} per "
            f"attention-DP group ({r.attention_dp_groups} groups{scope}): {r.prefill_steps_per_prompt} "
            f"step{'s' if r.prefill_steps_per_prompt != 1 else ''} per prompt",
        ),
        ("TTFT mean / p50 / p90 / p99", " / ".join(_s(r.ttft_s[k]) for k in ("mean", "p50", "p90", "p99"))),
        ("TPOT mean / p99", f"{_s(r.tpot_s['mean'])} / {_s(r.tpot_s['p99'])}"),
        (
            "SLO",
            f"TTFT {_s(r.slo['ttft_s'])}, TPOT {_s(r.slo['tpot_s'])} on {q}: "
            f"{'met' if r.slo_met else 'MISSED'}",
        ),
        (
            "throughput",
            f"{r.tokens_per_s_per_device:,.0f} output tokens/s per device, "
            f"{r.input_tokens_per_s_per_device:,.0f} prompt tokens/s per device",
        ),
        (
            "decode batch",
            f"{r.batch_per_device:.2f} per device (stops at {r.max_batch_per_device:.1f}: {r.limited_by})"
            + (", the rest wait for KV memory" if r.waits_for_memory else ""),
        ),
        (
            "mean step",
            f"{_s(r.step_s)}: {r.chunk_tokens_per_step:,.0f} prompt tokens per step on average "
            f"({100 * r.chunk_utilization:.1f}% of the budget), prefill share {100 * r.prefill_share:.1f}% "
            f"(decode alone {_s(r.decode_step_s)})",
        ),
        (
            "chunk steps",
            f"{100 * r.chunk_step_fraction:.1f}% of the steps, {_s(r.chunk_step_s)} each, "
            f"{r.chunk_tokens_per_chunk_step:,.0f} prompt tokens",
        ),
        ("TTFT queueing (mean)", _s(r.ttft_wait_s)),
        *([("TTFT request path (framework)", _s(r.ttft_request_s))] if r.ttft_request_s else []),
    ]
    if r.ttft_first_wave_s is not None:
        wave = _s(r.ttft_first_wave_s)
        if r.waits_for_memory:  # aggregated._first_wave's rounds: the users that fit, then the rest
            fit = r.batch_per_device * r.inputs["devices"]
            wave += f" (rounds of the {fit:,.0f} users that fit in KV memory)"
        rows.append(("TTFT, first wave (all users at once)", wave))
    rows += [
        (
            "goodput",
            f"{r.goodput_rps:.4g} req/s ({100 * r.slo_attainment:.2f}% within both SLOs), "
            f"{r.goodput_rps_per_device:.4g} req/s per device",
        ),
        (
            "utilization",
            f"{100 * r.utilization:.1f}% of the capacity {_fmt_rate(r.capacity_rps)}"
            + (" — OVERLOADED: " + "; ".join(r.overload_reasons) if r.overloaded else ""),
        ),
    ]
    if r.max_rate_rps:
        m = r.max_rate_rps
        rows.append(slo_limit_row(m))
    return rows


def agg_record(r) -> dict:
    """The one CSV row of ``serve --mode agg``: the result's numbers, nested fields as ``table.field``."""
    from .. import render, serving

    rec = render.to_jsonable(serving.finite_or_none(r))
    rec.pop("approximations", None)
    rec.pop("overload_reasons", None)
    return rec


#: Flags of the disaggregated pools, refused with --mode agg (click parameter name -> flag).
DISAGG_ONLY = {
    "prefill_devices": "--prefill-devices",
    "decode_devices": "--decode-devices",
    "prefill_instance_devices": "--prefill-instance-devices",
    "prefill_attn_tp": "--prefill-attn-tp",
    "prefill_moe_tp": "--prefill-moe-tp",
    "cache_dram": "--cache-dram",
    "cache_plane": "--cache-plane",
    "cache_prefetch": "--cache-prefetch",
    "cache_hit": "--cache-hit",
    "num_prefixes": "--prefixes",
    "prefix_skew": "--prefix-skew",
    "prefix_len": "--prefix-len",
    "do_size": "--size",
    "devices_total": "--devices-total",
}
#: Flags of the aggregated engine, refused with --mode disagg.
AGG_ONLY = {
    "devices": "--devices",
    "ep": "--ep",
    "chunk": "--chunk",
}


def _given(ctx, names: dict[str, str]) -> str | None:
    """The first of ``names`` set on the command line or by a scenario (not left at its default)."""
    from click.core import ParameterSource

    for name, flag in names.items():
        src = ctx.get_parameter_source(name)
        if src is not None and src not in (ParameterSource.DEFAULT,):
            return flag
    return None


def slo_percentile_option(fn):
    """``--slo-percentile`` of ``serve`` and ``optimize``: None is the serving model's default (p99,
    ``cmperf.serving.DEFAULT_SLO_PERCENTILE``; a test holds the help text to it)."""
    return click.option(
        "--slo-percentile",
        type=SLO_PERCENTILE,
        default=None,
        help="Percentile of TTFT and of TPOT that must meet the SLOs, in [50, 100) [default: 99].",
    )(fn)


def slo_text(slo: dict) -> str:
    """The SLO a result is on, percentile named: "TTFT p99 <= 2 s, TPOT p99 <= 50 ms" (from ``slo`` of a
    ``sizing.SizeResult``: ttft_s, tpot_s, quantile; an infinite one is "no TTFT SLO")."""
    q = slo["quantile"]

    def one(name, x):
        return f"no {name} SLO" if not math.isfinite(x) else f"{name} {q} <= {_s(x)}"

    return f"{one('TTFT', slo['ttft_s'])}, {one('TPOT', slo['tpot_s'])}"


def size_rows(s) -> tuple[list[tuple[str, str]], list[tuple[str, ...]]]:
    from ..units import fmt_bytes

    b = s.best
    q = s.slo["quantile"]
    head = "max goodput per device" if s.mode == "total" else f"fewest devices for {s.rate_rps:g} req/s"
    rows = [
        ("system / model", f"{s.system} / {s.model}"),
        ("objective", f"{head} (of {s.total_devices} devices)"),
        ("SLO", slo_text(s.slo)),
        (
            "best split",
            f"prefill {b['prefill_devices']} ({b['prefill_instances']} instances), decode "
            f"{b['decode_devices']}, cache {fmt_bytes(b['cache_dram_bytes'])}",
        ),
        ("goodput", f"{b['goodput_rps']:.4g} req/s, {b['goodput_rps_per_device']:.4g} req/s per device"),
        (
            "SLO limits",
            f"TTFT {q} {_fmt_rate(b['ttft_slo_rps'])}, TPOT {q} {_fmt_rate(b['tpot_slo_rps'])}; "
            f"{b['binding']} binds",
        ),
        ("feasible", "yes" if b["feasible"] else f"NO: no split meets {slo_text(s.slo)}"),
    ]
    cands = [
        (
            str(c["prefill_devices"]),
            str(c["decode_devices"]),
            _fmt_rate(c["ttft_slo_rps"]),
            _fmt_rate(c["tpot_slo_rps"]),
            f"{c['goodput_rps']:.4g}",
            f"{c['goodput_rps_per_device']:.4g}",
        )
        for c in s.candidates
    ]
    return rows, cands


def cand_header(s) -> tuple[str, ...]:
    """Header of the split candidates of a ``sizing.SizeResult``, the limits' percentile named."""
    q = s.slo["quantile"]
    return ("prefill", "decode", f"TTFT {q} limit", f"TPOT {q} limit", "max rate in SLO", "goodput/device")


@click.command()
@scenario_option
@system_model_options
@click.option(
    "--rate", type=RATE, default=None, help="Poisson arrival rate, requests/s (e.g. 40 or '40 req/s')."
)
@click.option(
    "--concurrency",
    type=workload("concurrency"),
    default=None,
    help="Fixed number of requests in flight (closed loop).",
)
@click.option(
    "--prompt-len", type=workload("prompt_len"), default=4096, show_default=True, help="Mean prompt tokens."
)
@click.option(
    "--output-len", type=workload("output_len"), default=256, show_default=True, help="Mean output tokens."
)
@click.option(
    "--prompt-cv",
    type=workload("prompt_cv"),
    default=0.0,
    show_default=True,
    help="Coefficient of variation of prompts.",
)
@click.option(
    "--output-cv",
    type=workload("output_cv"),
    default=0.0,
    show_default=True,
    help="Coefficient of variation of outputs.",
)
@click.option(
    "--cache-hit",
    type=workload("cache_hit"),
    default=None,
    help="Fraction of prompt tokens found in the cache (direct).",
)
@click.option(
    "--prefixes",
    "num_prefixes",
    type=workload("num_prefixes"),
    default=None,
    help="Distinct shared prefixes (popularity model).",
)
@click.option(
    "--prefix-skew",
    type=workload("prefix_skew"),
    default=1.0,
    show_default=True,
    help="Zipf skew of prefix popularity.",
)
@click.option(
    "--prefix-len",
    type=workload("prefix_len"),
    default=None,
    help="Tokens per shared prefix [default: half the prompt].",
)
@click.option(
    "--prefill-devices",
    type=pools("prefill_devices"),
    default=None,
    help="Prefill pool devices [default: the paper's 6 instances, 96 NPUs on CloudMatrix384; fewer where the "
    "system is smaller (serving.default_pools)].",
)
@click.option(
    "--decode-devices",
    type=pools("decode_devices"),
    default=None,
    help="Decode pool devices [default: one expert per rank, 160 NPUs on CloudMatrix384, leaving room for "
    "one prefill instance].",
)
@click.option(
    "--prefill-instance-devices",
    type=pools("prefill_instance_devices"),
    default=None,
    help="Devices per prefill instance [default: the EP32 unit, 16 NPUs on CloudMatrix384, 32 GPUs].",
)
@click.option(
    "--prefill-attn-tp",
    type=dep("attn_tp"),
    default=None,
    help="Attention TP degree (ranks one prompt's attention spans, SP-TP-SP) of every prefill instance "
    "[default: the system's [overlap.prefill] attention_tp_devices x ranks per device, 8 NPUs = TP16 on "
    "CloudMatrix384 (a stated assumption: CM384 §4.3 names the layout, not the degree), 1 on GPUs].",
)
@click.option(
    "--prefill-moe-tp",
    type=dep("moe_tp"),
    default=None,
    help="MoE TP degree (ranks per expert) of every prefill instance; its EP = ranks / N [default: 1].",
)
@click.option(
    "--cache-dram",
    type=BYTES,
    default=None,
    help="EMS cache DRAM, e.g. 2TB [default: system DRAM per node x nodes].",
)
@click.option(
    "--cache-plane",
    default=None,
    type=PLANE,
    help="Plane that loads cached KV (ub, vpc, ib, ...) [default: ub if the system has it, else its "
    "scale-out plane].",
)
@click.option(
    "--cache-prefetch",
    type=click.Choice(CACHE_PREFETCH),
    default=None,
    help="How cached KV loads: prefix = before the prefill computes, layer = layer by layer behind it "
    "[default: the --framework's; prefix without one].",
)
@click.option(
    "--framework",
    metavar="NAME",
    default=None,
    help="Serving-framework profile for every pool or the engine (frameworks/NAME.toml, `cmperf decode "
    "--help`) [default: none].",
)
@click.option("--ttft-slo", type=SLO_TIME, default="2s", show_default=True, help="TTFT SLO, e.g. 2s.")
@click.option("--tpot-slo", type=SLO_TIME, default="50ms", show_default=True, help="TPOT SLO, e.g. 50ms.")
@slo_percentile_option
@click.option(
    "--mtp",
    type=dep("mtp"),
    default=None,
    help="Speculative MTP tokens per step [default: 1 where the model has an MTP module, else 0].",
)
@click.option(
    "--mtp-accept",
    type=dep("mtp_accept"),
    default=0.7,
    show_default=True,
    help="Acceptance of a draft token.",
)
@click.option(
    "--draft-model",
    default=None,
    type=MODEL_NAME,
    help="A separate dense draft model run --mtp times per decode step instead of MTP modules "
    "[default: none].",
)
@click.option(
    "--size", "do_size", is_flag=True, help="Size the P/D/cache split (for --rate, or max goodput/device)."
)
@click.option(
    "--devices-total",
    type=pools("devices_total"),
    default=None,
    help="With --size: devices to split [system total].",
)
@click.option(
    "--mode",
    type=click.Choice(["disagg", "agg"]),
    default="disagg",
    show_default=True,
    help="disagg: separate prefill / decode / cache pools; agg: one engine whose decode steps carry chunks "
    "of prefill (in-flight batching, cmperf.aggregated).",
)
@click.option(
    "--devices",
    type=option("devices"),
    default=None,
    help="--mode agg: devices of the aggregated engine [default: one expert per rank, as the decode pool].",
)
@click.option(
    "--ep", type=option("ep_size"), default=None, help="--mode agg: EP size [default: all ranks / --moe-tp]."
)
@click.option(
    "--chunk",
    type=CHUNK,
    default=None,
    help="--mode agg: most prompt tokens one step carries, the framework's knob: over the engine, split "
    "over the attention-DP groups (SGLang --chunked-prefill-size; without --framework), or per group "
    "(TensorRT-LLM max_num_tokens, per attention-DP rank) [default: the --framework's; else SGLang "
    "0.5.23's by device memory: 8192 on H100/H200/910C, 16384 on B200/GB200].",
)
@click.option(
    "--attn-tp",
    type=dep("attn_tp"),
    default=None,
    help="Attention TP degree (ranks per attention group) of the aggregated engine, or of the decode pool "
    "with --mode disagg [default: 1, data-parallel attention].",
)
@click.option(
    "--moe-tp",
    type=dep("moe_tp"),
    default=None,
    help="MoE TP degree (ranks per expert) of the aggregated engine, or of the decode pool [default: 1].",
)
@precision_options
@format_option(("table", "json", "markdown", "csv"))
@guarded
def serve(
    system,
    model,
    spec_dirs,
    rate,
    concurrency,
    prompt_len,
    output_len,
    prompt_cv,
    output_cv,
    cache_hit,
    num_prefixes,
    prefix_skew,
    prefix_len,
    prefill_devices,
    decode_devices,
    prefill_instance_devices,
    prefill_attn_tp,
    prefill_moe_tp,
    cache_dram,
    cache_plane,
    cache_prefetch,
    framework,
    ttft_slo,
    tpot_slo,
    slo_percentile,
    mtp,
    mtp_accept,
    draft_model,
    do_size,
    devices_total,
    mode,
    devices,
    ep,
    chunk,
    attn_tp,
    moe_tp,
    weights,
    kv_dtype,
    fmt,
    output,
):
    """Serve load on prefill/decode/cache pools or one aggregated engine (--mode agg): TTFT, TPOT, goodput."""
    from dataclasses import replace

    from .. import render, serving, sizing, specs
    from ..errors import CmperfError

    ctx = click.get_current_context()
    wrong = _given(ctx, DISAGG_ONLY if mode == "agg" else AGG_ONLY)
    if wrong is not None:
        other = "disagg" if mode == "agg" else "agg"
        raise CmperfError(f"{wrong}: applies to --mode {other} only; leave it out with --mode {mode}")
    if not do_size and _given(ctx, {"devices_total": "--devices-total"}):
        raise CmperfError("--devices-total: applies with --size only (the devices to split); add --size")
    check_mtp_accept(mtp)
    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    rate_v = parse_quantity(rate, "per_s", "--rate") if rate is not None else None
    if rate_v is not None and not rate_v > 0:
        raise CmperfError(f"--rate: must be > 0 requests/s, got {rate}")
    slo = serving.SLO(
        ttft_s=parse_quantity(ttft_slo, "s", "--ttft-slo"),
        tpot_s=parse_quantity(tpot_slo, "s", "--tpot-slo"),
        quantile=(serving.DEFAULT_SLO_PERCENTILE if slo_percentile is None else slo_percentile) / 100.0,
    )
    dram = parse_quantity(cache_dram, "bytes", "--cache-dram") if cache_dram is not None else None
    if fmt == "csv" and not do_size and mode != "agg":
        raise CmperfError("--format csv: a table of splits needs --size; use json for one load's result")
    if rate_v is None and concurrency is None and not do_size:
        raise CmperfError("--rate: give the arrival rate in requests/s (or --concurrency, or --size)")
    wl = serving.Workload(
        rate_per_s=rate_v,
        concurrency=concurrency,
        prompt_len=prompt_len,
        output_len=output_len,
        prompt_cv=prompt_cv,
        output_cv=output_cv,
        cache_hit=cache_hit,
        num_prefixes=num_prefixes,
        prefix_skew=prefix_skew,
        prefix_len=prefix_len,
    )
    prec = make_precision(sysm, weights, kv_dtype)
    if mode == "agg":
        draft = specs.load_model(draft_model, spec_dirs, flag_of("draft_model")) if draft_model else None
        knobs = dict(
            devices=devices,
            ep_size=ep,
            attn_tp=attn_tp,
            moe_tp=moe_tp,
            mtp=mtp,
            draft_model=draft,
            framework=framework,
        )
        _serve_agg(sysm, mod, wl, slo, prec, knobs, mtp_accept, chunk, fmt, output)
        return
    pools = serving.default_pools(sysm, mod)
    if prefill_instance_devices is not None:
        pools = pools.with_instance(prefill_instance_devices)
    pools = pools.split(
        pools.prefill_devices if prefill_devices is None else prefill_devices,
        pools.decode_devices if decode_devices is None else decode_devices,
    )
    pools = replace(
        pools,
        cache_dram_bytes=dram,
        decode=replace(
            pools.decode,
            mtp=pools.decode.mtp if mtp is None else mtp,
            mtp_accept=mtp_accept,
            precision=prec,
            draft_model=specs.load_model(draft_model, spec_dirs, flag_of("draft_model"))
            if draft_model
            else None,
            attn_tp=pools.decode.attn_tp if attn_tp is None else attn_tp,
            moe_tp=pools.decode.moe_tp if moe_tp is None else moe_tp,
            framework=framework,
        ),
        prefill=replace(
            pools.prefill,
            cache_plane=cache_plane,
            cache_prefetch=cache_prefetch,
            framework=framework,
            precision=prec,
            attn_tp=prefill_attn_tp,
            moe_tp=prefill_moe_tp,
        ),
    )
    if do_size:
        if concurrency is not None:
            raise CmperfError("--size works from --rate or a device total, not --concurrency")
        with progress("sizing the prefill / decode / cache split"):
            res = sizing.size(sysm, mod, wl, pools, slo, total_devices=devices_total)
        rows, cands = size_rows(res)
        title = f"best splits ({slo_text(res.slo)})"
        if fmt == "json":
            emit(render.to_json(serving.finite_or_none(res), "serve-size"), output)
        elif fmt == "csv":
            split = (res.best["prefill_devices"], res.best["decode_devices"])
            recs = [
                {"rank": i + 1, "best": (c["prefill_devices"], c["decode_devices"]) == split, **c}
                for i, c in enumerate(res.candidates)
            ]
            emit(render.to_csv(recs, first=("rank", "best")), output)
        elif fmt == "markdown":
            emit(
                "# cmperf serve --size\n\n"
                + render.markdown_table(("quantity", "value"), rows)
                + f"\n## {title[0].upper()}{title[1:]}\n\n"
                + render.markdown_table(cand_header(res), cands),
                output,
            )
        else:
            emit(render.tables("cmperf serve --size", rows, [(title, cand_header(res), cands)]), output)
        if not res.best["feasible"]:  # as `cmperf optimize`: an SLO (or rate) no split meets is exit 1
            what = f"serves {res.rate_rps:g} req/s with" if res.rate_rps is not None else "meets"
            raise CheckFailed(f"no split of {res.total_devices} devices {what} {slo_text(res.slo)}")
        return
    res = serving.evaluate(sysm, mod, wl, pools, slo)
    if fmt == "json":
        # no finite value (an overloaded pool's TTFT/TPOT) is null, with `overloaded` saying why: docs/json.md
        emit(render.to_json(serving.finite_or_none(res), "serve"), output)
    elif fmt == "markdown":
        emit("# cmperf serve\n\n" + render.markdown_table(("quantity", "value"), serve_rows(res)), output)
    else:
        emit(render.tables("cmperf serve", serve_rows(res), []), output)
    if res.overloaded:  # no steady state: the pools cannot serve the load (README: infeasible, exit 3)
        raise Infeasible("overloaded: " + "; ".join(res.overload_reasons))


def _serve_agg(sysm, mod, wl, slo, prec, knobs, mtp_accept, chunk, fmt, output):
    """``serve --mode agg``: one aggregated engine (``cmperf.aggregated.evaluate``) in every format."""
    from .. import aggregated, render, serving
    from ..deployment import Deployment

    engine = aggregated.Engine(Deployment(**knobs, mtp_accept=mtp_accept, precision=prec), chunk)
    res = aggregated.evaluate(sysm, mod, wl, engine, slo)
    if fmt == "json":
        emit(render.to_json(serving.finite_or_none(res), "serve-agg"), output)
    elif fmt == "csv":
        emit(render.to_csv([agg_record(res)]), output)
    elif fmt == "markdown":
        emit(
            "# cmperf serve --mode agg\n\n" + render.markdown_table(("quantity", "value"), agg_rows(res)),
            output,
        )
    else:
        emit(render.tables("cmperf serve --mode agg", agg_rows(res), []), output)
    if res.overloaded:
        raise Infeasible("overloaded: " + "; ".join(res.overload_reasons))


COMMANDS = [serve]
