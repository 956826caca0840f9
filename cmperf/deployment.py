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
  EP72 -> 4 + 1 (SGLang); EP64 -> 4 + 1 with no redundancy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import CmperfError
from .specs import DTYPE_BYTES, Model, System


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


def placement_arrays(model: Model, ep_size, num_redundant=None) -> dict[str, np.ndarray]:
    """Vectorized default placement (rules in the module docstring) for an array of EP sizes.

    Returns arrays: dedicated (bool), slots (routed copies per routed rank), redundant, shared_ranks,
    routed_ranks, experts_per_rank (weight sets on the busiest rank kind).
    """
    r = model.n_routed_experts
    ep = np.asarray(ep_size, dtype=float)
    dedicated = ep > r
    extra = np.maximum(ep - r, 0.0)
    has_shared = model.n_shared_experts > 0
    if num_redundant is None:
        red_ded = np.floor(extra / 2) if has_shared else extra
        ep1 = np.maximum(ep, 1)
        slots_co = np.ceil(r * 9 / 8 / ep1)
        slots_co = np.where(slots_co * ep - r > r / 8, np.ceil(r / ep1), slots_co)
        red_co = slots_co * ep - r
    else:
        red_ded = np.full_like(ep, float(num_redundant))
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


def place_experts(
    model: Model, ep_size: int, num_redundant: int | None = None, flag: str = "--ep"
) -> Placement:
    """Validated placement for one EP size; ``num_redundant`` overrides the default redundancy."""
    r = model.n_routed_experts
    if ep_size < 1:
        raise CmperfError(f"{flag}: EP size must be at least 1, got {ep_size}")
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

    def check(self, system: System) -> None:
        for group, dtype in self.__dict__.items():
            if dtype not in DTYPE_BYTES:
                raise CmperfError(
                    f"--{group}-dtype: unknown datatype {dtype!r} (one of {', '.join(DTYPE_BYTES)})"
                )
            if group in ("gemm", "experts", "attention", "head"):
                system.chip.peak(dtype, where=f"precision {group}={dtype} on {system.name}")


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
        experts = "fp4" if "fp4" in chip.peak_flops else weights
    chip.peak(experts, where=f"--experts-dtype {experts} on {system.name}")
    disp = weights if weights in ("int8", "fp8") else ("fp8" if weights == "fp4" else "bf16")
    p = Precision(gemm=weights, experts=experts, dispatch=disp, kv=kv)
    p.check(system)
    return p


@dataclass(frozen=True)
class DecodeDeployment:
    """One decode instance. ``batch_per_device`` is concurrent sequences per device (NPU or GPU)."""

    devices: int = 160
    ep_size: int = 320
    batch_per_device: float = 96.0
    kv_len: float = 4096.0
    mtp: int = 1  # speculative tokens per step
    mtp_accept: float = 0.7
    microbatches: int = 2
    num_redundant: int | None = None
    imbalance: float | None = None  # max/mean routed load; None = statistical model, 1.0 = perfect
    eplb: str = "model"  # "model" or "perfect"
    precision: Precision = field(default_factory=Precision)
    attention_cube_cores: int | None = None  # None: the system's [overlap.decode] default
    kv_cv: float = 0.0  # CV of the sequences' KV lengths (cmperf.decode.straggler_kv_len)

    def check(self, system: System, model: Model) -> Placement:
        """Validate against the system and model; return the expert placement."""
        ranks = self.devices * system.ranks_per_device
        if self.devices < 1 or self.devices > system.num_devices:
            raise CmperfError(
                f"--devices: {self.devices} is outside 1..{system.num_devices} ({system.name} has "
                f"{system.num_devices} devices)"
            )
        if self.ep_size < 1 or ranks % self.ep_size:
            raise CmperfError(
                f"--ep: EP{self.ep_size} must divide the {ranks} ranks of {self.devices} devices "
                f"({system.ranks_per_device} per device on {system.name}); try --ep {ranks}"
            )
        if self.batch_per_device <= 0:
            raise CmperfError(f"--batch: must be positive, got {self.batch_per_device:g}")
        if self.kv_len < 1 or self.kv_len > model.max_position_embeddings:
            raise CmperfError(
                f"--kv-len: {self.kv_len:g} is outside 1..{model.max_position_embeddings} "
                f"(the model's context)"
            )
        if not 0.0 <= self.kv_cv <= 10.0:
            raise CmperfError(f"--kv-cv: must be in [0, 10], got {self.kv_cv:g}")
        if not 0 <= self.mtp <= model.num_mtp_modules:
            raise CmperfError(
                f"--mtp: {model.name} has {model.num_mtp_modules} MTP module(s); use 0 to "
                f"{model.num_mtp_modules}"
            )
        if not 0.0 <= self.mtp_accept <= 1.0:
            raise CmperfError(f"--mtp-accept: must be in [0, 1], got {self.mtp_accept:g}")
        if self.microbatches not in (1, 2, 3, 4):
            raise CmperfError(f"--microbatches: must be 1..4, got {self.microbatches}")
        if self.imbalance is not None and self.imbalance < 1.0:
            raise CmperfError(f"--imbalance: max/mean load is at least 1, got {self.imbalance:g}")
        self.precision.check(system)
        return place_experts(model, self.ep_size, self.num_redundant)


#: Ranks of the default prefill unit: EP32 instances (CM384 §4.3; DeepSeek and SGLang, CM384 reference §7).
PREFILL_UNIT_RANKS = 32


def decode_unit_devices(system: System, model: Model) -> int:
    """Devices of the default decode instance: one expert per rank, routed + 1/8 redundant + 1/8 shared-expert
    ranks (CM384 §4.2: 256 + 32 + 32 = 320 ranks = 160 NPUs), capped by the system (dgx-h800: 144)."""
    r = model.n_routed_experts
    ranks = r + r // 8 + (r // 8 if model.n_shared_experts else 0)
    return min(system.num_devices, math.ceil(ranks / system.ranks_per_device))


def prefill_unit_devices(system: System) -> int:
    """Devices of the default prefill instance: PREFILL_UNIT_RANKS ranks (16 NPUs on CM384, 32 GPUs)."""
    return min(system.num_devices, math.ceil(PREFILL_UNIT_RANKS / system.ranks_per_device))


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
