"""`cmperf compare`: the same workload on several systems, side by side."""

from __future__ import annotations

import click

from ..units import accept_text
from .common import Infeasible, emit, format_option, guarded, plot_option, write_plot
from .knobs import DTYPE_NAMES as DTYPES
from .knobs import check_mtp_accept
from .scenario_opt import scenario_option
from .types import PREFILL_MICROBATCHES, dep, flag_of, workload


class _AutoOrCount(click.ParamType):
    """``--microbatches``: "auto" (decode: the lowest TPOT of 1, 2, 3 per system) or a count 1..4."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if str(value).strip().lower() == "auto":
            return "auto"  # prefill refuses it (Deployment.check: one line naming the flag)
        return PREFILL_MICROBATCHES.convert(value, param, ctx)


def _per_system(value: str | None, names: list[str], flag: str, field: str) -> dict[str, int]:
    """'144' -> every system; 'dgx-h800=128,cloudmatrix384=160' -> per system (others default). Each N is a
    whole number in the ``Deployment`` field's domain (``cmperf.domains.DEPLOYMENT[field]``)."""
    from ..domains import DEPLOYMENT
    from ..errors import CmperfError

    if value is None:
        return {}
    dom = DEPLOYMENT[field]
    if "=" not in value:
        n = int(dom.check(value, flag))
        return {name: n for name in names}
    out: dict[str, int] = {}
    for part in value.split(","):
        name, eq, num = part.partition("=")
        name = name.strip()
        if not eq:
            raise CmperfError(f"{flag}: expected a whole number or SYSTEM=N[,SYSTEM=N...], got {value!r}")
        if name not in names:
            raise CmperfError(f"{flag}: {name!r} is not in --systems ({', '.join(names)})")
        if name in out:
            raise CmperfError(f"{flag}: {name} is given twice in {value!r}")
        out[name] = int(dom.check(num, f"{flag} {name}"))
    return out


def _power(r) -> str:
    """'1,400 W (chip only)' / '1,833 W (system share)' / 'power not known' (cmperf.compare.per_kw)."""
    if r.power_w_per_device is None:
        return "power not known"
    what = "chip only" if r.power_basis == "chip" else "system share"
    return f"{r.power_w_per_device:,.0f} W ({what})"


def _layout(r) -> str:
    """The layout cell, e.g. "160 dev, 320 ranks, EP320"; a dense model names its TP degree, no EP."""
    tp = "" if r.attn_tp == 1 else f"attention TP{r.attn_tp}" if r.moe else f"TP{r.attn_tp}"
    par = ", ".join(x for x in (f"EP{r.ep_size}" if r.moe else "", tp) if x) or "data-parallel"
    return f"{r.devices} dev, {r.ranks} ranks, {par}"


def _fmt_row_values(c) -> list[tuple[str, list[str]]]:
    from ..units import fmt_bytes, fmt_s

    def pct(x):
        return f"{100 * x:.0f}%"

    rows = c.rows
    dec = c.phase == "decode"
    moe = all(r.moe for r in rows)  # one model on every system
    q: list[tuple[str, list[str]]] = [
        ("chip", [r.chip for r in rows]),
        ("deployment", [_layout(r) for r in rows]),
        ("deployment from", [r.deployment_source.split("/")[-1] for r in rows]),
        (
            "precision gemm/experts/dispatch/combine",
            [
                f"{r.precision['gemm']}/{r.precision['experts']}/{r.precision['dispatch']}/{r.precision['combine']}"
                for r in rows
            ],
        ),
    ]
    q.append(("microbatches", [f"{r.workload['microbatches']:g}" for r in rows]))
    if dec:
        q += [
            (
                "batch per device, KV, MTP",
                [
                    f"{r.workload['batch_per_device']:g}, {r.workload['kv_len']:g}, "
                    f"{r.workload['mtp']:g} @ {accept_text(r.workload['mtp_accept'])}"
                    for r in rows
                ],
            ),
            ("TPOT", [fmt_s(r.tpot_s) for r in rows]),
            (
                "TPOT bounds (speed of light .. no overlap)",
                [f"{fmt_s(r.lower_s)} .. {fmt_s(r.upper_s)}" for r in rows],
            ),
        ]
        if moe:
            q.append(("EP all-to-all bound on TPOT", [fmt_s(r.comm_bound_tpot_s) for r in rows]))
    else:
        q += [
            (
                "tokens per device, prompt",
                [f"{r.workload['tokens_per_device']:g}, {r.workload['prompt_len']:g}" for r in rows],
            ),
            ("batch time", [fmt_s(r.batch_s) for r in rows]),
            ("TTFT (batch + KV transfer)", [fmt_s(r.ttft_s) for r in rows]),
        ]
    q += [
        ("tokens/s per device", [f"{r.tokens_per_s_per_device:,.0f}" for r in rows]),
        ("8-bit peak per device", [f"{r.peak_8bit_flops_per_device / 1e12:,.0f} TFLOPS" for r in rows]),
        ("tokens/s per TFLOPS", [f"{r.tokens_per_s_per_tflops:.3f}" for r in rows]),
        ("power per device", [_power(r) for r in rows]),
        (
            "tokens/s per kW",
            [
                "power not known" if r.tokens_per_s_per_kw is None else f"{r.tokens_per_s_per_kw:,.0f}"
                for r in rows
            ],
        ),
        (
            "binding (MoE layer)" if moe else "binding (layer)",
            [
                f"{r.binding_stream}: {r.binding_ceiling}"
                + (f" ({r.binding_plane})" if r.binding_plane else "")
                for r in rows
            ],
        ),
        *([("EP bytes over scale-out", [pct(r.ep_scaleout_fraction) for r in rows])] if moe else []),
        ("HBM per rank", [fmt_bytes(r.hbm_bytes_per_rank) for r in rows]),
        ("feasible", ["yes" if r.feasible else "NO" for r in rows]),
    ]
    return q


def _plot(fmt: str, c) -> bytes:
    """The ``--plot`` image of ``compare``: one point per feasible system, tokens/s per device against
    TPOT (decode) or TTFT (prefill)."""
    from .. import plot as plots

    ok = [r for r in c.rows if r.feasible]
    metric = "TPOT" if c.phase == "decode" else "TTFT"
    times = [r.tpot_s if c.phase == "decode" else r.ttft_s for r in ok]
    title = f"cmperf compare: {c.phase}, {c.model}"
    tps = [r.tokens_per_s_per_device for r in ok]
    return plots.systems_image(fmt, title, metric, [r.system for r in ok], times, tps)


@click.command()
@scenario_option
@click.option(
    "--systems",
    default="cloudmatrix384,dgx-h800,dgx-h100",
    show_default=True,
    help="Comma-separated system spec names (`cmperf specs list`).",
)
@click.option("--model", default="deepseek-r1", show_default=True, help="Model spec name or .toml path.")
@click.option(
    "--spec-dir",
    "spec_dirs",
    multiple=True,
    type=click.Path(),
    help="Extra folder of spec files (repeatable).",
)
@click.option(
    "--phase",
    type=click.Choice(["decode", "prefill"]),
    default="decode",
    show_default=True,
    help="Compare decode (tokens/s per device at a batch) or prefill (input tokens/s, TTFT).",
)
@click.option(
    "--devices",
    default=None,
    help="Devices per system: N for all, or SYSTEM=N,... [default: baseline scenario, else the unit rule].",
)
@click.option(
    "--ep", "ep", default=None, help="EP size: N for all, or SYSTEM=N,... [default: all ranks of --devices]."
)
@click.option(
    "--batch",
    type=dep("batch_per_device"),
    default=None,
    help="Decode: sequences per device for every system [default: each system's baseline, else 96].",
)
@click.option(
    "--kv-len", type=dep("kv_len"), default=None, help="Decode: KV length per sequence [default: 4096]."
)
@click.option(
    "--prompt-len",
    type=workload("prompt_len"),
    default=None,
    help="Prefill: prompt length; decode: with --output-len, KV = prompt + output/2 [default: 4096].",
)
@click.option(
    "--output-len",
    type=workload("output_len"),
    default=None,
    help="Decode: output tokens per request (see --prompt-len).",
)
@click.option(
    "--tokens-per-device",
    type=dep("tokens_per_device"),
    default=None,
    help="Prefill: prompt tokens per device per batch [default: baseline, else 16384].",
)
@click.option(
    "--mtp",
    type=dep("mtp"),
    default=None,
    help="Decode: speculative MTP tokens per step [default: baseline, else 1].",
)
@click.option(
    "--mtp-accept",
    type=dep("mtp_accept"),
    default=None,
    help="Decode: draft acceptance rate [default: baseline, else 0.7].",
)
@click.option(
    "--microbatches",
    type=_AutoOrCount(),
    default=None,
    help="Microbatches; decode also auto, the lowest TPOT of 1, 2, 3 per system [default: baseline, else 2].",
)
@click.option(
    "--eplb",
    type=click.Choice(["model", "perfect"]),
    default=None,
    help="Expert load [default: model for decode, perfect for prefill].",
)
@click.option(
    "--weights",
    type=click.Choice(DTYPES),
    default=None,
    help="GEMM and expert datatype [default: fp8 where the chip has it, else int8].",
)
@click.option(
    "--experts-dtype",
    type=click.Choice([*DTYPES, "native"]),
    default=None,
    help="Expert datatype; 'native' = fp4 where the chip has it (Blackwell) [default: --weights].",
)
@click.option(
    "--kv-dtype", type=click.Choice(DTYPES), default=None, help="KV-cache datatype [default: bf16]."
)
@format_option(("table", "json", "markdown", "csv"))
@plot_option("tokens/s per device against TPOT (decode) or TTFT (prefill), a point per system")
@guarded
def compare(
    systems,
    model,
    spec_dirs,
    phase,
    devices,
    ep,
    batch,
    kv_len,
    prompt_len,
    output_len,
    tokens_per_device,
    mtp,
    mtp_accept,
    microbatches,
    eplb,
    weights,
    experts_dtype,
    kv_dtype,
    fmt,
    output,
    plot,
):
    """The same workload on several systems, each with its own deployment: tokens/s per device and per TFLOPS,
    TPOT or TTFT, and the binding ceiling, side by side."""
    from .. import compare as cmp
    from .. import render, specs
    from ..errors import CmperfError

    names = [s.strip() for s in systems.split(",") if s.strip()]
    if not names:
        raise CmperfError("--systems: give at least one system name, e.g. cloudmatrix384,dgx-h800")
    if len(set(names)) != len(names):
        raise CmperfError(f"--systems: {systems!r} names a system twice")
    sys_objs = [specs.load_system(n, spec_dirs, flag="--systems") for n in names]
    mod = specs.load_model(model, spec_dirs, flag_of("model"))
    dev_map, ep_map = (
        _per_system(devices, names, "--devices", "devices"),
        _per_system(ep, names, "--ep", "ep_size"),
    )
    knobs = dict(
        microbatches=microbatches, eplb=eplb, weights=weights, experts=experts_dtype, kv_dtype=kv_dtype
    )
    if phase == "decode":
        if tokens_per_device is not None:
            raise CmperfError("--tokens-per-device applies to --phase prefill; use --batch for decode")
        if (prompt_len is None) != (output_len is None):
            raise CmperfError(
                "--phase decode: --prompt-len and --output-len go together; give both, or --kv-len"
            )
        check_mtp_accept(mtp)
        knobs.update(batch_per_device=batch, kv_len=kv_len, mtp=mtp, mtp_accept=mtp_accept)
        if prompt_len is not None:
            if kv_len is not None:
                raise CmperfError("--kv-len conflicts with --prompt-len/--output-len; give one or the other")
            from ..deployment import kv_lengths

            kv, cap, cv = kv_lengths(mod, prompt_len, output_len)
            knobs.update(kv_len=kv, kv_capacity_len=cap, kv_cv=cv)
    else:
        if any(x is not None for x in (batch, kv_len, output_len, mtp, mtp_accept)):
            raise CmperfError(
                "--batch/--kv-len/--output-len/--mtp/--mtp-accept apply to --phase decode; use "
                "--tokens-per-device and --prompt-len for prefill"
            )
        knobs.update(tokens_per_device=tokens_per_device, prompt_len=prompt_len)
    row = cmp.decode_row if phase == "decode" else cmp.prefill_row
    rows = [row(s, mod, devices=dev_map.get(s.name), ep_size=ep_map.get(s.name), **knobs) for s in sys_objs]
    result = cmp.Comparison(phase, mod.name, rows)
    write_plot(plot, lambda f: _plot(f, result))
    if fmt == "json":
        emit(render.to_json(result, "compare"), output)
    elif fmt == "csv":
        emit(render.to_csv(rows, first=("system", "phase")), output)
    else:
        header = ("quantity", *(r.system for r in rows))
        table = [(k, *v) for k, v in _fmt_row_values(result)]
        if fmt == "markdown":
            emit(f"# cmperf compare: {phase}, {mod.name}\n\n" + render.markdown_table(header, table), output)
        else:
            emit(render.tables("", [], [(f"cmperf compare: {phase}, {mod.name}", header, table)]), output)
    bad = [r for r in rows if not r.feasible]
    if bad:
        raise Infeasible(
            "infeasible deployment: "
            + "; ".join(f"{r.system}: {'; '.join(r.reasons) or 'see table'}" for r in bad)
        )


COMMANDS = [compare]
