"""Charts: a character Pareto chart for the terminal, and PNG/SVG images (``--plot``) through matplotlib.

``text_chart`` is plain Python (no dependency): ``cmperf pareto``'s table output. The images need the
optional extra ``cmperf[plot]`` (``extras.require``: a missing one is one line naming ``--plot``), imported
only when drawn, on matplotlib's object API (no pyplot, no global backend) with the default style, so a
user's matplotlibrc changes nothing. Every image function returns bytes; the CLI writes them atomically.
Deterministic: the same inputs give the same bytes (SVG: fixed ``svg.hashsalt``, no date).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CmperfError
from .extras import require

#: Image formats by file suffix.
FORMATS = {".png": "png", ".svg": "svg"}


def image_format(path: str) -> str:
    """ "png" or "svg" from ``path``'s suffix (any case); any other suffix is bad input naming --plot."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CmperfError(f"--plot: {path!r} must end in .png or .svg (the suffix picks the image format)")
    return fmt


def nice_step(span: float, n: int) -> float:
    """A 1/2/5 x 10^k step that cuts ``span`` into at most ``n`` intervals: (60, 16) -> 5."""
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1.0, 2.0, 5.0, 10.0) if m * mag >= raw)


def _ticks(lo: float, hi: float, n: int) -> tuple[float, float, float]:
    """(axis start, axis end, step): ``lo..hi`` widened to multiples of a nice step, at most ``n`` steps."""
    step = nice_step(hi - lo, n) if hi > lo else nice_step(abs(hi) or 1.0, 1)
    start, end = math.floor(lo / step) * step, math.ceil(hi / step) * step
    return start, (end if end > start else start + step), step


def _tick_text(v: float, step: float) -> str:
    dec = 0 if step >= 1 else min(6, -math.floor(math.log10(step)))
    return f"{v:,.{dec}f}"


# ------------------------------------------------------------------------------------------ terminal


def text_chart(
    frontier: Sequence[tuple[float, float]],
    cloud: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    width: int,
    height: int = 16,
    x_label: str = "TPOT (ms)",
    y_label: str = "tokens/s per device",
) -> str:
    """A character scatter of ``frontier`` (x, y) points ("*") over ``cloud`` (xs, ys: the other points,
    "·" where a cell holds any), on a numeric x axis over the frontier's range and y from 0; every line at
    most ``width`` characters. A cloud point outside the frontier's x range is left out (it is
    dominated: slower than the frontier's end, or a lower TPOT than any point that fits)."""
    import numpy as np

    if not frontier:
        return ""
    fx = np.array([p[0] for p in frontier], dtype=float)
    fy = np.array([p[1] for p in frontier], dtype=float)
    x0, x1, xs = _ticks(float(fx.min()), float(fx.max()), max(2, (width - 10) // 10))
    y0, y1, ys = _ticks(0.0, float(fy.max()), max(2, height // 4))
    ylab = max(len(_tick_text(v, ys)) for v in (y0, y1))
    cols, rows = max(10, width - ylab - 2), height
    grid = [[" "] * cols for _ in range(rows)]

    def cells(x, y):
        c = np.rint((np.asarray(x, float) - x0) / (x1 - x0) * (cols - 1)).astype(int)
        r = np.rint((np.asarray(y, float) - y0) / (y1 - y0) * (rows - 1)).astype(int)
        ok = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
        return c[ok], r[ok]

    n_cloud = 0
    if cloud is not None:
        cx, cy = np.asarray(cloud[0], float), np.asarray(cloud[1], float)
        n_cloud = int(((cx >= x0) & (cx <= x1)).sum())
        for c, r in set(zip(*(a.tolist() for a in cells(cx, cy)), strict=True)):
            grid[rows - 1 - r][c] = "·"
    for c, r in zip(*cells(fx, fy), strict=True):
        grid[rows - 1 - r][c] = "*"
    y_at = {
        round(float(v - y0) / (y1 - y0) * (rows - 1)): _tick_text(v, ys)
        for v in np.arange(y0, y1 + ys / 2, ys)
    }
    legend = [f"* Pareto frontier ({len(frontier)})"]
    if cloud is not None:
        legend.append(f"· other configurations that fit ({n_cloud:,})")
    one_line = "   ".join(legend)
    out = [*([one_line] if len(one_line) <= width else legend), y_label]
    for i, line in enumerate(grid):
        r = rows - 1 - i
        lab = y_at.get(r, "")
        out.append(f"{lab:>{ylab}} {'┤' if lab else '│'}" + "".join(line).rstrip())
    axis, labels = ["─"] * cols, [" "] * (cols + ylab + 2)
    for v in np.arange(x0, x1 + xs / 2, xs):
        c = round(float(v - x0) / (x1 - x0) * (cols - 1))
        axis[c] = "┬"
        t = _tick_text(v, xs)
        at = min(max(ylab + 2 + c - len(t) // 2, 0), len(labels) - len(t))
        if all(ch == " " for ch in labels[max(at - 1, 0) : at + len(t) + 1]):
            labels[at : at + len(t)] = t
    out.append(" " * ylab + " └" + "".join(axis))
    out.append("".join(labels).rstrip())
    out.append(f"{x_label:^{ylab + 2 + cols}}".rstrip())
    return "\n".join(line[:width].rstrip() for line in out) + "\n"


# ------------------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class Frontier:
    """One panel: tokens/s per device against a time (``metric``: "TPOT" or "TTFT", seconds), the
    frontier as a line with markers, optional other configurations, the SLO (a vertical line) and the
    chosen operating point (a star)."""

    metric: str
    time_s: Sequence[float]
    tokens_per_s: Sequence[float]
    label: str = "Pareto frontier"
    others: tuple[Sequence[float], Sequence[float]] | None = None
    others_label: str = ""
    slo_s: float | None = None
    chosen: tuple[float, float] | None = None
    chosen_label: str = "chosen"


#: Colours (matplotlib's tab10): frontier, others, SLO, chosen point.
BLUE, GREY, RED, GREEN = "#1f77b4", "#9a9a9a", "#d62728", "#2ca02c"
#: Bar colour of each binding ceiling in the per-op chart.
BOUND_COLOURS = {"compute": "#1f77b4", "memory": "#ff7f0e", "link": "#2ca02c", "latency": "#9467bd"}


def _time_unit(values: Sequence[float]) -> tuple[str, float]:
    """("ms", 1e3) when every time is under 1 s, else ("s", 1)."""
    return ("ms", 1e3) if max(values, default=0.0) < 1.0 else ("s", 1.0)


def _fmt_time(x: float) -> str:
    from .units import fmt_s

    return fmt_s(x)


def _image(draw, fmt: str, ncols: int = 1, size: tuple[float, float] = (7.5, 4.8)) -> bytes:
    """Bytes of a figure ``draw(fig, axes)`` fills, in ``fmt`` ("png" or "svg"), deterministically."""
    import io

    mpl = require("matplotlib", "--plot")
    from matplotlib import style
    from matplotlib.figure import Figure

    with style.context("default"), mpl.rc_context({"svg.hashsalt": "cmperf", "svg.fonttype": "path"}):
        fig = Figure(figsize=(size[0] * ncols, size[1]), dpi=100, layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        draw(fig, axes)
        buf = io.BytesIO()
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, metadata=meta, dpi=100)
    return buf.getvalue()


def _frontier_axes(ax, p: Frontier) -> None:
    times = list(p.time_s) + ([p.slo_s] if p.slo_s else []) + ([p.chosen[0]] if p.chosen else [])
    unit, k = _time_unit(times)
    if p.others is not None and len(p.others[0]):
        ax.scatter(
            [t * k for t in p.others[0]],
            p.others[1],
            s=42,
            facecolors="none",
            edgecolors=GREY,
            linewidths=1.2,
            label=p.others_label,
            zorder=4,
        )
    ax.plot(
        [t * k for t in p.time_s],
        p.tokens_per_s,
        color=BLUE,
        marker="o",
        markersize=4,
        linewidth=1.5,
        label=f"{p.label} ({len(p.time_s)} points)",
        zorder=3,
    )
    if p.slo_s:
        ax.axvline(
            p.slo_s * k,
            color=RED,
            linestyle="--",
            linewidth=1.2,
            label=f"{p.metric} SLO {_fmt_time(p.slo_s)}",
        )
    if p.chosen:
        t, y = p.chosen
        ax.plot(
            [t * k],
            [y],
            linestyle="none",
            marker="*",
            markersize=15,
            color=GREEN,
            markeredgecolor="black",
            label=f"{p.chosen_label}: {y:,.0f} tokens/s at {_fmt_time(t)}",
            zorder=5,
        )
    ax.set_xlabel(f"{p.metric} ({unit})")
    ax.set_ylabel("tokens/s per device")
    ys = list(p.tokens_per_s) + (list(p.others[1]) if p.others else []) + ([p.chosen[1]] if p.chosen else [])
    ax.set_ylim(0, 1.08 * max(ys, default=1.0))
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.yaxis.set_major_formatter(_thousands())
    ax.legend(loc="lower right", fontsize="small")


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def frontier_image(fmt: str, title: str, panels: Sequence[Frontier]) -> bytes:
    """Tokens/s per device against TPOT or TTFT, one panel per ``Frontier`` side by side (``pareto``:
    one, ``optimize``: decode and prefill)."""

    def draw(fig, axes):
        for ax, p in zip(axes, panels, strict=True):
            _frontier_axes(ax, p)
            ax.set_title(
                f"{'decode' if p.metric == 'TPOT' else 'prefill'}: tokens/s per device vs {p.metric}"
            )
        fig.suptitle(title)

    return _image(draw, fmt, ncols=len(panels))


def ops_image(fmt: str, title: str, ops, max_ops: int | None = 15) -> bytes:
    """Horizontal bars of the heaviest ops by time per step (count x per call, before overlap), heaviest on
    top, coloured by the op's binding ceiling (decode and prefill take one deployment, no sweep: this is
    what one prediction has)."""
    from .render import top_ops

    shown, hidden = top_ops(ops, max_ops)
    shown = sorted(shown, key=lambda r: (-r.total_s, r.stage, r.name))
    unit, k = _time_unit([r.total_s for r in shown])
    names = [f"{r.stage}/{r.name}" for r in shown][::-1]
    vals = [r.total_s * k for r in shown][::-1]
    bounds = [r.bound for r in shown][::-1]

    def draw(fig, axes):
        ax = axes[0]
        ax.barh(names, vals, color=[BOUND_COLOURS.get(b, GREY) for b in bounds], zorder=2)
        for y, v in enumerate(vals):
            ax.annotate(
                f"{v:#.3g}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
            )
        from matplotlib.patches import Patch

        seen = [b for b in BOUND_COLOURS if b in bounds]
        ax.legend(
            [Patch(color=BOUND_COLOURS[b]) for b in seen],
            [f"{b}-bound" for b in seen],
            loc="lower right",
            fontsize="small",
        )
        ax.set_xlabel(f"time per step, before overlap ({unit})")
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
        ax.tick_params(axis="y", labelsize=7)
        more = f" ({hidden} lighter ops not shown)" if hidden else ""
        ax.set_title(f"the {len(shown)} heaviest ops per step{more}", fontsize="medium")
        fig.suptitle(title)

    return _image(draw, fmt, size=(8.0, max(3.0, 1.2 + 0.28 * len(shown))))


def systems_image(fmt: str, title: str, metric: str, names, time_s, tokens_per_s) -> bytes:
    """One point per system: tokens/s per device against TPOT or TTFT (``compare``), each labelled."""
    unit, k = _time_unit(list(time_s))
    markers = "osD^vP*Xh<>p"

    def draw(fig, axes):
        ax = axes[0]
        for i, (n, t, y) in enumerate(zip(names, time_s, tokens_per_s, strict=True)):
            ax.plot(
                [t * k],
                [y],
                linestyle="none",
                marker=markers[i % len(markers)],
                markersize=9,
                label=f"{n}: {y:,.0f} tokens/s at {_fmt_time(t)}",
            )
            ax.annotate(n, (t * k, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
        ax.set_xlabel(f"{metric} ({unit})")
        ax.set_ylabel("tokens/s per device")
        ax.set_xlim(0, 1.25 * max(t * k for t in time_s))
        ax.set_ylim(0, 1.2 * max(tokens_per_s))
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.yaxis.set_major_formatter(_thousands())
        ax.legend(loc="lower right", fontsize="small")
        fig.suptitle(title)

    return _image(draw, fmt)


def search_panel(phase: str, pareto, top=(), slo_s: float | None = None, best=None, best_label="chosen"):
    """The ``Frontier`` of a decode or prefill search (``search.DecodeSearch`` / ``PrefillSearch``
    records): its frontier, its top configurations, the SLO and the best configuration."""
    key = "tpot_s" if phase == "decode" else "ttft_s"
    front = {(getattr(c, key), c.tokens_per_s_per_device) for c in pareto}
    rest = [c for c in top if (getattr(c, key), c.tokens_per_s_per_device) not in front]
    return Frontier(
        metric="TPOT" if phase == "decode" else "TTFT",
        time_s=[getattr(c, key) for c in pareto],
        tokens_per_s=[c.tokens_per_s_per_device for c in pareto],
        others=([getattr(c, key) for c in rest], [c.tokens_per_s_per_device for c in rest]) if rest else None,
        others_label=f"other top configurations ({len(rest)})",
        slo_s=slo_s,
        chosen=None if best is None else (getattr(best, key), best.tokens_per_s_per_device),
        chosen_label=best_label,
    )


def search_text_chart(phase: str, pareto, grid=None, devices: int = 0, width: int = 100) -> str:
    """``text_chart`` of a search's frontier, in ms (decode TPOT) or s (prefill TTFT), over the other
    configurations that fit on ``devices`` when the decode grid (``search.DecodeGrid``) is given."""
    key = "tpot_s" if phase == "decode" else "ttft_s"
    unit, k = _time_unit([getattr(c, key) for c in pareto])
    cloud = None
    if grid is not None:
        fits = grid.placement_ok & grid.hbm_ok & (grid.devices <= devices)
        cloud = (grid.tpot_s[fits] * k, grid.tokens_per_s_per_device[fits])
    return text_chart(
        [(getattr(c, key) * k, c.tokens_per_s_per_device) for c in pareto],
        cloud,
        width=width,
        x_label=f"{'TPOT' if phase == 'decode' else 'TTFT'} ({unit})",
    )


def prediction_image(fmt: str, phase: str, p, max_ops: int | None) -> bytes:
    """``ops_image`` of a decode or prefill prediction, its headline in the title."""
    if phase == "decode":
        head = f"TPOT {_fmt_time(p.tpot_s)}, {p.tokens_per_s_per_device:,.0f} tokens/s per device"
    else:
        head = f"TTFT {_fmt_time(p.ttft_s)}, {p.tokens_per_s_per_device:,.0f} input tokens/s per device"
    return ops_image(fmt, f"cmperf {phase}: {p.model} on {p.system}, {head}", p.ops, max_ops)
