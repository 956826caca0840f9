"""The markdown report (`cmperf report`): one file a reviewer reads top to bottom.

Sections: inputs (spec files, their hashes and every cited source), deployment, headline predictions,
per-op breakdown per phase with the binding ceiling, lower/upper bounds, a throughput-vs-TPOT chart
(Mermaid ``xychart-beta``, rendered by GitHub) from one vectorized ``decode.evaluate`` over batch,
the optimizer's top configurations when ``cmperf.search`` exists, the validation table and the closed
forms typeset from sympy. Pure text assembly from the data handed in, no clock, no absolute paths:
the same inputs give a byte-identical file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .render import OP_HEADER, markdown_table
from .specs import Model, System
from .units import fmt_bytes, fmt_s

SWEEP_BATCHES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384)


def batch_sweep(system, model, dep) -> dict[str, np.ndarray]:
    """TPOT and tokens/s per device over SWEEP_BATCHES (+ the deployment's batch), in one vectorized call
    (``dep``: a decode Deployment with a microbatch count)."""
    from dataclasses import replace

    from . import decode

    batches = np.array(sorted(set(SWEEP_BATCHES) | {float(dep.batch_per_device)}), dtype=float)
    ev = decode.evaluate(system, model, replace(dep, batch_per_device=batches))
    return {
        "batch": batches,
        "tpot_s": np.broadcast_to(ev.tpot_s, batches.shape),
        "tokens_per_s_per_device": np.broadcast_to(ev.tokens_per_s_per_device, batches.shape),
        "feasible": np.broadcast_to(ev.feasible, batches.shape),
    }


def mermaid_chart(sweep: dict) -> str:
    ok = np.asarray(sweep["feasible"], dtype=bool)
    x = [f'"{v * 1e3:.1f}"' for v in np.asarray(sweep["tpot_s"])[ok]]
    y = [f"{v:.0f}" for v in np.asarray(sweep["tokens_per_s_per_device"])[ok]]
    top = max([float(v) for v in y] + [1.0])
    return (
        '```mermaid\nxychart-beta\n    title "Decode throughput vs TPOT (batch sweep, feasible points)"\n'
        f'    x-axis "TPOT (ms)" [{", ".join(x)}]\n'
        f'    y-axis "tokens/s per device" 0 --> {int(np.ceil(top * 1.1 / 100) * 100)}\n'
        f"    line [{', '.join(y)}]\n```\n"
    )


def _name(path: str) -> str:
    return Path(path).name


def sources_rows(system: System, model: Model) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for label, spec in (("chip " + system.chip.name, system.chip), ("system " + system.name, system)):
        for k in sorted(spec.sources):
            rows.append((label, k, spec.sources[k].replace("|", "/")))
    arch = sorted({v for k, v in model.sources.items() if k.startswith("architecture.")})
    for v in arch:
        rows.append(("model " + model.name, "architecture.*", v.replace("|", "/")))
    for k in sorted(x for x in model.sources if not x.startswith("architecture.")):
        rows.append(("model " + model.name, k, model.sources[k].replace("|", "/")))
    return rows


def _v(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, dict):
        return ", ".join(f"{k}={_v(v)}" for k, v in sorted(x.items()))
    return "-" if x is None else str(x)


def decode_sections(doc: dict) -> list[str]:
    """Headline, streams (binding ceiling per stage), bounds and per-op breakdown of a decode JSON."""
    head = [
        ("TPOT", fmt_s(doc["tpot_s"])),
        ("tokens/s per device", f"{doc['tokens_per_s_per_device']:,.0f}"),
        ("step (all layers + heads)", fmt_s(doc["step_s"])),
        ("MoE layer period (all microbatches)", fmt_s(doc["moe_layer_s"])),
        ("routed load max/mean", f"{doc['imbalance']:.3f}"),
        (
            "HBM per rank",
            f"{fmt_bytes(doc['hbm_bytes_per_rank'])} of "
            f"{fmt_bytes(doc['hbm_capacity_bytes_per_rank'])} usable",
        ),
        ("largest batch that fits", f"{doc['max_batch_per_device']:,.0f} per device"),
        ("feasible", "yes" if doc["feasible"] else "NO: " + "; ".join(doc.get("reasons", []))),
    ]
    bounds = [
        (
            "lower (speed of light: peak compute, full bandwidth, no fixed costs, perfect overlap)",
            fmt_s(doc["lower_tpot_s"]),
        ),
        ("prediction", fmt_s(doc["tpot_s"])),
        ("upper (every op's ceilings back to back, no overlap)", fmt_s(doc["upper_tpot_s"])),
        ("EP all-to-all alone (Insights bound)", fmt_s(doc["comm_bound_tpot_s"])),
    ]
    streams = [
        (k, str(s["count"]), fmt_s(s["a_s"]), fmt_s(s["m_s"]), fmt_s(s["period_s"]), str(s["binding"]))
        for k, s in doc["streams"].items()
    ]
    step = doc["step_s"]
    ops = [
        (
            r["stage"],
            r["name"],
            r["stream"],
            str(r["count"]),
            fmt_s(r["time_s"]),
            fmt_s(r["total_s"]),
            f"{100 * r['total_s'] / step:.1f}%" if step > 0 else "-",
            r["bound"],
            fmt_s(r["compute_s"]),
            fmt_s(r["memory_s"]),
            fmt_s(r["link_s"]),
            fmt_s(r["fixed_s"]),
        )
        for r in doc["ops"]
    ]
    return [
        "## Headline predictions\n\n",
        markdown_table(("quantity", "value"), head),
        "\n## Bounds on TPOT\n\n",
        markdown_table(("bound", "TPOT"), bounds),
        "\n## Decode: streams per layer and the binding ceiling\n\n"
        "Per microbatch: A = attention stream, M = MoE stream; the period is the slowest of n·A, n·M, "
        "A+M and the shared-HBM time (cmperf.step).\n\n",
        markdown_table(("stage", "layers", "A", "M", "period", "binding"), streams),
        "\n## Decode: per-op breakdown\n\n`bound` is the op's binding ceiling; `per step` = count × per "
        "call, before overlap; `share` is of the step.\n\n",
        markdown_table(OP_HEADER, ops),
    ]


def generic_sections(doc: dict) -> list[str]:
    """Headline of a non-decode JSON: its scalar predictions, and its per-op rows when it has them."""
    from .regress import flatten

    rows = [(k, _v(v)) for k, v in flatten(doc).items()]
    out = ["## Headline predictions\n\n", markdown_table(("quantity", "value"), rows)]
    if isinstance(doc.get("ops"), list) and doc["ops"] and isinstance(doc["ops"][0], dict):
        keys = [
            k
            for k in ("stage", "name", "stream", "count", "time_s", "total_s", "bound")
            if k in doc["ops"][0]
        ]
        out += [
            "\n## Per-op breakdown\n\n",
            markdown_table(
                tuple(keys),
                [tuple(fmt_s(r[k]) if k.endswith("_s") else _v(r[k]) for k in keys) for r in doc["ops"]],
            ),
        ]
    return out


def optimizer_section(doc: dict | None, note: str) -> list[str]:
    out = ["\n## Optimizer: top configurations\n\n"]
    if doc is None:
        return [*out, note + "\n"]
    lists = {k: v for k, v in doc.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    key = next(
        (k for k in ("top", "configurations", "best", "pareto") if k in lists), min(lists, default=None)
    )
    if key is None:
        return [*out, "The optimizer returned no configurations.\n"]
    lst = lists[key]
    scalars = [k for k in sorted(lst[0]) if not isinstance(lst[0][k], dict | list)]
    first = (
        "tokens_per_s_per_device",
        "tpot_s",
        "ttft_s",
        "devices",
        "ep_size",
        "batch_per_device",
        "microbatches",
        "mtp",
        "attention_cube_cores",
    )
    keys = ([k for k in first if k in scalars] + [k for k in scalars if k not in first])[:10]
    rows = [
        tuple(fmt_s(r[k]) if k.endswith("_s") and isinstance(r.get(k), float) else _v(r.get(k)) for k in keys)
        for r in lst[:5]
    ]
    return [
        *out,
        f"`cmperf optimize` with the scenario's system and model, first 5 of `{key}`:\n\n",
        markdown_table(tuple(keys), rows),
    ]


def build(
    *,
    scenario,
    system,
    model,
    spec_hash: str,
    version: str,
    doc: dict,
    sweep: dict | None,
    optimizer: tuple[dict | None, str],
    validation: tuple[tuple[str, ...], list[tuple[str, ...]]],
    forms: list[tuple[str, str]] | None,
    forms_note: str,
) -> str:
    parts = [
        f"# cmperf report: {scenario.name}\n\n",
        f"{scenario.description}\n\n" if scenario.description else "",
        f"Setup source: {scenario.source}\n\n" if scenario.source else "",
        f"Generated by cmperf {version} (`cmperf {scenario.command} --scenario {scenario.name}`); "
        f"spec hash `{spec_hash}`.\n\n",
        "## Inputs\n\n",
        markdown_table(
            ("kind", "name", "file"),
            [
                ("scenario", scenario.name, _name(scenario.path)),
                ("system", system.name, _name(system.path)),
                ("chip", system.chip.name, _name(system.chip.path)),
                ("model", model.name, _name(model.path)),
            ],
        ),
        "\nEvery number in the spec files carries its source:\n\n",
        markdown_table(("spec", "key", "source"), sources_rows(system, model)),
        "\n## Deployment\n\n",
        markdown_table(
            ("knob", "value"),
            [(k, _v(v)) for k, v in sorted(doc.get("deployment", {}).items())]
            or [(k, _v(v)) for k, v in sorted(scenario.options.items())],
        ),
        "\n",
    ]
    parts += decode_sections(doc) if scenario.command == "decode" else generic_sections(doc)
    if sweep is not None:
        rows = [
            (f"{b:g}", fmt_s(t), f"{x:,.0f}", "yes" if f else "no (HBM)")
            for b, t, x, f in zip(
                sweep["batch"],
                sweep["tpot_s"],
                sweep["tokens_per_s_per_device"],
                sweep["feasible"],
                strict=True,
            )
        ]
        parts += [
            "\n## Throughput vs TPOT\n\nOne vectorized `decode.evaluate` over the batch per device; "
            "other knobs as deployed.\n\n",
            mermaid_chart(sweep),
            "\n",
            markdown_table(("batch per device", "TPOT", "tokens/s per device", "fits in HBM"), rows),
        ]
    parts += optimizer_section(*optimizer)
    parts += [
        "\n## Validation against published numbers\n\n`cmperf validate`: error = predicted / published - 1."
        "\n\n",
        markdown_table(*validation),
    ]
    parts.append("\n## Closed forms\n\n")
    if forms:
        parts.append(forms_note + "\n\n")
        for title, tex in forms:
            parts.append(f"**{title}**\n\n$$\n{tex}\n$$\n\n")
    else:
        parts.append(forms_note + "\n")
    return "".join(parts).rstrip("\n") + "\n"
