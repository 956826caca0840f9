"""Pure renderers: JSON (sorted keys, SI units in key names, schema_version), rich tables, markdown.

Display units (ms, GB, TB/s) exist only here. ``to_jsonable`` turns frozen dataclasses and numpy
scalars into plain JSON types; floats are rounded to 12 significant digits so the same inputs give
byte-identical output on every platform. Every renderer returns a string (the CLI's ``emit`` prints it
or writes it to ``-o FILE``); tables are plain text fitted to a page width (``tables``, ``page_width``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .units import accept_text, fmt_bytes, fmt_s

SCHEMA_VERSION = 1


def to_jsonable(obj: Any) -> Any:
    t = type(obj)
    if t is float:  # most leaves of a prediction: the float branch below without the checks before it
        return _json_float(obj)
    if t is str or t is int or obj is None:  # (what the last line returns)
        return obj
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
        return _json_float(float(obj))
    return obj


def _json_float(x: float) -> float | str | None:
    """12 significant digits (the same bytes on every platform); NaN is null, infinities are strings."""
    if math.isnan(x) or math.isinf(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return float(f"{x:.12g}")


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
    moe = "moe" in p.streams  # a dense model has no expert parallelism to name
    par = f"EP{d['ep_size']}" if moe else ("data-parallel" if d["devices"] > 1 else "")
    if moe and d.get("moe_tp", 1) > 1:
        par = f"MoE TP{d['moe_tp']} x EP{d['ep_size']}"
        if "moe_intermediate_per_rank" in d:  # uneven: the busiest rank's slice
            par += f" ({d['moe_intermediate_per_rank']} of the intermediate on the busiest rank)"
    if d.get("attn_tp", 1) > 1:
        heads = d.get("attn_heads_per_rank")  # set when the split is uneven: the busiest rank's heads
        note = f" ({heads} heads on the busiest rank)" if heads else ""
        tp = f"attention TP{d['attn_tp']}" if moe else f"TP{d['attn_tp']} (attention and MLP)"
        par = f"{tp}{note}" + (f", {par}" if moe else "")
    par = f"{par}, " if par else ""
    rows = [
        ("system / model", f"{p.system} / {p.model}"),
        (
            "deployment",
            f"{d['devices']} device{'' if d['devices'] == 1 else 's'}, {par}batch "
            f"{p.batch_per_device:g}/device"
            + (
                f" (the largest that fits: the default {d['batch_fitted_from']:g} does not)"
                if "batch_fitted_from" in d
                else ""
            )
            + f", KV {d['kv_len']:g}",
        ),
        (
            "MTP, microbatches",
            f"MTP {d['mtp']} @ {accept_text(d['mtp_accept'])}, "
            f"{d['microbatches']} microbatch{'' if d['microbatches'] == 1 else 'es'}"
            + (" (auto)" if auto else ""),
        ),
    ]
    if d.get("prefill_chunk_tokens", 0) > 0:
        rows.append(
            (
                "prefill chunk (aggregated)",
                f"{d['prefill_chunk_tokens']:,.0f} prompt tokens/device per step, "
                f"prompts of {d['prompt_len']:,.0f}",
            )
        )
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
        # the principal stage's period (graph.principal_stage): MoE layers, a dense model's layers
        (
            "MoE layer (all microbatches)" if "moe" in p.streams else "layer (all microbatches)",
            fmt_s(p.moe_layer_s),
        ),
        ("TPOT bound: speed of light", fmt_s(p.lower_tpot_s)),
        ("TPOT bound: no overlap", fmt_s(p.upper_tpot_s)),
    ]
    if moe:
        rows += [
            ("EP all-to-all bound on TPOT", fmt_s(p.comm_bound_tpot_s)),
            ("routed load max/mean", f"{p.imbalance:.3f}"),
        ]
    rows += [
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


def markdown_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], align: str | None = None) -> str:
    """A GitHub table; ``align`` is one letter per column, ``l`` or ``r`` (``:---`` / ``---:``: numbers
    right-aligned, text and its header left-aligned); None leaves every column to the renderer's default
    (cells left, headers centred)."""
    rule = [{"r": "---:", "l": ":---"}.get(a, "---") for a in align] if align else ["---" for _ in header]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def decode_markdown(p, max_ops: int | None = None) -> str:
    parts = [
        "# cmperf decode prediction\n",
        markdown_table(("quantity", "value"), decode_summary_rows(p)),
        "\n## Streams per layer (per microbatch: A = attention stream, M = MoE stream)\n",
        markdown_table(STREAM_HEADER, stream_rows(p)),
        "\n## Per-op breakdown\n",
        op_markdown(p.ops, p.step_s, max_ops),
    ]
    return "".join(parts)


PAGE_WIDTH = 100  # table width when COLUMNS is unset and stdout is not a terminal (pipes, files)


def page_width() -> int:
    """Width of rendered tables: $COLUMNS if set, else the terminal's width when stdout is one, else 100.

    The same inputs and width give the same text; piped output does not depend on the terminal."""
    import shutil

    cols = shutil.get_terminal_size((PAGE_WIDTH, 24)).columns
    return cols if cols > 0 else PAGE_WIDTH


@dataclasses.dataclass(frozen=True)
class Section:
    """One titled table. ``drop`` names the columns to leave out, first one first, while the table is
    wider than the page; ``note`` is a line printed under the table."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    drop: tuple[str, ...] = ()
    note: str = ""


#: Column gap of the rendered tables (a space divider plus one space of left padding).
_GAP = 2


def _numeric(cells) -> bool:
    """Right-align a column whose every cell starts like a number ("49.49 ms", "1,940", "-", "+0.3%")."""
    return all(c[:1] in "0123456789+-." for c in cells if c)


def _box():
    from rich.box import Box

    # no edges or vertical rules; one rule under the header (and above a footer)
    return Box("    \n    \n────\n    \n    \n────\n    \n    \n")


def _fit(header, rows, drop, width):
    """(columns to show, the width of each, which are numeric, columns left out) for a table on ``width``
    columns.

    The columns named in ``drop`` go first, in order, while the table's natural width is over the page.
    Then numbers keep one line (a column's least width is its widest number) while headers and text fold
    at words; when even that is too wide, columns go from the right (the caller notes which)."""
    from rich.cells import cell_len

    cells = [[str(r[i]) for r in rows] for i in range(len(header))]
    numeric = [_numeric(c) for c in cells]
    natural = [max([cell_len(h)] + [cell_len(x) for x in c]) for h, c in zip(header, cells, strict=True)]

    def longest_word(texts):
        return max((cell_len(w) for t in texts for w in t.split()), default=1)

    least = [
        max(longest_word([h]), max(map(cell_len, c), default=0) if num else longest_word(c))
        for h, c, num in zip(header, cells, numeric, strict=True)
    ]
    keep = list(range(len(header)))

    def total(ws):
        return sum(ws[i] for i in keep) + _GAP * (len(keep) - 1)

    for name in drop:
        if total(natural) <= width:
            break
        if name in header and header.index(name) in keep and len(keep) > 1:
            keep.remove(header.index(name))
    left_out = []
    while total(least) > width and len(keep) > 1:
        left_out.append(header[keep.pop()])
    if total(natural) <= width:
        return keep, {i: natural[i] for i in keep}, numeric, left_out[::-1]
    # every column its least width, the rest of the page shared in proportion to what each lacks of its
    # natural width (largest remainders first, then the leftmost): fixed widths, since rich left to itself
    # shrinks a text column below its longest word and folds it mid-word ("gb200-nvl7" over "2")
    extra = width - total(least)
    need = {i: natural[i] - least[i] for i in keep}
    whole = sum(need.values())
    share = {i: extra * need[i] / whole if whole else 0.0 for i in keep}
    widths = {i: least[i] + int(share[i]) for i in keep}
    spare = width - total({**dict(enumerate(least)), **widths})
    for i in sorted(keep, key=lambda i: (-(share[i] - int(share[i])), i))[: max(spare, 0)]:
        if widths[i] < natural[i]:
            widths[i] += 1
    return keep, widths, numeric, left_out[::-1]


def tables(title: str, summary: list[tuple[str, str]], sections, width: int | None = None) -> str:
    """Plain-text tables (rich, no colour): a key/value summary under ``title``, then every section
    (a ``Section`` or a ``(title, header, rows)`` tuple), fitted to ``width`` columns [``page_width()``].

    Columns a section may drop go first; whatever is still too wide is folded by rich inside the cells
    (text columns before numbers). Deterministic for a given width; no trailing spaces."""
    import io

    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    width = page_width() if width is None else width
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        height=24,
        force_terminal=False,
        force_jupyter=False,
        force_interactive=False,
        color_system=None,
        no_color=True,
        markup=False,
        emoji=False,
        highlight=False,
        legacy_windows=False,
        soft_wrap=False,
        _environ={},
    )
    common = {"box": _box(), "show_edge": False, "pad_edge": False, "padding": (0, 0, 0, 1)}
    if summary:
        t = Table(title=title or None, show_header=False, **common)
        # the keys stay on one line (the values wrap) unless they would take more than half the page
        t.add_column(overflow="fold", no_wrap=max(cell_len(k) for k, _ in summary) <= width // 2)
        t.add_column(overflow="fold")
        for k, v in summary:
            t.add_row(k, v)
        console.print(t)
    for sec in sections:
        sec = sec if isinstance(sec, Section) else Section(*sec)
        keep, mins, numeric, left_out = _fit(sec.header, sec.rows, sec.drop, width)
        tt = Table(title=sec.title or None, **common)
        for i in keep:
            justify: Literal["left", "right"] = "right" if numeric[i] else "left"
            tt.add_column(sec.header[i], justify=justify, overflow="fold", width=mins[i])
        for r in sec.rows:
            tt.add_row(*(str(r[i]) for i in keep))
        console.print()
        console.print(tt)
        if left_out:
            console.print(f"(left out at {width} columns: {', '.join(left_out)}; a wider COLUMNS shows them)")
        if sec.note:
            console.print(sec.note)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).lstrip("\n") + "\n"


def top_ops(ops, max_ops: int | None):
    """(ops to show, how many are left out): every op in graph order when ``max_ops`` is None, else the
    ``max_ops`` heaviest by time per step (count x per call), heaviest first."""
    ops = list(ops)
    if max_ops is None or max_ops >= len(ops):
        return ops, 0
    heavy = sorted(ops, key=lambda r: -r.total_s)[:max_ops]
    return heavy, len(ops) - len(heavy)


def more_ops_note(hidden: int) -> str:
    return f"... {hidden} more ops (--ops all)" if hidden else ""


#: Columns the per-op and streams tables give up on a narrow page, first one first.
OP_DROP = ("stream", "count", "per call", "fixed", "link", "memory", "compute")
STREAM_DROP = ("ideal period", "layers")


def op_section(ops, step_s: float, max_ops: int | None = None, title: str = "per-op breakdown") -> Section:
    shown, hidden = top_ops(ops, max_ops)
    if hidden:
        title = f"{title}: the {len(shown)} heaviest of {len(shown) + hidden} ops"
    return Section(title, OP_HEADER, op_table_rows(shown, step_s), OP_DROP, more_ops_note(hidden))


def op_markdown(ops, step_s: float, max_ops: int | None = None) -> str:
    shown, hidden = top_ops(ops, max_ops)
    text = markdown_table(OP_HEADER, op_table_rows(shown, step_s))
    return text + (f"\n{more_ops_note(hidden)}\n" if hidden else "")


def stream_section(p) -> Section:
    return Section("streams per layer (per microbatch)", STREAM_HEADER, stream_rows(p), STREAM_DROP)


def decode_table(p, max_ops: int | None = None, width: int | None = None) -> str:
    return tables(
        "cmperf decode",
        decode_summary_rows(p),
        [stream_section(p), op_section(p.ops, p.step_s, max_ops)],
        width,
    )


def _csv_cell(v) -> str:
    """A CSV cell: floats with 12 significant digits (as the JSON), None and a non-finite float empty,
    booleans true/false, lists joined by ';'."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.12g}" if math.isfinite(v) else ""
    if isinstance(v, list | tuple):
        return ";".join(_csv_cell(x) for x in v)
    return str(v)


def _flatten_record(rec: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_record(v, key + "."))
        else:
            out[key] = v
    return out


def to_csv(records, first: tuple[str, ...] = ()) -> str:
    """RFC 4180 CSV of records (dataclasses or dicts): one row per record, one column per field (nested
    fields as ``table.field``), SI units in the column names as in the JSON (``tpot_s``,
    ``hbm_bytes_per_rank``). Columns: ``first``, then every other field in the order it first appears;
    a field a record lacks is empty. Deterministic: the same records, the same bytes (CRLF line ends).

    >>> to_csv([{"system": "a", "tpot_s": 0.0494903077038}])
    'system,tpot_s\\r\\n a,0.0494903077038\\r\\n'.replace(" ", "")
    """
    import csv
    import io

    rows = [_flatten_record(to_jsonable(r)) for r in records]
    cols = [c for c in first if any(c in r for r in rows)]
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_csv_cell(r.get(c)) for c in cols])
    return buf.getvalue()
