"""Sweeps: the cross product a planner asks about, one prediction per cell, one table (docs/sweep.md).

A sweep file is a scenario file (docs/scenarios.md: the records' field names, one ``command``) whose values
may be lists: each list is an axis, and the cells are the cross product of the axes in file order (the last
axis varies fastest). ``[frameworks.NAME]`` tables are named bundles of ``[deployment]`` knobs, swept as the
``framework`` axis::

    command = "decode"                      # what every cell runs: decode | prefill | serve | optimize
    system = ["cloudmatrix384", "dgx-h800"]
    [deployment]
    batch_per_device = [8, 32, 96]
    [workload]
    prompt_len = [1024, 4096]               # decode: with output_len, KV = prompt + output/2
    output_len = 256
    [frameworks.two-microbatches]
    microbatches = 2

``load`` checks the whole file first (unknown key, unknown system or model, a value outside its domain, an
empty axis: one ``CmperfError`` naming the file and the key); a cell the model refuses (an EP that does not
divide the ranks, a datatype the chip lacks) is a row with status "error" and its one-line reason. ``run``
evaluates the cells in local processes (``concurrent.futures``) or on Dask (``dask.distributed``), and
returns the rows in cell order whatever the executor, so the same file gives the same bytes
(``to_csv``, ``to_parquet``). Each cell is the library call its command makes: ``scenario.records`` +
``decode.predict`` / ``prefill.predict``, ``serving.evaluate`` on ``serving.default_pools``, or
``search.optimize``: a decode cell's numbers are ``cmperf decode``'s for the same knobs.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deployment import AUTO, DECODE_FIELDS, PREFILL_FIELDS, Deployment, Precision, precision_from
from .domains import DEPLOYMENT, POOLS, WORKLOAD, Domain, whole
from .domains import SLO as SLO_DOMAINS
from .errors import CmperfError
from .scenario import DEFAULT_MODEL, DEFAULT_SYSTEM, STRING_FIELDS, Scenario, read_toml, scenario_dirs
from .scenario import TOP_KEYS as SCENARIO_KEYS
from .serving import SLO, Workload
from .specs import DTYPE_BYTES, Model, System, load_model, load_system

if TYPE_CHECKING:
    from .decode import DecodePrediction
    from .prefill import PrefillPrediction

COMMANDS = ("decode", "prefill", "serve", "optimize")
TOP_KEYS = (*SCENARIO_KEYS, "pools", "frameworks")  # a scenario's keys, [pools] and the framework bundles

_COMMON = (
    "devices",
    "ep_size",
    "microbatches",
    "eplb",
    "imbalance",
    "num_redundant",
    "slots_per_rank",
    "framework",
)
#: ``[deployment]`` fields each cell type reads (the others are refused by file and key). serve: the decode
#: pool's per-step knobs and the prefill pool's plane and TP (the batch comes from the load, the devices from
#: ``[pools]``); optimize: the device total it searches and the knobs its searches hold fixed. ``framework``
#: (a frameworks/*.toml profile) reaches every cell type; serve and optimize apply it to both phases.
DEPLOYMENT_KEYS = {
    "decode": (*_COMMON, *DECODE_FIELDS),
    "prefill": (*_COMMON, *PREFILL_FIELDS),
    "serve": (
        "mtp",
        "mtp_accept",
        "attention_cube_cores",
        "step_overhead_s",
        "cache_plane",
        "attn_tp",
        "framework",
    ),
    "optimize": ("devices", "eplb", "mtp_accept", "framework"),
}
#: ``[workload]`` fields each cell type reads: decode's prompt + output lengths set the KV knobs as
#: ``cmperf decode --prompt-len/--output-len`` (``deployment.kv_lengths``); prefill's prompt is the record's.
WORKLOAD_KEYS = {
    "decode": ("prompt_len", "output_len"),
    "prefill": ("prompt_len",),
    "serve": tuple(f.name for f in fields(Workload)),
    "optimize": tuple(f.name for f in fields(Workload)),
}
#: ``[pools]`` (serve): the device counts and cache DRAM of ``serving.Pools`` (defaults: ``default_pools``).
POOL_KEYS = ("prefill_devices", "decode_devices", "prefill_instance_devices", "cache_dram_bytes")
#: ``[options]``: the dtype flags by their parameter names (``deployment.precision_from``).
OPTION_KEYS = ("weights", "experts_dtype", "kv_dtype")
PRECISION_KEYS = tuple(f.name for f in fields(Precision))

#: Output columns of each cell type, after the inputs (``config.*``: the configuration the cell ran or
#: chose; ``binding*``: what binds it). Every row of a sweep has the same columns.
_DEC_CONFIG = (
    "config.devices",
    "config.ep_size",
    "config.attn_tp",
    "config.batch_per_device",
    "config.microbatches",
    "config.mtp",
    "config.attention_cube_cores",
)
_BINDING = ("binding", "binding_op", "binding_ceiling")
OUTPUTS = {
    "decode": (
        "status",
        "message",
        "tokens_per_s_per_device",
        "tpot_s",
        "hbm_bytes_per_rank",
        *_DEC_CONFIG,
        *_BINDING,
    ),
    "prefill": (
        "status",
        "message",
        "tokens_per_s_per_device",
        "ttft_s",
        "hbm_bytes_per_rank",
        "config.devices",
        "config.ep_size",
        "config.attn_tp",
        "config.tokens_per_device",
        "config.microbatches",
        *_BINDING,
    ),
    "serve": (
        "status",
        "message",
        "tokens_per_s_per_device",
        "tpot_s",
        "ttft_s",
        "goodput_rps",
        "goodput_rps_per_device",
        "slo_met",
        "slo_limit_rps",
        "config.prefill_devices",
        "config.decode_devices",
        "config.batch_per_device",
        "binding",
    ),
    "optimize": (
        "status",
        "message",
        "tokens_per_s_per_device",
        "tpot_s",
        "ttft_s",
        "goodput_rps",
        "goodput_rps_per_device",
        *_DEC_CONFIG,
        "config.prefill_devices",
        "config.decode_devices",
        "binding_constraint",
        *_BINDING,
    ),
}

#: Most cells one file may ask for (a typo in an axis should not start a week of work).
MAX_CELLS = 1_000_000


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: ``axes`` maps each input column (``system``, ``deployment.batch_per_device``,
    ``framework``, ...) to its values in file order (one value: a fixed input); ``frameworks`` maps each
    framework name to its ``[deployment]`` knobs (``precision``: its ``[deployment.precision]`` groups)."""

    path: str
    command: str
    description: str
    axes: dict[str, tuple[Any, ...]]
    frameworks: dict[str, dict[str, Any]]
    spec_dirs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Cells in the cross product: the product of the axis lengths."""
        return math.prod(len(v) for v in self.axes.values())


@dataclass(frozen=True)
class Cell:
    """One cell: its index in the cross product and its inputs (column -> value), picklable for workers."""

    index: int
    command: str
    path: str
    inputs: tuple[tuple[str, Any], ...]
    framework: tuple[tuple[str, Any], ...] = ()
    spec_dirs: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- the file


def find(name: str, spec_dirs: tuple[str, ...] | list[str] = ()) -> Path:
    """A sweep file by path (``x.toml``) or by name in each scenario folder's ``sweeps/`` subfolder (the
    built-in ``scenarios/sweeps/``, as ``cmperf.scenario.find`` looks scenarios up)."""
    p = Path(name)
    if p.suffix == ".toml":
        if p.is_file():
            return p
        what = "is not a file" if p.exists() else "does not exist"
        raise CmperfError(f"SWEEP: {name} {what}; give a sweep .toml or a name from sweeps/")
    folders = [d / "sweeps" for d in scenario_dirs(spec_dirs) if (d / "sweeps").is_dir()]
    for d in folders:
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    have = ", ".join(sorted({q.stem for d in folders for q in d.glob("*.toml")})) or "none"
    raise CmperfError(f"SWEEP: unknown sweep {name!r}; available: {have} (or give a path to a .toml)")


def _domain(table: str, key: str) -> Domain | None:
    """The static domain of a number in ``[table]`` (``cmperf.domains``), None where a name belongs."""
    if table in ("deployment", "frameworks"):
        return DEPLOYMENT.get(key)
    return {"workload": WORKLOAD, "slo": SLO_DOMAINS, "pools": POOLS}.get(table, {}).get(key)


def _value(where: str, table: str, key: str, v: Any) -> Any:
    """One value of ``[table]``, checked and converted: a number in its domain, a name where a name belongs
    (a datatype of ``cmperf.specs.DTYPE_BYTES`` for the dtype options and precision groups), microbatches
    a count or "auto"."""
    if isinstance(v, dict | list):
        raise CmperfError(
            f"{where}: {'a table' if isinstance(v, dict) else 'a list'} in a list is not a value"
        )
    dom = _domain(table, key)
    if dom is not None:
        return dom.check(v, where, text=False)
    if key == "microbatches":
        if isinstance(v, str):
            if v.strip().lower() != AUTO:
                raise CmperfError(f'{where}: {v!r} is not a count; give 1, 2, 3, 4 or "auto"')
            return AUTO
        return whole(1, 4).check(v, where, text=False)
    if table in ("options", "precision"):
        names = (*DTYPE_BYTES, "native") if key == "experts_dtype" else tuple(DTYPE_BYTES)
        if v not in names:
            raise CmperfError(f"{where}: {v!r} is not a datatype (one of {', '.join(names)})")
    elif key in STRING_FIELDS and not isinstance(v, str):
        raise CmperfError(f'{where}: {v!r} is not a name; write {key} = "..."')
    return v


def _axis(where: str, table: str, key: str, v: Any) -> tuple[Any, ...]:
    """A key's values: a list is an axis (non-empty, no repeats), a plain value a one-value axis."""
    if isinstance(v, dict):
        raise CmperfError(f"{where}: a nested table is not a value; give a value or a list of values")
    values = v if isinstance(v, list) else [v]
    if not values:
        raise CmperfError(f"{where}: an empty list is no axis; give at least one value")
    out = tuple(_value(where, table, key, x) for x in values)
    for i, x in enumerate(out):
        if x in out[:i]:
            raise CmperfError(f"{where}: {values[i]!r} appears twice in the axis; give each value once")
    return out


def _allowed(path: Path, command: str, table: str, key: str, keys: tuple[str, ...]) -> None:
    if key not in keys:
        raise CmperfError(
            f"{path}: key {table}.{key}: a {command} cell does not read it ({table} keys of a {command} "
            f"sweep: {', '.join(keys) or 'none'})"
        )


def _table(path: Path, raw: dict[str, Any], key: str) -> dict[str, Any]:
    t = raw.get(key, {})
    if not isinstance(t, dict):
        raise CmperfError(f"{path}: key {key} must be a table [{key}]")
    return t


def _knob_table(path: Path, command: str, prefix: str, t: dict[str, Any], lists: bool) -> dict[str, Any]:
    """``[deployment]`` or ``[frameworks.NAME]``: the cell type's Deployment fields and a ``precision``
    table of Precision groups; flattened to ``key`` / ``precision.group``, each an axis (``lists``) or one
    value."""
    out: dict[str, Any] = {}
    for k, v in t.items():
        if k == "precision" and isinstance(v, dict):
            for g, x in v.items():
                where = f"{path}: key {prefix}.precision.{g}"
                _allowed(path, command, f"{prefix}.precision", g, PRECISION_KEYS)
                out[f"precision.{g}"] = (
                    _axis(where, "precision", g, x) if lists else _one(where, "precision", g, x)
                )
            continue
        _allowed(path, command, prefix, k, DEPLOYMENT_KEYS[command])
        where = f"{path}: key {prefix}.{k}"
        out[k] = _axis(where, "deployment", k, v) if lists else _one(where, "deployment", k, v)
    return out


def _one(where: str, table: str, key: str, v: Any) -> Any:
    if isinstance(v, list | dict):
        raise CmperfError(f"{where}: a framework holds one value per knob; sweep a knob in [deployment]")
    return _value(where, table, key, v)


def _spec_name(path: Path, key: str, v: Any, spec_dirs: tuple[str, ...]) -> tuple[str, ...]:
    """The system or model axis, each name loaded (an unknown one is an error naming file and key)."""
    values = v if isinstance(v, list) else [v]
    if not values:
        raise CmperfError(f"{path}: key {key}: an empty list is no axis; give at least one name")
    for x in values:
        if not isinstance(x, str):
            raise CmperfError(
                f'{path}: key {key}: {x!r} is not a name; write {key} = "..." or a list of names'
            )
        try:
            (load_system if key == "system" else load_model)(x, spec_dirs)
        except CmperfError as e:
            raise CmperfError(f"{path}: key {key}: {str(e).removeprefix(f'--{key}: ')}") from None
    return _axis(f"{path}: key {key}", key, key, values)


def load(name: str, spec_dirs: tuple[str, ...] | list[str] = ()) -> Sweep:
    """Read and check a sweep file (schema: docs/sweep.md). Every error is one CmperfError line naming the
    file and the key: unknown keys, a key the cell type does not read, unknown systems, models or
    datatypes, values outside their domain, empty axes, more than ``MAX_CELLS`` cells."""
    dirs = tuple(spec_dirs)
    path = find(name, dirs)
    raw = read_toml(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise CmperfError(f"{path}: key {key}: unknown key (allowed: {', '.join(TOP_KEYS)})")
    for key in ("name", "description", "source", "command"):
        if key in raw and not isinstance(raw[key], str):
            raise CmperfError(f'{path}: key {key} must be a string; write {key} = "..."')
    if "name" in raw and raw["name"] != path.stem:
        raise CmperfError(f"{path}: key name: {raw['name']!r} must match the file name {path.stem!r}")
    command = raw.get("command")
    if command is None:
        raise CmperfError(f'{path}: key command is missing; add command = "decode" ({", ".join(COMMANDS)})')
    if command not in COMMANDS:
        raise CmperfError(f"{path}: key command: {command!r} is not one of {', '.join(COMMANDS)}")
    axes: dict[str, tuple[Any, ...]] = {}
    frameworks: dict[str, dict[str, Any]] = {}
    for key in ("system", "model"):  # first, as the scenario files name them (the defaults if absent)
        default = DEFAULT_SYSTEM if key == "system" else DEFAULT_MODEL
        axes[key] = _spec_name(path, key, raw.get(key, default), dirs)
    for key in raw:
        if key in ("deployment", "workload", "slo", "pools", "options"):
            t = _table(path, raw, key)
            if key == "deployment":
                axes.update(
                    {f"deployment.{k}": v for k, v in _knob_table(path, command, key, t, True).items()}
                )
                continue
            keys = {
                "workload": WORKLOAD_KEYS[command],
                "slo": tuple(f.name for f in fields(SLO)) if command in ("serve", "optimize") else (),
                "pools": POOL_KEYS if command == "serve" else (),
                "options": OPTION_KEYS,
            }[key]
            for k, v in t.items():
                _allowed(path, command, key, k, keys)
                axes[f"{key}.{k}"] = _axis(f"{path}: key {key}.{k}", key, k, v)
        elif key == "frameworks":
            t = _table(path, raw, key)
            if not t:
                raise CmperfError(f"{path}: key frameworks: no framework; add [frameworks.NAME] tables")
            for fw, knobs in t.items():
                if not isinstance(knobs, dict):
                    raise CmperfError(f"{path}: key frameworks.{fw} must be a table [frameworks.{fw}]")
                frameworks[fw] = _knob_table(path, command, f"frameworks.{fw}", knobs, False)
                if "framework" in frameworks[fw]:
                    _check_profile(path, f"frameworks.{fw}.framework", frameworks[fw]["framework"])
                for k in frameworks[fw]:
                    if f"deployment.{k}" in _deployment_keys(raw):
                        raise CmperfError(
                            f"{path}: key frameworks.{fw}.{k}: also set in [deployment]; set it in one place"
                        )
            axes["framework"] = tuple(frameworks)
    _check_pairs(path, command, axes)
    sw = Sweep(str(path), command, str(raw.get("description", "")), axes, frameworks, dirs)
    if sw.size > MAX_CELLS:
        raise CmperfError(f"{path}: {sw.size:,} cells (more than {MAX_CELLS:,}); sweep fewer values")
    return sw


def _deployment_keys(raw: dict[str, Any]) -> set[str]:
    """``deployment.KEY`` and ``deployment.precision.GROUP`` of a file's ``[deployment]`` table."""
    dep = raw.get("deployment", {})
    out = {f"deployment.{k}" for k in dep if k != "precision"}
    return out | {f"deployment.precision.{g}" for g in dep.get("precision", {})}


def _check_profile(path: Path, key: str, name: Any) -> None:
    """A framework profile name (frameworks/*.toml) that does not exist: one line naming file and key."""
    from .frameworks import unknown_reason

    bad = unknown_reason(name)
    if bad:
        raise CmperfError(f"{path}: key {key}: {bad.removeprefix('--framework: ')}")


def _check_pairs(path: Path, command: str, axes: dict[str, tuple[Any, ...]]) -> None:
    """Keys that go together or exclude each other, for every cell alike; profile names exist."""
    for name in axes.get("deployment.framework", ()):
        _check_profile(path, "deployment.framework", name)
    if command == "decode" and ("workload.prompt_len" in axes) != ("workload.output_len" in axes):
        given = "prompt_len" if "workload.prompt_len" in axes else "output_len"
        raise CmperfError(
            f"{path}: key workload.{given}: a decode cell needs workload.prompt_len with workload.output_len "
            f"(KV = prompt + output/2)"
        )
    if command == "decode" and "workload.prompt_len" in axes and "deployment.kv_len" in axes:
        raise CmperfError(f"{path}: key deployment.kv_len: conflicts with workload.prompt_len/output_len")
    if command == "prefill" and "workload.prompt_len" in axes and "deployment.prompt_len" in axes:
        raise CmperfError(f"{path}: key deployment.prompt_len: also set as workload.prompt_len; give one")


def cells(sw: Sweep) -> list[Cell]:
    """The cross product of ``sw.axes`` in file order (the last axis varies fastest), indexed from 0."""
    keys = list(sw.axes)
    out = []
    for i, combo in enumerate(itertools.product(*sw.axes.values())):
        inputs = tuple(zip(keys, combo, strict=True))
        fw = sw.frameworks.get(dict(inputs).get("framework", ""), {})
        out.append(Cell(i, sw.command, sw.path, inputs, tuple(fw.items()), sw.spec_dirs))
    return out


# ---------------------------------------------------------------------------------------------- one cell


@functools.lru_cache(maxsize=64)
def _specs(system: str, model: str, spec_dirs: tuple[str, ...]) -> tuple[System, Model]:
    return load_system(system, spec_dirs), load_model(model, spec_dirs)


def _tables(cell: Cell) -> dict[str, dict[str, Any]]:
    """The cell's inputs as tables: deployment (framework knobs included), precision, workload, slo, pools,
    options."""
    t: dict[str, dict[str, Any]] = {k: {} for k in ("deployment", "precision", "workload", "slo", "pools")}
    t["options"] = {}
    for key, v in (*((f"deployment.{k}", v) for k, v in cell.framework), *cell.inputs):
        table, _, field_name = key.partition(".")
        if table == "deployment" and field_name.startswith("precision."):
            t["precision"][field_name.removeprefix("precision.")] = v
        elif table in t:
            t[table][field_name] = v
    return t


def _precision(system: System, t: dict[str, dict[str, Any]]) -> Precision:
    o = t["options"]
    return precision_from(system, o.get("weights"), o.get("experts_dtype"), o.get("kv_dtype"), t["precision"])


def _top_op(ops) -> dict[str, Any]:
    """The heaviest op per step (ties: stage, name) and its binding ceiling."""
    if not ops:
        return {}
    op = min(ops, key=lambda r: (-r.total_s, r.stage, r.name))
    return {"binding_op": f"{op.stage}/{op.name}", "binding_ceiling": op.bound}


def _run_phase(cell: Cell, system: System, model: Model, t: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from . import decode, prefill, scenario

    phase = cell.command
    dep, wl = dict(t["deployment"]), t["workload"]
    opts = dict(t["options"])
    if phase == "decode":
        opts.update(wl)  # prompt_len + output_len: the KV knobs, as `cmperf decode --prompt-len/--output-len`
    elif "prompt_len" in wl:
        dep["prompt_len"] = wl["prompt_len"]
    sc = Scenario(
        Path(cell.path).stem,
        "",
        "",
        phase,
        deployment=dep,
        precision=t["precision"],
        options=opts,
        path=cell.path,
    )
    rec = scenario.records(sc, system, model)
    # knobs the cell leaves to their defaults fit them as the commands do (cmperf decode / prefill)
    if phase == "decode":
        p = decode.predict(system, model, rec)
        if "batch_per_device" not in dep:
            p = decode.fit_default_batch(system, model, rec, p)
        d = p.deployment
        part = {
            "tpot_s": p.tpot_s,
            "config.batch_per_device": p.batch_per_device,
            "config.mtp": d["mtp"],
            "config.attention_cube_cores": d["attention_cube_cores"],
        }
        return {**_phase_row(p, model), **part}
    q = prefill.predict(system, model, rec)
    grow = not {"devices", "ep_size", "moe_tp"} & dep.keys()
    q = prefill.fit_defaults(system, model, rec, q, devices=grow, tokens="tokens_per_device" not in dep)
    return {
        **_phase_row(q, model),
        "ttft_s": q.ttft_s,
        "config.tokens_per_device": q.deployment["tokens_per_device"],
    }


def _phase_row(p: DecodePrediction | PrefillPrediction, model: Model) -> dict[str, Any]:
    """The columns decode and prefill share: status, throughput, memory, instance, binding stream and op
    (of the MoE layers, else the most numerous: graph.principal_stage, a dense model's "dense")."""
    from .graph import principal_stage

    d = p.deployment
    moe = p.streams.get(principal_stage(model), {})
    return {
        "status": "ok" if p.feasible else "infeasible",
        "message": "; ".join(p.reasons),
        "tokens_per_s_per_device": p.tokens_per_s_per_device,
        "hbm_bytes_per_rank": p.hbm_bytes_per_rank,
        "config.devices": d["devices"],
        "config.ep_size": d["ep_size"],
        "config.attn_tp": d["attn_tp"],
        "config.microbatches": d["microbatches"],
        "binding": moe.get("binding", moe.get("ideal_binding")),
        **_top_op(p.ops),
    }


def _run_serve(cell: Cell, system: System, model: Model, t: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from . import serving

    prec, dep, pl = _precision(system, t), t["deployment"], t["pools"]
    pools = serving.default_pools(system, model)
    if "prefill_instance_devices" in pl:
        pools = pools.with_instance(pl["prefill_instance_devices"])
    pools = pools.split(
        pl.get("prefill_devices", pools.prefill_devices), pl.get("decode_devices", pools.decode_devices)
    )
    fw = {"framework": dep["framework"]} if "framework" in dep else {}
    pools = replace(
        pools,
        cache_dram_bytes=pl.get("cache_dram_bytes"),
        decode=replace(
            pools.decode, precision=prec, **fw, **{k: v for k, v in dep.items() if k in DECODE_FIELDS}
        ),
        prefill=replace(
            pools.prefill, precision=prec, **fw, **{k: v for k, v in dep.items() if k in PREFILL_FIELDS}
        ),
    )
    r = serving.evaluate(system, model, Workload(**t["workload"]), pools, SLO(**t["slo"]))
    return {
        "status": "infeasible" if r.overloaded else "ok",
        "message": "; ".join(r.overload_reasons),
        "tokens_per_s_per_device": r.decode.tokens_per_s_per_device,
        "tpot_s": r.decode.tpot_slo_quantile_s,
        "ttft_s": r.prefill.ttft_slo_quantile_s,
        "goodput_rps": r.goodput_rps,
        "goodput_rps_per_device": r.goodput_rps_per_device,
        "slo_met": r.slo_met,
        "slo_limit_rps": r.max_rate_rps.get("both_slo_rps"),
        "config.prefill_devices": r.inputs["prefill_devices"],
        "config.decode_devices": r.inputs["decode_devices"],
        "config.batch_per_device": r.decode.batch_per_device,
        "binding": r.bottleneck,
    }


def _run_optimize(cell: Cell, system: System, model: Model, t: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from . import search

    prec, dep = _precision(system, t), t["deployment"]
    res = search.optimize(
        system,
        model,
        devices=dep.get("devices"),
        workload=Workload(**{"rate_per_s": None, **t["workload"]}),
        slo=SLO(**t["slo"]),
        decode=Deployment(precision=prec, **{k: v for k, v in dep.items() if k != "devices"}),
        prefill=Deployment(phase="prefill", precision=prec, framework=dep.get("framework")),
        top_k=1,
    )
    d = res.decode
    out: dict[str, Any] = {"status": "ok", "message": ""}
    if d.best is None:
        what = "meets the TPOT SLO" if d.closest else "fits"
        return {"status": "infeasible", "message": f"no decode configuration {what}"}
    c = d.best
    out.update(
        {
            "tokens_per_s_per_device": c.tokens_per_s_per_device,
            "tpot_s": c.tpot_s,
            "config.devices": c.devices,
            "config.ep_size": c.ep_size,
            "config.attn_tp": c.attn_tp,
            "config.batch_per_device": c.batch_per_device,
            "config.microbatches": c.microbatches,
            "config.mtp": c.mtp,
            "config.attention_cube_cores": c.attention_cube_cores,
        }
    )
    if d.binding is not None:
        b = d.binding
        out.update({"binding_constraint": b.constraint, "binding": b.moe_stream_binding})
        if b.top_ops:
            top = b.top_ops[0]
            out.update({"binding_op": f"{top['stage']}/{top['name']}", "binding_ceiling": top["bound"]})
    pre = res.prefill.best if res.prefill is not None else None
    if pre is not None:
        out["ttft_s"] = pre.ttft_s
    if res.serving is None:
        out.update({"status": "infeasible", "message": "no prefill configuration meets the TTFT SLO"})
        return out
    s = res.serving.best
    out.update(
        {
            "goodput_rps": s["goodput_rps"],
            "goodput_rps_per_device": s["goodput_rps_per_device"],
            "config.prefill_devices": s["prefill_devices"],
            "config.decode_devices": s["decode_devices"],
        }
    )
    if not s["feasible"]:
        out.update({"status": "infeasible", "message": "no prefill / decode split meets the SLOs"})
    return out


_RUNNERS: dict[str, Callable[[Cell, System, Model, dict[str, dict[str, Any]]], dict[str, Any]]] = {
    "decode": _run_phase,
    "prefill": _run_phase,
    "serve": _run_serve,
    "optimize": _run_optimize,
}


def _finite(v: Any) -> Any:
    """A non-finite float (an overloaded pool's TTFT) as None: an empty cell, the message says why."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def run_cell(cell: Cell) -> dict[str, Any]:
    """One row: ``cell`` (the index), the inputs, then ``OUTPUTS[command]``. A cell the model refuses is
    status "error" with its one-line reason in ``message``; it never raises (the sweep goes on)."""
    inputs = dict(cell.inputs)
    try:
        system, model = _specs(inputs["system"], inputs["model"], cell.spec_dirs)
        out = _RUNNERS[cell.command](cell, system, model, _tables(cell))
    except Exception as e:  # a cell's failure is its row, whatever it is: the sweep goes on
        text = str(e) if isinstance(e, CmperfError) else f"{type(e).__name__}: {e}"
        out = {"status": "error", "message": " ".join(text.split())}
    return {"cell": cell.index, **inputs, **{c: _finite(out.get(c)) for c in OUTPUTS[cell.command]}}


def run_cells(chunk: list[Cell]) -> list[dict[str, Any]]:
    """The rows of a chunk of cells (one task of an executor)."""
    return [run_cell(c) for c in chunk]


# ---------------------------------------------------------------------------------------------- executors


Progress = Callable[[int, int], None]


def _chunks(items: list[Cell], workers: int) -> list[list[Cell]]:
    """About 4 tasks per worker (load balance) of at most 256 cells (progress steps)."""
    size = max(1, min(256, math.ceil(len(items) / (4 * max(workers, 1)))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _collect(
    futures: list[Any], completed: Iterator[Any], total: int, progress: Progress | None
) -> list[Any]:
    done = 0
    for f in completed:
        done += len(f.result())
        if progress is not None:
            progress(done, total)
    return [row for f in futures for row in f.result()]


def run(
    sw: Sweep,
    *,
    executor: str = "process",
    jobs: int | None = None,
    scheduler: str | None = None,
    dask_processes: bool = True,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Every cell's row, in cell order. ``executor`` "process": ``jobs`` local processes
    (``ProcessPoolExecutor``; default ``os.cpu_count()``, 1 runs in this process); "dask": a
    ``dask.distributed`` cluster at ``scheduler`` (an address), else a ``LocalCluster`` of ``jobs`` workers
    (``dask_processes`` False: threads, for tests). ``progress(done, total)`` after each finished task."""
    import os

    todo = cells(sw)
    workers = (os.cpu_count() or 1) if jobs is None else jobs
    if workers < 1:
        raise CmperfError(f"--jobs: must be at least 1, got {workers}")
    chunks = _chunks(todo, workers)
    if executor == "dask":
        return _run_dask(chunks, len(todo), workers, scheduler, dask_processes, progress)
    if executor != "process":
        raise CmperfError(f"--executor: {executor!r} is not process or dask")
    if scheduler is not None:
        raise CmperfError("--scheduler: a scheduler address needs --executor dask")
    if workers == 1 or len(chunks) == 1:
        rows = []
        for chunk in chunks:
            rows += run_cells(chunk)
            if progress is not None:
                progress(len(rows), len(todo))
        return rows
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as ex:
        futures = [ex.submit(run_cells, c) for c in chunks]
        return _collect(futures, as_completed(futures), len(todo), progress)


def _run_dask(
    chunks: list[list[Cell]],
    total: int,
    workers: int,
    scheduler: str | None,
    processes: bool,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    import contextlib
    import logging

    from .extras import require

    distributed = require("dask.distributed", "--executor dask")
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            address = cluster
        else:
            address = scheduler
        try:
            client = stack.enter_context(distributed.Client(address, timeout="20s"))
        except (OSError, TimeoutError) as e:
            raise CmperfError(f"--scheduler: cannot reach the Dask scheduler at {scheduler} ({e})") from None
        futures = client.map(run_cells, chunks, pure=False)
        return _collect(futures, distributed.as_completed(futures), total, progress)


# ---------------------------------------------------------------------------------------------- the table


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as RFC 4180 CSV (``render.to_csv``: 12 significant digits, empty for None): same rows, same
    bytes."""
    from .render import to_csv as csv_text

    return csv_text(rows)


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Column -> values (``render.to_jsonable``: the CSV's 12 significant digits), for typed tables."""
    from .render import to_jsonable

    plain = [to_jsonable(r) for r in rows]
    names = list(plain[0]) if plain else []
    return {c: [r.get(c) for r in plain] for c in names}


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    """The rows as one Parquet table (pyarrow): a column of numbers is int64 (all whole) or float64, of
    true/false bool, anything else string (a mixed axis such as microbatches = [1, "auto"] is text)."""
    from .extras import require

    pa = require("pyarrow", "-o FILE.parquet")
    pq = require("pyarrow.parquet", "-o FILE.parquet")
    arrays, names = [], []
    for name, values in columns(rows).items():
        given = [v for v in values if v is not None]
        if given and all(isinstance(v, bool) for v in given):
            kind = pa.bool_()
        elif given and all(isinstance(v, int) and not isinstance(v, bool) for v in given):
            kind = pa.int64()
        elif given and all(isinstance(v, int | float) and not isinstance(v, bool) for v in given):
            kind, values = pa.float64(), [None if v is None else float(v) for v in values]
        else:
            kind, values = pa.string(), [None if v is None else str(v) for v in values]
        arrays.append(pa.array(values, type=kind))
        names.append(name)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), sink)
    return bytes(sink.getvalue().to_pybytes())
