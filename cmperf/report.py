"""The markdown report (`cmperf report`): one file a reviewer reads top to bottom.

Sections: "What to do" first (the prediction, what binds, the levers that matter most by elasticity),
headline predictions, bounds, streams in execution order and the heaviest ops (numbers right-aligned),
a throughput-vs-TPOT chart (Mermaid ``xychart-beta``, rendered by GitHub: a numeric TPOT axis, the SLO
and the operating point marked) from one vectorized ``decode.evaluate`` over batch, prefill and serving
at their defaults, the optimizer's top configurations, the validation table, the closed forms (long
ones broken across lines) and, in appendices, the inputs with every cited source and its value. Pure
text assembly from the data handed in, no clock, no absolute paths:
the same inputs give a byte-identical file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

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


#: Points of the chart's series. Mermaid's ``xychart-beta`` spreads a series' values evenly over a numeric
#: x axis, so the chart is sampled on an even TPOT grid; 61 points keep the bars (SLO, operating point) thin.
CHART_POINTS = 61
#: Series colours: throughput, SLO, operating point (the default palette's first colour is pale).
CHART_COLOURS = "#1f77b4, #d62728, #2ca02c"


def chart_grid(sweep: dict, slo_s: float | None, point: tuple[float, float] | None) -> dict:
    """The chart's data: CHART_POINTS even TPOT steps (ms) from the lowest to the highest feasible swept
    TPOT (to 0.1 ms), tokens/s interpolated between the swept batches (throughput rises with TPOT along the
    batch sweep), and the grid indices of the SLO and the operating point (None outside the axis).
    ``point`` = (TPOT s, tokens/s per device)."""
    ok = np.asarray(sweep["feasible"], dtype=bool)
    t = np.asarray(sweep["tpot_s"], dtype=float)[ok] * 1e3
    y = np.asarray(sweep["tokens_per_s_per_device"], dtype=float)[ok]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if t.size == 0:
        return {"x_ms": [], "y": [], "slo_i": None, "point_i": None}
    lo, hi = np.floor(t[0] * 10) / 10, np.ceil(t[-1] * 10) / 10
    hi = max(hi, lo + 0.1)
    x = np.linspace(lo, hi, CHART_POINTS)

    def index(ms: float) -> int | None:
        i = round(float(ms - lo) / float(hi - lo) * (CHART_POINTS - 1))
        return i if 0 <= i < CHART_POINTS else None

    return {
        "x_ms": [float(v) for v in x],
        "y": [float(v) for v in np.interp(x, t, y)],
        "lo_ms": float(lo),
        "hi_ms": float(hi),
        "slo_i": index(slo_s * 1e3) if slo_s else None,
        "point_i": index(point[0] * 1e3) if point else None,
    }


def mermaid_chart(sweep: dict, slo_s: float | None = None, point: tuple[float, float] | None = None) -> str:
    """Throughput (a line) on a numeric TPOT axis; a red bar at the SLO (full height) and a green bar at
    the operating point (its tokens/s). The other values of a bar series are negative, below the axis:
    Mermaid draws no bar for them (a 0 is drawn as a stub)."""
    g = chart_grid(sweep, slo_s, point)
    if not g["x_ms"]:
        return ""
    top = max([*g["y"], point[1] if point else 0.0, 1.0])
    ymax = int(np.ceil(top * 1.1 / 100) * 100)

    def bar(i: int | None, value: float) -> str | None:
        if i is None:
            return None
        vals = [f"{value:.0f}" if j == i else f"-{ymax}" for j in range(len(g["x_ms"]))]
        return f"    bar [{', '.join(vals)}]"

    out = [
        "```mermaid",
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + CHART_COLOURS + '"}}}}%%',
        "xychart-beta",
        '    title "Decode throughput vs TPOT (batch sweep, feasible points)"',
        f'    x-axis "TPOT (ms)" {g["lo_ms"]:.1f} --> {g["hi_ms"]:.1f}',
        f'    y-axis "tokens/s per device" 0 --> {ymax}',
        f"    line [{', '.join(f'{v:.0f}' for v in g['y'])}]",
    ]
    out += [b for b in (bar(g["slo_i"], ymax), bar(g["point_i"], point[1] if point else 0)) if b]
    return "\n".join(out) + "\n```\n"


def chart_caption(sweep: dict, slo_s: float | None, point: tuple[float, float] | None) -> str:
    g = chart_grid(sweep, slo_s, point)
    if not g["x_ms"]:
        return "No swept batch fits in HBM: nothing to chart.\n\n"
    parts = [
        f"Blue line: tokens/s per device against TPOT from {g['lo_ms']:.1f} to {g['hi_ms']:.1f} ms, "
        "interpolated between the swept batches (table below)."
    ]
    if slo_s:
        where = "red bar" if g["slo_i"] is not None else "outside the swept TPOT range, not drawn"
        parts.append(f"TPOT SLO {fmt_s(slo_s)}: {where}.")
    if point:
        parts.append(f"Green bar: the operating point, {point[1]:,.0f} tokens/s at {fmt_s(point[0])}.")
    return " ".join(parts) + "\n\n"


def _name(path: str) -> str:
    return Path(path).name


@functools.lru_cache(maxsize=16)
def _spec_toml(path: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _spec_value(path: str, key: str) -> str:
    """The value a spec file gives ``key`` as written ("196 GB/s per rank", 0.699), or "" if absent."""
    node: Any = _spec_toml(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, dict) and "value" in node:
        v, per = node["value"], node.get("per")
        text = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
        return f"{text} per {per}" if per else text
    return ""


def sources_rows(system: System, model: Model) -> list[tuple[str, ...]]:
    """(spec, key, value as written, source) of every sourced number of the chip, system and model."""
    rows: list[tuple[str, ...]] = []
    for label, spec in (("chip " + system.chip.name, system.chip), ("system " + system.name, system)):
        for k in sorted(spec.sources):
            val = _spec_value(spec.path, k).replace("|", "/")
            rows.append((label, k, val, spec.sources[k].replace("|", "/")))
    arch = sorted({v for k, v in model.sources.items() if k.startswith("architecture.")})
    for v in arch:
        rows.append(("model " + model.name, "architecture.*", "", v.replace("|", "/")))
    for k in sorted(x for x in model.sources if not x.startswith("architecture.")):
        val = _spec_value(model.path, k).replace("|", "/")
        rows.append(("model " + model.name, k, val, model.sources[k].replace("|", "/")))
    return rows


def _nb(text: str) -> str:
    """Keep a number with its unit on one line in a table cell ("484.6 µs" must not wrap)."""
    return text.replace(" ", "\u00a0")


#: Stages in execution order (a step runs dense layers, MoE layers, the MTP module, then the head).
STAGE_ORDER = ("dense", "moe", "mtp", "head")
#: Stage names in prose ("the MoE layers").
STAGE_NAMES = {"moe": "MoE", "mtp": "MTP"}
#: Per-op rows of the report's decode table (the rest summed in one row).
REPORT_OPS = 15
#: The per-op columns of ``cmperf decode`` but the stream (the streams table has it) and the call count
#: (per step / per call): the table fits GitHub's 1,012 px page without a scroll bar.
REPORT_OP_HEADER = tuple(h for h in OP_HEADER if h not in ("stream", "count"))


def stage_order(doc: dict) -> list[str]:
    """The stream stages of a decode JSON in execution order: first appearance in the graph-ordered ops,
    then STAGE_ORDER, then any other (sorted: deterministic)."""
    seen: list[str] = []
    for r in doc.get("ops", []):
        if r["stage"] in doc["streams"] and r["stage"] not in seen:
            seen.append(r["stage"])
    rest = [k for k in STAGE_ORDER if k in doc["streams"] and k not in seen]
    return seen + rest + sorted(k for k in doc["streams"] if k not in seen and k not in rest)


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
        (
            k,
            str(doc["streams"][k]["count"]),
            _nb(fmt_s(doc["streams"][k]["a_s"])),
            _nb(fmt_s(doc["streams"][k]["m_s"])),
            _nb(fmt_s(doc["streams"][k]["period_s"])),
            str(doc["streams"][k]["binding"]),
        )
        for k in stage_order(doc)
    ]
    step = doc["step_s"]
    ranked = sorted(doc["ops"], key=lambda r: (-r["total_s"], r["stage"], r["name"]))
    shown, hidden = ranked[:REPORT_OPS], ranked[REPORT_OPS:]

    def share(x: float) -> str:
        return f"{100 * x / step:.1f}%" if step > 0 else "-"

    ops = [
        (
            r["stage"],
            r["name"],
            _nb(fmt_s(r["time_s"])),
            _nb(fmt_s(r["total_s"])),
            share(r["total_s"]),
            r["bound"],
            _nb(fmt_s(r["compute_s"])),
            _nb(fmt_s(r["memory_s"])),
            _nb(fmt_s(r["link_s"])),
            _nb(fmt_s(r["fixed_s"])),
        )
        for r in shown
    ]
    if hidden:
        rest = sum(r["total_s"] for r in hidden)
        ops.append(
            (
                "",
                f"{len(hidden)} more ops",
                "",
                _nb(fmt_s(rest)),
                share(rest),
                "",
                "",
                "",
                "",
                "",
            )
        )
    return [
        "## Headline predictions\n\n",
        markdown_table(("quantity", "value"), head, "lr"),
        "\n## Bounds on TPOT\n\n",
        markdown_table(("bound", "TPOT"), bounds, "lr"),
        "\n## Decode: streams per layer and the binding ceiling\n\n"
        "Per microbatch: A = attention stream, M = MoE stream; the period is the slowest of n·A, n·M, "
        "A+M and the shared-HBM time (cmperf.step).\n\n",
        markdown_table(("stage", "layers", "A", "M", "period", "binding"), streams, "lrrrrl"),
        "\n## Decode: per-op breakdown\n\n"
        f"The {min(REPORT_OPS, len(ranked))} heaviest of {len(ranked)} ops by "
        "time per step (`cmperf decode --ops all` lists every one); `bound` is the op's binding ceiling; "
        "`per step` = per call × calls per step (layers × microbatches), before overlap; `share` is of "
        "the step.\n\n",
        markdown_table(REPORT_OP_HEADER, ops, "llrrrlrrrr"),
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
        "attn_tp",
        "hbm_bytes_per_rank",
    )
    keys = ([k for k in first if k in scalars] + [k for k in scalars if k not in first])[:10]
    rows = [tuple(_nb(_cell(k, r.get(k))) for k in keys) for r in lst[:5]]
    align = "".join("r" if isinstance(lst[0].get(k), int | float) else "l" for k in keys)
    return [
        *out,
        f"`cmperf optimize` with the scenario's system and model (4K prompt, 256 output, TPOT p99 <= 50 ms, "
        f"TTFT p99 <= 2 s), the first 5 of its `{key}` list:\n\n",
        markdown_table(tuple(LABELS.get(k, k.replace("_", " ")) for k in keys), rows, align),
    ]


#: Readable headers of the optimizer's record keys.
LABELS = {
    "tokens_per_s_per_device": "tokens/s per device",
    "tpot_s": "TPOT",
    "ttft_s": "TTFT",
    "devices": "devices",
    "ep_size": "EP",
    "batch_per_device": "batch per device",
    "microbatches": "microbatches",
    "mtp": "MTP",
    "attention_cube_cores": "attention cores",
    "attn_tp": "attention TP",
    "lower_tpot_s": "TPOT lower bound",
    "upper_tpot_s": "TPOT upper bound",
    "comm_bound_tpot_s": "all-to-all bound",
    "hbm_bytes_per_rank": "HBM per rank",
    "max_batch_per_device": "largest batch",
}


def _cell(key: str, v) -> str:
    """A record value in display units by its key's unit: *_s -> "49.71 ms", *bytes* -> "44.37 GB",
    a count or rate >= 1,000 -> "2,092", else 4 significant digits."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return _v(v)
    if key.endswith("_s"):
        return fmt_s(v)
    if "bytes" in key:
        return fmt_bytes(v)
    if float(v).is_integer() or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def wrap_tex(tex: str, width: int = 90) -> str:
    r"""Break a long LaTeX formula into an ``aligned`` block of lines of about ``width`` source characters:
    at " + ", " - " and ", " outside any ``{...}`` group. ``\left(``/``\right)`` become ``\bigl(``/
    ``\bigr)`` so that a break inside the parentheses stays valid (``\left`` must close on its line). A
    short formula, or one with other ``\left`` delimiters, is returned as is."""
    if len(tex) <= width:
        return tex
    body = tex.replace(r"\left(", r"\bigl(").replace(r"\right)", r"\bigr)")
    if r"\left" in body or r"\right" in body:
        return tex
    pieces, depth, cur = [], 0, ""
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and len(cur) >= width and i > 0 and body[i - 1] == " " and ch in "+-":
            pieces.append(cur.rstrip())
            cur = ""
        cur += ch
        if depth == 0 and len(cur) >= width and ch == "," and body[i + 1 : i + 2] == " ":
            pieces.append(cur)
            cur = ""
    pieces.append(cur.strip())
    pieces = [p for p in pieces if p]
    if len(pieces) == 1:
        return tex
    head = pieces[0]
    eq = head.find("=")
    first = head[:eq] + "&=" + head[eq + 1 :] if eq > 0 and head.count("=") == 1 else "&" + head
    lines = [first] + ["&\\quad " + p.strip() for p in pieces[1:]]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def summary_section(doc: dict, command: str, elasticities: list | None, slo_s: float | None) -> list[str]:
    """The "What to do" section: what is predicted, what binds, the levers that matter most."""
    out = ["## What to do\n\n"]
    if command == "decode":
        dep = doc.get("deployment", {})
        slo = ""
        if slo_s:
            slo = f" ({'within' if doc['tpot_s'] <= slo_s else 'OVER'} the {fmt_s(slo_s)} TPOT SLO)"
        out.append(
            f"- **Predicted**: {doc['tokens_per_s_per_device']:,.0f} tokens/s per device at TPOT "
            f"{fmt_s(doc['tpot_s'])}{slo}, batch {doc['batch_per_device']:g} per device"
            + (f" on {dep['devices']} devices" if "devices" in dep else "")
            + (f", EP{dep['ep_size']}" if "ep_size" in dep else "")
            + (f", framework {dep['framework']}" if dep.get("framework") else "")
            + f"; bounds {fmt_s(doc['lower_tpot_s'])} .. {fmt_s(doc['upper_tpot_s'])}.\n"
        )
        streams = doc["streams"]
        k = max(stage_order(doc), key=lambda k: streams[k]["count"] * streams[k]["period_s"])
        heavy = max(doc["ops"], key=lambda r: r["total_s"])
        step = doc["step_s"]
        out.append(
            f"- **What binds**: the {STAGE_NAMES.get(k, k)} layers ({streams[k]['count']} of them, "
            f"{100 * streams[k]['count'] * streams[k]['period_s'] / step:.0f}% of the step) are bound by "
            f"the {streams[k]['binding']}; the heaviest op is {heavy['stage']}/{heavy['name']} "
            f"({100 * heavy['total_s'] / step:.0f}% of the step, {heavy['bound']}-bound); HBM "
            f"{fmt_bytes(doc['hbm_bytes_per_rank'])} of {fmt_bytes(doc['hbm_capacity_bytes_per_rank'])} "
            f"per rank (largest batch {doc['max_batch_per_device']:,.0f} per device).\n"
        )
        if elasticities:
            groups: dict[float, list] = {}
            for e in elasticities:
                groups.setdefault(round(e.numeric, 6), []).append(e)
            best = sorted(groups.items(), key=lambda kv: (-abs(kv[0]), kv[1][0].parameter))[:3]
            out.append(
                "- **What to change**: the parameters tokens/s per device is most elastic to "
                "(d ln tokens/s / d ln parameter, `cmperf explain`):\n\n"
            )
            rows = [
                (" = ".join(e.parameter for e in es), f"{val:+.3f}", f"{100 * (1.1**val - 1):+.1f}%")
                for val, es in best
            ]
            out.append(markdown_table(("lever", "elasticity", "+10% buys"), rows, "lrr"))
        out.append("\n")
    else:
        tps = doc.get("tokens_per_s_per_device")
        ttft = doc.get("ttft_s")
        bits = []
        if isinstance(tps, int | float):
            bits.append(f"{tps:,.0f} tokens/s per device")
        if isinstance(ttft, int | float):
            bits.append(f"TTFT {fmt_s(ttft)}")
        out.append(f"- **Predicted**: {', '.join(bits) or 'see the headline below'}.\n\n")
    return out


def prefill_section(p: dict | None) -> list[str]:
    """Prefill at the default prefill record (``cmperf.prefill.predict``, ``cmperf prefill``)."""
    if p is None:
        return []
    dep = p.get("deployment", {})
    rows = [
        ("input tokens/s per device", f"{p['tokens_per_s_per_device']:,.0f}"),
        ("TTFT (one batch + KV transfer)", fmt_s(p["ttft_s"])),
        ("batch time", fmt_s(p["batch_s"])),
        ("KV transfer", f"{fmt_s(p['kv_transfer_s'])} over {p['kv_transfer_plane']}"),
        (
            "bounds on tokens/s per device",
            f"{p['lower_tokens_per_s_per_device']:,.0f} .. {p['upper_tokens_per_s_per_device']:,.0f}",
        ),
        (
            "HBM per rank",
            f"{fmt_bytes(p['hbm_bytes_per_rank'])} of {fmt_bytes(p['hbm_capacity_bytes_per_rank'])}",
        ),
    ]
    words = {
        "devices": "{:,} devices",
        "ep_size": "EP{}",
        "tokens_per_device": "{:,.0f} tokens per device",
        "microbatches": "{} microbatches",
    }
    knobs = ", ".join(w.format(dep[k]) for k, w in words.items() if dep.get(k) is not None)
    return [
        "\n## Prefill\n\n`cmperf prefill` at its defaults" + (f" ({knobs})" if knobs else "") + ":\n\n",
        markdown_table(("quantity", "value"), rows, "lr"),
    ]


def serving_section(r: dict | None) -> list[str]:
    """Serving at the default load (``cmperf.serving.evaluate`` on ``default_pools``, ``cmperf serve``)."""
    if r is None:
        return []
    i, slo, m = r["inputs"], r["slo"], r.get("max_rate_rps") or {}
    q = slo["quantile"]
    rows = [
        ("load", f"{r['rate_rps']:g} req/s, prompt {i['prompt_len']:,.0f}, output {i['output_len']:,.0f}"),
        ("pools", f"prefill {i['prefill_devices']} devices, decode {i['decode_devices']} devices"),
        ("TTFT p50 / p90 / p99", " / ".join(fmt_s(r["ttft_s"][k]) for k in ("p50", "p90", "p99"))),
        ("TPOT mean / p99", f"{fmt_s(r['tpot_s']['mean'])} / {fmt_s(r['tpot_s']['p99'])}"),
        (
            "SLO",
            f"TTFT {q} <= {fmt_s(slo['ttft_s'])}, TPOT {q} <= {fmt_s(slo['tpot_s'])}: "
            f"{'met' if r['slo_met'] else 'MISSED'}",
        ),
        (
            "goodput",
            f"{r['goodput_rps']:,.4g} req/s ({100 * r['slo_attainment']:.2f}% within both SLOs), "
            f"{r['goodput_rps_per_device']:.4g} req/s per device",
        ),
        ("binding pool", str(r["bottleneck"])),
    ]
    if m:
        rows.append(
            (
                "SLO holds up to",
                f"{m['both_slo_rps']:,.1f} req/s ({_slo_name(m['binding_slo'])} binds)",
            )
        )
    return [
        "\n## Serving\n\n`cmperf serve` at its defaults (Poisson arrivals, the default pools):\n\n",
        markdown_table(("quantity", "value"), rows, "ll"),
    ]


def _slo_name(text: str) -> str:
    """ "ttft (prefill pool)" -> "TTFT (prefill pool)"."""
    return text.replace("ttft", "TTFT").replace("tpot", "TPOT")


#: Columns of the validation table (``validate.TABLE_HEADER``): numbers right-aligned.
VALIDATION_ALIGN = "lrrrrll"


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
    elasticities: list | None = None,
    prefill: dict | None = None,
    serving: dict | None = None,
    slo_tpot_s: float | None = None,
) -> str:
    """The report's text: summary first, then decode, prefill, serving, the optimizer, validation, closed
    forms, and the inputs and sources in appendices. Deterministic: the same inputs, the same bytes."""
    parts = [
        f"# cmperf report: {scenario.name}\n\n",
        f"{scenario.description}\n\n" if scenario.description else "",
        f"Setup source: {scenario.source}\n\n" if scenario.source else "",
        f"Generated by cmperf {version} (`cmperf {scenario.command} --scenario {scenario.name}`); "
        f"spec hash `{spec_hash}`. Inputs, deployment and every cited source: appendices.\n\n",
    ]
    parts += summary_section(doc, scenario.command, elasticities, slo_tpot_s)
    parts += decode_sections(doc) if scenario.command == "decode" else generic_sections(doc)
    if sweep is not None:
        rows = [
            (f"{b:g}", _nb(fmt_s(t)), f"{x:,.0f}", "yes" if f else "no (HBM)")
            for b, t, x, f in zip(
                sweep["batch"],
                sweep["tpot_s"],
                sweep["tokens_per_s_per_device"],
                sweep["feasible"],
                strict=True,
            )
        ]
        point = (float(doc["tpot_s"]), float(doc["tokens_per_s_per_device"])) if "tpot_s" in doc else None
        parts += [
            "\n## Throughput vs TPOT\n\nOne vectorized `decode.evaluate` over the batch per device; "
            "other knobs as deployed.\n\n",
            mermaid_chart(sweep, slo_tpot_s, point),
            "\n",
            chart_caption(sweep, slo_tpot_s, point),
            markdown_table(("batch per device", "TPOT", "tokens/s per device", "fits in HBM"), rows, "rrrl"),
        ]
    parts += prefill_section(prefill)
    parts += serving_section(serving)
    parts += optimizer_section(*optimizer)
    parts += [
        "\n## Validation against published numbers\n\n`cmperf validate`: error = predicted / published - 1."
        "\n\n",
        markdown_table(*validation, VALIDATION_ALIGN),
    ]
    parts.append("\n## Closed forms\n\n")
    if forms:
        parts.append(forms_note + "\n\n")
        for title, tex in forms:
            parts.append(f"**{title}**\n\n$$\n{wrap_tex(tex)}\n$$\n\n")
    else:
        parts.append(forms_note + "\n")
    parts += [
        "\n## Inputs\n\n",
        markdown_table(
            ("kind", "name", "file"),
            [
                ("scenario", scenario.name, _name(scenario.path)),
                ("system", system.name, _name(system.path)),
                ("chip", system.chip.name, _name(system.chip.path)),
                ("model", model.name, _name(model.path)),
            ],
            "lll",
        ),
        "\n## Deployment\n\n",
        markdown_table(
            ("knob", "value"),
            [(k, _v(v)) for k, v in sorted(doc.get("deployment", {}).items())]
            or [(k, _v(v)) for k, v in sorted(scenario.options.items())],
            "ll",
        ),
        "\n## Appendix: sources\n\nEvery number in the spec files carries its source (value as written in "
        "the file):\n\n",
        markdown_table(("spec", "key", "value", "source"), sources_rows(system, model), "llrl"),
    ]
    return "".join(parts).rstrip("\n") + "\n"
