"""Measured operating points: read a points CSV (schema: docs/points.md), predict each, compare TPOT and TTFT.

A row is posed as one worker (``Deployment``) of attn_tp x attn_dp = moe_tp x moe_ep ranks: attention TP
``attn_tp`` (``Deployment.attn_tp``), MoE TP ``moe_tp`` and EP ``moe_ep``; batch per attention-DP rank from
the row, else concurrency / (attn_dp x workers), so batch per device = batch per rank x attn_dp / devices; KV
from ISL and OSL as ``cmperf decode --prompt-len/--output-len`` takes them (``deployment.kv_lengths``); MTP 0
when the row does not record it; ``microbatches="auto"``; the framework profile of the row's backend
(``BACKEND_FRAMEWORKS``: trtllm -> tensorrt-llm, sglang -> sglang; frameworks/*.toml). A disaggregated row is
a decode instance (``decode.predict``); an aggregated row (one engine with in-flight batching) is an
aggregated engine of the worker's devices under a closed loop of the row's concurrency per worker
(``aggregated.evaluate``: TPOT with the prefill chunk in every step, TTFT with queueing). Every other row is
skipped with a one-word reason (``REASONS``). error = predicted / measured - 1 (TPOT; TTFT for posed
aggregated rows that measured it); statistics are over posed rows.

Worked number (a synthetic row, as in tests/test_points.py): hgx-h200, attn_dp = moe_ep = 8, batch 16 per
GPU, ISL 1024 / OSL 1024, FP8 -> ``cmperf decode --system hgx-h200 --devices 8 --ep 8 --batch 16
--prompt-len 1024 --output-len 1024 --mtp 0 --framework tensorrt-llm``: TPOT 36.17 ms (35.75 ms of layers
and head + TensorRT-LLM's 0.400 ms step time), moe.experts.up (memory) the heaviest op; against a measured
30 ms the error is +20.6%.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import CmperfError
from .frameworks import ENGINE_PROFILES
from .specs import DTYPE_BYTES

if TYPE_CHECKING:
    from .deployment import Deployment

#: column -> (kind, required). Kinds: text, mode, dtype, count (whole >= 1), count0 (whole >= 0), number
#: (> 0), fraction ([0, 1]), seconds (> 0). An optional cell may be empty (unknown).
COLUMNS: dict[str, tuple[str, bool]] = {
    "id": ("text", True),
    "system": ("text", True),
    "model": ("text", True),
    "backend": ("text", True),
    "backend_version": ("text", False),
    "mode": ("mode", True),
    "attn_tp": ("count", False),
    "attn_dp": ("count", False),
    "moe_tp": ("count", False),
    "moe_ep": ("count", False),
    "workers": ("count", False),
    "batch_per_rank": ("number", False),
    "concurrency": ("count", False),
    "isl": ("count", True),
    "osl": ("count", True),
    "mtp": ("count0", False),
    "mtp_accept": ("fraction", False),
    "weights": ("dtype", False),
    "experts_dtype": ("dtype", False),
    "kv_dtype": ("dtype", False),
    "tpot_s": ("seconds", True),
    "ttft_s": ("seconds", False),
    "tokens_per_s_per_device": ("number", False),
    "copies": ("count", False),
    "source": ("text", False),
}
MODES = ("disagg", "agg")

#: Why a row is not posed, in the order they are tested.
REASONS = {
    "unknown-system": "no system spec of that name (`cmperf specs list`)",
    "unknown-model": "no model spec of that name",
    "incomplete": "a parallel degree, or the batch (batch_per_rank, or concurrency and workers), is empty; "
    "an aggregated row without its concurrency",
    "attention-tp": "tensor-parallel attention (attn_tp > 1): cmperf's decode attention is data-parallel",
    "moe-tp": "MoE tensor parallelism (moe_tp > 1): cmperf's MoE is pure expert-parallel",
    "dtype": "a datatype the system's chip has no peak for",
    "invalid": "the deployment fails cmperf's checks (the note has the first reason)",
}

#: Upper bounds (inclusive) of the batch-per-rank ranges the statistics group by.
BATCH_EDGES = (8, 32, 128, 512)


@dataclass(frozen=True)
class Point:
    """One CSV row, typed (None: an empty optional cell); ``row`` is its 1-based data row number."""

    row: int
    cells: dict[str, str | int | float | None]

    def __getattr__(self, name: str):
        try:
            return self.__dict__["cells"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class Result:
    """A row's prediction (``status`` "posed") or why it was not posed (``status`` "skipped")."""

    id: str
    row: int
    system: str
    model: str
    backend: str
    mode: str
    batch_per_rank: float | None
    batch_range: str
    isl: int
    osl: int
    devices: int | None
    ep_size: int | None
    measured_tpot_s: float
    predicted_tpot_s: float | None
    error: float | None  # predicted / measured - 1
    measured_tokens_per_s_per_device: float | None
    predicted_tokens_per_s_per_device: float | None
    feasible: bool | None
    microbatches: int | None
    binding_op: str  # the heaviest op per step and its ceiling, "moe.combine (link)"
    status: str  # posed | skipped
    reason: str  # a REASONS key ("" when posed)
    note: str = ""
    attn_tp: int | None = None
    moe_tp: int | None = None
    concurrency: float | None = None  # aggregated rows: the closed loop's users per worker
    measured_ttft_s: float | None = None
    # aggregated rows: the mean TTFT of the closed loop's first wave (its users started at once), the
    # prediction compared; and the steady state's mean TTFT (queueing included), reported beside it
    predicted_ttft_s: float | None = None
    ttft_error: float | None = None  # predicted / measured TTFT - 1
    predicted_ttft_steady_s: float | None = None
    ttft_steady_error: float | None = None
    prefill_share: float | None = None  # aggregated rows: share of the mixed step the prefill chunk takes
    backend_version: str = ""  # the serving stack's version the row was measured on ("" not stated)


@dataclass(frozen=True)
class VersionGroup:
    """TPOT error statistics of the posed rows of one (system, backend, mode, stack version)."""

    system: str
    backend: str
    mode: str
    backend_version: str  # "" when the rows do not state it
    posed: int
    median_abs_error: float | None
    p90_abs_error: float | None
    median_error: float | None


@dataclass(frozen=True)
class Group:
    """TPOT error statistics of one (system, backend, mode, batch range); "all" marks a subtotal."""

    system: str
    backend: str
    mode: str
    batch_range: str
    posed: int
    skipped: int
    skipped_by_reason: dict[str, int]
    median_abs_error: float | None
    p90_abs_error: float | None
    median_error: float | None
    ttft_posed: int = 0  # posed rows with a measured and a predicted TTFT (aggregated)
    ttft_median_abs_error: float | None = None
    ttft_p90_abs_error: float | None = None
    ttft_median_error: float | None = None


@dataclass(frozen=True)
class Repeat:
    """One configuration measured more than once with different TPOTs (the data's noise floor)."""

    system: str
    backend: str
    mode: str
    ids: list[str]
    min_tpot_s: float
    max_tpot_s: float
    spread: float  # max / min - 1


# ---------------------------------------------------------------------------------------------- reading


def _cell(kind: str, text: str, where: str):
    if kind == "text":
        return text
    if kind == "mode":
        if text not in MODES:
            raise CmperfError(f"{where}: {text!r} is not one of {', '.join(MODES)}")
        return text
    if kind == "dtype":
        if text not in DTYPE_BYTES:
            raise CmperfError(f"{where}: unknown datatype {text!r} (one of {', '.join(DTYPE_BYTES)})")
        return text
    try:
        x = float(text)
    except ValueError:
        raise CmperfError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(x):
        raise CmperfError(f"{where}: {text!r} is not a finite number")
    if kind in ("count", "count0"):
        lo = 1 if kind == "count" else 0
        if not x.is_integer() or x < lo:
            raise CmperfError(f"{where}: {text!r} is not a whole number >= {lo}")
        return int(x)
    if kind == "fraction":
        if not 0.0 <= x <= 1.0:
            raise CmperfError(f"{where}: {text!r} is outside [0, 1]")
        return x
    if not x > 0:
        raise CmperfError(f"{where}: {text!r} must be > 0")
    return x


def read(path: str | Path) -> list[Point]:
    """The rows of a points CSV, typed; CmperfError naming the file, row and column on bad input."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise CmperfError(f"--points {path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CmperfError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        if not header:
            raise CmperfError(f"{path}: no header row; the columns are in docs/points.md")
        header = [h.strip() for h in header]
        for h in header:
            if h not in COLUMNS:
                raise CmperfError(f"{path}: header: unknown column {h!r} (the columns are in docs/points.md)")
        if len(set(header)) != len(header):
            dup = next(h for h in header if header.count(h) > 1)
            raise CmperfError(f"{path}: header: column {dup} is given twice")
        missing = [c for c, (_, req) in COLUMNS.items() if req and c not in header]
        if missing:
            raise CmperfError(f"{path}: header: required column {missing[0]} is missing")
        out, ids = [], set()
        for n, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise CmperfError(f"{path}: row {n}: {len(cells)} cells, the header has {len(header)}")
            typed: dict[str, str | int | float | None] = dict.fromkeys(COLUMNS)
            for col, raw in zip(header, cells, strict=True):
                kind, req = COLUMNS[col]
                where = f"{path}: row {n}, column {col}"
                raw = raw.strip()
                if not raw:
                    if req:
                        raise CmperfError(f"{where}: empty; this column is required")
                    continue
                typed[col] = _cell(kind, raw, where)
            deg = [typed[c] for c in ("attn_tp", "attn_dp", "moe_tp", "moe_ep")]
            if all(isinstance(d, int) for d in deg):
                attn, moe = int(deg[0] or 0) * int(deg[1] or 0), int(deg[2] or 0) * int(deg[3] or 0)
                if attn != moe:
                    raise CmperfError(
                        f"{path}: row {n}, column moe_ep: attn_tp x attn_dp = {attn} ranks but moe_tp x "
                        f"moe_ep = {moe}; both count the ranks of one worker"
                    )
            if typed["id"] in ids:
                raise CmperfError(f"{path}: row {n}, column id: {typed['id']!r} is given twice")
            ids.add(typed["id"])
            out.append(Point(n, typed))
    except csv.Error as e:
        raise CmperfError(f"{path}: row {reader.line_num - 1}: malformed CSV ({e})") from None
    return out


# ---------------------------------------------------------------------------------------------- posing


def batch_per_rank(pt: Point) -> float | None:
    """Decode sequences per attention-DP rank: the row's, else concurrency / (attn_dp x workers)."""
    if pt.batch_per_rank is not None:
        return float(pt.batch_per_rank)
    if None in (pt.concurrency, pt.attn_dp, pt.workers):
        return None
    return pt.concurrency / (pt.attn_dp * pt.workers)


def batch_range(batch: float | None) -> str:
    if batch is None:
        return "?"
    lo = 1
    for hi in BATCH_EDGES:
        if batch <= hi:
            return f"{lo}-{hi}"
        lo = hi + 1
    return f">{BATCH_EDGES[-1]}"


def tp_modelled() -> bool:
    """Whether cmperf's decode models attention TP and MoE TP (``Deployment.attn_tp`` / ``moe_tp`` reach
    the step: ``decode.parallel_of``); rows with either > 1 are skipped until it does."""
    from . import decode

    return hasattr(decode, "parallel_of")


def concurrency_per_worker(pt: Point) -> float | None:
    """An aggregated row's closed-loop users per worker: concurrency / workers (workers empty: 1), else
    batch per rank x attn_dp."""
    workers = pt.workers or 1
    if pt.concurrency is not None:
        return pt.concurrency / workers
    if pt.batch_per_rank is not None and pt.attn_dp is not None:
        return float(pt.batch_per_rank) * pt.attn_dp
    return None


#: The framework profile (frameworks/*.toml) a row's backend runs on; a backend not listed runs on none.
BACKEND_FRAMEWORKS = ENGINE_PROFILES


def pose(pt: Point, system, model, frameworks: bool = True):
    """(``Deployment``, "", "") for a row cmperf can express on ``system``, else (None, reason, note); the
    note of an ``invalid`` row is the check that failed. An aggregated row's record is its engine's
    (``aggregated.Engine``): the batch is set by the closed loop, the record's is the row's. With
    ``frameworks`` the record names the backend's framework profile (``BACKEND_FRAMEWORKS``)."""
    from .deployment import Deployment, kv_lengths, precision_from

    degrees = (pt.attn_tp, pt.attn_dp, pt.moe_tp, pt.moe_ep)
    batch = batch_per_rank(pt)
    if None in degrees or batch is None:
        return None, "incomplete", ""
    if pt.mode == "agg" and concurrency_per_worker(pt) is None:
        return None, "incomplete", ""
    tp = tp_modelled()
    if pt.attn_tp > 1 and not tp:
        return None, "attention-tp", ""
    if pt.moe_tp > 1 and not tp:
        return None, "moe-tp", ""
    try:
        prec = precision_from(system, pt.weights, pt.experts_dtype, pt.kv_dtype)
    except CmperfError as e:
        return None, "dtype", str(e)
    ranks = pt.attn_tp * pt.attn_dp
    if ranks % system.ranks_per_device:
        return None, "invalid", f"{ranks} ranks are not whole {system.chip.name} devices"
    try:
        kv_len, kv_cap, kv_cv = kv_lengths(model, pt.isl, pt.osl)
    except CmperfError as e:
        return None, "invalid", str(e)
    devices = ranks // system.ranks_per_device
    knobs = {"attn_tp": pt.attn_tp, "moe_tp": pt.moe_tp} if tp else {}
    dep = Deployment(
        devices=devices,
        ep_size=pt.moe_ep,
        batch_per_device=batch * pt.attn_dp / devices,
        kv_len=kv_len,
        kv_capacity_len=kv_cap,
        kv_cv=kv_cv,
        mtp=pt.mtp if pt.mtp is not None else 0,
        precision=prec,
        framework=BACKEND_FRAMEWORKS.get(pt.backend) if frameworks else None,
        **knobs,
    )
    if pt.mtp_accept is not None:
        dep = replace(dep, mtp_accept=pt.mtp_accept)
    problems = dep.check(system, model)
    return (None, "invalid", problems[0]) if problems else (dep, "", "")


def _specs(pt: Point, spec_dirs, cache: dict):
    """(system, model, reason) of a row; reason unknown-system / unknown-model when a spec is missing."""
    from . import specs

    for kind in ("system", "model"):
        name = getattr(pt, kind)
        if (kind, name) not in cache:
            try:
                specs.find(name, kind, spec_dirs)
            except CmperfError:
                cache[kind, name] = None
            else:
                load = specs.load_system if kind == "system" else specs.load_model
                cache[kind, name] = load(name, spec_dirs)
        if cache[kind, name] is None:
            return None, None, f"unknown-{kind}"
    return cache["system", pt.system], cache["model", pt.model], ""


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _predict_agg(pt: Point, system, model, dep):
    """(decode prediction at the operating point, aggregated result) of an aggregated row: a closed loop
    of the row's concurrency per worker on an engine of ``dep`` (``aggregated.evaluate``), then
    ``decode.predict`` at the engine's batch, chunk and microbatches for the per-op breakdown."""
    from . import aggregated, decode
    from .serving import Workload

    n = concurrency_per_worker(pt)
    wl = Workload(rate_per_s=None, concurrency=max(round(n or 1), 1), prompt_len=pt.isl, output_len=pt.osl)
    res = aggregated.evaluate(system, model, wl, aggregated.Engine(dep), limits=False)
    at = replace(
        dep,
        batch_per_device=res.batch_per_device,
        prefill_chunk_tokens=res.chunk_tokens_per_step / res.inputs["devices"],
        prompt_len=float(pt.isl),
        microbatches=res.microbatches,
    )
    return decode.predict(system, model, at), res


def evaluate(
    points: list[Point],
    spec_dirs: tuple[str, ...] | list[str] = (),
    frameworks: bool = True,
    adjust: Callable[[Deployment], Deployment] | None = None,
) -> list[Result]:
    """One ``Result`` per row, in file order: posed disaggregated rows through ``decode.predict``,
    aggregated ones through ``aggregated.evaluate`` (``_predict_agg``). ``frameworks``: each row runs on
    its backend's framework profile (``BACKEND_FRAMEWORKS``); False: on none (the model without them).
    ``adjust``: applied to every posed row's record before it is predicted (a mechanism switched off,
    scripts/mechanisms.py); its check failing makes the row ``invalid``."""
    from . import decode

    cache: dict = {}
    out = []
    for pt in points:
        system, model, reason = _specs(pt, spec_dirs, cache)
        dep, note = None, ""
        if not reason:
            dep, reason, note = pose(pt, system, model, frameworks)
        if dep is not None and adjust is not None:
            dep = adjust(dep)
            problems = dep.check(system, model)
            if problems:
                dep, reason, note = None, "invalid", problems[0]
        p = agg = None
        if dep is not None and pt.mode == "agg":
            try:
                p, agg = _predict_agg(pt, system, model, dep)
            except CmperfError as e:
                dep, reason, note = None, "invalid", str(e)
            if agg is not None and agg.overloaded:  # a closed loop has a steady state; the chunk budget not
                dep, reason, note, p, agg = None, "invalid", "; ".join(agg.overload_reasons), None, None
        elif dep is not None:
            p = decode.predict(system, model, dep)
        batch = batch_per_rank(pt)
        heavy = max(p.ops, key=lambda o: o.total_s) if p is not None else None
        measured_tps = pt.tokens_per_s_per_device
        tpot = (agg.tpot_s["mean"] if agg is not None else p.tpot_s) if p is not None else None
        ttft = _finite(agg.ttft_first_wave_s) if agg is not None else None
        steady = _finite(agg.ttft_s["mean"]) if agg is not None else None
        m_ttft = pt.ttft_s
        out.append(
            Result(
                id=pt.id,
                row=pt.row,
                system=pt.system,
                model=pt.model,
                backend=pt.backend,
                mode=pt.mode,
                batch_per_rank=batch,
                batch_range=batch_range(batch),
                isl=pt.isl,
                osl=pt.osl,
                devices=dep.devices if dep is not None else None,
                ep_size=dep.ep_size if dep is not None else None,
                measured_tpot_s=pt.tpot_s,
                predicted_tpot_s=tpot,
                error=tpot / pt.tpot_s - 1.0 if tpot is not None else None,
                measured_tokens_per_s_per_device=measured_tps,
                predicted_tokens_per_s_per_device=(
                    (agg.tokens_per_s_per_device if agg is not None else p.tokens_per_s_per_device)
                    if p
                    else None
                ),
                feasible=p.feasible if p else None,
                microbatches=int(p.deployment["microbatches"]) if p else None,
                binding_op=f"{heavy.name} ({heavy.bound})" if heavy else "",
                status="posed" if p else "skipped",
                reason=reason,
                note=note,
                attn_tp=pt.attn_tp,
                moe_tp=pt.moe_tp,
                concurrency=concurrency_per_worker(pt) if pt.mode == "agg" else None,
                measured_ttft_s=pt.ttft_s,
                predicted_ttft_s=ttft,
                ttft_error=ttft / m_ttft - 1.0 if ttft is not None and m_ttft is not None else None,
                predicted_ttft_steady_s=steady,
                ttft_steady_error=steady / m_ttft - 1.0
                if steady is not None and m_ttft is not None
                else None,
                prefill_share=agg.prefill_share if agg is not None else None,
                backend_version=pt.backend_version or "",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- statistics


def _stats(errors: list[float]) -> tuple[float | None, float | None, float | None]:
    """(median |error|, p90 |error| (numpy's linear interpolation), median error) or Nones."""
    if not errors:
        return None, None, None
    a = np.asarray(errors, dtype=float)
    return float(np.median(np.abs(a))), float(np.percentile(np.abs(a), 90)), float(np.median(a))


def _range_order(r: str) -> int:
    labels = [batch_range(float(e)) for e in BATCH_EDGES] + [f">{BATCH_EDGES[-1]}", "?", "all"]
    return labels.index(r)


def groups(results: list[Result]) -> list[Group]:
    """Per (system, backend, mode): a row per batch range with a posed row, then the subtotal ("all");
    last, every row ("all" everywhere)."""
    keyed: dict[tuple[str, str, str, str], list[Result]] = {}
    for r in results:
        for br in (r.batch_range, "all"):
            keyed.setdefault((r.system, r.backend, r.mode, br), []).append(r)
    keyed[("all", "all", "all", "all")] = list(results)
    out = []
    order = sorted(keyed, key=lambda k: (k[0] == "all", k[0], k[1], k[2], _range_order(k[3])))
    for k in order:
        rs = keyed[k]
        errs = [r.error for r in rs if r.error is not None]
        t_errs = [r.ttft_error for r in rs if r.ttft_error is not None]
        if errs or k[3] == "all":
            out.append(
                Group(
                    *k,
                    len(errs),
                    len(rs) - len(errs),
                    skipped(rs),
                    *_stats(errs),
                    len(t_errs),
                    *_stats(t_errs),
                )
            )
    return out


def versions(results: list[Result]) -> list[VersionGroup]:
    """Per (system, backend, mode, stack version) with a posed row, sorted: how far each image of a stack
    is from the model. One configuration measured on two images can differ twofold (hgx-b200 TensorRT-LLM
    aggregated, TP8 at 4 users: 1.2.0rc6.post2 10.3 ms, 1.2.0rc6.post3 5.4 ms), so a group's error is as
    much the image's as the model's."""
    keyed: dict[tuple[str, str, str, str], list[float]] = {}
    for r in results:
        if r.error is not None:
            keyed.setdefault((r.system, r.backend, r.mode, r.backend_version), []).append(r.error)
    return [VersionGroup(*k, len(keyed[k]), *_stats(keyed[k])) for k in sorted(keyed)]


def worst(results: list[Result], n: int = 10) -> list[Result]:
    """The ``n`` posed rows with the largest |error| (ties: file order)."""
    posed = [r for r in results if r.error is not None]
    return sorted(posed, key=lambda r: (-abs(r.error or 0.0), r.row))[:n]


def skipped(results: list[Result]) -> dict[str, int]:
    """Skipped rows by reason (``REASONS`` order)."""
    counts = {k: sum(r.reason == k for r in results) for k in REASONS}
    return {k: v for k, v in counts.items() if v}


#: Columns that make two rows the same configuration (a repeat measurement when the TPOTs differ).
#: The backend version is left out: newer images of one configuration run faster (part of the floor).
CONFIG = tuple(COLUMNS)[1 : list(COLUMNS).index("tpot_s")]
CONFIG = tuple(c for c in CONFIG if c != "backend_version")


def repeats(points: list[Point]) -> list[Repeat]:
    """Configurations (``CONFIG`` cells equal) measured more than once with different TPOTs, widest first.
    Only rows that state the whole configuration count (the degrees and a batch per rank): two rows that
    leave the worker count empty may be different deployments."""
    same: dict[tuple, list[Point]] = {}
    for pt in points:
        if batch_per_rank(pt) is None or None in (pt.attn_tp, pt.attn_dp, pt.moe_tp, pt.moe_ep):
            continue
        same.setdefault(tuple(pt.cells[c] for c in CONFIG), []).append(pt)
    out = []
    for pts in same.values():
        t = [p.tpot_s for p in pts]
        if len(pts) > 1 and max(t) > min(t):
            first = pts[0]
            out.append(
                Repeat(
                    first.system,
                    first.backend,
                    first.mode,
                    [p.id for p in pts],
                    min(t),
                    max(t),
                    max(t) / min(t) - 1.0,
                )
            )
    return sorted(out, key=lambda r: (-r.spread, r.ids[0]))


# ---------------------------------------------------------------------------------------------- rendering


def _pct(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%")


def _pct_pair(a: float | None, b: float | None) -> str:
    """ "82%/91%": two |error|s in one narrow cell."""
    return "/".join("-" if x is None else f"{100 * x:.0f}%" for x in (a, b))


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.2f}"


GROUP_HEADER = (
    "system",
    "backend",
    "mode",
    "batch/rank",
    "posed",
    "median |err|",
    "p90 |err|",
    "median err",
    "TTFT med/p90",
    "skipped",
)


def group_rows(gs: list[Group]) -> list[tuple[str, ...]]:
    return [
        (
            g.system,
            g.backend,
            g.mode,
            g.batch_range,
            str(g.posed),
            _pct(g.median_abs_error),
            _pct(g.p90_abs_error),
            _pct(g.median_error, True),
            _pct_pair(g.ttft_median_abs_error, g.ttft_p90_abs_error) if g.ttft_posed else "-",
            ", ".join(f"{k} {v}" for k, v in g.skipped_by_reason.items()) or "0",
        )
        for g in gs
    ]


VERSION_HEADER = ("system", "backend", "mode", "version", "posed", "median |err|", "p90 |err|", "median err")


def version_rows(vs: list[VersionGroup]) -> list[tuple[str, ...]]:
    return [
        (
            v.system,
            v.backend,
            v.mode,
            v.backend_version or "not stated",
            str(v.posed),
            _pct(v.median_abs_error),
            _pct(v.p90_abs_error),
            _pct(v.median_error, True),
        )
        for v in vs
    ]


WORST_HEADER = (
    "id",
    "system",
    "backend",
    "EP",
    "batch/rank",
    "ISL/OSL",
    "measured ms",
    "predicted ms",
    "error",
    "binding op",
)
#: Columns of the worst-rows table left out first on a narrow page (``render.Section.drop``).
WORST_DROP = ("backend", "system", "ISL/OSL")


def worst_rows(rs: list[Result]) -> list[tuple[str, ...]]:
    return [
        (
            r.id,
            r.system,
            r.backend,
            str(r.ep_size),
            f"{r.batch_per_rank:g}" if r.batch_per_rank is not None else "-",
            f"{r.isl}/{r.osl}",
            _ms(r.measured_tpot_s),
            _ms(r.predicted_tpot_s),
            _pct(r.error, True),
            r.binding_op + ("" if r.feasible else ", does not fit"),
        )
        for r in rs
    ]


SKIP_HEADER = ("reason", "rows", "meaning")


def skip_rows(counts: dict[str, int]) -> list[tuple[str, ...]]:
    return [(k, str(v), REASONS[k]) for k, v in counts.items()]


def _overall(results: list[Result], key: str = "error") -> str:
    med, p90, signed = _stats([getattr(r, key) for r in results if getattr(r, key) is not None])
    return f"median |error| {_pct(med)}, p90 {_pct(p90)}, median error {_pct(signed, True)}"


def summary_line(results: list[Result]) -> str:
    """ "48 posed, 602 skipped; TPOT median |error| 9.4%, p90 26.6%, median error -1.5%" (and the TTFT
    of the posed aggregated rows, when any)."""
    posed = sum(r.error is not None for r in results)
    line = f"{posed} posed, {len(results) - posed} skipped; TPOT {_overall(results)}"
    n_ttft = sum(r.ttft_error is not None for r in results)
    if n_ttft:
        line += f"; TTFT ({n_ttft} aggregated rows, first wave) {_overall(results, 'ttft_error')}"
    return line


def summary(results: list[Result], reps: list[Repeat]) -> list[tuple[str, str]]:
    """Key/value lines: rows read, posed, skipped, overall TPOT error, the repeat-measurement floor."""
    posed = [r for r in results if r.error is not None]
    lines = [
        ("rows", str(len(results))),
        ("posed", str(len(posed))),
        ("skipped", str(len(results) - len(posed))),
        ("TPOT error over posed rows", _overall(results)),
        *[
            (f"TPOT error, {m} rows", _overall([r for r in results if r.mode == m]))
            for m in MODES
            if any(r.error is not None and r.mode == m for r in results)
        ],
        *[
            (
                f"TTFT error, {sum(getattr(r, key) is not None for r in results)} aggregated rows ({what})",
                _overall(results, key),
            )
            for key, what in (
                ("ttft_error", "first wave: the client's users started at once"),
                ("ttft_steady_error", "steady-state closed loop"),
            )
            if any(getattr(r, key) is not None for r in results)
        ],
        ("posed rows that do not fit in HBM (cmperf)", str(sum(not r.feasible for r in posed))),
    ]
    if reps:
        spreads = [r.spread for r in reps]
        lines.append(
            (
                "configurations measured more than once (noise floor)",
                f"{len(reps)}: TPOT max/min - 1 median {_pct(float(np.median(spreads)))}, "
                f"max {_pct(max(spreads))}",
            )
        )
    return lines
