"""The same DeepSeek-R1 workload on several systems, each with its own deployment, side by side.

For each system: a deployment (devices, EP size, batch, precisions) from the flags, else from the
system's baseline scenario (``scenarios/baselines/*.toml`` whose ``system`` names it and whose
``command`` is the phase; the one with the most devices, i.e. the whole unit), else from two rules:

* decode unit = the one-expert-per-rank EP of CloudMatrix-Infer, R + R/8 redundant + R/8 shared-expert
  ranks (256 + 32 + 32 = 320 ranks for R1, CM384 §4.2), capped by the system: 160 NPUs on CM384,
  all 72 GPUs of a GB200 NVL72, all 128 GPUs of a 16-node HGX cluster;
* prefill unit = EP32, the prefill instance of CloudMatrix-Infer (16 NPUs), DeepSeek (4 nodes) and
  SGLang (4 nodes) alike;
* a dense model's unit, both phases = one TP group (``deployment.dense_tp``: the largest power of two of
  one scale-up domain up to its KV heads, TP8 for Llama-3.1-70B; prefill as Megatron TP,
  ``deployment.megatron_prefill``), decode at the default batch or, when that does not fit in HBM, the largest
  that does (``decode.fit_default_batch``; the row's workload says ``batch_fitted_from``).

Precision per op group (``default_precision``): 8-bit GEMMs and dispatch in the chip's 8-bit type (FP8
where the chip has it, DeepSeek's setup on Hopper; INT8 on Ascend, CM384 §4.4), BF16 attention, KV,
combine, gate and heads; optionally FP4 experts where the chip has FP4 (Blackwell, NVFP4 W4A4).

The paper's efficiency metric (CM384 §5): tokens/s per device over the device's dense 8-bit peak,

    tokens_per_s_per_tflops = tokens_per_s_per_device / (max(int8, fp8 peak per rank) * ranks / 1e12)

(ranks = ranks_per_device).

Worked number: CM384 §5.1's 1,943 tokens/s per 910C / 1,504 TOPS INT8 = 1.29 tokens/s per TFLOPS.

Per kW where power is known (``System.power_per_device``: the system file's ``power`` / devices, else the
chip's ``power`` x ranks per device, the accelerator alone; neither given: None, "power not known"):

    tokens_per_s_per_kw = tokens_per_s_per_device / (watts per device / 1e3)

Worked number: GB300 at 5,902 tokens/s per GPU / 1.4 kW (MLPerf v6.1 GPU power) = 4,216 tokens/s per kW.

The binding ceiling is read off the MoE-layer stage of the step (58 of 61 layers): which stream
sets the period (cmperf.step), then which ceiling (compute, memory, link, latency) holds most
of that stream's time, and for link time which plane (scale-up or scale-out) is slower, each plane timed
by cmperf.comm.ep_plane_seconds (the kernel's efficiency; on a torus plane the sub-torus all-to-all rate).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .comm import DomainDedupOp, _split_bytes, ep_plane_seconds
from .deployment import Deployment, default_precision, dense_tp
from .errors import CmperfError
from .graph import principal_stage
from .specs import Model, System, builtin_dirs
from .step import binding_names

PHASES = ("decode", "prefill")
EIGHT_BIT = ("fp8", "int8")


# ---------- precision


def peak_8bit_flops_per_device(system: System) -> float:
    """Dense 8-bit peak of one device (NPU package or GPU): max(int8, fp8) per rank x ranks per device.

    >>> # CloudMatrix384: 752 TOPS INT8 per die x 2 dies = 1,504e12; H800: FP8 1,979e12
    """
    peaks = [system.chip.peak_flops[d] for d in EIGHT_BIT if d in system.chip.peak_flops]
    if not peaks:
        raise CmperfError(
            f"{system.chip.path}: chip {system.chip.name} lists no int8 or fp8 peak; "
            "tokens/s per TFLOPS needs the 8-bit peak"
        )
    return max(peaks) * system.ranks_per_device


def per_kw(system: System, tokens_per_s_per_device: float) -> tuple[float | None, str, float | None]:
    """(watts per device, what they cover: "system" | "chip" | "", tokens/s per kW); (None, "", None) when
    the specs give no power (``System.power_per_device``; never a guessed number)."""
    power = system.power_per_device()
    if power is None:
        return None, "", None
    watts, basis = power
    return watts, basis, tokens_per_s_per_device / (watts / 1e3)


# ---------- deployments


def baseline_dirs() -> list[Path]:
    """The built-in ``scenarios/baselines`` folder (the paper's baseline deployments, with citations)."""
    return [d / "scenarios" / "baselines" for d in builtin_dirs() if (d / "scenarios" / "baselines").is_dir()]


def baseline(system: System, model: Model, phase: str, dirs: list[Path] | None = None) -> tuple[dict, str]:
    """([deployment] table of the baseline scenario for this system, model and phase, its file) or ({}, "");
    a baseline run with another model (the shipped ones are DeepSeek-R1's) does not apply.

    Among several (DeepSeek decode EP128 and EP144), the one with the most devices: the whole unit."""
    best: tuple[dict, str] = ({}, "")
    for d in dirs if dirs is not None else baseline_dirs():
        for path in sorted(d.rglob("*.toml")):
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                continue  # a broken scenario file is reported by the command that runs it
            table = raw.get("deployment", {})
            if raw.get("command") != phase or raw.get("system") != system.name or not isinstance(table, dict):
                continue
            if raw.get("model", "deepseek-r1") not in (model.name, *model.aliases):
                continue
            if not best[1] or table.get("devices", 0) > best[0].get("devices", 0):
                best = (dict(table), str(path))
    return best


def deployment_for(
    system: System,
    model: Model,
    phase: str,
    *,
    weights: str | None = None,
    experts: str | None = None,
    kv_dtype: str | None = None,
    use_scenarios: bool = True,
    **given,
) -> tuple[Deployment, str, frozenset[str]]:
    """(deployment, where it comes from, the fields set by flags or the baseline) of ``phase`` on
    ``system``: the ``given`` Deployment fields (None = not given) over the system's baseline scenario,
    over the rules (module docstring); a field in neither is the rule's default, which the rows may fit
    (``decode.fit_default_batch``, ``prefill.fit_defaults``). Devices given drop the baseline's devices
    and EP size; microbatches default to 2 (the baselines' two-batch overlap; a dense model: 1)."""
    table, src = baseline(system, model, phase) if use_scenarios else ({}, "")
    given = {k: v for k, v in given.items() if v is not None}
    if "devices" in given:
        table = {k: v for k, v in table.items() if k not in ("devices", "ep_size")}
    table = {k: v for k, v in table.items() if k != "precision"}
    prec = default_precision(system, weights, experts, kv_dtype or "bf16")
    rule = (
        "rule: min(system, 320-rank one-expert-per-rank unit)"
        if phase == "decode"
        else "rule: EP32 prefill unit"
    )
    fixed = frozenset({*given, *table})
    tp = dense_tp(system, model, phase)  # Deployment.resolve's default for a dense model
    if tp and not {"devices", "attn_tp"} & fixed:
        rule = f"rule: dense, TP{tp} (one scale-up domain, at most the KV heads)"
    # two microbatches: the baselines' two-batch overlap of the MoE all-to-all; a dense model runs one
    # (frameworks.microbatch_counts)
    mb = 2 if model.is_moe else 1
    dep = Deployment(**{"phase": phase, "microbatches": mb, "precision": prec, **table, **given})
    source = "flags" if "devices" in given else (src or rule)
    return dep.resolve(system, model), source, fixed


# ---------- binding ceiling


def _is_comm(r) -> bool:
    return r.flops == 0 and r.hbm_bytes == 0


def binding_of(system: System, ops, stage: str, stage_binding: str, policy: str, comm_ep=None) -> dict:
    """Which stream binds the stage and which ceiling holds most of that stream's time.

    Returns {stream, ceiling, plane, seconds_by_ceiling}. ``stage_binding`` is cmperf.step's verdict
    (cmperf.step.binding_names(policy): stream A, stream M, "serial A+M", "shared HBM")."""
    a_name, m_name, _, _ = binding_names(policy)
    rows = [r for r in ops if r.stage == stage]

    def in_a(r):
        return r.stream == "attn" if policy == "split-cores" else not _is_comm(r)

    if stage_binding == "shared HBM":
        return {
            "stream": "all streams",
            "ceiling": "memory",
            "plane": "hbm",
            "seconds_by_ceiling": {"memory": sum(r.memory_s for r in rows)},
        }
    if stage_binding == a_name:
        sel, stream = [r for r in rows if in_a(r)], a_name
    elif stage_binding == m_name:
        sel, stream = [r for r in rows if not in_a(r)], m_name
    else:
        sel, stream = rows, "serial A+M"
    by: dict[str, float] = {}
    for r in sel:
        by[r.bound] = by.get(r.bound, 0.0) + r.time_s
    ceiling = max(by, key=by.__getitem__) if by else "none"
    plane = "hbm" if ceiling == "memory" else ("cores" if ceiling == "compute" else "")
    if ceiling in ("link", "latency") and comm_ep is not None:
        plane = _slower_plane(system, [r for r in sel if _is_comm(r) and r.comm_bytes > 0], comm_ep)
    return {"stream": stream, "ceiling": ceiling, "plane": plane, "seconds_by_ceiling": by}


def _slower_plane(system: System, comm_rows, ep) -> str:
    """Name of the plane whose share of the EP traffic takes longer (scale-up vs scale-out): each EP op
    (``moe.dispatch``, ``moe.combine``) timed on each plane by ``cmperf.comm.ep_plane_seconds``, the cost
    model the op itself was timed with (a torus plane at its sub-torus all-to-all rate, not its injection
    bandwidth); ties go to the scale-up plane."""
    secs: dict[str, float] = {}
    for r in comm_rows:
        name = r.name.rsplit(".", 1)[-1]
        if name not in system.collectives:
            continue
        for pn, v in ep_plane_seconds(system, name, r.comm_bytes, ep).items():
            secs[pn] = secs.get(pn, 0.0) + float(v)
    if not secs:
        return ""
    up = system.collective("dispatch").plane
    return max(secs, key=lambda pn: (secs[pn], pn == up))


def ep_traffic_split(system: System, ep_size: int) -> dict[str, float]:
    """Fraction of one rank's remote EP bytes on the scale-up and scale-out planes (cmperf.comm)."""
    c = system.collectives.get("dispatch")
    if c is None:
        return {}
    up_b, out_b = _split_bytes(system, c.plane, 1.0, ep_size, c.local_copies == "send")
    tot = float(up_b + out_b)
    if tot <= 0:
        return {"scaleup_fraction": 1.0, "scaleout_fraction": 0.0}
    return {"scaleup_fraction": float(up_b) / tot, "scaleout_fraction": float(out_b) / tot}


def _prefill_plane_seconds(system: System, moe_stage) -> dict[str, float]:
    """Link seconds per plane of one prefill MoE layer's comm ops, from the ops themselves: prefill's own
    kernels (DeepEP normal on NVIDIA: one InfiniBand message per destination node, NVLink forwarding)
    load the planes differently from decode's, which ``_slower_plane`` assumes.

    (``ep_scaleout_fraction`` stays ``ep_traffic_split``: the share of remote (token, rank) deliveries
    addressed outside the scale-up domain, 24/31 for EP32 on 4 nodes; the per-node kernel sends fewer
    bytes over the NIC than that share of the payload.)"""
    f = lambda x: float(np.asarray(x).reshape(-1)[0])  # noqa: E731
    secs: dict[str, float] = {}
    eps = {"dispatch", "combine"}
    fallback = next(iter(system.collectives.values())).plane if system.collectives else ""
    for op, t in zip(moe_stage.stage.ops, moe_stage.op_times, strict=True):
        if op.kind != "comm":
            continue
        if op.collective in eps:
            so = op.scaleout_bytes if isinstance(op, DomainDedupOp) else None
            for pn, v in ep_plane_seconds(
                system, op.collective, op.comm_bytes, op.ep_size, "prefill", so
            ).items():
                secs[pn] = secs.get(pn, 0.0) + f(v)
        elif fallback:  # SP-TP-SP collectives ride the EP kernels' scale-up plane (cmperf.step)
            secs[fallback] = secs.get(fallback, 0.0) + f(t.link_s)
    return secs


# ---------- records


@dataclass(frozen=True)
class CompareRow:
    """One system's prediction. Decode: ``tpot_s``; prefill: ``ttft_s`` and ``batch_s``. ``lower_s`` and
    ``upper_s`` bound TPOT (decode) or the batch time (prefill)."""

    system: str
    chip: str
    phase: str
    deployment_source: str  # "flags", a scenario file, or the default rule
    devices: int
    ranks: int
    ep_size: int
    precision: dict[str, str]
    workload: dict[str, float | list[float]]  # mtp_accept: a list of per-depth rates
    tokens_per_s_per_device: float
    peak_8bit_flops_per_device: float
    tokens_per_s_per_tflops: float
    power_w_per_device: float | None  # None: power not known (per_kw)
    power_basis: str  # "system" (the system file's power / devices), "chip" (the accelerator alone), ""
    tokens_per_s_per_kw: float | None
    tpot_s: float | None
    ttft_s: float | None
    batch_s: float | None
    lower_s: float | None
    upper_s: float | None
    comm_bound_tpot_s: float | None
    binding_stream: str
    binding_ceiling: str
    binding_plane: str
    binding_seconds_by_ceiling: dict[str, float]
    ep_scaleout_fraction: float
    hbm_bytes_per_rank: float
    feasible: bool
    reasons: list[str] = field(default_factory=list)
    attn_tp: int = 1  # attention TP degree (a dense model's TP: its weights split with it)
    moe: bool = True  # the model has routed experts (a dense one: no EP to name)


@dataclass(frozen=True)
class Comparison:
    phase: str
    model: str
    rows: list[CompareRow]


# ---------- decode


def decode_row(system: System, model: Model, **knobs) -> CompareRow:
    """Decode prediction for one system (``knobs``: ``deployment_for``'s)."""
    from . import decode

    dep, source, given = deployment_for(system, model, "decode", **knobs)
    p = decode.predict(system, model, dep)
    if "batch_per_device" not in given:  # the default 96
        p = decode.fit_default_batch(system, model, dep, p)
        dep = replace(dep, batch_per_device=p.batch_per_device)
    fitted = (
        {"batch_fitted_from": p.deployment["batch_fitted_from"]}
        if "batch_fitted_from" in p.deployment
        else {}
    )
    devices, ep_size, prec, batch = dep.devices, dep.ep_size, dep.precision, dep.batch_per_device
    kv_len, mtp, mtp_accept = dep.kv_len, dep.mtp, dep.mtp_accept
    microbatches = p.deployment["microbatches"]  # the count "auto" chose
    policy = system.overlap_for("decode").policy
    main = principal_stage(model)
    b = binding_of(system, p.ops, main, str(p.streams[main]["binding"]), policy, ep_size)
    peak = peak_8bit_flops_per_device(system)
    split = ep_traffic_split(system, ep_size)
    return CompareRow(
        system.name,
        system.chip.name,
        "decode",
        source,
        devices,
        devices * system.ranks_per_device,
        ep_size,
        dict(prec.__dict__),
        {
            "batch_per_device": float(batch),
            "kv_len": float(kv_len),
            "mtp": float(mtp),
            "mtp_accept": list(mtp_accept) if isinstance(mtp_accept, tuple) else float(mtp_accept),
            "microbatches": float(microbatches),
            **fitted,
        },
        p.tokens_per_s_per_device,
        peak,
        p.tokens_per_s_per_device / (peak / 1e12),
        *per_kw(system, p.tokens_per_s_per_device),
        p.tpot_s,
        None,
        None,
        p.lower_tpot_s,
        p.upper_tpot_s,
        p.comm_bound_tpot_s,
        b["stream"],
        b["ceiling"],
        b["plane"],
        b["seconds_by_ceiling"],
        split.get("scaleout_fraction", 0.0),
        p.hbm_bytes_per_rank,
        p.feasible,
        list(p.reasons),
        int(dep.attn_tp),
        model.is_moe,
    )


# ---------- prefill


def prefill_row(system: System, model: Model, **knobs) -> CompareRow:
    """Prefill prediction for one system (``knobs``: ``deployment_for``'s); no context cache here."""
    from . import decode, prefill

    dep, source, given = deployment_for(system, model, "prefill", **knobs)
    dep, _ = dep.validate(system, model)
    ev = prefill.evaluate(system, model, dep)
    fitted: dict[str, float] = {}
    # the rule's unit that does not fit: grown / fewer tokens (prefill.fit_defaults), evaluated again
    if not given & {"devices", "tokens_per_device"} and not bool(np.asarray(ev.feasible).reshape(-1)[0]):
        fit = prefill.fit_defaults(system, model, dep, ev.at(0), devices=True, tokens=True)
        d = fit.deployment
        fitted = {k: float(d[k]) for k in ("devices_fitted_from", "tokens_fitted_from") if k in d}
        if fitted:
            dep = replace(
                dep, devices=d["devices"], ep_size=d["ep_size"], tokens_per_device=d["tokens_per_device"]
            )
            source += " (grown to fit)" if "devices_fitted_from" in fitted else " (fewer tokens to fit)"
            ev = prefill.evaluate(system, model, dep)
    devices, ep_size, prec, microbatches = dep.devices, dep.ep_size, dep.precision, dep.microbatches
    tpd, prompt_len, ranks = dep.tokens_per_device, dep.prompt_len, dep.devices * system.ranks_per_device
    f = lambda x: float(np.asarray(x).reshape(-1)[0])  # noqa: E731
    tps = f(ev.tokens_per_s_per_device)
    feasible = bool(np.asarray(ev.feasible).reshape(-1)[0])
    reasons: list[str] = []
    if not feasible:
        reasons = [
            f"HBM: needs {f(ev.hbm_bytes_per_rank) / 1e9:.1f} GB per {system.chip.rank}, "
            f"{ev.hbm_capacity_bytes / 1e9:.1f} GB usable; at most {f(ev.max_tokens_per_device):,.0f} "
            "tokens per device fit"
        ]
    # binding: cmperf.step's verdict on the MoE-layer stage (prefill's list schedule refines the period)
    main = principal_stage(model)
    moe = next(st for st in ev.stages if st.stage.name == main)
    policy = system.overlap_for("prefill").policy
    verdict = binding_names(policy)[int(np.asarray(moe.binding).reshape(-1)[0])]
    b = binding_of(system, decode.op_rows(ev.stages, microbatches), main, verdict, policy, ep_size)
    plane_s = _prefill_plane_seconds(system, moe)
    if b["ceiling"] in ("link", "latency") and plane_s:
        b["plane"] = max(plane_s, key=plane_s.__getitem__)
    peak = peak_8bit_flops_per_device(system)
    split = ep_traffic_split(system, ep_size)
    return CompareRow(
        system.name,
        system.chip.name,
        "prefill",
        source,
        devices,
        ranks,
        ep_size,
        dict(prec.__dict__),
        {
            "tokens_per_device": tpd,
            "prompt_len": float(prompt_len),
            "microbatches": float(microbatches),
            **fitted,
        },
        tps,
        peak,
        tps / (peak / 1e12),
        *per_kw(system, tps),
        None,
        f(ev.ttft_s),
        f(ev.batch_s),
        f(ev.lower_batch_s),
        f(ev.upper_batch_s),
        None,
        b["stream"],
        b["ceiling"],
        b["plane"],
        b["seconds_by_ceiling"],
        split.get("scaleout_fraction", 0.0),
        f(ev.hbm_bytes_per_rank),
        feasible,
        reasons,
        int(dep.attn_tp),
        model.is_moe,
    )


# ---------- driver


def compare(systems: list[System], model: Model, phase: str, **knobs) -> Comparison:
    """One row per system (knobs: ``deployment_for``'s, the same for every system)."""
    if phase not in PHASES:
        raise CmperfError(f"--phase: {phase!r} is not one of {', '.join(PHASES)}")
    fn = decode_row if phase == "decode" else prefill_row
    return Comparison(phase, model.name, [fn(s, model, **knobs) for s in systems])
