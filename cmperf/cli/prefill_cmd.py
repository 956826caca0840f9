"""`cmperf prefill`: input tokens/s per device, batch time and TTFT of a prefill instance."""

from __future__ import annotations

import click

from ..frameworks import CACHE_PREFETCH
from . import knobs
from .common import (
    Infeasible,
    emit,
    format_option,
    guarded,
    ops_limit,
    ops_option,
    plot_option,
    system_model_options,
    write_plot,
)
from .knobs import common_options, knob, precision_options
from .scenario_opt import scenario_option
from .types import PLANE, PREFILL_MICROBATCHES, dep, flag_of


def _summary_rows(p) -> list[tuple[str, str]]:
    from ..units import fmt_bytes, fmt_s

    d, b = p.deployment, p.ttft_breakdown_s
    before = d["cache_prefetch"] == "prefix"  # the cached prefix loads before the compute (cmperf.prefill)
    moe = "moe" in p.streams  # a dense model has no expert parallelism to name
    par = (f"MoE TP{d['moe_tp']} x " if d.get("moe_tp", 1) > 1 else "") + f"EP{d['ep_size']}, "
    return [
        ("system / model", f"{p.system} / {p.model}"),
        (
            "deployment",
            f"{d['devices']} device{'' if d['devices'] == 1 else 's'}"
            + (
                f" (the default {d['devices_fitted_from']} do not hold the weights)"
                if "devices_fitted_from" in d
                else ""
            )
            + ", "
            + (par if moe else "")
            + f"{d['tokens_per_device']:g} tokens/device"
            + (
                f" (the largest that fits: the default {d['tokens_fitted_from']:g} does not)"
                if "tokens_fitted_from" in d
                else ""
            )
            + " of "
            f"{d['prompt_len']:g}-token prompts, {d['microbatches']} "
            f"microbatch{'' if d['microbatches'] == 1 else 'es'}, "
            + (
                f"TP{d['attn_tp']} (attention and MLP)"
                if d.get("tp_layout") == "megatron"
                else f"attention TP{d['attn_tp']}"
            ),
        ),
        (
            "context cache",
            f"hit {d['cache_hit']:g} over {d['cache_plane']}, loaded "
            + ("before the compute" if before else "layer by layer behind it"),
        ),
        ("tokens/s per device (all prompt tokens)", f"{p.tokens_per_s_per_device:,.0f}"),
        ("tokens/s per device (computed tokens)", f"{p.computed_tokens_per_s_per_device:,.0f}"),
        (
            "tokens/s bounds (no overlap .. speed of light)",
            f"{p.lower_tokens_per_s_per_device:,.0f} .. {p.upper_tokens_per_s_per_device:,.0f}",
        ),
        ("batch", fmt_s(p.batch_s)),
        ("batch with ideal overlap (max(n*a, n*m, a+m))", fmt_s(p.ideal_overlap_batch_s)),
        (
            "MoE layer (all microbatches, pipelined)" if moe else "layer (all microbatches, pipelined)",
            fmt_s(p.layer_s),
        ),
        ("TTFT", fmt_s(p.ttft_s)),
        ("  prefill batch", fmt_s(b["prefill_batch_s"])),
        ("    of which exposed cache load", fmt_s(b["cache_load_exposed_s"])),
        (
            f"  KV transfer to decode ({p.kv_transfer_plane})",
            f"{fmt_s(b['kv_transfer_s'])} ({fmt_bytes(p.kv_bytes_per_sequence)} per prompt)",
        ),
        *(
            [("  request path outside the engine (framework)", fmt_s(b["request_overhead_s"]))]
            if b["request_overhead_s"]
            else []
        ),
        (
            "cache load per batch" + (" (before the compute)" if before else " (overlapped)"),
            fmt_s(p.cache_load_s),
        ),
        (
            "cache crossover",
            f"best hit {p.cache_crossover_hit:.2f} on {d['cache_plane']}; loading beats recompute "
            f"above {p.cache_crossover_bytes_per_s_per_rank / 1e9:.2f} GB/s per rank",
        ),
        ("routed load max/mean", f"{p.imbalance:.3f}"),
        (
            "HBM per rank",
            f"{fmt_bytes(p.hbm_bytes_per_rank)} of {fmt_bytes(p.hbm_capacity_bytes_per_rank)} usable",
        ),
        ("largest token budget that fits", f"{p.max_tokens_per_device:,.0f} per device"),
        ("feasible", "yes" if p.feasible else "NO: " + "; ".join(p.reasons)),
    ]


@click.command()
@scenario_option
@system_model_options
@knob(
    "--devices",
    "devices",
    type=dep("devices"),
    help="Devices (NPUs/GPUs) in the instance [default: 32 ranks, the paper's EP32 unit: 16 NPUs on "
    "CloudMatrix384, 32 GPUs on DGX/HGX, doubled until one prompt per device fits beside the weights; a "
    "dense model: one TP group].",
)
@common_options
@knob(
    "--tokens-per-device",
    "tokens_per_device",
    type=dep("tokens_per_device"),
    help="Prompt tokens per device in one batch (cache hits included) [default: 16384, or the largest "
    "whole number of prompts that fits].",
)
@knob("--prompt-len", "prompt_len", type=dep("prompt_len"), help="Tokens per prompt [default: 4096].")
@knob(
    "--microbatches",
    "microbatches",
    type=PREFILL_MICROBATCHES,
    help="1 = serial; 2-4 overlap compute and comm [default: 2].",
)
@knob(
    "--cache-hit",
    "cache_hit",
    type=dep("cache_hit"),
    help="Fraction of prompt tokens whose KV is loaded from the EMS context cache [default: 0].",
)
@knob(
    "--cache-plane",
    "cache_plane",
    type=PLANE,
    help="Plane the cached KV is loaded over, a plane of the system (CM384: ub, vpc) "
    "[default: ub if the system has it, else its scale-out plane].",
)
@knob(
    "--cache-prefetch",
    "cache_prefetch",
    type=click.Choice(CACHE_PREFETCH),
    help="How the cached KV loads: prefix = every cached block before the compute (on the critical path), "
    "layer = layer l+1's blocks behind layer l's compute [default: the --framework's; prefix without one].",
)
@precision_options
@format_option()
@ops_option
@plot_option("the per-op time per batch, one bar per op (--ops of them)")
@guarded
def prefill(system, model, spec_dirs, fmt, output, ops, plot, **params):
    """Predict prefill input tokens/s per device and TTFT (defaults: the paper's CM384 prefill setup)."""
    from .. import plot as plots
    from .. import prefill as pf
    from .. import render, specs

    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    dep = knobs.deployment("prefill", sysm, params, knobs.scenario_precision())
    p = pf.predict(sysm, mod, dep)
    grow = all(params.get(k) is None for k in ("devices", "ep_size", "moe_tp"))
    p = pf.fit_defaults(sysm, mod, dep, p, devices=grow, tokens=params.get("tokens_per_device") is None)
    write_plot(plot, lambda f: plots.prediction_image(f, "prefill", p, ops_limit(ops)))
    if fmt == "json":
        text = render.to_json(p, "prefill")
    elif fmt == "markdown":
        text = "".join(
            [
                "# cmperf prefill prediction\n",
                render.markdown_table(("quantity", "value"), _summary_rows(p)),
                "\n## Streams per layer (per microbatch)\n",
                render.markdown_table(render.STREAM_HEADER, render.stream_rows(p)),
                "\n## Per-op breakdown\n",
                render.op_markdown(p.ops, p.batch_s, ops_limit(ops)),
            ]
        )
    else:
        text = render.tables(
            "cmperf prefill",
            _summary_rows(p),
            [render.stream_section(p), render.op_section(p.ops, p.batch_s, ops_limit(ops))],
        )
    emit(text, output)
    if not p.feasible:
        raise Infeasible("infeasible deployment: " + "; ".join(p.reasons))


COMMANDS = [prefill]
