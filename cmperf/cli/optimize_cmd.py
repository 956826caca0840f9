"""`cmperf optimize` (best deployment under SLOs) and `cmperf pareto` (tokens/s per device vs latency)."""

from __future__ import annotations

import time

import click

from ..domains import DEPLOYMENT
from .common import (
    CheckFailed,
    Infeasible,
    emit,
    format_option,
    guarded,
    parse_quantity,
    plot_option,
    progress,
    system_model_options,
    write_plot,
)
from .knobs import make_precision, precision_options
from .scenario_opt import scenario_option
from .serve_cmd import slo_percentile_option
from .types import RATE, SLO_TIME_OR_NONE, Counts, dep, flag_of, option, workload


class _Progress:
    """Progress callback for the search: a rich bar on stderr once a search has run for more than 1 s."""

    def __init__(self, label: str):
        self.label, self.t0, self.bar, self.task = label, time.perf_counter(), None, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.t0 < 1.0 or done >= total:
                return
            from rich.console import Console
            from rich.progress import Progress

            console = Console(stderr=True)
            if not console.is_terminal:
                return
            self.bar = Progress(console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _s(x):
    """A time as every command prints it (``units.fmt_s``): 1.16108 -> "1.161 s", 0.0497 -> "49.71 ms"."""
    from ..units import fmt_s

    return "-" if x is None else fmt_s(x)


def plural(n, one: str, many: str) -> str:
    """ "1 microbatch", "2 microbatches"."""
    return f"{n} {one if n == 1 else many}"


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.2f} ms"


def _cores(c):
    """Attention-stream cube cores of a split-cores pipeline; "all" when the cores are not split (one
    microbatch, or a compute-comm overlap where every op runs on every core)."""
    return "all" if c.attention_cube_cores is None else f"{c.attention_cube_cores}"


DEC_HEADER = (
    "#",
    "devices",
    "EP",
    "batch/dev",
    "ubatch",
    "attn cores",
    "MTP",
    "TPOT",
    "tokens/s/dev",
    "TPOT bounds",
    "HBM/rank",
)


def _pre_table(cs, moe: bool, batch: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows) of prefill configurations: EP for an MoE model, the TP degree for a dense one (its
    Megatron TP, cmperf.deployment.megatron_prefill); ``batch``: with the batch time column."""
    h = ("#", "devices", "EP" if moe else "TP", "tokens/dev", "ubatch", "TTFT", *(("batch",) * batch))
    rows = [
        (
            str(i + 1),
            str(c.devices),
            str(c.ep_size if moe else c.attn_tp),
            f"{c.tokens_per_device:g}",
            str(c.microbatches),
            _s(c.ttft_s),
            *((_s(c.batch_s),) * batch),
            f"{c.tokens_per_s_per_device:,.0f}",
        )
        for i, c in enumerate(cs)
    ]
    return (*h, "tokens/s/dev"), rows


def dec_header(moe: bool = True) -> tuple[str, ...]:
    """DEC_HEADER; a dense model's names the TP degree where an MoE model's names EP."""
    return DEC_HEADER if moe else tuple("TP" if h == "EP" else h for h in DEC_HEADER)


def _dec_rows(cs, moe: bool = True):
    from ..units import fmt_bytes

    return [
        (
            str(i + 1),
            str(c.devices),
            str(c.ep_size if moe else c.attn_tp),
            f"{c.batch_per_device:g}",
            str(c.microbatches),
            _cores(c),
            str(c.mtp),
            _ms(c.tpot_s),
            f"{c.tokens_per_s_per_device:,.0f}",
            f"{_ms(c.lower_tpot_s)} .. {_ms(c.upper_tpot_s)}",
            fmt_bytes(c.hbm_bytes_per_rank),
        )
        for i, c in enumerate(cs)
    ]


def _binding_rows(b):
    if b is None:
        return []
    rows = [
        ("binding constraint", f"{b.constraint}: {b.detail}"),
        ("MoE layer bound by" if b.stage == "moe" else f"{b.stage} layer bound by", b.moe_stream_binding),
    ]
    if b.max_batch_under_slo is not None:
        rows.append(("largest batch under the SLO (root finding)", f"{b.max_batch_under_slo:.2f} per device"))
    rows += [
        (
            f"  op {o['stage']}/{o['name']}",
            f"{o['total_s'] * 1e3:.2f} ms per step "
            f"({100 * o['share_of_step']:.0f}% of step), {o['bound']}-bound",
        )
        for o in b.top_ops
    ]
    return rows


def _summary(res, moe: bool = True) -> list[tuple[str, str]]:
    d = res.decode
    rows = [
        ("objective", d.objective),
        (
            "constraints",
            ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(d.constraints.items())
                if v is not None
            ),
        ),
        (
            "searched",
            f"{d.evaluated:,} decode configurations in {len(d.space['devices'])} instance sizes, "
            f"batch {d.space['batch_per_device'][0]:g}..{d.space['batch_per_device'][1]:g}, "
            f"microbatches {d.space['microbatches']}, attention cores {d.space['attention_cube_cores']}, "
            f"attention TP {d.space['attn_tp']}, MTP {d.space['mtp']}",
        ),
        ("accepted", f"{d.accepted:,}"),
        ("rejected", ", ".join(f"{k}: {v:,}" for k, v in d.rejected.items())),
    ]
    if d.best is not None:
        c = d.best
        rows += [
            (
                "best decode",
                f"{c.devices} devices ("
                + (
                    f"EP{c.ep_size}" + (f", attention TP{c.attn_tp}" if c.attn_tp > 1 else "")
                    if moe
                    else f"TP{c.attn_tp}"
                )
                + f"), batch {c.batch_per_device:g}/device, "
                f"{plural(c.microbatches, 'microbatch', 'microbatches')}, "
                f"attention cores {_cores(c)}, MTP {c.mtp}",
            ),
            ("  TPOT / tokens/s per device", f"{_ms(c.tpot_s)} / {c.tokens_per_s_per_device:,.0f}"),
        ]
    rows += _binding_rows(d.binding)
    if res.serving is not None:
        from .serve_cmd import size_rows

        # the rows of `cmperf serve --size`: one sizing model, one way to print it
        rows += [(f"serving {k}", v) for k, v in size_rows(res.serving)[0] if k != "system / model"]
    for line in res.notes:
        rows.append(("note", line))
    return rows


def _markdown(title, summary, sections) -> str:
    from .. import render

    out = [f"# {title}\n", render.markdown_table(("quantity", "value"), summary)]
    for t, h, rows in sections:
        out += [f"\n## {t}\n", render.markdown_table(h, rows)]
    return "".join(out)


def _csv_records(res) -> list[dict]:
    """The candidate tables of ``optimize`` as CSV records: the decode top (or closest, when none meets
    the SLO; ``meets_slo`` says which) and the prefill top, ranked, with a ``phase`` column."""
    from .. import render

    d = res.decode
    dec, meets = (d.top, True) if d.top else (d.closest, False)
    out = [
        {"phase": "decode", "rank": i + 1, "meets_slo": meets, **render.to_jsonable(c)}
        for i, c in enumerate(dec)
    ]
    if res.prefill is not None:
        out += [
            {"phase": "prefill", "rank": i + 1, "meets_slo": True, **render.to_jsonable(c)}
            for i, c in enumerate(res.prefill.top)
        ]
    return out


def _extra_sections(res, moe: bool):
    secs = []
    if res.prefill is not None and res.prefill.top:
        secs.append(("top prefill configurations", *_pre_table(res.prefill.top, moe, batch=True)))
    if res.serving is not None and res.serving.candidates:
        from .serve_cmd import cand_header, size_rows, slo_text

        secs.append(
            (
                f"serving splits ({slo_text(res.serving.slo)})",
                cand_header(res.serving),
                size_rows(res.serving)[1],
            )
        )
    return secs


MODE_HEADER = ("mode", "layout", "devices", "req/s", "req/s/device", "TTFT limit", "TPOT limit", "binds")


def _rate(x) -> str:
    return "-" if x is None else f"{x:,.2f}"


def mode_rows(c) -> list[tuple[str, ...]]:
    """The two rows of ``optimize --compare-modes`` (a ``cmperf.aggregated.ModeComparison``)."""
    a, d = c.aggregated, c.disaggregated
    rows = []
    if a.get("feasible"):
        rows.append(
            (
                "aggregated",
                f"{a['engines']} x {a['engine_devices']}-device engine{'s' if a['engines'] != 1 else ''}, "
                f"chunk {a['chunk_tokens']:,.0f}",
                str(a["devices"]),
                _rate(a["rate_rps"]),
                f"{a['rate_rps_per_device']:.4g}",
                _rate(a["engines"] * a["ttft_slo_rps"]),
                _rate(a["engines"] * a["tpot_slo_rps"]),
                f"{a['binding_slo']} (prefill {100 * a.get('prefill_share', 0.0):.0f}% of the step)",
            )
        )
    else:
        rows.append(("aggregated", "no engine meets both SLOs", "-", "0", "0", "-", "-", "-"))
    if d.get("feasible"):
        rows.append(
            (
                "disaggregated",
                f"{d['prefill_devices']} prefill + {d['decode_devices']} decode",
                str(d["devices"]),
                _rate(d["rate_rps"]),
                f"{d['rate_rps_per_device']:.4g}",
                _rate(d["ttft_slo_rps"]),
                _rate(d["tpot_slo_rps"]),
                str(d["binding"]),
            )
        )
    else:
        rows.append(("disaggregated", "no split meets both SLOs", "-", "0", "0", "-", "-", "-"))
    return rows


def mode_summary(c) -> list[tuple[str, str]]:
    if c.winner == "neither":
        verdict = "neither mode meets both SLOs"
    elif c.objective == "total":
        verdict = f"{c.winner}: {c.ratio:.2f}x the requests/s per device within both SLOs"
    else:
        verdict = f"{c.winner}: {c.ratio:.2f}x fewer devices for {c.rate_rps:g} req/s within both SLOs"
    if c.winner != "neither" and c.ratio == float("inf"):
        verdict = f"{c.winner}: the other mode meets the SLOs nowhere"
    return [("aggregated vs disaggregated", verdict), ("  why", c.why)]


def _plot(fmt, res, system, model, tpot_s, ttft_s) -> bytes:
    """The ``--plot`` image of ``optimize``: the decode frontier with the TPOT SLO and the best (or closest)
    configuration, and the prefill frontier with the TTFT SLO and the best prefill configuration."""
    from .. import plot as plots

    d, p = res.decode, res.prefill
    best, label = (d.best, "chosen") if d.best else (d.closest[0] if d.closest else None, "closest")
    panels = [plots.search_panel("decode", d.pareto, d.top or d.closest, tpot_s, best, label)]
    if p is not None and p.pareto:
        panels.append(plots.search_panel("prefill", p.pareto, p.top, ttft_s, p.best))
    devices = d.constraints.get("devices")
    return plots.frontier_image(fmt, f"cmperf optimize: {model} on {system}, {devices} devices", panels)


def decode_base_options(fn):
    """--mtp-accept and --eplb: the decode knobs optimize and pareto hold fixed while they search."""
    fn = click.option(
        "--eplb",
        type=click.Choice(["model", "perfect"]),
        default="model",
        show_default=True,
        help="Expert load: statistical routing model, or perfect balance.",
    )(fn)
    return click.option(
        "--mtp-accept",
        type=dep("mtp_accept"),
        default=0.7,
        show_default=True,
        help="Acceptance rate of a draft token.",
    )(fn)


def framework_option(default_text: str = "[default: none]"):
    """``--framework NAME`` of the searches (optimize, pareto): the profile's microbatch counts and MTP
    depths bound the search; its step time, request overhead and cache loading enter every prediction."""
    return click.option(
        "--framework",
        metavar="NAME",
        default=None,
        help="Serving-framework profile (frameworks/NAME.toml): the search keeps its microbatch counts and "
        f"MTP depths, and its step time, request overhead and cache loading enter every prediction "
        f"{default_text}.",
    )


@click.command()
@scenario_option
@system_model_options
@click.option(
    "--devices",
    type=option("devices"),
    default=None,
    help="Device total to deploy on [default: the whole system].",
)
@click.option(
    "--prompt-len",
    type=workload("prompt_len"),
    default=4096,
    show_default=True,
    help="Prompt tokens per request.",
)
@click.option(
    "--output-len",
    type=workload("output_len"),
    default=256,
    show_default=True,
    help="Output tokens per request.",
)
@click.option(
    "--tpot-slo",
    type=SLO_TIME_OR_NONE,
    default="50ms",
    show_default=True,
    help='TPOT SLO, e.g. "50ms": the TPOT of a decode configuration at its batch, and of the serving split '
    'at --slo-percentile; "none" for no limit.',
)
@click.option(
    "--ttft-slo",
    type=SLO_TIME_OR_NONE,
    default="2s",
    show_default=True,
    help='TTFT SLO, e.g. "2s": one batch + KV transfer of a prefill configuration, and the TTFT of the '
    'serving split (queueing included) at --slo-percentile; "none" for no limit.',
)
@slo_percentile_option
@click.option(
    "--rate",
    type=RATE,
    default=None,
    help="Target request rate (req/s): the serving split with the fewest devices that serve it.",
)
@decode_base_options
@click.option(
    "--attn-tp",
    "attn_tp",
    type=Counts(DEPLOYMENT["attn_tp"]),
    default=None,
    help="Attention-TP degrees the decode search tries, comma-separated (e.g. 1,8: DP and TP8 attention); "
    "a degree an instance size cannot hold is counted under placement invalid there [default: 1 for an "
    "MoE model (data-parallel attention); for a dense model every power of two up to one scale-up domain "
    "that splits its heads].",
)
@framework_option("[default: the --emit engine's profile, else none]")
@click.option(
    "--top", "top_k", type=option("top"), default=10, show_default=True, help="Configurations to list."
)
@precision_options
@format_option(("table", "json", "markdown", "csv"))
@plot_option("the decode and prefill frontiers, the SLOs and the chosen configurations")
@click.option(
    "--emit",
    "engine",
    type=click.Choice(["sglang", "vllm", "trtllm"]),
    default=None,
    help="Print the engine's launch commands for the chosen decode and prefill pools (a shell script, "
    "instead of the tables; flags checked per engine version: cmperf.engines).",
)
@click.option(
    "--compare-modes",
    is_flag=True,
    help="Also size aggregated engines (in-flight batching: engine size x chunk budget, cmperf.aggregated) "
    "on the same devices and SLOs and say which mode serves more per device (or needs fewer devices for "
    "--rate), and why.",
)
@guarded
def optimize(
    system,
    model,
    spec_dirs,
    devices,
    prompt_len,
    output_len,
    tpot_slo,
    ttft_slo,
    slo_percentile,
    rate,
    mtp_accept,
    eplb,
    attn_tp,
    framework,
    top_k,
    weights,
    kv_dtype,
    fmt,
    output,
    plot,
    engine,
    compare_modes,
):
    """Search EP size, batch, microbatches, core split, MTP and the prefill/decode split under SLOs."""
    import math

    from .. import frameworks, render, search, serving, specs
    from ..deployment import Deployment
    from ..errors import CmperfError

    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    tpot = None if str(tpot_slo).lower() == "none" else parse_quantity(tpot_slo, "s", "--tpot-slo")
    ttft = None if str(ttft_slo).lower() == "none" else parse_quantity(ttft_slo, "s", "--ttft-slo")
    rate_v = None if rate is None else parse_quantity(rate, "per_s", "--rate")
    for flag, v in (("--tpot-slo", tpot), ("--ttft-slo", ttft), ("--rate", rate_v)):
        if v is not None and v <= 0:
            raise CmperfError(f"{flag}: must be positive")
    if top_k < 1:
        raise CmperfError("--top: must be at least 1")
    if framework is None and engine is not None:  # search what the emitted engine can run
        framework = frameworks.ENGINE_PROFILES[engine]
    if framework is not None:
        frameworks.load(framework)  # an unknown name: its one-line --framework error, before the search
    prog = _Progress("searching deployments")
    try:
        prec = make_precision(sysm, weights, kv_dtype)
        pct = serving.DEFAULT_SLO_PERCENTILE if slo_percentile is None else slo_percentile
        res = search.optimize(
            sysm,
            mod,
            devices=devices,
            workload=serving.Workload(rate_per_s=rate_v, prompt_len=prompt_len, output_len=output_len),
            slo=serving.SLO(
                ttft_s=math.inf if ttft is None else ttft,
                tpot_s=math.inf if tpot is None else tpot,
                quantile=pct / 100,
            ),
            decode=Deployment(mtp_accept=mtp_accept, precision=prec, eplb=eplb, framework=framework),
            prefill=Deployment(phase="prefill", precision=prec, framework=framework),
            top_k=top_k,
            progress=prog,
            attn_tp=attn_tp,
        )
    finally:
        prog.close()
    d = res.decode
    modes = None
    if compare_modes:
        from .. import aggregated

        if engine is not None:
            raise CmperfError("--compare-modes: prints tables, --emit a launch script; give one of them")
        with progress("sizing aggregated engines"):
            modes = aggregated.compare_modes(
                sysm,
                mod,
                serving.Workload(rate_per_s=rate_v, prompt_len=prompt_len, output_len=output_len),
                serving.SLO(
                    ttft_s=math.inf if ttft is None else ttft,
                    tpot_s=math.inf if tpot is None else tpot,
                    quantile=pct / 100,
                ),
                devices or sysm.num_devices,
                res.serving.best if res.serving is not None else None,
                Deployment(
                    mtp_accept=mtp_accept,
                    precision=prec,
                    eplb=eplb,
                    mtp=d.best.mtp if d.best is not None else None,
                ),
            )
    secs = (
        [("top decode configurations", dec_header(mod.is_moe), _dec_rows(d.top, mod.is_moe))]
        if d.top
        else [
            (
                "closest decode configurations (none meets the SLO)",
                dec_header(mod.is_moe),
                _dec_rows(d.closest, mod.is_moe),
            )
        ]
    )
    secs += _extra_sections(res, mod.is_moe)
    summary = _summary(res, mod.is_moe)
    if modes is not None:
        title = f"aggregated vs disaggregated ({modes.devices} devices)"
        secs.append((title, MODE_HEADER, mode_rows(modes)))
        summary += mode_summary(modes)
    write_plot(plot, lambda f: _plot(f, res, sysm.name, mod.name, tpot, ttft))
    if engine is not None and d.best is not None:
        from .. import engines

        if fmt != "table":
            raise CmperfError(f"--emit: prints a shell script, not {fmt}; leave out --format")
        title = f"cmperf optimize --emit {engine}: {mod.name} on {sysm.name}, {prompt_len:g} + {output_len:g}"
        title += " tokens per request"
        emit(engines.emit(engine, sysm, mod, engines.pools(sysm, mod, res, prec.kv), title), output)
    elif fmt == "json":
        # "no SLO" (--ttft-slo none: an infinite limit) is null, as every non-finite value: docs/json.md
        body = search.optimize_json(res)
        if modes is not None:
            body["modes"] = modes
        emit(render.to_json(serving.finite_or_none(body), "optimize"), output)
    elif fmt == "csv":
        recs = _csv_records(res)
        if modes is not None:
            recs += [
                {"phase": "mode", "rank": i + 1, "meets_slo": bool(c.get("feasible")), "mode": "agg", **c}
                for i, c in enumerate(modes.candidates)
            ]
        emit(render.to_csv(recs, first=("phase", "rank")), output)
    elif fmt == "markdown":
        emit(_markdown("cmperf optimize", summary, secs), output)
    else:
        emit(render.tables("cmperf optimize", summary, secs), output)
    if d.best is None and not d.closest:  # nothing fits at any TPOT: not an SLO to relax
        why = ", ".join(f"{k} {v:,}" for k, v in d.rejected.items() if v)
        raise Infeasible(
            f"no decode configuration fits on {d.constraints.get('devices') or sysm.num_devices} devices "
            f"of {sysm.name} (rejected: {why}); give more --devices or shorter --prompt-len/--output-len"
        )
    if d.best is None:
        c = d.closest[0] if d.closest else None
        where = (
            ""
            if c is None
            else (
                f"; closest: {c.devices} devices EP{c.ep_size} batch {c.batch_per_device:g} "
                f"at TPOT {_ms(c.tpot_s)} (speed-of-light bound {_ms(c.lower_tpot_s)})"
            )
        )
        binds = (
            ""
            if d.binding is None
            else f"; bound by {d.binding.moe_stream_binding}, top op "
            + (
                f"{d.binding.top_ops[0]['name']} ({d.binding.top_ops[0]['bound']})"
                if d.binding.top_ops
                else ""
            )
        )
        raise CheckFailed(f"no configuration meets --tpot-slo {_s(tpot)}{where}{binds}; relax the SLO")
    if res.serving is not None and rate_v is not None and not res.serving.best["feasible"]:
        from .serve_cmd import slo_text

        raise CheckFailed(
            f"no split of {res.serving.total_devices} devices serves --rate {rate_v:g} req/s with "
            f"{slo_text(res.serving.slo)}"
        )


@click.command()
@scenario_option
@system_model_options
@click.option(
    "--phase",
    type=click.Choice(["decode", "prefill"]),
    default="decode",
    show_default=True,
    help="Frontier of decode (tokens/s per device against TPOT) or prefill (against TTFT).",
)
@click.option(
    "--devices",
    type=option("devices"),
    default=None,
    help="Largest instance to consider [default: the whole system].",
)
@click.option(
    "--prompt-len",
    type=workload("prompt_len"),
    default=4096,
    show_default=True,
    help="Prompt tokens per request (decode KV = prompt + output/2; the prefill prompt).",
)
@click.option(
    "--output-len",
    type=workload("output_len"),
    default=256,
    show_default=True,
    help="Output tokens per request.",
)
@decode_base_options
@framework_option()
@precision_options
@format_option(("table", "json", "markdown", "csv"))
@plot_option("the frontier")
@guarded
def pareto(
    system,
    model,
    spec_dirs,
    phase,
    devices,
    prompt_len,
    output_len,
    mtp_accept,
    eplb,
    framework,
    weights,
    kv_dtype,
    fmt,
    output,
    plot,
):
    """Pareto frontier of tokens/s per device against TPOT (decode) or TTFT (prefill)."""
    from .. import frameworks, render, search, specs
    from .. import plot as plots
    from ..deployment import Deployment

    sysm = specs.load_system(system, spec_dirs, flag_of("system"))
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    prec = make_precision(sysm, weights, kv_dtype)
    if framework is not None:
        frameworks.load(framework)  # an unknown name: its one-line --framework error, before the search
    prog = _Progress(f"searching {phase} configurations")
    grid = None
    try:
        if phase == "decode":
            r, grid = search.search_decode(
                sysm,
                mod,
                prompt_len=prompt_len,
                output_len=output_len,
                devices=devices,
                base=Deployment(mtp_accept=mtp_accept, precision=prec, eplb=eplb, framework=framework),
                progress=prog,
                explain=False,
            )
            rows = _dec_rows(r.pareto, mod.is_moe)
            header = dec_header(mod.is_moe)
            body = {
                "phase": "decode",
                "pareto": r.pareto,
                "evaluated": r.evaluated,
                "rejected": r.rejected,
                "space": r.space,
                "constraints": r.constraints,
            }
        else:
            base = Deployment(phase="prefill", eplb=eplb, precision=prec, framework=framework)
            r = search.search_prefill(
                sysm, mod, prompt_len=prompt_len, devices=devices, base=base, progress=prog
            )
            header, rows = _pre_table(r.pareto, mod.is_moe, batch=False)
            body = {
                "phase": "prefill",
                "pareto": r.pareto,
                "evaluated": r.evaluated,
                "rejected": r.rejected,
                "space": r.space,
                "constraints": r.constraints,
            }
    finally:
        prog.close()
    summary = [
        ("phase", phase),
        ("evaluated", f"{r.evaluated:,}"),
        ("frontier points", str(len(r.pareto))),
        ("rejected", ", ".join(f"{k}: {v:,}" for k, v in r.rejected.items())),
    ]
    title = f"Pareto frontier: {phase} tokens/s per device vs {'TPOT' if phase == 'decode' else 'TTFT'}"
    write_plot(
        plot,
        lambda f: plots.frontier_image(
            f, f"cmperf pareto: {mod.name} on {sysm.name}", [plots.search_panel(phase, r.pareto)]
        ),
    )
    if fmt == "json":
        emit(render.to_json(body, "pareto"), output)
    elif fmt == "csv":
        emit(render.to_csv(r.pareto), output)
    elif fmt == "markdown":
        emit(_markdown(title, summary, [("frontier", header, rows)]), output)
    else:
        width = render.page_width()
        chart = plots.search_text_chart(phase, r.pareto, grid, r.constraints["devices"], width)
        text = render.tables(title, summary, [], width) + "\n" + chart + "\n"
        emit(text + render.tables("", [], [("frontier", header, rows)], width), output)
    if not r.pareto:  # nothing fits: an empty frontier is no answer (as `cmperf optimize`: exit 3)
        why = ", ".join(f"{k} {v:,}" for k, v in r.rejected.items() if v) or "none evaluated"
        raise Infeasible(
            f"no {phase} configuration fits on {r.constraints.get('devices') or sysm.num_devices} devices "
            f"of {sysm.name} (rejected: {why}); give more --devices or a shorter --prompt-len"
            + ("/--output-len" if phase == "decode" else "")
        )


COMMANDS = [optimize, pareto]
