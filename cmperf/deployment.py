"""Deployment knobs (devices, EP size, batch, microbatches, MTP, precisions) and expert placement.

Structural validity lives here (an EP size the experts cannot be placed on, a batch that is negative);
performance does not. Placement follows CloudMatrix-Infer (CM384 §4.2) and DeepSeek's EPLB:

* EP > routed experts ("one expert per rank", dedicated mode): each rank holds one expert; the
  EP - R extra ranks are split between shared-expert copies and redundant copies of hot routed
  experts, half each by default (EP320: 32 shared + 256 routed + 32 redundant, CM384 §4.2).
* EP <= routed experts (co-located mode): every rank holds the shared expert plus ``slots`` routed
  experts, slots = ceil(R * 9/8 / EP) when that adds at most R/8 redundant copies (32 of 256, the
  redundancy both CM384 and DeepSeek use), else ceil(R / EP). EP32 -> 9 routed slots (8 + 1
  redundant) + 1 shared = 10 experts per die (CM384 §4.3); EP144 -> 2 + 1 shared (DeepSeek decode);
  EP72 -> 4 + 1 (SGLang); EP64 -> 4 + 1 with no redundancy; EP1 (every expert on one rank, MoE TP) none.
* A framework whose EPLB is off by default (``expert_redundancy = "even"``: SGLang, TensorRT-LLM, vLLM)
  places only the copies that split the experts evenly (``even_redundant``: EP8 none, EP72 32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import CmperfError
from .frameworks import CACHE_PREFETCH, cache_facts, expert_redundancy
from .specs import DTYPE_BYTES, Model, System
from .units import accept_text


@dataclass(frozen=True)
class Placement:
    """Where experts live on the EP group of ``ep_size`` ranks."""

    ep_size: int
    dedicated: bool  # True: one expert per rank; shared expert on its own ranks
    routed_slots_per_rank: int  # routed expert copies per rank (1 in dedicated mode)
    num_redundant: int  # extra copies of routed experts over all ranks
    shared_ranks: int  # ranks holding a shared-expert copy (dedicated) or ep_size (co-located)
    routed_ranks: int  # ranks holding routed experts

    @property
    def experts_per_rank(self) -> int:
        """Expert weight sets held by the most loaded rank kind (routed + co-located shared)."""
        return 1 if self.dedicated else self.routed_slots_per_rank + 1

    @property
    def shared_is_remote(self) -> bool:
        """Dispatch sends each token to the shared expert too (an extra copy) only in dedicated mode."""
        return self.dedicated


def placement_arrays(model: Model, ep_size, num_redundant=None, slots_per_rank=None) -> dict[str, np.ndarray]:
    """Vectorized default placement (rules in the module docstring) for an array of EP sizes.

    ``slots_per_rank`` N (``--slots-per-rank``): every rank holds N routed-expert slots and a copy of the
    shared experts (GPU DP attention's layout, SGLang/TensorRT-LLM EPLB over ``ep_num_redundant_experts``
    slots): N * EP - R redundant copies, no dedicated shared-expert ranks.

    Returns arrays: dedicated (bool), slots (routed copies per routed rank), redundant, shared_ranks,
    routed_ranks, experts_per_rank (weight sets on the busiest rank kind).
    """
    r = model.n_routed_experts
    ep = np.asarray(ep_size, dtype=float)
    if slots_per_rank is not None:
        n, ep = np.broadcast_arrays(np.asarray(slots_per_rank, dtype=float), ep)
        shared = 1.0 if model.n_shared_experts > 0 else 0.0
        return {
            "dedicated": np.zeros(ep.shape, dtype=bool),
            "slots": n,
            "redundant": n * ep - r,
            "shared_ranks": ep * shared,
            "routed_ranks": ep,
            "experts_per_rank": n + shared,
        }
    dedicated = ep > r
    extra = np.maximum(ep - r, 0.0)
    has_shared = model.n_shared_experts > 0
    if num_redundant is None:
        red_ded = np.floor(extra / 2) if has_shared else extra
        ep1 = np.maximum(ep, 1)
        slots_co = np.ceil(r * 9 / 8 / ep1)
        slots_co = np.where(slots_co * ep - r > r / 8, np.ceil(r / ep1), slots_co)
        # one rank holds every expert: a copy beside its original moves no load, so none is placed
        slots_co = np.where(ep <= 1, float(r), slots_co)
        red_co = slots_co * ep - r
    else:
        red_ded = np.zeros_like(ep) + np.asarray(num_redundant, dtype=float)  # (one per EP size)
        red_co = red_ded
        slots_co = (r + red_co) / np.maximum(ep, 1)
    red = np.where(dedicated, red_ded, red_co)
    slots = np.where(dedicated, 1.0, slots_co)
    shared_ranks = np.where(dedicated, extra - red_ded, ep) if has_shared else np.zeros_like(ep)
    routed_ranks = np.where(dedicated, r + red_ded, ep)
    experts_per_rank = np.where(dedicated, 1.0, slots + (1.0 if has_shared else 0.0))
    return {
        "dedicated": dedicated,
        "slots": slots,
        "redundant": red,
        "shared_ranks": shared_ranks,
        "routed_ranks": routed_ranks,
        "experts_per_rank": experts_per_rank,
    }


def even_redundant(model: Model, ep_size) -> Any:
    """The fewest redundant copies that split the R routed experts evenly over ``ep_size`` ranks:
    ceil(R / EP) EP - R (EP8: 0, EP72: 32, EP48: 32); 0 beyond R ranks, where the extra ranks hold
    shared-expert copies (``frameworks.EXPERT_REDUNDANCY`` "even")."""
    r = model.n_routed_experts
    ep = np.asarray(ep_size)
    red = np.where(ep > r, 0, (-r) % np.maximum(ep, 1))
    return int(red) if red.ndim == 0 else red


def redundant_for(dep: Any, model: Model, ep_size) -> Any:
    """Redundant expert copies of ``dep`` on ``ep_size`` ranks: its ``num_redundant`` (``--redundant``),
    else ``even_redundant`` under a framework that places no more (``expert_redundancy = "even"``), else
    None (``placement_arrays``' rule); None with ``--slots-per-rank``, which sets them."""
    if dep.num_redundant is not None or dep.slots_per_rank is not None:
        return dep.num_redundant
    return even_redundant(model, ep_size) if expert_redundancy(dep.framework) == "even" else None


def place_experts(
    model: Model,
    ep_size: int,
    num_redundant: int | None = None,
    flag: str = "--ep",
    slots_per_rank: int | None = None,
) -> Placement:
    """Validated placement for one EP size; ``num_redundant`` overrides the default redundancy,
    ``slots_per_rank`` the layout (``placement_arrays``)."""
    r = model.n_routed_experts
    if ep_size < 1:
        raise CmperfError(f"{flag}: EP size must be at least 1, got {ep_size}")
    if slots_per_rank is not None:
        if num_redundant is not None:
            raise CmperfError(
                "--redundant: conflicts with --slots-per-rank (which sets N x EP - experts copies)"
            )
        if slots_per_rank * ep_size < r:
            raise CmperfError(
                f"--slots-per-rank: {slots_per_rank} slots on EP{ep_size} hold {slots_per_rank * ep_size} "
                f"of the {r} routed experts; give at least {-(-r // ep_size)}"
            )
        a = placement_arrays(model, ep_size, None, slots_per_rank)
        return Placement(ep_size, False, slots_per_rank, int(a["redundant"]), int(a["shared_ranks"]), ep_size)
    if ep_size > r:
        extra = ep_size - r
        if num_redundant is not None and not (0 <= num_redundant < extra):
            raise CmperfError(
                f"--redundant: EP{ep_size} has {extra} ranks beyond the {r} routed experts; "
                f"choose --redundant between 0 and {extra - 1} (the rest hold shared-expert copies)"
            )
    elif num_redundant is not None and (num_redundant < 0 or (r + num_redundant) % ep_size):
        raise CmperfError(
            f"--redundant: {r} routed + {num_redundant} redundant experts do not split evenly over "
            f"EP{ep_size}; choose N so that {r} + N is a multiple of {ep_size}"
        )
    a = placement_arrays(model, ep_size, num_redundant)
    if a["dedicated"] and model.n_shared_experts and a["shared_ranks"] < 1:
        raise CmperfError(
            f"{flag}: EP{ep_size} leaves no rank for the shared expert; use EP{r} or at least EP{r + 2}"
        )
    return Placement(
        ep_size,
        bool(a["dedicated"]),
        int(a["slots"]),
        int(a["redundant"]),
        int(a["shared_ranks"]),
        int(a["routed_ranks"]),
    )


@dataclass(frozen=True)
class Precision:
    """Datatype per op group (DeepSeek on Hopper: FP8 GEMMs and dispatch, BF16 attention and combine;
    CloudMatrix-Infer: INT8 W8A8 GEMMs and dispatch, BF16 attention, gate, head and combine)."""

    gemm: str = "int8"  # dense and attention projections (weights and activations)
    experts: str = "int8"
    attention: str = "bf16"  # attention core compute
    kv: str = "bf16"  # KV-cache storage
    dispatch: str = "int8"
    combine: str = "bf16"
    head: str = "bf16"  # embedding, gate and LM head (kept in BF16 as sensitive ops, CM384 §4.4)

    #: (chip, dtype) pairs already warned about in this process (one warning line each, not one per check)
    _warned = set[tuple[str, str]]()  # noqa: RUF012 (no annotation: not a dataclass field)

    def check(self, system: System) -> None:
        """Raise CmperfError for a datatype the chip lacks; warn (one stderr line per chip and datatype, the
        rate used in it) for a datatype the chip runs at a crippled rate (``Chip.crippled``: INT8 on
        Blackwell Ultra, 153.5 TOPS against FP8 4,500 TFLOPS). The prediction then uses that crippled
        peak, never a silent full-rate assumption."""
        for group, dtype in self.__dict__.items():
            if dtype not in DTYPE_BYTES:
                raise CmperfError(
                    f"--{group}-dtype: unknown datatype {dtype!r} (one of {', '.join(DTYPE_BYTES)})"
                )
            if group == "kv" and dtype in BLOCK_SCALED:  # a hardware block format: the chip must read it
                system.chip.peak(dtype, where=f"--kv-dtype {dtype} on {system.name}")
            if group in ("gemm", "experts", "attention", "head"):
                peak = system.chip.peak(dtype, where=f"precision {group}={dtype} on {system.name}")
                slow = system.chip.crippled(dtype)
                if slow is not None and (system.chip.name, dtype) not in Precision._warned:
                    import sys

                    Precision._warned.add((system.chip.name, dtype))
                    flag = {"gemm": "--weights", "experts": "--experts-dtype"}.get(group, f"--{group}-dtype")
                    sys.stderr.write(
                        f"warning: {flag} {dtype} on {system.name}: chip {system.chip.name} runs {dtype} at "
                        f"only {peak / 1e12:g} TOPS, {100 * peak / slow[1]:.1f}% of its {slow[0]} "
                        f"{slow[1] / 1e12:g} TFLOPS; the prediction uses {peak / 1e12:g} TOPS "
                        f"({flag} {slow[0]} for the full-rate path)\n"
                    )


#: Block-scaled datatypes (OCP MX, NVIDIA NVFP4): a KV cache stored in one needs a chip with that format.
BLOCK_SCALED = ("mxfp8", "mxfp4", "nvfp4")


def default_precision(
    system: System, weights: str | None = None, experts: str | None = None, kv: str = "bf16"
) -> Precision:
    """Per-op-group datatypes for ``system`` (rules in the module docstring).

    ``weights``: GEMM (and, by default, expert) datatype; None = fp8 where the chip has it, else int8.
    ``experts``: None = as ``weights``; "native" = fp4 where the chip has it, else as ``weights``; or a
    datatype. Dispatch carries the activations in the 8-bit GEMM type (FP4 experts keep an FP8 dispatch:
    the FP4 activation quantization happens in the expert kernel); BF16 weights dispatch BF16.
    """
    chip = system.chip
    if weights is None:
        weights = "fp8" if "fp8" in chip.peak_flops else "int8"
    chip.peak(weights, where=f"--weights {weights} on {system.name}")
    if experts is None:
        experts = weights
    elif experts == "native":
        # the fastest 4-bit path the chip has (fp4, nvfp4 or mxfp4), else as the weights
        fours = [d for d in ("nvfp4", "fp4", "mxfp4") if d in chip.peak_flops]
        experts = max(fours, key=lambda d: chip.peak_flops[d]) if fours else weights
    chip.peak(experts, where=f"--experts-dtype {experts} on {system.name}")
    # 8-bit GEMMs dispatch in their type; 4-bit weights keep an FP8 (MXFP8 on a chip without plain fp8) one
    four = ("fp4", "nvfp4", "mxfp4")
    disp = weights if weights in ("int8", "fp8", "mxfp8") else ("fp8" if weights in four else "bf16")
    if disp == "fp8" and "fp8" not in chip.peak_flops and "mxfp8" in chip.peak_flops:
        disp = "mxfp8"
    p = Precision(gemm=weights, experts=experts, dispatch=disp, kv=kv)
    p.check(system)
    return p


def precision_from(
    system: System,
    weights: str | None = None,
    experts: str | None = None,
    kv: str | None = None,
    table: dict[str, str] | None = None,
) -> Precision:
    """Per-op-group datatypes from the flags' spelling: the system default (``default_precision``), then
    ``table`` (a scenario's ``[deployment.precision]``: Precision fields) for the groups no flag sets
    (--weights sets the GEMM, expert and dispatch types, --experts-dtype the experts, --kv-dtype the
    cache)."""
    prec = default_precision(system, weights, experts, kv or "bf16")
    if table:
        names = {f.name for f in fields(Precision)}
        for k in table:
            if k not in names:
                raise CmperfError(
                    f"deployment.precision.{k}: unknown op group (one of {', '.join(sorted(names))})"
                )
        given = ({"gemm", "experts", "dispatch"} if weights else set()) | ({"experts"} if experts else set())
        given |= {"kv"} if kv else set()
        prec = replace(prec, **{k: v for k, v in table.items() if k not in given})
        prec.check(system)
    return prec


#: Microbatch counts ``microbatches = "auto"`` chooses from (cmperf.decode.best_microbatches).
AUTO = "auto"

#: The flag that sets each knob, for error messages (the CLI's spelling; scenario files use field names).
FLAGS = {
    "devices": "--devices",
    "ep_size": "--ep",
    "microbatches": "--microbatches",
    "eplb": "--eplb",
    "imbalance": "--imbalance",
    "num_redundant": "--redundant",
    "slots_per_rank": "--slots-per-rank",
    "batch_per_device": "--batch",
    "kv_len": "--kv-len",
    "kv_capacity_len": "--kv-capacity-len",
    "kv_cv": "--kv-cv",
    "mtp": "--mtp",
    "mtp_accept": "--mtp-accept",
    "draft_model": "--draft-model",
    "attention_cube_cores": "--attn-cores",
    "step_overhead_s": "--step-overhead",
    "tokens_per_device": "--tokens-per-device",
    "prompt_len": "--prompt-len",
    "cache_hit": "--cache-hit",
    "cache_plane": "--cache-plane",
    "cache_prefetch": "--cache-prefetch",
    "attn_tp": "--attn-tp",
    "moe_tp": "--moe-tp",
    "prefill_chunk_tokens": "--chunk-tokens",
    "framework": "--framework",
}

PHASES = ("decode", "prefill")
#: ``--eplb``: the Zipf routing model, perfect balance, or the measured-statistics modes (decode and
#: prefill, cmperf.decode.MEASURED_EPLB)
EPLB_MODES = ("model", "perfect", "none", "static", "dynamic")

#: Fields each phase reads (the others are ignored by it); the rest are common to both.
DECODE_FIELDS = (
    "batch_per_device",
    "kv_len",
    "kv_capacity_len",
    "kv_cv",
    "mtp",
    "mtp_accept",
    "draft_model",
    "attention_cube_cores",
    "step_overhead_s",
    "prefill_chunk_tokens",
)
PREFILL_FIELDS = ("tokens_per_device", "cache_hit", "cache_plane", "cache_prefetch")


@dataclass(frozen=True)
class Deployment:
    """One serving instance of one phase: every knob a prediction reads, in one record.

    One record with phase parts (``phase`` = "decode" | "prefill"): the common knobs, then the decode part
    (``DECODE_FIELDS``), then the prefill part (``PREFILL_FIELDS``); a phase ignores the other's part.
    Numeric knobs may be numpy arrays: the phase predictors broadcast them, so one record is a whole grid
    (cmperf.search builds its grids with ``dataclasses.replace``). ``None`` means "the default for this
    system and model": ``resolve`` fills it (instance sized for the system, fp8 where the chip has it,
    the system's core split and attention TP, ...). ``check`` lists what is wrong with a scalar record
    (each reason names the flag), ``validate`` raises the first one.

    Units: ``batch_per_device`` is concurrent sequences per device (NPU/GPU), ``tokens_per_device``
    prompt tokens per device per prefill batch, lengths in tokens, ``attn_tp`` in ranks.
    """

    phase: str = "decode"
    # common
    devices: Any = None  # None: decode_unit_devices / prefill_unit_devices
    ep_size: Any = None  # None: every rank of the instance
    microbatches: Any = None  # int, array or "auto" (decode); None: "auto" (decode), 2 (prefill)
    precision: Precision | None = None  # None: default_precision(system)
    eplb: str | None = None  # EPLB_MODES; None: "model" (decode), "perfect" (prefill, CM384 §5)
    imbalance: Any = None  # max/mean routed load; None = from ``eplb``
    num_redundant: int | None = None  # redundant routed-expert copies; None: the placement rule
    slots_per_rank: Any = (
        None  # routed-expert slots on every rank (shared experts replicated); None: the rule
    )
    # ranks one attention group spans (heads split, cmperf.graph.tp_attention); None: 1 in decode
    # (data-parallel attention), the system's attention_tp_devices in prefill (SP-TP-SP)
    attn_tp: Any = None
    moe_tp: Any = None  # ranks each expert's FFN is split over (EP = ranks / moe_tp); None: 1
    # serving-framework profile (frameworks/NAME.toml, cmperf.frameworks): its microbatch counts, MTP chain
    # support and per-step host time; None: no profile (every count, no framework step time)
    framework: str | None = None
    prompt_len: Any = 4096.0  # prefill: the prompts' length; decode: the chunk's prompts (aggregated)
    # decode
    batch_per_device: Any = 96.0
    kv_len: Any = 4096.0  # mean KV length per sequence
    kv_capacity_len: Any = None  # KV length memory must hold per sequence; None: kv_len
    kv_cv: Any = 0.0  # CV of the sequences' KV lengths (cmperf.decode.straggler_kv_len)
    mtp: Any = None  # speculative tokens per step; None: 1 where the model has an MTP module, else 0
    mtp_accept: Any = 0.7  # per-depth acceptance (every depth), or a tuple of conditional rates per depth
    draft_model: Model | None = None  # a separate (dense) draft model run mtp times per step, not MTP modules
    attention_cube_cores: Any = None  # None: the system's [overlap.decode] split
    step_overhead_s: Any = 0.0  # host time per step outside the layers (graph launch, sampling, scheduling)
    # aggregated serving (in-flight batching): prompt tokens per device each decode step carries
    prefill_chunk_tokens: Any = 0.0
    # prefill
    tokens_per_device: Any = 16384.0
    cache_hit: Any = 0.0  # fraction of prompt tokens whose KV is loaded from the context cache
    cache_plane: str | None = None  # None: cmperf.deployment.default_cache_plane
    # "prefix" (every cached block loaded before the compute) | "layer" (layer l+1 loaded behind layer l);
    # None: the framework's (cmperf.frameworks.cache_facts), "prefix" without one
    cache_prefetch: str | None = None

    def resolve(self, system: System, model: Model) -> Deployment:
        """The record with every ``None`` default filled for ``system`` and ``model`` (idempotent)."""
        prefill = self.phase == "prefill"
        devices = self.devices
        dense_t = dense_tp(system, model, self.phase)  # 0: not a dense model's TP group
        if devices is None:
            devices = prefill_unit_devices(system, model) if prefill else decode_unit_devices(system, model)
        moe_tp = self.moe_tp if self.moe_tp is not None else 1
        ranks = np.asarray(devices) * system.ranks_per_device
        ep = self.ep_size if self.ep_size is not None else ranks // np.asarray(moe_tp)
        # prefill: two microbatches hide the MoE all-to-all (CM384 §4.3); a dense model has none to hide
        # and its stacks run one (frameworks.microbatch_counts)
        mb = self.microbatches
        if mb is None:
            mb = (2 if model.is_moe else 1) if prefill else AUTO
        tp = self.attn_tp
        if tp is None and dense_t:  # the TP group's degree, within the ranks given
            tp = np.gcd(np.asarray(ranks, dtype=np.int64), dense_t)
        elif prefill and tp is None:
            tp = np.minimum(attention_tp_devices(system), np.asarray(devices)) * system.ranks_per_device
            # heads split evenly: the largest degree within the default that divides them (40 heads: 8)
            tp = np.gcd(np.asarray(tp, dtype=np.int64), model.num_attention_heads)
        elif tp is None:
            tp = 1
        mtp = self.mtp if self.mtp is not None else (1 if self.draft_model else min(1, model.num_mtp_modules))
        cores = self.attention_cube_cores
        if cores is None:
            cores = system.overlap_for("decode").attention_cube_cores
        return replace(
            self,
            devices=_int(devices),
            ep_size=_int(ep),
            microbatches=mb,
            mtp=mtp,
            precision=self.precision or default_precision(system),
            eplb=self.eplb or ("perfect" if prefill else "model"),
            attention_cube_cores=_int(cores),
            cache_plane=self.cache_plane or (default_cache_plane(system) if prefill else None),
            cache_prefetch=self.cache_prefetch or (cache_facts(self.framework)[0] if prefill else None),
            attn_tp=_int(tp),
            moe_tp=_int(moe_tp),
        )

    def check(self, system: System, model: Model) -> list[str]:
        """What is wrong with this (scalar) record on ``system`` and ``model``: one reason per problem,
        each naming its flag and the fix; [] when it is valid."""
        if self.phase not in PHASES:
            return [f"phase: {self.phase!r} is not one of {', '.join(PHASES)}"]
        bad = self._domain_reasons()
        # a knob outside its domain (NaN, inf, a string, half a device) is reported once, and the checks
        # below run with its default in its place (they would fail on it, or repeat the reason)
        rec = replace(self, **{k: _FIELD_DEFAULTS[k] for k in bad}) if bad else self
        d = rec.resolve(system, model)
        out: list[str] = list(bad.values())
        ranks = d.devices * system.ranks_per_device
        if not 1 <= d.devices <= system.num_devices:
            out.append(
                f"--devices: {d.devices} is outside 1..{system.num_devices} ({system.name} has "
                f"{system.num_devices} devices)"
            )
        # an EP follows --moe-tp (ranks / moe_tp, maybe resolved already): when --moe-tp does not divide the
        # ranks, it is the one named (below)
        derived = isinstance(d.moe_tp, int) and d.moe_tp >= 1 and ranks % d.moe_tp
        if not derived and (d.ep_size < 1 or ranks % d.ep_size):
            out.append(
                f"--ep: EP{d.ep_size} must divide the {ranks} ranks of {d.devices} devices "
                f"({system.ranks_per_device} per device on {system.name}); try --ep {ranks}"
            )
        mb = d.microbatches
        allowed = "auto or 1, 2, 3, 4" if d.phase == "decode" else "1, 2, 3, 4"
        if isinstance(mb, str) and not (mb == AUTO and d.phase == "decode"):
            out.append(f"--microbatches: {mb!r} is not a count; give {allowed}")
        elif not isinstance(mb, str) and mb not in (1, 2, 3, 4):
            out.append(f"--microbatches: must be {allowed}, got {mb}")
        from .frameworks import reasons as framework_reasons

        out += framework_reasons(d, model)
        if d.eplb not in EPLB_MODES:
            out.append(f"--eplb: {d.eplb!r} is not one of {', '.join(EPLB_MODES)} ({d.phase})")
        if d.imbalance is not None and not d.imbalance >= 1.0:
            out.append(f"--imbalance: max/mean load is at least 1, got {d.imbalance:g}")
        ctx = model.max_position_embeddings
        if d.phase == "decode":
            if not d.batch_per_device > 0:
                out.append(f"--batch: must be positive, got {d.batch_per_device:g}")
            if not 1 <= d.kv_len <= ctx:
                out.append(f"--kv-len: {d.kv_len:g} is outside 1..{ctx} (the model's context)")
            if d.kv_capacity_len is not None and not d.kv_len <= d.kv_capacity_len <= ctx:
                out.append(
                    f"--kv-capacity-len: {d.kv_capacity_len:g} is outside {d.kv_len:g}..{ctx}; give a length "
                    f"from the mean KV length ({d.kv_len:g}) to {model.name}'s context ({ctx})"
                )
            if not 0.0 <= d.kv_cv <= 10.0:
                out.append(f"--kv-cv: must be in [0, 10], got {d.kv_cv:g}")
            draft = d.draft_model
            if d.mtp < 0 or (d.mtp > 0 and not model.num_mtp_modules and draft is None):
                out.append(f"--mtp: {model.name} has no MTP module; use --mtp 0 or a --draft-model")
            if draft is not None and draft.is_moe:
                out.append(
                    f"--draft-model: {draft.name} is an MoE model; a draft runs replicated on every rank, "
                    "and cmperf models dense drafts"
                )
            elif draft is not None and d.mtp < 1:
                out.append(
                    f"--draft-model: {draft.name} drafts nothing at --mtp 0; give --mtp D (drafts per step)"
                )
            rates = d.mtp_accept if isinstance(d.mtp_accept, tuple) else (d.mtp_accept,)
            if not rates or not all(0.0 <= a <= 1.0 for a in rates):
                out.append(f"--mtp-accept: each rate must be in [0, 1], got {accept_text(d.mtp_accept)}")
            elif isinstance(d.mtp_accept, tuple) and len(rates) > max(d.mtp, 1):
                out.append(
                    f"--mtp-accept: {len(rates)} per-depth rates for --mtp {d.mtp}; "
                    f"give at most {max(d.mtp, 1)}"
                )
            if not 0.0 <= d.step_overhead_s < 1.0:
                out.append(f"--step-overhead: must be a time in [0, 1 s), got {d.step_overhead_s:g} s")
            split = system.overlap_for("decode").policy == "split-cores"
            if not split and self.attention_cube_cores not in (None, 0):
                out.append(
                    f"--attn-cores: {system.name} does not split the cube cores between streams "
                    f'([overlap.decode] policy = "{system.overlap_for("decode").policy}"): the flag would '
                    "have no effect; leave it out"
                )
            if split and not 0 < d.attention_cube_cores < system.chip.cube_cores:
                out.append(
                    f"--attn-cores: {d.attention_cube_cores} leaves no cube core to one stream; use 1 to "
                    f"{system.chip.cube_cores - 1} of the {system.chip.cube_cores} on a {system.chip.rank}"
                )
        else:
            if not d.tokens_per_device > 0:
                out.append(f"--tokens-per-device: must be positive, got {d.tokens_per_device:g}")
            if not 1 <= d.prompt_len <= ctx:
                out.append(f"--prompt-len: {d.prompt_len:g} is outside 1..{ctx} (the model's context)")
            else:
                # the devices one prompt is spread over: the instance (SP-TP-SP), or a dense model's TP
                # group, its data-parallel groups each prefilling their own prompts (megatron_prefill)
                unit, group = d.devices, ""
                if megatron_prefill(model) and d.devices > 1:
                    unit = min(max(int(d.attn_tp) // system.ranks_per_device, 1), d.devices)
                    group = f" (a TP{d.attn_tp} group: a prompt is one group's)"
                if d.tokens_per_device * unit < d.prompt_len:
                    least = math.ceil(d.prompt_len / unit)
                    out.append(
                        f"--tokens-per-device: {d.tokens_per_device:g} x {unit} device{'s' * (unit > 1)}"
                        f"{group} holds no whole {d.prompt_len:g}-token prompt; raise it to at least {least}"
                    )
            if not 0.0 <= d.cache_hit <= 1.0:
                out.append(f"--cache-hit: must be in [0, 1], got {d.cache_hit:g}")
            if d.cache_plane not in system.planes:
                out.append(
                    f"--cache-plane: system {system.name} has no plane {d.cache_plane!r} "
                    f"(it has {', '.join(system.planes)})"
                )
            if d.cache_prefetch not in CACHE_PREFETCH:
                out.append(
                    f"--cache-prefetch: expected one of {', '.join(CACHE_PREFETCH)}, got {d.cache_prefetch!r}"
                )
        out += _parallel_reasons(self, d, system, model, ranks)
        try:
            assert d.precision is not None
            d.precision.check(system)
            if not out:
                place_experts(
                    model, d.ep_size, redundant_for(d, model, d.ep_size), slots_per_rank=d.slots_per_rank
                )
        except CmperfError as e:
            out.append(str(e))
        return out

    def _domain_reasons(self) -> dict[str, str]:
        """{field: reason} for each scalar knob the phase reads that is outside its static domain
        (``cmperf.domains.DEPLOYMENT``: finite, in range, whole where it counts; a name is a string), the
        reason naming the knob's flag."""
        from .domains import DEPLOYMENT

        other = PREFILL_FIELDS if self.phase == "decode" else DECODE_FIELDS
        out: dict[str, str] = {}
        for name, dom in DEPLOYMENT.items():
            v = getattr(self, name)
            if name in other or v is None or (isinstance(v, np.ndarray) and v.ndim > 0):
                continue
            try:
                for x in v if name == "mtp_accept" and isinstance(v, tuple) else (v,):  # per-depth rates
                    dom.check(
                        x.item() if isinstance(x, np.generic | np.ndarray) else x, FLAGS[name], text=False
                    )
            except CmperfError as e:
                out[name] = str(e)
        names = ("eplb", "cache_plane", "cache_prefetch") if self.phase == "prefill" else ("eplb",)
        for name in names:
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                out[name] = f"{FLAGS[name]}: {v!r} is not a name; give one of the choices (see --help)"
        return out

    def validate(self, system: System, model: Model) -> tuple[Deployment, Placement]:
        """(resolved record, expert placement), or CmperfError with the first ``check`` reason."""
        reasons = self.check(system, model)
        if reasons:
            raise CmperfError(reasons[0])
        d = self.resolve(system, model)
        return d, place_experts(
            model, d.ep_size, redundant_for(d, model, d.ep_size), slots_per_rank=d.slots_per_rank
        )

    def knobs(self) -> dict[str, Any]:
        """The record as plain values (precision as a dict): the ``deployment`` of JSON outputs."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.__dict__ if isinstance(v, Precision) else v.name if isinstance(v, Model) else v
        return out

    @classmethod
    def from_knobs(cls, knobs: dict[str, Any]) -> Deployment:
        """The record back from ``knobs()`` / a JSON ``deployment`` (keys that are not fields, such as
        ``microbatches_auto``, are dropped)."""
        names = {f.name for f in fields(cls)}
        vals = {k: v for k, v in knobs.items() if k in names}
        if isinstance(vals.get("precision"), dict):
            vals["precision"] = Precision(**vals["precision"])
        if isinstance(vals.get("draft_model"), str):  # a JSON deployment names its draft model
            from .specs import load_model

            vals["draft_model"] = load_model(vals["draft_model"])
        return cls(**vals)

    def phase_knobs(self) -> dict[str, Any]:
        """``knobs`` without the other phase's part."""
        other = PREFILL_FIELDS if self.phase == "decode" else DECODE_FIELDS
        return {k: v for k, v in self.knobs().items() if k not in other}


#: Each field's default (what ``check`` puts in place of a knob outside its domain while it checks the rest).
_FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Deployment)}


def attn_tp_reasons(rec: Deployment, d: Deployment, system: System, model: Model, ranks: int) -> list[str]:
    """What is wrong with the attention TP degree of the resolved record ``d`` on ``ranks`` ranks (``rec``
    as given: a default TP that does not fit names --devices): it must divide the ranks and the heads (and
    the KV heads, or be a multiple of them; MLA's heads may split unevenly, at least one per rank,
    ``graph.heads_per_rank``) and, in decode, fit one scale-up domain or be a whole number of
    them (its all-reduce then crosses the scale-out plane hierarchically); [] when it is valid."""
    out = []
    tp, heads = d.attn_tp, model.num_attention_heads
    fits = math.gcd(ranks, heads)  # the largest TP that divides both
    # MLA's heads may split unevenly (graph.heads_per_rank: the busiest rank's ceil(H / tp)); other
    # attention kinds split KV or linear heads with them, so their degree divides the heads
    uneven = model.attention == "mla" and tp <= heads
    if tp < 1 or ranks % tp or (heads % tp and not uneven):
        if rec.attn_tp is None:  # the system's default TP: the device count is what does not fit
            out.append(
                f"--devices: {d.devices} devices ({ranks} ranks) do not split into the default "
                f"attention TP of {tp} ranks ({system.name}); use a multiple of "
                f"{tp // system.ranks_per_device or 1} devices, or --attn-tp {fits}"
            )
        else:
            what = f"divide the {ranks} ranks" + ("" if uneven else f" and the {heads} heads")
            out.append(f"--attn-tp: {tp} must {what}; try --attn-tp {fits}")
    elif (d.phase == "decode" or megatron_prefill(model)) and tp > 1:  # an all-reduce per layer
        kv = model.num_key_value_heads if model.attention == "gqa" else 1
        up = system.scaleup_plane()
        domain = system.domain_ranks(up)
        if tp > domain and (tp % domain or system.scaleout_plane() == up):
            out.append(
                f"--attn-tp: TP{tp} spans more than the {domain} ranks of one scale-up domain on "
                f"{system.name} and is not a whole number of domains joined by a scale-out plane (a "
                f"hierarchical all-reduce, cmperf.comm.allreduce_time); use --attn-tp {domain} or a "
                f"multiple of it"
            )
        elif model.attention not in ("mla", "gqa", "kda"):
            out.append(
                f"--attn-tp: tensor-parallel decode attention is modelled for MLA, GQA and KDA models; "
                f"{model.name} has {model.attention} attention: use --attn-tp 1"
            )
        elif kv % tp and tp % kv:
            out.append(
                f"--attn-tp: TP{tp} neither splits nor replicates the {kv} KV heads evenly; "
                f"use a divisor or multiple of {kv}"
            )
    return out


def _parallel_reasons(rec: Deployment, d: Deployment, system: System, model: Model, ranks: int) -> list[str]:
    """What is wrong with the attention TP and MoE TP degrees of the resolved record ``d`` (``rec`` as
    given: a default TP that does not fit names --devices): ``attn_tp_reasons``; MoE TP must divide the
    ranks and be at most the experts' intermediate size (an uneven split: ``graph.expert_split``), with
    MoE TP x EP dividing the ranks."""
    out = attn_tp_reasons(rec, d, system, model, ranks)
    m_tp = d.moe_tp
    if m_tp != 1:
        inter = model.moe_intermediate_size
        if not model.is_moe:
            out.append(f"--moe-tp: {model.name} is a dense model (no experts to split); leave it out")
        elif m_tp < 1 or ranks % m_tp or m_tp > inter:
            out.append(
                f"--moe-tp: {m_tp} must divide the {ranks} ranks and be at most the experts' {inter} "
                f"intermediate size; try --moe-tp {math.gcd(ranks, inter)}"
            )
        elif ranks % (m_tp * d.ep_size):
            out.append(
                f"--ep: MoE TP{m_tp} x EP{d.ep_size} = {m_tp * d.ep_size} ranks must divide the {ranks} "
                f"ranks; try --ep {ranks // m_tp}"
            )
    return out


def _int(x):
    """Integer-valued knobs stay Python ints for scalars (JSON, messages), arrays stay arrays."""
    a = np.asarray(x)
    return int(a) if a.ndim == 0 and float(a) == int(a) else x


def attention_tp_devices(system: System) -> int:
    """Devices one prompt's prefill attention spans by default: the system's ``[overlap.prefill]
    attention_tp_devices`` (1 = data-parallel attention, DeepSeek's and SGLang's GPU prefill), else
    ``DEFAULT_ATTN_TP_DEVICES``."""
    return system.overlap_for("prefill").attention_tp_devices or DEFAULT_ATTN_TP_DEVICES


def search_attn_tp(system: System, model: Model) -> tuple[int, ...]:
    """The attention-TP degrees a decode search tries by default (``optimize --attn-tp``). An MoE model:
    1, data-parallel attention (the CM384 §4.2 and DeepSeek decode layout; TP degrees are opt-in). A dense
    model: every power of two up to one scale-up domain's ranks that splits its heads (and its KV heads, or
    replicates them evenly), since tensor parallelism is how a dense model's weights split (vLLM, SGLang,
    TensorRT-LLM ``tensor_parallel_size``); without it the search holds the whole model on every rank."""
    if model.is_moe:
        return (1,)
    domain = system.domain_ranks(system.scaleup_plane())
    heads = model.num_attention_heads
    kv = model.num_key_value_heads if model.attention == "gqa" else 1
    out, t = [], 1
    while t <= domain:
        if heads % t == 0 and (kv % t == 0 or t % kv == 0):
            out.append(t)
        t *= 2
    return tuple(out)


def megatron_prefill(m: Model) -> bool:
    """Whether prefill under attention TP runs Megatron-LM TP (``graph.gqa_prefill_ops`` layout
    "megatron") rather than SP-TP-SP: a dense GQA model. SP-TP-SP (CM384 §4.3) keeps each rank's tokens
    its own so that the MoE all-to-all carries no copies; a dense model has no all-to-all, and the stacks
    that serve one (vLLM, SGLang, TensorRT-LLM ``tensor_parallel_size``) split every projection and the
    MLP over the TP group, so its weights split with it (Llama-3.1-70B: 70 GB of FP8 on one GPU, 8.8 GB
    at TP8)."""
    return not m.is_moe and m.attention == "gqa" and "linear" not in m.layer_attention


def dense_tp(system: System, model: Model, phase: str = "decode") -> int:
    """The default TP degree of a dense model's instance, decode and prefill (``Deployment.resolve``,
    ``cmperf compare``): the largest of ``search_attn_tp`` (powers of two of one scale-up domain that split
    the heads) up to the KV heads (a larger degree replicates KV heads and saves no KV memory) and a whole
    number of devices: 8 for Llama-3.1-70B on every system here (its 70 GB of FP8 weights fit on no 80 GB
    GPU whole). 0 where the rule does not apply: an MoE model, a prefill not run as Megatron TP
    (``graph.megatron_prefill``), a decode attention kind without TP."""
    if model.is_moe or (phase == "prefill" and not megatron_prefill(model)):
        return 0
    if phase != "prefill" and model.attention not in ("mla", "gqa", "kda"):
        return 0
    kv = model.num_key_value_heads if model.attention == "gqa" else model.num_attention_heads
    ok = [t for t in search_attn_tp(system, model) if t <= max(kv, 1) and t % system.ranks_per_device == 0]
    return max(ok, default=system.ranks_per_device)


#: Attention TP degree of the SP-TP-SP layout when the system (``[overlap.prefill] attention_tp_devices``)
#: does not set it. CM384 §4.3 names the layout but not the degree; stated assumption: one UB node,
#: 8 NPUs = 16 dies.
DEFAULT_ATTN_TP_DEVICES = 8


def default_cache_plane(system: System) -> str:
    """Plane the context cache loads over by default: "ub" (CM384's EMS pool over UB) where the system has
    it, else the system's scale-out plane (dgx-h800: "ib"; ``System.scaleout_plane``)."""
    return "ub" if "ub" in system.planes else system.scaleout_plane("prefill")


#: Ranks of the default prefill unit: EP32 instances (CM384 §4.3; DeepSeek and SGLang, CM384 reference §7).
PREFILL_UNIT_RANKS = 32


def decode_unit_devices(system: System, model: Model) -> int:
    """Devices of the default decode instance: one expert per rank, routed + 1/8 redundant + 1/8 shared-expert
    ranks (CM384 §4.2: 256 + 32 + 32 = 320 ranks = 160 NPUs), capped by the system (dgx-h800: 144); a
    dense model's: one TP group (``dense_tp``, also its prefill instance's default)."""
    r = model.n_routed_experts
    ranks = r + r // 8 + (r // 8 if model.n_shared_experts else 0)
    if not model.is_moe:  # a dense model: one TP group (dense_tp), else one device holds the whole model
        ranks = dense_tp(system, model) or system.ranks_per_device
    return min(system.num_devices, math.ceil(ranks / system.ranks_per_device))


def prefill_unit_devices(system: System, model: Model) -> int:
    """Devices of the default prefill instance: PREFILL_UNIT_RANKS ranks (16 NPUs on CM384, 32 GPUs); a
    dense model run as Megatron TP: one TP group (``dense_tp``), where a prompt is one group's, not spread
    over data-parallel groups."""
    ranks = dense_tp(system, model, "prefill") or PREFILL_UNIT_RANKS
    return min(system.num_devices, math.ceil(ranks / system.ranks_per_device))


def kv_lengths(model: Model, prompt_len: float, output_len: float) -> tuple[float, float, float]:
    """(mean KV, KV capacity, KV coefficient of variation) of a decode batch of prompt + output requests
    with fixed lengths in steady state: each sequence sits uniformly along its output, so KV = prompt +
    output/2 on average, prompt + output at most, with sd output/sqrt(12) (cmperf.decode.straggler_kv_len).
    Errors name --prompt-len/--output-len."""
    if prompt_len < 1 or output_len < 1:
        raise CmperfError("--prompt-len and --output-len must be at least 1")
    kv_mean, kv_cap = prompt_len + output_len / 2.0, prompt_len + output_len
    if kv_cap > model.max_position_embeddings:
        raise CmperfError(
            f"--prompt-len + --output-len = {kv_cap:g} exceeds the model's context "
            f"{model.max_position_embeddings}"
        )
    return kv_mean, kv_cap, output_len / 12**0.5 / kv_mean
