"""`cmperf prefill`: input tokens/s per device, batch time and TTFT of a prefill instance."""

from __future__ import annotations

import click

from .common import Infeasible, emit, format_option, guarded, system_model_options
from .decode_cmd import make_precision, precision_options
from .scenario_opt import scenario_option


def _summary_rows(p) -> list[tuple[str, str]]:
    from ..units import fmt_bytes, fmt_s

    d, b = p.deployment, p.ttft_breakdown_s
    return [
        ("system / model", f"{p.system} / {p.model}"),
        (
            "deployment",
            f"{d['devices']} devices, EP{d['ep_size']}, {d['tokens_per_device']:g} tokens/device of "
            f"{d['prompt_len']:g}-token prompts, {d['microbatches']} microbatch(es), "
            f"attention TP{d['attn_tp']}",
        ),
        ("context cache", f"hit {d['cache_hit']:g} over {d['cache_plane']}"),
        ("tokens/s per device (all prompt tokens)", f"{p.tokens_per_s_per_device:,.0f}"),
        ("tokens/s per device (computed tokens)", f"{p.computed_tokens_per_s_per_device:,.0f}"),
        (
            "tokens/s bounds (no overlap .. speed of light)",
            f"{p.lower_tokens_per_s_per_device:,.0f} .. {p.upper_tokens_per_s_per_device:,.0f}",
        ),
        ("batch", fmt_s(p.batch_s)),
        ("batch with ideal overlap (max(n*a, n*m, a+m))", fmt_s(p.ideal_overlap_batch_s)),
        ("MoE layer (all microbatches, pipelined)", fmt_s(p.layer_s)),
        ("TTFT", fmt_s(p.ttft_s)),
        ("  prefill batch", fmt_s(b["prefill_batch_s"])),
        ("    of which exposed cache load", fmt_s(b["cache_load_exposed_s"])),
        (
            f"  KV transfer to decode ({p.kv_transfer_plane})",
            f"{fmt_s(b['kv_transfer_s'])} ({fmt_bytes(p.kv_bytes_per_sequence)} per prompt)",
        ),
        ("cache load per batch (overlapped)", fmt_s(p.cache_load_s)),
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
@click.option(
    "--devices",
    type=int,
    default=None,
    help="Devices (NPUs/GPUs) in the instance [default: 32 ranks, the paper's EP32 unit: 16 NPUs on "
    "CloudMatrix384, 32 GPUs on DGX/HGX].",
)
@click.option("--ep", "ep_size", type=int, default=None, help="EP size in ranks [default: all ranks].")
@click.option(
    "--tokens-per-device",
    type=float,
    default=16384,
    show_default=True,
    help="Prompt tokens per device in one batch (cache hits included).",
)
@click.option("--prompt-len", type=float, default=4096, show_default=True, help="Tokens per prompt.")
@click.option(
    "--microbatches", type=int, default=2, show_default=True, help="1 = serial; 2-4 overlap compute and comm."
)
@click.option(
    "--eplb",
    type=click.Choice(["model", "perfect"]),
    default="perfect",
    show_default=True,
    help="Expert load: perfect balance (paper's assumption), or the statistical routing model.",
)
@click.option(
    "--imbalance", type=float, default=None, help="Set max/mean routed load directly (overrides --eplb)."
)
@click.option(
    "--cache-hit",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of prompt tokens whose KV is loaded from the EMS context cache.",
)
@click.option(
    "--cache-plane",
    default=None,
    help="Plane the cached KV is loaded over, a plane of the system (CM384: ub, vpc) "
    "[default: ub if the system has it, else its scale-out plane].",
)
@click.option(
    "--attn-tp",
    type=int,
    default=None,
    help="Attention TP degree (ranks) of the SP-TP-SP layout [default: the ranks of 8 devices].",
)
@precision_options
@format_option()
@guarded
def prefill(
    system,
    model,
    spec_dirs,
    devices,
    ep_size,
    tokens_per_device,
    prompt_len,
    microbatches,
    eplb,
    imbalance,
    cache_hit,
    cache_plane,
    attn_tp,
    weights,
    kv_dtype,
    fmt,
    output,
):
    """Predict prefill input tokens/s per device and TTFT (defaults: the paper's CM384 prefill setup)."""
    from .. import prefill as pf
    from .. import render, specs

    sysm = specs.load_system(system, spec_dirs)
    mod = specs.load_model(model, spec_dirs)
    if devices is None:
        from ..deployment import prefill_unit_devices

        devices = prefill_unit_devices(sysm)
    ep_size = ep_size if ep_size is not None else devices * sysm.ranks_per_device
    dep = pf.PrefillDeployment(
        devices=devices,
        ep_size=ep_size,
        tokens_per_device=tokens_per_device,
        prompt_len=prompt_len,
        microbatches=microbatches,
        cache_hit=cache_hit,
        cache_plane=cache_plane,
        eplb=eplb,
        imbalance=imbalance,
        attn_tp=attn_tp,
        precision=make_precision(sysm, weights, kv_dtype),
    )
    p = pf.predict(sysm, mod, dep)
    ops = render.op_table_rows(p.ops, p.batch_s)
    if fmt == "json":
        emit(render.to_json(p, "prefill"), output)
    elif fmt == "markdown":
        emit(
            "".join(
                [
                    "# cmperf prefill prediction\n",
                    render.markdown_table(("quantity", "value"), _summary_rows(p)),
                    "\n## Streams per layer (per microbatch)\n",
                    render.markdown_table(render.STREAM_HEADER, render.stream_rows(p)),
                    "\n## Per-op breakdown\n",
                    render.markdown_table(render.OP_HEADER, ops),
                ]
            ),
            output,
        )
    else:
        render.print_tables(
            "cmperf prefill",
            _summary_rows(p),
            [
                ("streams per layer (per microbatch)", render.STREAM_HEADER, render.stream_rows(p)),
                ("per-op breakdown", render.OP_HEADER, ops),
            ],
        )
    if not p.feasible:
        raise Infeasible("infeasible deployment: " + "; ".join(p.reasons))


COMMANDS = [prefill]
