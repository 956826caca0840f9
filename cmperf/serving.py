"""Serving model: Poisson load on peer-to-peer prefill / decode / cache pools → TTFT and TPOT percentiles,
goodput under SLOs, utilization per pool, the bottleneck, and P/D/cache sizing.

The three pools of CloudMatrix-Infer (CM384 §4.1: prefill instances, one decode instance, the EMS DRAM
caching pool over UB) are modelled separately and meet only through the arrival rate λ (requests/s):

* **Cache pool** (Che's LRU approximation, Che et al. 2002): a prefix is an item of
  ``prefix_len × kv_bytes_per_token`` bytes (61 layers × 1,152 B = 70,272 B per token for DeepSeek-R1
  BF16 KV, so a 2,048-token prefix is 144 MB and 2 TB holds 13,900 of them). The request hit rate of a
  Zipf(skew) popularity over ``num_prefixes`` distinct prefixes follows from the characteristic time;
  the fraction of prompt tokens served from cache is ``h_req × prefix_len / prompt_len``. A direct
  ``cache_hit`` (token fraction) replaces the popularity model. Cached KV is loaded over UB (or VPC):
  traffic = λ × hit tokens × bytes per token; cache utilization = traffic / Σ prefill ranks' plane bandwidth.
* **Prefill pool**: ``n = prefill_devices / instance_devices`` instances (16 NPUs, EP32, CM384 §4.1). An
  instance running a batch of B prompts takes ``batch_s(B)`` (``cmperf.prefill.evaluate``). Approximation
  (stated): the pool is an M/G/c queue with c = n·B *slots*, each slot holding one request for
  ``batch_s(B)`` — exact in throughput (capacity n·B / batch_s(B)), optimistic in that batches start per
  slot rather than in lockstep. The scheduler's batch size B is the grid value that minimizes the TTFT
  percentile of the SLO at the given rate (small B at light load for latency, large B near saturation
  for throughput). Wait by Allen-Cunneen with an exponential tail (``cmperf.queueing.mgc_wait``);
  service SCV = prompt-length CV² (prefill time is ~linear in prompt tokens at 4K). TTFT = wait +
  batch_s(B) + KV transfer to decode (RDMA, from the prefill model).
* **Decode pool**: continuous batching at steady state obeys Little's law per device,
  ``b = (λ / D) × output_len × TPOT(b)``, a fixed point solved by Brent's method; TPOT(b) is
  ``cmperf.decode.evaluate`` at the mean KV length ``prompt + E[O²]/(2E[O])`` (the output progress of
  a sequence seen by time average is length-biased; = prompt + output/2 for fixed output lengths). The
  memory cap ``max_batch_per_device`` bounds b; past it (λ above D × cap / (output_len × TPOT(cap))) the
  pool is overloaded. Utilization = λ / that capacity.
* **TPOT spread** (stated model): the request's TPOT follows the step time of the batch it shares. The
  pool's number of active sequences is M/G/∞ occupancy, Poisson(D·b); a balancing router keeps dies
  even, so the per-device batch at quantile p is b + z_p √(b / D). The KV work of a die is the mean of
  its b/2 sequences' KV lengths (prompt CV and the uniform output progress), quantile
  KV + z_p σ_KV / √(b_rank). TPOT_p = TPOT(b_p, KV_p). Per-request TPOT is taken as normal between the
  mean and p99 for SLO attainment.
* **Goodput**: ``goodput_rps = λ × P(TTFT ≤ SLO) × P(TPOT ≤ SLO)`` (independent pools). The SLO is on
  the **p99** by default (``slo_quantile``): ``slo_met`` when p99 TTFT and p99 TPOT both meet theirs;
  ``max_rate_rps`` is the largest λ that keeps ``slo_met`` — the serving capacity under SLO, used by sizing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import numpy as np

from . import decode as dec
from . import frameworks
from .deployment import Deployment
from .errors import CmperfError
from .graph import kv_bytes_per_seq
from .queueing import (
    QueueWait,
    che_lru_hit_rate_zipf,
    find_root,
    mgc_wait,
    normal_cdf,
    normal_quantile,
    response_quantiles_s,
)
from .specs import Model, System

__all__ = [
    "SLO",
    "CacheResult",
    "Pools",
    "ServeResult",
    "Workload",
    "cache_pool",
    "decode_pool",
    "evaluate",
    "prefill_pool",
    "slo_limits",
]

# Prompts per prefill instance batch the scheduler may choose (grid; infeasible ones are dropped).
PREFILL_BATCH_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


#: The flag that sets each ``Workload`` field (``cmperf serve``), for error messages.
WORKLOAD_FLAGS = {
    "rate_per_s": "--rate",
    "concurrency": "--concurrency",
    "prompt_len": "--prompt-len",
    "output_len": "--output-len",
    "prompt_cv": "--prompt-cv",
    "output_cv": "--output-cv",
    "cache_hit": "--cache-hit",
    "num_prefixes": "--prefixes",
    "prefix_skew": "--prefix-skew",
    "prefix_len": "--prefix-len",
}


@dataclass(frozen=True)
class Workload:
    """Traffic: Poisson ``rate_per_s`` or a closed loop of ``concurrency`` requests; lengths mean and CV;
    prefix reuse as a direct token ``cache_hit`` fraction or a Zipf popularity model over prefixes."""

    rate_per_s: float | None = 40.0
    concurrency: float | None = None
    prompt_len: float = 4096.0
    output_len: float = 256.0
    prompt_cv: float = 0.0
    output_cv: float = 0.0
    cache_hit: float | None = None
    num_prefixes: int | None = None
    prefix_skew: float = 1.0
    prefix_len: float | None = None  # default: half the prompt

    def check(self, model: Model) -> None:
        """CmperfError naming the flag: every number in its domain (``cmperf.domains.WORKLOAD``: finite, in
        range, whole where it counts), then the relations between the fields and the model's context."""
        from .domains import WORKLOAD

        for name, dom in WORKLOAD.items():
            v = getattr(self, name)
            if v is not None:
                dom.check(v, WORKLOAD_FLAGS[name], text=False)
        if self.rate_per_s is None and self.concurrency is None:
            raise CmperfError(
                "--rate or --concurrency: give the arrival rate (requests/s) or the concurrency"
            )
        if self.rate_per_s is not None and self.concurrency is not None:
            raise CmperfError("--rate conflicts with --concurrency; give one of them")
        if self.rate_per_s is not None and not self.rate_per_s > 0:
            raise CmperfError(f"--rate: must be > 0 requests/s, got {self.rate_per_s:g}")
        if self.concurrency is not None and not self.concurrency > 0:
            raise CmperfError(f"--concurrency: must be > 0 requests, got {self.concurrency:g}")
        if self.prompt_len < 1 or self.output_len < 1:
            raise CmperfError("--prompt-len and --output-len must be at least 1 token")
        ctx = model.max_position_embeddings
        if self.prompt_len + self.output_len > ctx:
            raise CmperfError(
                f"--prompt-len + --output-len = {self.prompt_len + self.output_len:g} exceeds the "
                f"model's context of {ctx} tokens; shorten them"
            )
        if self.prompt_cv < 0 or self.output_cv < 0:
            raise CmperfError("--prompt-cv and --output-cv must be >= 0")
        if self.cache_hit is not None and not 0.0 <= self.cache_hit < 1.0:
            raise CmperfError(f"--cache-hit: token hit fraction must be in [0, 1), got {self.cache_hit:g}")
        if self.cache_hit is not None and self.num_prefixes is not None:
            raise CmperfError(
                "--cache-hit conflicts with --prefixes; give a direct hit rate or a popularity model"
            )
        if self.num_prefixes is not None and self.num_prefixes < 1:
            raise CmperfError(f"--prefixes: need at least 1 distinct prefix, got {self.num_prefixes}")
        if self.prefix_skew < 0:
            raise CmperfError(f"--prefix-skew: Zipf skew must be >= 0, got {self.prefix_skew:g}")
        if self.prefix_len is not None and not 0 < self.prefix_len <= self.prompt_len:
            raise CmperfError(
                f"--prefix-len: must be in (0, --prompt-len = {self.prompt_len:g}], got {self.prefix_len:g}"
            )

    @property
    def kv_mean_len(self) -> float:
        """Time-average KV length in the decode batch: prompt + E[O²]/(2 E[O]) = P + L(1 + cv²)/2."""
        return self.prompt_len + self.output_len * (1.0 + self.output_cv**2) / 2.0

    @property
    def kv_std_len(self) -> float:
        """Std of one sequence's KV length in the batch: prompt spread plus length-biased output progress
        U·O (U uniform, O gamma with mean L and CV c): E[(UO)²] = E[O³]/(3E[O]) = L²(1+c²)(1+2c²)/3."""
        c2 = self.output_cv**2
        second = self.output_len**2 * (1 + c2) * (1 + 2 * c2) / 3.0
        mean = self.output_len * (1 + c2) / 2.0
        return math.sqrt((self.prompt_cv * self.prompt_len) ** 2 + max(second - mean**2, 0.0))

    @property
    def kv_cv(self) -> float:
        """Coefficient of variation of the sequences' KV lengths in the batch, kv_std_len / kv_mean_len (the
        spread the slowest rank's attention sees, cmperf.decode.straggler_kv_len)."""
        return self.kv_std_len / self.kv_mean_len


def workload_inputs(wl: Workload) -> dict[str, float | int | None]:
    """The lengths and prefix-reuse knobs of a workload, as the ``inputs`` of serving outputs record them."""
    keys = ("prompt_len", "output_len", "prompt_cv", "output_cv", "cache_hit", "num_prefixes", "prefix_skew")
    return {**{k: getattr(wl, k) for k in keys}, "prefix_len": wl.prefix_len}


@dataclass(frozen=True)
class Pools:
    """The serving deployment: a decode pool run as one instance (``decode``, a decode ``Deployment`` whose
    ``devices`` is the pool), ``prefill_devices`` split into prefill instances (``prefill``, a prefill
    ``Deployment`` whose ``devices`` is one instance), and the context cache's DRAM. The scheduler sets
    the per-step knobs (decode batch from Little's law, prefill tokens from the batch grid), so those
    fields of the records are not read here."""

    prefill_devices: int = 96
    decode: Deployment = field(default_factory=lambda: Deployment(devices=160, microbatches=2))
    prefill: Deployment = field(
        default_factory=lambda: Deployment(phase="prefill", devices=16, microbatches=2)
    )
    cache_dram_bytes: float | None = None  # None: cpu_dram_per_node x nodes of the system

    @property
    def decode_devices(self) -> int:
        return int(self.decode.devices)

    @property
    def prefill_instance_devices(self) -> int:
        return int(self.prefill.devices)

    def resolve(self, system: System, model: Model) -> Pools:
        """Both records with their defaults for ``system`` filled (``Deployment.resolve``)."""
        return replace(
            self, decode=self.decode.resolve(system, model), prefill=self.prefill.resolve(system, model)
        )

    def with_instance(self, devices: int) -> Pools:
        """The same pools with prefill instances of ``devices`` (EP over all their ranks)."""
        return replace(self, prefill=replace(self.prefill, devices=devices, ep_size=None))

    def split(self, prefill_devices: int, decode_devices: int) -> Pools:
        """The same pools with other device counts (decode EP over all ranks of the new pool)."""
        return replace(
            self,
            prefill_devices=prefill_devices,
            decode=replace(self.decode, devices=decode_devices, ep_size=None),
        )

    def plane(self, system: System) -> str:
        """The cache plane by name (cmperf.deployment.default_cache_plane when unset)."""
        from .deployment import default_cache_plane

        return self.prefill.cache_plane or default_cache_plane(system)

    def decode_group_devices(self, system: System) -> int:
        """Devices of one decode attention-TP group, the least decode pool (1 without attention TP)."""
        return max(1, int(self.decode.attn_tp or 1) // system.ranks_per_device)

    @property
    def num_prefill_instances(self) -> int:
        return self.prefill_devices // self.prefill_instance_devices

    def check_numbers(self) -> None:
        """CmperfError naming the flag unless every device count and the cache DRAM are in their domains
        (``cmperf.domains.POOLS``); safe before ``resolve`` (which would fail on a NaN device count)."""
        from .domains import POOLS

        for flag, name, v in (
            ("--prefill-devices", "prefill_devices", self.prefill_devices),
            ("--decode-devices", "decode_devices", self.decode.devices),
            ("--prefill-instance-devices", "prefill_instance_devices", self.prefill.devices),
        ):
            POOLS[name].check(v, flag, text=False)
        if self.cache_dram_bytes is not None:
            POOLS["cache_dram_bytes"].check(self.cache_dram_bytes, "--cache-dram", text=False)
        for rec in (self.decode, self.prefill):
            reasons = rec._domain_reasons()
            if reasons:
                raise CmperfError(next(iter(reasons.values())))

    def check(self, system: System, model: Model, wl: Workload) -> None:
        """CmperfError (naming the flag) when the pools do not fit the system or a record is invalid for the
        workload (``Deployment.check`` on the decode record at the workload's KV, on the prefill record at
        one prompt: ``--mtp 2`` on a one-MTP-module model is refused as ``cmperf decode`` refuses it)."""
        self.check_numbers()
        n = system.num_devices
        if self.prefill_instance_devices < 1:
            raise CmperfError("--prefill-instance-devices: must be at least 1")
        if (
            self.prefill_devices < self.prefill_instance_devices
            or self.prefill_devices % self.prefill_instance_devices
        ):
            raise CmperfError(
                f"--prefill-devices: {self.prefill_devices} is not a positive multiple of the "
                f"{self.prefill_instance_devices}-device prefill instance; use e.g. "
                f"{max(1, self.num_prefill_instances) * self.prefill_instance_devices}"
            )
        if self.decode_devices < 1:
            raise CmperfError(f"--decode-devices: must be at least 1, got {self.decode_devices}")
        if self.prefill_devices + self.decode_devices > n:
            raise CmperfError(
                f"--prefill-devices + --decode-devices = {self.prefill_devices + self.decode_devices} "
                f"exceeds the {n} devices of {system.name}"
            )
        if self.cache_dram_bytes is not None and not self.cache_dram_bytes >= 0:
            raise CmperfError("--cache-dram: must be >= 0 bytes")
        system.plane(self.plane(system), where="--cache-plane")
        kv = float(wl.prompt_len + wl.output_len)
        reasons = replace(self.decode, batch_per_device=1.0, kv_len=kv, kv_capacity_len=None).check(
            system, model
        )
        pre = replace(self.prefill, tokens_per_device=wl.prompt_len, prompt_len=wl.prompt_len, cache_hit=0.0)
        # the prefill record's TP degrees are serve's --prefill-attn-tp / --prefill-moe-tp
        reasons += [
            r.replace("--moe-tp", "--prefill-moe-tp").replace("--attn-tp", "--prefill-attn-tp")
            for r in pre.check(system, model)
        ]
        if reasons:
            raise CmperfError(reasons[0])

    def cache_bytes(self, system: System) -> float:
        if self.cache_dram_bytes is not None:
            return float(self.cache_dram_bytes)
        nodes = math.ceil(system.num_devices / system.devices_per_node)
        return system.cpu_dram_per_node_bytes * nodes


#: Prefill instances of the paper's pools (CM384 §5: 6 instances x 16 NPUs next to a 160-NPU decode pool).
PAPER_PREFILL_INSTANCES = 6


def default_pools(system: System, model: Model) -> Pools:
    """Pools sized for ``system``: a decode pool of one expert per rank (``decode_unit_devices``) leaving room
    for at least one EP32 prefill instance (``prefill_unit_devices``), and up to the paper's 6 prefill
    instances in what remains. CloudMatrix384 (384 NPUs): 160 decode + 6 x 16 prefill, the paper's pools;
    dgx-h800 (144 GPUs): 112 decode + 1 x 32 prefill. The instance doubles (up to half the system) while
    its weights alone fill a rank's HBM."""
    from .deployment import Deployment, decode_unit_devices, prefill_unit_devices
    from .prefill import weight_bytes_per_rank

    inst = prefill_unit_devices(system, model)
    cap = system.chip.hbm_bytes - system.chip.hbm_reserved_bytes
    # a model whose weights fill the default instance's HBM: the smallest doubling they leave room in
    # (Kimi-K3 on H200s: 64 GPUs), as cmperf prefill's default (prefill.fit_defaults)
    while 2 * inst <= system.num_devices // 2:
        one = Deployment(phase="prefill", devices=inst)
        if one.check(system, model) or weight_bytes_per_rank(system, model, one.resolve(system, model)) < cap:
            break
        inst *= 2
    if system.num_devices - inst < 1:  # a system smaller than one prefill unit + a decode device: halves
        inst = max(system.num_devices // 2, 1)
    decode = max(min(decode_unit_devices(system, model), system.num_devices - inst), 1)
    prefill = min(PAPER_PREFILL_INSTANCES, max((system.num_devices - decode) // inst, 1)) * inst
    return Pools().split(prefill, decode).with_instance(inst)


#: Percentile the TTFT and TPOT SLOs are on unless stated (``cmperf serve`` and ``cmperf optimize`` alike).
DEFAULT_SLO_PERCENTILE = 99.0


@dataclass(frozen=True)
class SLO:
    ttft_s: float = 2.0
    tpot_s: float = 0.05
    quantile: float = DEFAULT_SLO_PERCENTILE / 100.0

    @property
    def percentile_label(self) -> str:
        """The percentile as output names it: "p99" for quantile 0.99."""
        return f"p{100 * self.quantile:g}"


# ---------------------------------------------------------------------------------------------- cache pool


@dataclass(frozen=True)
class CacheResult:
    capacity_bytes: float
    kv_bytes_per_token: float
    prefix_bytes: float
    prefixes_cached: float
    request_hit_rate: float  # requests whose prefix is cached (popularity model) or NaN for a direct rate
    token_hit_rate: float  # fraction of prompt tokens served from cache
    model: str  # "none" | "direct" | "zipf-lru"


def kv_bytes_per_token(model: Model, kv_dtype: str, context_len: float) -> float:
    """Cached bytes per token of a ``context_len``-token prefix over all layers (graph.kv_bytes_per_seq /
    length: sliding-window and linear-attention layers hold less than a token each): 61 × 1,152 B =
    70,272 B for DeepSeek-R1 in BF16 at any length."""
    return float(kv_bytes_per_seq(model, kv_dtype, context_len)) / context_len


def cache_pool(system: System, model: Model, wl: Workload, pools: Pools) -> CacheResult:
    """Hit rate of the EMS prefix cache. Example: 2 TB, 10,000 prefixes of 2,048 tokens, Zipf 1.0 →
    13,900 fit, everything resident → h = 1; 100,000 prefixes → Che gives h ≈ 0.80."""
    cap = pools.cache_bytes(system)
    prec = pools.resolve(system, model).prefill.precision
    assert prec is not None  # resolve fills it
    plen = wl.prefix_len if wl.prefix_len is not None else wl.prompt_len / 2.0
    per_tok = kv_bytes_per_token(model, prec.kv, plen)
    pbytes = plen * per_tok
    items = cap / pbytes if pbytes > 0 else 0.0
    if wl.cache_hit is not None:
        return CacheResult(cap, per_tok, pbytes, items, math.nan, float(wl.cache_hit), "direct")
    if wl.num_prefixes is None:
        return CacheResult(cap, per_tok, pbytes, items, 0.0, 0.0, "none")
    # O(1) memory in the number of prefixes (10^9 is as cheap as 10^4): exact sums over the head of the
    # Zipf law, the Euler-Maclaurin tail above (cmperf.queueing.che_lru_hit_rate_zipf)
    h = che_lru_hit_rate_zipf(math.floor(items), wl.num_prefixes, wl.prefix_skew)
    tok = min(h * plen / wl.prompt_len, 0.999)
    return CacheResult(cap, per_tok, pbytes, items, h, tok, "zipf-lru")


# ---------------------------------------------------------------------------------------------- prefill pool


@dataclass(frozen=True)
class PrefillGrid:
    """Prefill service per instance batch size B (grid of feasible B)."""

    batch_prompts: np.ndarray
    batch_s: np.ndarray
    kv_transfer_s: np.ndarray
    instances: int
    capacity_rps: float
    request_s: float = 0.0  # the framework's request overhead (outside the engines' steps)

    def after_s(self, i: int) -> float:
        """The TTFT's fixed part after batch ``i``'s prefill ends: the KV transfer to the decode pool + the
        framework's request overhead (HTTP, tokenization, admission, streaming: frameworks/*.toml)."""
        return float(self.kv_transfer_s[i]) + self.request_s


def prefill_grid(system: System, model: Model, wl: Workload, pools: Pools, token_hit: float) -> PrefillGrid:
    from . import prefill as pre

    inst = pools.prefill_instance_devices
    b = np.asarray(PREFILL_BATCH_GRID, dtype=float)
    # batches of the workload's prompts: their length sets the attention's quadratic part and the KV sent
    dep = replace(
        pools.prefill,
        prompt_len=wl.prompt_len,
        tokens_per_device=b * wl.prompt_len / inst,
        cache_hit=token_hit,
    )
    ev = pre.evaluate(system, model, dep)
    batch_s = np.broadcast_to(np.asarray(ev.batch_s, dtype=float), b.shape)
    kv_s = np.broadcast_to(np.asarray(ev.kv_transfer_s, dtype=float), b.shape)
    ok = np.broadcast_to(np.asarray(ev.feasible, dtype=bool), b.shape) & np.isfinite(batch_s) & (batch_s > 0)
    if not ok.any():
        raise CmperfError(
            f"--prompt-len: a single {wl.prompt_len:g}-token prompt does not fit a "
            f"{inst}-device prefill instance; use fewer tokens or larger instances "
            "(--prefill-instance-devices)"
        )
    n = pools.num_prefill_instances
    cap = float(np.max(n * b[ok] / batch_s[ok]))
    request_s = frameworks.request_overhead_s(pools.prefill.framework)
    return PrefillGrid(b[ok], batch_s[ok], kv_s[ok], n, cap, request_s)


@dataclass(frozen=True)
class PrefillPoolResult:
    instances: int
    batch_prompts: float  # chosen B
    batch_s: float
    kv_transfer_s: float
    slots: int
    mean_wait_s: float
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    ttft_slo_quantile_s: float
    p_ttft_within_slo: float
    utilization: float  # λ / capacity (capacity at the most efficient batch)
    slot_utilization: float
    capacity_rps: float
    overloaded: bool
    service_scv: float
    # the batch size each TTFT value is the lowest at ({"p50": 2.0, ..., "mean": 1.0}); {} when overloaded
    ttft_batch_prompts: dict[str, float] = field(default_factory=dict)
    request_s: float = 0.0  # the framework's request overhead in every TTFT (PrefillGrid.request_s)


def _ttft_for(grid: PrefillGrid, i: int, rate: float, scv: float, qs):
    c = int(grid.instances * grid.batch_prompts[i])
    w = mgc_wait(rate, float(grid.batch_s[i]), c, service_scv=scv)
    if w.overloaded:
        return w, np.full(len(qs), np.inf)
    r = np.atleast_1d(response_quantiles_s(w, float(grid.batch_s[i]), list(qs), service_scv=scv))
    return w, r + grid.after_s(i)


def _ttft_at(grid: PrefillGrid, i: int, rate: float, scv: float, q: float) -> float:
    """The TTFT q-quantile at batch index ``i`` and ``rate`` as one float (``_ttft_for`` for one quantile,
    in plain floats where the service is fixed): the step of the sizing's bisections on the rate."""
    s = float(grid.batch_s[i])
    w = mgc_wait(rate, s, int(grid.instances * grid.batch_prompts[i]), service_scv=scv)
    if w.overloaded:
        return math.inf
    return float(response_quantiles_s(w, s, float(q), service_scv=scv)) + grid.after_s(i)


#: TTFT percentiles ``cmperf serve`` reports (p50, p90, p99) besides the SLO's and the mean.
REPORTED_TTFT_QUANTILES = (0.5, 0.9, 0.99)


def _ttft_quantiles(grid: PrefillGrid, i: int, rate: float, scv: float, qs, bound: np.ndarray) -> np.ndarray:
    """TTFT quantiles ``qs`` at batch index ``i`` (``_ttft_for``), except where the quantile cannot beat
    ``bound`` (then inf): a response quantile is at least the service's own (the wait is >= 0), so with a
    gamma service law (SCV > 0) the exact inversion (brentq over a convolution) is skipped wherever the
    service quantile plus the KV transfer already reaches the best TTFT so far. Exact for the envelope."""
    if scv <= 0:
        return _ttft_for(grid, i, rate, scv, qs)[1]
    from scipy import special

    s, kv = float(grid.batch_s[i]), grid.after_s(i)
    shape = 1.0 / scv
    w = mgc_wait(rate, s, int(grid.instances * grid.batch_prompts[i]), service_scv=scv)
    out = np.full(len(qs), math.inf)
    done: dict[float, float] = {}
    for j, q in enumerate(qs):
        if q in done:
            out[j] = done[q]
            continue
        if float(special.gammaincinv(shape, q)) * s / shape + kv >= bound[j]:
            continue  # cannot be lower than the envelope: the service alone takes that long
        out[j] = done[q] = float(response_quantiles_s(w, s, q, service_scv=scv)) + kv
    return out


def prefill_pool(grid: PrefillGrid, rate: float, wl: Workload, slo: SLO) -> PrefillPoolResult:
    """TTFT mean and percentiles of the prefill pool at ``rate``: each the lowest over the batch sizes B the
    pool is stable at; the scheduler's batch (``batch_prompts``: wait, slots, SLO attainment) is the B with
    the lowest SLO-quantile TTFT (ties: the smaller B).

    Why a lower envelope (stated model): the scheduler adapts its batch to the load, and the per-B M/G/c
    queues are a family of fixed-batch policies, one of which the scheduler follows at each load. Each
    member's TTFT quantile rises with λ (Erlang C and the Allen-Cunneen wait rise with λ, the exponential
    tail's rate C/W_q = (cμ - λ)/((ca² + cs²)/2) falls, and the response convolves that wait with a fixed
    service law), and B leaves the family as λ passes its capacity; a minimum of rising functions over a
    shrinking set rises, so every reported percentile and the mean are monotone in λ. Picking one B by the
    SLO quantile and reporting its p50 (the previous policy) is not: on hgx-h20 the p99-best B falls from 2
    to 1 between 1.01 and 2.02 req/s and the p50 fell from 0.211 s to 0.112 s. The B each value comes from
    is reported (``ttft_batch_prompts``), so the policy's switch points are explicit."""
    scv = wl.prompt_cv**2
    qs = (*REPORTED_TTFT_QUANTILES, slo.quantile)
    rows: list[tuple[int, QueueWait, np.ndarray]] = []
    lowest = np.full(len(qs), math.inf)  # the envelope so far, per quantile (B ascending)
    for i in range(grid.batch_prompts.size):
        c = grid.instances * grid.batch_prompts[i]
        if rate * grid.batch_s[i] / c >= 1.0:
            continue
        r = _ttft_quantiles(grid, i, rate, scv, qs, lowest)
        w = mgc_wait(rate, float(grid.batch_s[i]), int(c), service_scv=scv)
        mean = w.mean_wait_s + float(grid.batch_s[i]) + grid.after_s(i)
        lowest = np.minimum(lowest, r)
        rows.append((i, w, np.append(r, mean)))
    util = rate / grid.capacity_rps
    if not rows:
        i = int(np.argmax(grid.batch_prompts / grid.batch_s))
        inf = math.inf
        return PrefillPoolResult(
            grid.instances,
            float(grid.batch_prompts[i]),
            float(grid.batch_s[i]),
            float(grid.kv_transfer_s[i]),
            int(grid.instances * grid.batch_prompts[i]),
            inf,
            inf,
            inf,
            inf,
            inf,
            inf,
            0.0,
            util,
            util,
            grid.capacity_rps,
            True,
            scv,
            request_s=grid.request_s,
        )
    table = np.array([r for _, _, r in rows])  # [stable B, (p50, p90, p99, SLO quantile, mean)]
    arg = np.argmin(table, axis=0)  # first minimum: the smaller B on ties
    env = table[arg, np.arange(table.shape[1])]
    best, w, _ = rows[int(arg[3])]
    s, kv = float(grid.batch_s[best]), float(grid.kv_transfer_s[best])
    p_ok = _p_response_within(w, s, scv, slo.ttft_s - grid.after_s(best))
    labels = ("p50", "p90", "p99", slo.percentile_label, "mean")
    from_b = {k: float(grid.batch_prompts[rows[int(j)][0]]) for k, j in zip(labels, arg, strict=True)}
    return PrefillPoolResult(
        grid.instances,
        float(grid.batch_prompts[best]),
        s,
        kv,
        w.servers,
        w.mean_wait_s,
        float(env[4]),
        float(env[0]),
        float(env[1]),
        float(env[2]),
        float(env[3]),
        p_ok,
        util,
        w.utilization,
        grid.capacity_rps,
        False,
        scv,
        from_b,
        grid.request_s,
    )


def _p_response_within(w, service_s: float, scv: float, t: float) -> float:
    """P(W + S <= t) for the queueing module's wait law and a gamma (or fixed) service."""
    if t <= 0:
        return 0.0
    if scv <= 0:
        return 1.0 - float(w.wait_tail(t - service_s)) if t >= service_s else 0.0
    from .queueing import response_tail

    shape = 1.0 / scv
    return 1.0 - response_tail(t, w, shape, shape / service_s)


# ---------------------------------------------------------------------------------------------- decode pool


@dataclass(frozen=True)
class DecodePoolResult:
    devices: int
    ep_size: int
    batch_per_device: float
    batch_p99_per_device: float
    kv_mean_len: float
    kv_slowest_rank_len: float  # KV per sequence the slowest rank's attention sees (the steps' pace)
    tpot_mean_s: float
    tpot_p99_s: float
    tpot_slo_quantile_s: float
    p_tpot_within_slo: float
    max_batch_per_device: float
    tpot_at_max_batch_s: float
    capacity_rps: float
    utilization: float
    overloaded: bool
    tokens_per_s_per_device: float
    attn_tp: int = 1  # attention TP degree of the pool's instances (1: data-parallel attention)
    moe_tp: int = 1  # ranks each expert is split over


def _pool_evaluate(system: System, model: Model, wl: Workload, record: Deployment, devices, ep, b, kv):
    """``decode.evaluate`` of decode pools of ``devices`` (EP ``ep``) at per-device batch ``b`` and mean KV
    ``kv``, the workload's KV capacity and spread (all may be arrays; they broadcast)."""
    dep = replace(
        record,
        devices=devices,
        ep_size=ep,
        batch_per_device=b,
        kv_len=kv,
        kv_capacity_len=wl.prompt_len + wl.output_len,
        kv_cv=wl.kv_cv,
    )
    return dec.evaluate(system, model, dep)


def _padded(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of different lengths as one 2-D array, each padded with its last value (trimmed after)."""
    width = max(r.size for r in rows)
    return np.array([np.concatenate([r, np.full(width - r.size, r[-1])]) for r in rows])


#: Batches per device the decode curve evaluates TPOT at: CURVE_POINTS evenly up to the HBM cap, LOW_POINTS
#: geometric ones below the first of those (down to 1e-4 of it).
CURVE_POINTS = 400
LOW_POINTS = 24


def batch_grid(top: float, points: int) -> np.ndarray:
    """Sorted distinct batches of a TPOT curve up to ``top``: ``points`` evenly from top / points, and
    LOW_POINTS geometric ones below that first point down to 1e-4 of it (a few users on many devices sit
    there, where interpolation would hold the curve flat). np.unique would import numpy.ma, ~6 ms of a
    serve start-up."""
    first = top / points
    low = np.geomspace(first * 1e-4, first, LOW_POINTS, endpoint=False)
    return np.array(sorted({*low.tolist(), *np.linspace(first, top, points).tolist(), top}))


def _fit_curves(
    system: System, model: Model, wl: Workload, record: Deployment, devices: np.ndarray, ep: np.ndarray
) -> list:
    """(HBM batch cap, batch grid, TPOT on it) of the decode pool of each ``devices[i]`` / ``ep[i]``, or the
    CmperfError that pool raises: a probe at batch 1 and the grid for every pool in two ``decode.evaluate``
    calls (each point gives the numbers a call for that pool alone gives). Falls back to one pool at a time
    when the joint call raises (a pool the experts cannot be placed on)."""
    try:
        probe = _pool_evaluate(system, model, wl, record, devices, ep, np.ones(devices.size), wl.kv_mean_len)
    except CmperfError as e:
        if devices.size == 1:
            return [e]
        return [
            _fit_curves(system, model, wl, record, devices[i : i + 1], ep[i : i + 1])[0]
            for i in range(devices.size)
        ]
    caps = np.broadcast_to(np.asarray(probe.max_batch_per_device, dtype=float), devices.shape)
    feasible = np.broadcast_to(np.asarray(probe.feasible, dtype=bool), devices.shape)
    out: list = [None] * devices.size
    good = []
    for i, (cap, ok) in enumerate(zip(caps.tolist(), feasible.tolist(), strict=True)):
        if not ok or cap < 1:
            out[i] = CmperfError(
                f"--decode-devices: not even one {wl.prompt_len + wl.output_len:g}-token sequence per device "
                f"fits in HBM with EP{int(ep[i])} on {int(devices[i])} devices; use more decode devices or "
                "shorter lengths"
            )
        else:
            good.append(i)
    if good:
        rows = [
            # sorted distinct batches (np.unique would import numpy.ma, ~6 ms of a serve start-up)
            batch_grid(float(caps[i]), CURVE_POINTS)
            for i in good
        ]
        idx = np.array(good)
        tpot = np.asarray(
            _pool_evaluate(
                system, model, wl, record, devices[idx, None], ep[idx, None], _padded(rows), wl.kv_mean_len
            ).tpot_s,
            dtype=float,
        )
        for k, (i, b) in enumerate(zip(good, rows, strict=True)):
            out[i] = (float(caps[i]), b, tpot[k, : b.size].copy())
    return out


def decode_curves(
    system: System, model: Model, wl: Workload, pools: Pools, devices
) -> list[_DecodeCurve | None]:
    """The decode curve of ``pools.split(pools.prefill_devices, d)`` for each ``d`` in ``devices`` (None where
    not one sequence fits in HBM), all evaluated together (``_fit_curves``): what sizing runs over
    every decode pool size it tries."""
    pools = pools.resolve(system, model)
    d = np.asarray(devices, dtype=int).ravel()
    ep = d * system.ranks_per_device
    fits = _fit_curves(system, model, wl, pools.decode, d, ep)
    return [
        None
        if isinstance(f, CmperfError)
        else _DecodeCurve(system, model, wl, pools.split(pools.prefill_devices, int(dd)), fit=f)
        for dd, f in zip(d.tolist(), fits, strict=True)
    ]


class _DecodeCurve:
    """TPOT(b) for one decode pool at the mean KV length, on a batch grid (one vectorized evaluate).

    The sequences' KV lengths spread (``Workload.kv_std_len``: prompt spread and output progress), and the
    data-parallel attention of every layer waits for the rank with the most KV: every step runs at the
    expected maximum over the EP group (cmperf.decode.straggler_kv_len with ``Workload.kv_cv``).
    The p99 adds the fluctuation of the batch count only: the maximum over many ranks varies little from
    step to step. ``fit`` = (HBM batch cap, batch grid, TPOT on it) when ``decode_curves`` computed it for
    many pools at once."""

    def __init__(self, system, model, wl: Workload, pools: Pools, devices: int | None = None, *, fit=None):
        pools = pools.resolve(system, model)
        self.system, self.model, self.wl, self.pools = system, model, wl, pools
        self.devices = devices or pools.decode_devices
        self.ep = (pools.decode.ep_size if self.devices == pools.decode_devices else None) or (
            self.devices * system.ranks_per_device
        )
        self.kv_cap = wl.prompt_len + wl.output_len
        if fit is None:
            fit = _fit_curves(system, model, wl, pools.decode, np.array([self.devices]), np.array([self.ep]))[
                0
            ]
        if isinstance(fit, CmperfError):
            raise fit
        self.max_batch, self.grid_b, self.grid_tpot = fit

    def tpot(self, b, kv, full=False):
        ev = _pool_evaluate(self.system, self.model, self.wl, self.pools.decode, self.devices, self.ep, b, kv)
        return ev if full else ev.tpot_s

    def capacity_rps(self) -> float:
        """Largest λ: D × b_cap / (output_len × TPOT(b_cap)) (b/TPOT rises with b)."""
        return self.devices * float(np.max(self.grid_b / self.grid_tpot)) / self.wl.output_len

    def solve_batch(self, rate: float) -> float:
        """Little's law fixed point b = (λ/D) L TPOT(b) by Brent's method (``queueing.find_root``) on the
        interpolated TPOT curve."""
        k = rate / self.devices * self.wl.output_len

        def f(b):
            return b - k * float(np.interp(b, self.grid_b, self.grid_tpot))

        lo, hi = 0.0, self.max_batch
        if f(hi) < 0:
            return math.inf
        return find_root(f, lo, hi, xtol=1e-9, rtol=1e-12)

    def slowest_kv_len(self, b: float) -> float:
        """KV per sequence of the rank with the most KV at batch ``b`` per device (one microbatch count:
        the pool's; cmperf.decode.straggler_kv_len)."""
        seqs = max(b / self.system.ranks_per_device / self.pools.decode.microbatches, 1e-9)
        return float(dec.straggler_kv_len(self.wl.kv_mean_len, self.wl.kv_cv, seqs, self.ep))

    def quantile_point(self, b: float, q: float):
        """(b_q, kv): per-device batch b + z√(b/D) (capped at the HBM cap) at the mean KV (the KV spread
        is in every step already, as the slowest rank's attention: class docstring)."""
        bq = min(b + normal_quantile(q) * math.sqrt(b / self.devices), self.max_batch)
        return bq, self.wl.kv_mean_len


def decode_pool(curve: _DecodeCurve, rate: float, slo: SLO) -> DecodePoolResult:
    """The decode pool's steady state at ``rate`` (``_decode_pool``) with its parallel degrees."""
    rec = curve.pools.decode
    return replace(_decode_pool(curve, rate, slo), attn_tp=int(rec.attn_tp or 1), moe_tp=int(rec.moe_tp or 1))


def _decode_pool(curve: _DecodeCurve, rate: float, slo: SLO) -> DecodePoolResult:
    cap = curve.capacity_rps()
    util = rate / cap
    b_max = curve.max_batch
    t_max = float(curve.grid_tpot[-1])
    b = curve.solve_batch(rate) if util < 1.0 else math.inf
    if not math.isfinite(b):
        inf = math.inf
        return DecodePoolResult(
            curve.devices,
            curve.ep,
            b_max,
            b_max,
            curve.wl.kv_mean_len,
            inf,
            inf,
            inf,
            inf,
            0.0,
            b_max,
            t_max,
            cap,
            util,
            True,
            math.nan,
        )
    b99, kv99 = curve.quantile_point(b, 0.99)
    bq, kvq = curve.quantile_point(b, slo.quantile)
    pts = curve.tpot(np.asarray([b, b99, bq]), np.asarray([curve.wl.kv_mean_len, kv99, kvq]))
    slowest = curve.slowest_kv_len(b)
    mean, p99, pq = (float(x) for x in pts)
    sigma = max(p99 - mean, 0.0) / normal_quantile(0.99)
    # per-request TPOT normal between the mean and the p99 (a step at the mean when they coincide)
    p_ok = normal_cdf((slo.tpot_s - mean) / sigma) if sigma > 0 else float(mean <= slo.tpot_s)
    return DecodePoolResult(
        curve.devices,
        curve.ep,
        b,
        b99,
        curve.wl.kv_mean_len,
        slowest,
        mean,
        p99,
        pq,
        p_ok,
        b_max,
        t_max,
        cap,
        util,
        False,
        b / mean,
    )


def ttft_limit_rps(grid: PrefillGrid, wl: Workload, slo: SLO) -> float:
    """Largest λ whose SLO-quantile TTFT meets the SLO: max over batch sizes B of the per-B limit (the
    scheduler picks the best B), each by bisection on λ in (0, c/S) — TTFT quantiles rise with λ.

    Batch sizes are tried by falling capacity c/S, and one that cannot beat the best limit so far is
    dropped before its bisection: its capacity is below that limit, or its TTFT at that rate already
    misses the SLO (then its own limit is lower, TTFT rising with λ). The maximum is the one every
    bisection gives, with a quarter of the M/G/c evaluations on CloudMatrix384."""
    scv = wl.prompt_cv**2
    best = 0.0
    capacity = grid.instances * grid.batch_prompts / grid.batch_s
    for i in np.argsort(-capacity, kind="stable").tolist():
        s = float(grid.batch_s[i])
        c = int(grid.instances * grid.batch_prompts[i])
        hi = c / s
        if hi <= best or (best > 0.0 and _ttft_at(grid, i, best, scv, slo.quantile) > slo.ttft_s):
            continue  # cannot beat the best so far
        if _ttft_at(grid, i, 1e-9 * hi, scv, slo.quantile) > slo.ttft_s:
            continue  # the batch alone misses the SLO
        lo = 0.0
        while hi - lo > 1e-6 * hi:
            mid = 0.5 * (lo + hi)
            if _ttft_at(grid, i, mid, scv, slo.quantile) <= slo.ttft_s:
                lo = mid
            else:
                hi = mid
        best = max(best, lo)
    return best


def tpot_limits_rps(curves: list[_DecodeCurve], slo: SLO) -> np.ndarray:
    """Largest λ whose SLO-quantile TPOT meets the SLO, for each of ``curves`` (pools that differ only in
    their device count, as ``decode_curves`` builds them), on the exact TPOT that ``evaluate`` prices.

    TPOT_q(b) = TPOT(b + z√(b/D)) on every curve's batch grid in one vectorized evaluate finds the cell
    where it crosses the SLO; a root-find on the exact TPOT_q (``_illinois``), all curves in one
    evaluate per step, puts the crossing b* within 1e-9 relative (TPOT_q is concave in b at small
    batches, so a chord through the cell overshoots: 2.2% over the SLO on hgx-h200 at 4 sequences per
    GPU). Then λ = D b* /
    (output_len × TPOT(b*)) by Little's law on the interpolated curve, the one ``solve_batch`` inverts, and
    below the capacity by 1e-12 relative (at the HBM cap it is the capacity, which ``evaluate`` would call
    overloaded by one ulp)."""
    if not curves:
        return np.zeros(0)
    c0 = curves[0]
    z = normal_quantile(slo.quantile)
    dev = np.array([c.devices for c in curves])
    ep = np.array([c.ep for c in curves])
    cap = np.array([c.max_batch for c in curves])

    def tpot_q(rows: np.ndarray, b: np.ndarray) -> np.ndarray:
        """TPOT at the SLO-quantile batch of per-device batch ``b`` of the curves ``rows`` (``b``: one
        value or one grid row per curve)."""
        col = (slice(None),) + (None,) * (b.ndim - 1)
        d, c = dev[rows][col], cap[rows][col]
        bq = np.minimum(b + z * np.sqrt(b / d), c)
        ev = _pool_evaluate(
            c0.system, c0.model, c0.wl, c0.pools.decode, d, ep[rows][col], bq, c0.wl.kv_mean_len
        )
        return np.broadcast_to(np.asarray(ev.tpot_s, dtype=float), b.shape)

    b = _padded([c.grid_b for c in curves])
    n = len(curves)
    tq_all = tpot_q(np.arange(n), b)
    lo, hi = np.zeros(n), np.zeros(n)
    f_lo, f_hi = np.zeros(n), np.zeros(n)  # TPOT_q - SLO at the cell's ends (<= 0, > 0)
    has = np.zeros(n, dtype=bool)  # SLO met at the grid's first batch
    cross = np.zeros(n, dtype=bool)  # ... and missed further up the grid
    for r, curve in enumerate(curves):
        gb = curve.grid_b
        ok = tq_all[r, : gb.size] <= slo.tpot_s
        if not ok[0]:
            continue
        has[r] = True
        if ok.all():
            lo[r] = hi[r] = gb[-1]
        else:
            j = int(np.argmin(ok))  # first miss: the crossing is in (gb[j-1], gb[j])
            lo[r], hi[r], cross[r] = gb[j - 1], gb[j], True
            f_lo[r], f_hi[r] = tq_all[r, j - 1] - slo.tpot_s, tq_all[r, j] - slo.tpot_s
    if cross.any():
        lo[cross] = _illinois(
            lambda rows, x: tpot_q(rows, x) - slo.tpot_s, np.flatnonzero(cross), lo, hi, f_lo, f_hi
        )
    out = np.zeros(n)
    for r, curve in enumerate(curves):
        if has[r]:
            t = float(np.interp(lo[r], curve.grid_b, curve.grid_tpot))
            lam = curve.devices * lo[r] / (curve.wl.output_len * t)
            out[r] = min(lam, curve.capacity_rps() * (1 - 1e-12))
    return out


def _illinois(f, rows: np.ndarray, lo, hi, f_lo, f_hi) -> np.ndarray:
    """The feasible end of every bracket [lo, hi] of ``rows`` (f(lo) <= 0 < f(hi)) narrowed onto the root of
    ``f(rows, x)`` (vectorized: one call per step for all brackets) by the Illinois false position (Dowell &
    Jarratt 1971: a bracketing secant that halves the kept end's f when one end moves twice in a row), until
    the bracket is below 1e-9 of hi or f(lo) is within 1e-12 of the root's scale |f(hi) - f(lo)|. About 6
    steps on a smooth TPOT cell, where bisection took 30 (one decode evaluate each, serve's SLO limit)."""
    lo, hi, f_lo, f_hi = lo[rows], hi[rows], f_lo[rows], f_hi[rows]
    scale = f_hi - f_lo
    last = np.zeros(rows.size, dtype=int)  # the end the previous step moved: -1 lo, +1 hi
    for _ in range(200):
        live = (hi - lo > 1e-9 * hi) & (f_lo < -1e-12 * scale)
        if not live.any():
            break
        x = np.clip(lo - f_lo * (hi - lo) / (f_hi - f_lo), lo, hi)
        fx = f(rows, np.where(live, x, lo))
        good, bad = live & (fx <= 0), live & (fx > 0)
        f_hi = np.where(good & (last == -1), 0.5 * f_hi, f_hi)
        f_lo = np.where(bad & (last == 1), 0.5 * f_lo, f_lo)
        lo, f_lo = np.where(good, x, lo), np.where(good, fx, f_lo)
        hi, f_hi = np.where(bad, x, hi), np.where(bad, fx, f_hi)
        last = np.where(good, -1, np.where(bad, 1, last))
    return lo


def tpot_limit_rps(curve: _DecodeCurve, slo: SLO) -> float:
    """Largest λ whose SLO-quantile TPOT meets the SLO for one decode pool (``tpot_limits_rps``)."""
    return float(tpot_limits_rps([curve], slo)[0])


# ---------------------------------------------------------------------------------------------- whole service


@dataclass(frozen=True)
class ServeResult:
    system: str
    model: str
    inputs: dict
    rate_rps: float
    ttft_s: dict[str, float]
    tpot_s: dict[str, float]
    slo: dict[str, float | str]
    slo_met: bool
    slo_attainment: float
    goodput_rps: float
    goodput_rps_per_device: float
    utilization: dict[str, float]
    bottleneck: str
    overloaded: bool
    overload_reasons: list[str]
    max_rate_rps: dict[str, float | str]
    cache: dict[str, float | str]
    prefill: PrefillPoolResult
    decode: DecodePoolResult
    approximations: list[str]
    # closed loop: each request's wait for KV memory, included in ttft_s (0: every user fits)
    ttft_memory_wait_s: float = 0.0
    # closed loop: mean TTFT of the N users started at once (``first_wave_s``); None under a Poisson rate
    ttft_first_wave_s: float | None = None


def finite_or_none(obj: Any) -> Any:
    """``obj`` (dataclasses, dicts, lists, floats) with every non-finite float replaced by None, dataclasses
    as dicts of their fields: the JSON form of a serving result, where "no finite value" (an overloaded
    pool's TTFT and TPOT, a hit rate with no popularity model) is an explicit null, never NaN or a string
    "inf" passed off as a number (the keys that may be null, and when: docs/json.md)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: finite_or_none(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(float(obj)):
        return None
    return obj


APPROXIMATIONS = [
    "prefill pool: M/G/c over c = instances x batch slots, each slot busy batch_s(B) per request "
    "(Allen-Cunneen mean wait, exponential wait tail); batch size B chosen to minimize the SLO-quantile TTFT",
    "TTFT = wait + prefill batch + KV transfer to decode (RDMA); service SCV = prompt-length CV^2",
    "decode pool: Little's law fixed point b = (rate/D) x output_len x TPOT(b) "
    "at mean KV = prompt + E[O^2]/(2E[O])",
    "TPOT p-quantile: TPOT at per-device batch b + z sqrt(b/D) (Poisson occupancy, balanced router) and "
    "die-mean KV + z sigma_KV/sqrt(b per die)",
    "cache: Che's LRU approximation over Zipf prefix popularity; cached prompt tokens skip prefill compute",
    "goodput = rate x P(TTFT <= SLO) x P(TPOT <= SLO) (independent pools); slo_met is on the stated quantile",
    "fixed concurrency: the closed loop is evaluated as Poisson at its throughput X = N / (TTFT + L x TPOT); "
    "beyond what the decode pool's HBM holds at capacity the rest wait for KV memory, (N - X (TTFT + L x "
    "TPOT)) / X in every TTFT (ttft_memory_wait_s); its first wave (N users started at once, "
    "ttft_first_wave_s): the prefill instances' queues in back-to-back batches of the most prompts/s",
]


class _Service:
    """Everything that does not depend on the rate: cache hit, prefill grid, decode curve."""

    def __init__(self, system: System, model: Model, wl: Workload, pools: Pools, slo: SLO):
        wl.check(model)
        pools.check_numbers()
        given_ep = pools.decode.ep_size
        pools = pools.resolve(system, model)
        # checked with the decode EP as given: one derived from --moe-tp is reported as --moe-tp, not --ep
        as_given = (
            pools if given_ep is not None else replace(pools, decode=replace(pools.decode, ep_size=None))
        )
        as_given.check(system, model, wl)
        if not slo.ttft_s > 0 or not slo.tpot_s > 0:
            raise CmperfError("--ttft-slo and --tpot-slo must be positive times")
        if not 0.5 <= slo.quantile < 1.0:
            raise CmperfError(f"--slo-percentile: must be in [50, 100), got {100 * slo.quantile:g}")
        self.system, self.model, self.wl, self.pools, self.slo = system, model, wl, pools, slo
        self.cache = cache_pool(system, model, wl, pools)
        self.grid = prefill_grid(system, model, wl, pools, self.cache.token_hit_rate)
        self.curve = _DecodeCurve(system, model, wl, pools)
        plane = system.plane(pools.plane(system))
        self.cache_bw = (
            pools.prefill_devices * system.ranks_per_device * plane.bytes_per_s_per_rank * plane.host_read_eff
        )

    def cache_traffic(self, rate: float) -> float:
        return rate * self.cache.token_hit_rate * self.wl.prompt_len * self.cache.kv_bytes_per_token

    def at(self, rate: float):
        return prefill_pool(self.grid, rate, self.wl, self.slo), decode_pool(self.curve, rate, self.slo)

    def limit(self, which: int) -> float:
        """Largest rate keeping the TTFT (0) or TPOT (1) quantile within its SLO."""
        return (
            ttft_limit_rps(self.grid, self.wl, self.slo)
            if which == 0
            else tpot_limit_rps(self.curve, self.slo)
        )


def first_wave_s(svc: _Service, n: float, rate: float) -> float:
    """Mean TTFT of a closed loop's ``n`` users started at once (a short benchmark's mean TTFT is mostly
    this wave, as ``cmperf.aggregated`` has it for one engine): the users the decode pool's HBM holds,
    u = min(n, D x b_cap), are queued at the I prefill instances, u / I each; an instance prefills them
    back to back in batches of B prompts, the grid batch of the most prompts/s among those up to u / I
    (the whole queue when it is smaller than every batch), so prompt k's first token comes after
    ceil(k / B) batches of batch_s(B), then the KV transfer and the framework's request overhead. The
    n - u users beyond the HBM wait for memory, (n - u) / X each (X: the loop's throughput ``rate``),
    the steady state's wait. Worked number (hgx-h200 default pools, 1K / 1K, 1,024 users): one 32-GPU
    instance, batches of 512 prompts at 1.521 s, so half the users wait one batch and half two: 1.5 x
    1.521 s + 1.6 ms of KV transfer = 2.284 s, against a steady-state mean of 41 ms (the users, bunched
    by the wave, stay spread by it: no queue). Measured disaggregated TTFTs on the development half fit
    neither, and ``cmperf validate --points`` does not pose them (docs/points.md)."""
    g = svc.grid
    held = min(n, svc.curve.devices * svc.curve.max_batch)
    queue = max(held / g.instances, 1.0)
    rate_b = g.batch_prompts / g.batch_s
    ok = g.batch_prompts <= max(queue, float(g.batch_prompts[0]))
    i = int(np.flatnonzero(ok)[np.argmax(rate_b[ok])])
    k = np.arange(1, math.ceil(queue - 1e-9) + 1, dtype=float)
    wave = float(np.mean(np.ceil(k / g.batch_prompts[i] - 1e-9))) * float(g.batch_s[i]) + g.after_s(i)
    return wave + (n - held) / rate


def _concurrency_rate(svc: _Service, n: float) -> tuple[float, bool]:
    """(throughput X, capped) of a closed loop of n requests: n = X × (mean TTFT(X) + L × TPOT(X)) (Brent's
    method, ``queueing.find_root``); capped when even X at capacity holds fewer than n requests (the decode
    pool's HBM batch cap binds: the rest wait for KV memory, ``evaluate``)."""
    cap = min(svc.grid.capacity_rps, svc.curve.capacity_rps()) * (1 - 1e-9)

    def f(x):
        p, d = svc.at(x)
        return x * (p.ttft_mean_s + svc.wl.output_len * d.tpot_mean_s) - n

    if f(cap) <= 0:
        return cap, True
    return find_root(f, cap * 1e-9, cap, xtol=1e-9 * cap), False


def evaluate(
    system: System, model: Model, wl: Workload, pools: Pools, slo: SLO | None = None, *, limits: bool = True
) -> ServeResult:
    """TTFT/TPOT percentiles, goodput, utilization and bottleneck of one service at one load."""
    slo = slo or SLO()
    svc = _Service(system, model, wl, pools, slo)
    pools = svc.pools
    capped = False
    if wl.rate_per_s is not None:
        rate = wl.rate_per_s
    else:
        assert wl.concurrency is not None  # Workload.check: a rate or a concurrency
        rate, capped = _concurrency_rate(svc, float(wl.concurrency))
    p, d = svc.at(rate)
    memory_wait = 0.0
    if capped:  # the users beyond what the pools hold at capacity wait for KV memory (Little's law)
        held = rate * (p.ttft_mean_s + wl.output_len * d.tpot_mean_s)
        memory_wait = max(float(wl.concurrency or 0) - held, 0.0) / rate
    wave = first_wave_s(svc, float(wl.concurrency), rate) if wl.concurrency is not None else None
    traffic = svc.cache_traffic(rate)
    util = {"prefill": p.utilization, "decode": d.utilization, "cache_link": traffic / svc.cache_bw}
    reasons = []
    if p.overloaded:
        reasons.append(f"prefill: {rate:.4g} req/s exceeds the pool's capacity of {p.capacity_rps:.4g} req/s")
    if d.overloaded:
        reasons.append(
            f"decode: {rate:.4g} req/s exceeds {d.capacity_rps:.4g} req/s at the HBM batch cap of "
            f"{d.max_batch_per_device:.0f} per device"
        )
    if util["cache_link"] >= 1:
        reasons.append(
            f"cache: {traffic / 1e9:.1f} GB/s of KV loads exceed the {pools.plane(svc.system)} bandwidth "
            f"{svc.cache_bw / 1e9:.1f} GB/s of the prefill ranks"
        )
    overloaded = bool(reasons)
    p_ttft = p.p_ttft_within_slo
    if memory_wait > 0:  # P(TTFT <= SLO) of the pool's TTFT shifted by the wait
        left = slo.ttft_s - memory_wait
        p_ttft = (
            prefill_pool(svc.grid, rate, wl, replace(slo, ttft_s=left)).p_ttft_within_slo if left > 0 else 0.0
        )
    att = p_ttft * d.p_tpot_within_slo
    devs = pools.prefill_devices + pools.decode_devices
    met = (p.ttft_slo_quantile_s + memory_wait <= slo.ttft_s) and (d.tpot_slo_quantile_s <= slo.tpot_s)
    lim: dict[str, float | str] = {}
    if limits:
        lt, ld = svc.limit(0), svc.limit(1)
        lim = {
            "ttft_slo_rps": lt,
            "tpot_slo_rps": ld,
            "both_slo_rps": min(lt, ld),
            "prefill_capacity_rps": p.capacity_rps,
            "decode_capacity_rps": d.capacity_rps,
            "binding_slo": "ttft (prefill pool)" if lt <= ld else "tpot (decode pool)",
        }
    q = f"p{100 * slo.quantile:g}"
    inputs = {
        "rate_rps": wl.rate_per_s,
        "concurrency": wl.concurrency,
        **workload_inputs(wl),
        "prefill_devices": pools.prefill_devices,
        "decode_devices": pools.decode_devices,
        "prefill_instance_devices": pools.prefill_instance_devices,
        "prefill_ep_size": int(pools.prefill.ep_size),
        "prefill_attn_tp": int(pools.prefill.attn_tp),
        "prefill_moe_tp": int(pools.prefill.moe_tp),
        "cache_dram_bytes": svc.cache.capacity_bytes,
        "cache_plane": pools.plane(svc.system),
        "mtp": pools.decode.mtp,
        "mtp_accept": pools.decode.mtp_accept,
        "decode_ep_size": d.ep_size,
        "precision": pools.decode.precision.__dict__,
        "moe": model.is_moe,  # false: a dense model, its TP degrees split the whole model and no EP
    }
    c = svc.cache
    cache: dict[str, float | str] = {
        "model": c.model,
        "capacity_bytes": c.capacity_bytes,
        "prefix_bytes": c.prefix_bytes,
        "prefixes_cached": c.prefixes_cached,
        "request_hit_rate": c.request_hit_rate,
        "token_hit_rate": c.token_hit_rate,
        "prefill_tokens_saved_per_s": rate * c.token_hit_rate * wl.prompt_len,
        "kv_load_bytes_per_s": traffic,
        "kv_load_plane": pools.plane(svc.system),
        "kv_load_plane_bytes_per_s": svc.cache_bw,
    }
    return ServeResult(
        system.name,
        model.name,
        inputs,
        rate,
        {
            "p50": p.ttft_p50_s + memory_wait,
            "p90": p.ttft_p90_s + memory_wait,
            "p99": p.ttft_p99_s + memory_wait,
            "mean": p.ttft_mean_s + memory_wait,
        },
        {"mean": d.tpot_mean_s, "p99": d.tpot_p99_s},
        {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "quantile": q},
        bool(met),
        att,
        rate * att,
        rate * att / devs,
        util,
        max(util, key=lambda k: util[k]),
        overloaded,
        reasons,
        lim,
        cache,
        p,
        d,
        APPROXIMATIONS,
        memory_wait,
        wave,
    )


def slo_limits(system: System, model: Model, wl: Workload, pools: Pools, slo: SLO | None = None) -> dict:
    """Rates at which the TTFT and TPOT SLO quantiles stop holding, and which pool binds."""
    svc = _Service(
        system, model, replace(wl, rate_per_s=wl.rate_per_s or 1.0, concurrency=None), pools, slo or SLO()
    )
    lt, ld = svc.limit(0), svc.limit(1)
    return {
        "ttft_slo_rps": lt,
        "tpot_slo_rps": ld,
        "slo_percentile": 100 * svc.slo.quantile,
        "binding": "prefill" if lt <= ld else "decode",
        "prefill_capacity_rps": svc.grid.capacity_rps,
        "decode_capacity_rps": svc.curve.capacity_rps(),
    }
