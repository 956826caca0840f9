"""Pure renderers: JSON (sorted keys, SI units in key names, schema_version), rich tables, markdown.

Display units (ms, GB, TB/s) exist only here. ``to_jsonable`` turns frozen dataclasses and numpy
scalars into plain JSON types; floats are rounded to 12 significant digits so the same inputs give
byte-identical output on every platform.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from .units import fmt_bytes, fmt_s

SCHEMA_VERSION = 1


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        x = float(obj)
        if math.isnan(x) or math.isinf(x):
            return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return float(f"{x:.12g}")
    return obj


def to_json(obj: Any, kind: str) -> str:
    """Deterministic JSON document: {"schema_version", "kind", ...fields}."""
    body = to_jsonable(obj)
    if not isinstance(body, dict):
        body = {"result": body}
    return (
        json.dumps({"schema_version": SCHEMA_VERSION, "kind": kind, **body}, sort_keys=True, indent=2) + "\n"
    )


def _pct(x: float, total: float) -> str:
    return f"{100 * x / total:.1f}%" if total > 0 else "-"


def decode_summary_rows(p) -> list[tuple[str, str]]:
    """Key/value summary of a decode prediction: the microbatch count marked "(auto)" with the TPOT of every
    count tried when ``--microbatches auto`` chose it, the slowest rank's KV when the lengths spread."""
    d = p.deployment
    auto = bool(d.get("microbatches_auto"))
    rows = [
        ("system / model", f"{p.system} / {p.model}"),
        (
            "deployment",
            f"{d['devices']} devices, EP{d['ep_size']}, "
            f"batch {p.batch_per_device:g}/device, "
            f"KV {d['kv_len']:g}, MTP {d['mtp']} @ {d['mtp_accept']:g}, "
            f"{d['microbatches']} microbatch(es)" + (" (auto)" if auto else ""),
        ),
    ]
    if auto:
        tried = ", ".join(f"{k}: {fmt_s(v)}" for k, v in d["microbatches_auto_tpot_s"].items())
        rows.append(("microbatches (auto: lowest TPOT)", tried))
    if d.get("kv_cv", 0) > 0:
        rows.append(
            (
                "attention KV, slowest rank",
                f"{p.straggler_kv_len:,.0f} per sequence (mean {d['kv_len']:,.0f}, KV CV {d['kv_cv']:.3g})",
            )
        )
    rows += [
        ("TPOT", fmt_s(p.tpot_s)),
        ("tokens/s per device", f"{p.tokens_per_s_per_device:,.0f}"),
        ("step (all layers + heads)", fmt_s(p.step_s)),
        ("MoE layer (all microbatches)", fmt_s(p.moe_layer_s)),
        ("TPOT bounds (speed of light .. no overlap)", f"{fmt_s(p.lower_tpot_s)} .. {fmt_s(p.upper_tpot_s)}"),
        ("EP all-to-all bound on TPOT", fmt_s(p.comm_bound_tpot_s)),
        ("routed load max/mean", f"{p.imbalance:.3f}"),
        (
            "HBM per rank",
            f"{fmt_bytes(p.hbm_bytes_per_rank)} of {fmt_bytes(p.hbm_capacity_bytes_per_rank)} usable",
        ),
        ("largest batch that fits", f"{p.max_batch_per_device:,.0f} per device"),
        ("feasible", "yes" if p.feasible else "NO: " + "; ".join(p.reasons)),
    ]
    return rows


#: Streams table of decode and prefill: per-microbatch stream times, the coarse period
#: max(n*a, n*m, a+m, n*HBM) ("ideal") and the list schedule's steady-state period (cmperf.step).
STREAM_HEADER = ("stage", "layers", "A", "M", "ideal period", "scheduled period", "binding")


def stream_rows(p) -> list[tuple[str, ...]]:
    return [
        (
            name,
            str(s["count"]),
            fmt_s(s["a_s"]),
            fmt_s(s["m_s"]),
            fmt_s(s["ideal_period_s"]),
            fmt_s(s["period_s"]),
            str(s.get("binding", s.get("ideal_binding", ""))),
        )
        for name, s in p.streams.items()
    ]


OP_HEADER = (
    "stage",
    "op",
    "stream",
    "count",
    "per call",
    "per step",
    "share",
    "bound",
    "compute",
    "memory",
    "link",
    "fixed",
)


def op_table_rows(ops, step_s: float) -> list[tuple[str, ...]]:
    return [
        (
            r.stage,
            r.name,
            r.stream,
            str(r.count),
            fmt_s(r.time_s),
            fmt_s(r.total_s),
            _pct(r.total_s, step_s),
            r.bound,
            fmt_s(r.compute_s),
            fmt_s(r.memory_s),
            fmt_s(r.link_s),
            fmt_s(r.fixed_s),
        )
        for r in ops
    ]


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def decode_markdown(p) -> str:
    parts = [
        "# cmperf decode prediction\n",
        markdown_table(("quantity", "value"), decode_summary_rows(p)),
        "\n## Streams per layer (per microbatch: A = attention stream, M = MoE stream)\n",
        markdown_table(STREAM_HEADER, stream_rows(p)),
        "\n## Per-op breakdown\n",
        markdown_table(OP_HEADER, op_table_rows(p.ops, p.step_s)),
    ]
    return "".join(parts)


def print_tables(
    title: str, summary: list[tuple[str, str]], sections: list[tuple[str, tuple[str, ...], list]]
) -> None:
    """Rich rendering of a summary (key/value) plus titled tables. rich is imported only here."""
    import shutil

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(shutil.get_terminal_size((160, 40)).columns, 150))
    if summary:
        t = Table(title=title, show_header=False)
        t.add_column(style="bold")
        t.add_column()
        for k, v in summary:
            t.add_row(k, v)
        console.print(t)
    for sec_title, header, rows in sections:
        tt = Table(title=sec_title)
        for h in header:
            tt.add_column(
                h, justify="left" if h in ("stage", "op", "stream", "bound", "binding") else "right"
            )
        for r in rows:
            tt.add_row(*r)
        console.print(tt)


def decode_table(p) -> None:
    print_tables(
        "cmperf decode",
        decode_summary_rows(p),
        [
            ("streams per layer (per microbatch)", STREAM_HEADER, stream_rows(p)),
            ("per-op breakdown", OP_HEADER, op_table_rows(p.ops, p.step_s)),
        ],
    )
