"""`cmperf decode` and `cmperf comm`."""

from __future__ import annotations

import click

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
from .knobs import (
    DTYPES,
    MICROBATCHES,
    SECONDS,
    check_mtp_accept,
    common_options,
    experts_dtype_option,
    knob,
    precision_options,
)
from .scenario_opt import scenario_option
from .types import MODEL_NAME, dep, flag_of, option, workload


@click.command()
@scenario_option
@system_model_options
@experts_dtype_option
@knob(
    "--devices",
    "devices",
    type=dep("devices"),
    help="Devices (NPUs/GPUs) in the instance [default: one expert per rank, 320 ranks, capped by the "
    "system: 160 NPUs on CloudMatrix384, 144 GPUs on dgx-h800].",
)
@common_options
@knob(
    "--batch",
    "batch_per_device",
    type=dep("batch_per_device"),
    help="Concurrent sequences per device [default: 96, or the largest that fits in HBM when 96 does not].",
)
@knob("--kv-len", "kv_len", type=dep("kv_len"), help="KV length per sequence [default: 4096].")
@knob(
    "--kv-capacity-len",
    "kv_capacity_len",
    type=dep("kv_capacity_len"),
    help="KV length per sequence the HBM must hold [default: --kv-len; prompt + output with --prompt-len].",
)
@click.option(
    "--prompt-len",
    type=workload("prompt_len"),
    default=None,
    help="With --output-len, replaces --kv-len: KV = prompt + output/2.",
)
@click.option(
    "--output-len",
    type=workload("output_len"),
    default=None,
    help="Output tokens per request (see --prompt-len).",
)
@knob(
    "--kv-cv",
    "kv_cv",
    type=dep("kv_cv"),
    help="Coefficient of variation of the sequences' KV lengths: data-parallel attention runs at the pace "
    "of the rank with the most KV [default: 0 with --kv-len; with --prompt-len/--output-len, sequences "
    "spread uniformly over their output: output/sqrt(12)/KV].",
)
@knob(
    "--mtp",
    "mtp",
    type=dep("mtp"),
    help="Speculative MTP tokens per step (0 = off) [default: 1 where the model has an MTP module, else 0].",
)
@knob(
    "--mtp-accept",
    "mtp_accept",
    type=dep("mtp_accept"),
    help="Acceptance rate of a draft token [default: 0.7].",
)
@knob(
    "--draft-model",
    "draft_model",
    type=MODEL_NAME,
    help="A separate dense draft model (name, spec file or config.json) run --mtp times per step instead "
    "of the model's MTP modules [default: none].",
)
@knob(
    "--microbatches",
    "microbatches",
    type=MICROBATCHES,
    help="1 = no pipelining; 2-4 overlap streams; auto = the lowest TPOT of 1, 2, 3 (ties: fewer) "
    "[default: auto]. The two-stream pipeline on split cores re-reads every weight once per microbatch "
    "and gives each stream a fraction of the cores: at small batch that costs more than the overlap "
    "saves, and operators turn it off.",
)
@knob(
    "--redundant",
    "num_redundant",
    type=dep("num_redundant"),
    help="Redundant expert copies over the EP group.",
)
@knob(
    "--step-overhead",
    "step_overhead_s",
    type=SECONDS,
    help="Host time per decode step outside the layers (graph launch, sampling, scheduling), e.g. 0.7ms "
    "[default: 0].",
)
@knob(
    "--chunk-tokens",
    "prefill_chunk_tokens",
    type=dep("prefill_chunk_tokens"),
    help="Aggregated serving (in-flight batching): prompt tokens per device each step also carries, a "
    "chunk of prompts of --prompt-len tokens (4096 without it); the step and TPOT are the mixed "
    "batch's [default: 0, a pure decode step].",
)
@knob(
    "--attn-cores",
    "attention_cube_cores",
    type=dep("attention_cube_cores"),
    help="Cube cores of the attention stream [system default].",
)
@precision_options
@format_option()
@ops_option
@plot_option("the per-op time per step, one bar per op (--ops of them)")
@guarded
def decode(system, model, spec_dirs, prompt_len, output_len, fmt, output, ops, plot, **params):
    """Predict decode TPOT and tokens/s per device (defaults: the paper's 50 ms CloudMatrix384 setup)."""
    from .. import decode as dec
    from .. import render, specs
    from ..deployment import kv_lengths
    from ..errors import CmperfError

    check_mtp_accept(params.get("mtp"))
    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    if params.get("draft_model") is not None:
        params["draft_model"] = specs.load_model(params["draft_model"], spec_dirs, flag_of("draft_model"))
    if (prompt_len is None) != (output_len is None):
        raise CmperfError("--prompt-len and --output-len go together; give both, or --kv-len")
    if prompt_len is not None:
        if params["kv_len"] is not None:
            raise CmperfError("--kv-len conflicts with --prompt-len/--output-len; give one or the other")
        kv_len, kv_cap, spread = kv_lengths(mod, prompt_len, output_len)
        params["kv_len"] = kv_len
        # a --kv-capacity-len given with them overrides prompt + output (as --kv-cv does the spread, and as
        # a scenario's deployment.kv_capacity_len does in cmperf.scenario.records)
        params["kv_capacity_len"] = kv_cap if params["kv_capacity_len"] is None else params["kv_capacity_len"]
        params["kv_cv"] = spread if params["kv_cv"] is None else params["kv_cv"]
        params["prompt_len"] = prompt_len  # the chunk's prompts (--chunk-tokens)
    dep = knobs.deployment("decode", sysm, params, knobs.scenario_precision())
    p = dec.predict(sysm, mod, dep)
    if params.get("batch_per_device") is None:
        p = dec.fit_default_batch(sysm, mod, dep, p)
    write_plot(plot, lambda f: _image(f, p, ops_limit(ops)))
    if fmt == "json":
        text = render.to_json(p, "decode")
    elif fmt == "markdown":
        text = render.decode_markdown(p, ops_limit(ops))
    else:
        text = render.decode_table(p, ops_limit(ops))
    emit(text, output)
    if not p.feasible:
        raise Infeasible("infeasible deployment: " + "; ".join(p.reasons))


def _image(fmt: str, p, ops: int | None) -> bytes:
    """The --plot image of prediction ``p``: cmperf.plot is imported only when a plot is asked for."""
    from .. import plot

    return plot.prediction_image(fmt, "decode", p, ops)


@click.command()
@system_model_options
@click.option(
    "--op",
    type=click.Choice(["dispatch", "combine"]),
    default="dispatch",
    show_default=True,
    help="The EP collective: dispatch (tokens to their experts) or combine (expert outputs back).",
)
@click.option(
    "--ep", "ep_size", type=option("ep_size"), default=32, show_default=True, help="EP size (ranks)."
)
@click.option(
    "--tokens-per-rank",
    type=option("tokens_per_rank"),
    default=128,
    show_default=True,
    help="Tokens each rank sends (decode: batch per rank x (1 + MTP)).",
)
@click.option(
    "--top-k", type=option("top_k"), default=None, help="Copies per token [default: the model's top-k]."
)
@click.option(
    "--dtype", type=DTYPES, default=None, help="Message datatype [default: int8 dispatch, bf16 combine]."
)
@click.option(
    "--phase",
    type=click.Choice(["decode", "prefill"]),
    default="decode",
    show_default=True,
    help="Whose kernels: a system may define prefill ones ([collectives.prefill.*], e.g. DeepEP normal).",
)
@format_option()
@guarded
def comm(system, model, spec_dirs, op, ep_size, tokens_per_rank, top_k, dtype, phase, fmt, output):
    """Time of one EP dispatch or combine (alpha-beta model; CM384 Table 7 conditions by default)."""
    from .. import comm as cm
    from .. import render, specs
    from ..units import fmt_bytes, fmt_rate, fmt_s

    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    _check_comm(sysm, mod, ep_size, top_k)
    e = cm.ep_collective_estimate(sysm, mod, op, ep_size, tokens_per_rank, top_k, dtype, phase)
    if fmt == "json":
        emit(render.to_json({"system": sysm.name, **render.to_jsonable(e)}, "comm"), output)
        return
    rows = [
        ("op", f"{e.op} on {sysm.name}, EP{e.ep_size}"),
        (
            "tokens per rank x copies",
            f"{e.tokens_per_rank:g} x {e.copies_per_token:.3g} (top-{e.top_k}, {e.phase} kernel)",
        ),
        ("message", f"{fmt_bytes(e.message_bytes)} ({e.dtype})"),
        ("payload per rank", fmt_bytes(e.payload_bytes)),
        ("time", fmt_s(e.time_s)),
        ("  latency term", fmt_s(e.latency_s)),
        ("  link term", fmt_s(e.link_s)),
        ("bandwidth per rank", fmt_rate(e.bandwidth_bytes_per_s)),
        ("bound", e.bound),
    ]
    if fmt == "markdown":
        emit(render.markdown_table(("quantity", "value"), rows), output)
    else:
        emit(render.tables("cmperf comm", rows, []), output)


def _check_comm(sysm, mod, ep_size: int, top_k: int | None) -> None:
    """What ``cmperf comm`` can model: an MoE model (a dense one has no EP collective), an EP group that
    fits in the system's ranks, and at most one copy per routed expert (exit 2, one line naming the flag)."""
    from ..errors import CmperfError

    if not mod.is_moe:
        raise CmperfError(
            f"--model: {mod.name} is a dense model: it has no expert-parallel dispatch or combine; "
            "give an MoE model"
        )
    if ep_size > sysm.num_ranks:
        raise CmperfError(
            f"--ep: EP{ep_size} exceeds the {sysm.num_ranks} ranks of {sysm.name}; give at most "
            f"--ep {sysm.num_ranks}"
        )
    experts = mod.n_routed_experts
    if top_k is not None and top_k > experts:
        raise CmperfError(
            f"--top-k: {top_k} copies per token exceed {mod.name}'s {experts} routed experts; give at most "
            f"--top-k {experts} (the model routes to {mod.num_experts_per_tok})"
        )


COMMANDS = [decode, comm]
