"""Aggregated serving (in-flight batching): one engine whose decode steps also carry a chunk of prompt tokens.

An engine of D devices (R ranks, attention TP t, so G = R / t attention-DP groups) runs the decode batch of
b sequences per device and, in the same forward, up to ``chunk_tokens`` prompt tokens per step (chunked
prefill: SGLang ``--chunked-prefill-size``, TensorRT-LLM ``max_num_tokens``). The step is the mixed step of
``cmperf.decode.evaluate`` with ``Deployment.prefill_chunk_tokens`` (decode and chunk tokens through the
GEMMs and the MoE, the chunk's attention as prefill attention over its prompt's prefix). Formulas, per
device, with a = accepted draft tokens per step (``decode.accepted_per_step``), prompt P, output O:

* **Steady state**. Each step finishes b (1 + a) / O requests; prefill admits as many, so the steps carry
  c(b) = P b (1 + a) / O prompt tokens per device on average, at most the budget C / D. A scheduler does not
  spread them thinly (a few prompt tokens in every step would route to nearly every expert each step):
  a group's chunk step carries one prompt's chunk, s = min(P, C_g), or the need itself once that covers
  every step (the fluid limit), in a share rho = tau_g / s of its steps (tau_g: the group's mean need per
  step); the groups meet in every all-to-all, so f = 1 - (1 - rho)^G of the steps carry a chunk, of
  c(b) / f tokens per device (``_Curve.mix``). The mean step s(b) = f step(b, c / f) + (1 - f) step(b, 0)
  is evaluated on a batch grid in two vectorized calls (the fixed point between c and b is then a curve
  in b, no iteration), TPOT(b) = s(b) / (1 + a).
* **Poisson arrivals at rate lambda** (requests/s per engine): Little's law for the decode batch,
  b = (lambda / D) O TPOT(b), solved by Brent's method on the interpolated curve (``queueing.find_root``).
  Past b = min(HBM cap, C O / (D P (1 + a))) the engine is overloaded.
* **Closed loop of N users** (how benchmarks measure: aiconfigurator's silicon data, genai-perf, SGLang's
  bench_serving with --max-concurrency): N = X (TTFT + O TPOT), X the throughput; the arrivals it generates
  are taken as Poisson at X (the approximation ``cmperf.serving`` states for ``--concurrency``); with
  D b = X O TPOT (Little, decode) and X TTFT requests waiting or prefilling. When the HBM cap binds first
  the rest wait for KV memory: TTFT = (N - D b_cap) / X.
* **TTFT** = queueing + the steps a prompt needs. A request lives on one attention-DP group, which gets
  its share C_g = C / G of the budget (SGLang divides ``chunked_prefill_size`` by the attention-DP size,
  ``parallel_hook.py``; under a profile's ``chunk_scope = "group"``, TensorRT-LLM's ``max_num_tokens`` per
  attention-DP rank, C_g is the whole budget and the engine's step carries up to G C);
  the group's prefill is an M/G/1 queue (arrivals lambda / G, service P / C_g steps,
  service SCV = prompt CV^2; Pollaczek-Khinchine mean, the exponential-tail percentiles of
  ``cmperf.queueing.mgc_wait``). TTFT = W + ceil(P / C_g) chunk steps + s(b) / 2: the prompt's chunk
  steps plus half a step for an arrival joining at the next step boundary.
* **TPOT percentile**: the mixed step at b + z_p sqrt(b / D) (Poisson occupancy, balanced router, as the
  disaggregated decode pool), with that batch's chunk.
* **First wave** (closed loop): a client that starts its N users at once has each group prefill its N / G
  prompts back to back at the full budget: the k-th first token after ceil(k P / C_g) steps of the step
  with a full chunk at half the wave's decode batch. Reported beside the steady state
  (``ttft_first_wave_s``), since a short benchmark's mean TTFT is mostly its first wave. When the
  N users do not fit in KV memory, the loop runs in rounds of the D b_cap that fit (the users stay
  bunched: equal lengths finish together): the wave is D b_cap users and every request also waits
  (N / (D b_cap) - 1) rounds of D b_cap / X each, (N - D b_cap) / X, the steady state's memory wait.

Percentiles: TTFT mean, p50, p90, p99 and the SLO's (M/G/1 wait law); TPOT mean and p99 and the SLO's.
Stated approximations (``APPROXIMATIONS``): two kinds of step (a chunk step of the mean chunk, and
decode-only steps), KV of the requests still in prefill not held against HBM, MTP acceptance as decode has
it, a chunk step's tokens spread evenly over the devices (the step waits for the busiest group: not
modelled). The request's path outside the steps (HTTP, tokenization, admission, streaming the first token)
is the framework profile's ``request_overhead``, added to every TTFT (0 without a profile).

Chunk budget default (``default_chunk_tokens``): the framework profile's ``chunk_tokens`` where it sets
one (TensorRT-LLM), else SGLang 0.5.23's ``_handle_gpu_memory_settings``
(``srt/arg_groups/memory_hook.py``): 2,048 below 20 GiB of device memory, 4,096 below 60 GiB, 8,192 below
160 GiB (H100, H200), 16,384 above (B200, GB200); on Ascend (``hardware_backend/npu/utils.py``) 4,096 up to
32 GiB, 8,192 above. TensorRT-LLM's ``max_num_tokens`` default is 8,192 (its BuildConfig / LLM API
default; per rank under attention DP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from . import decode as dec
from . import frameworks
from .deployment import AUTO, Deployment
from .errors import CmperfError
from .queueing import QueueWait, find_root, mgc_wait, normal_cdf, normal_quantile
from .serving import SLO, Workload, batch_grid, workload_inputs
from .specs import Model, System

__all__ = [
    "AggregatedResult",
    "Engine",
    "ModeComparison",
    "compare_modes",
    "default_chunk_tokens",
    "evaluate",
    "slo_limits",
]

#: Batches per device the engine's curve evaluates the mixed step at (one vectorized call).
CURVE_POINTS = 300

#: Microbatch counts ``auto`` tries per grid point (``decode.AUTO_MICROBATCHES``, the same rule).
AUTO_COUNTS = dec.AUTO_MICROBATCHES

#: Quantiles reported besides the SLO's.
REPORTED_QUANTILES = (0.5, 0.9, 0.99)

APPROXIMATIONS = [
    "chunk steps: a share f = 1 - (1 - rho)^G of the steps carries the prompt tokens c = P b (1 + a) / O per "
    "device per step (one prompt's chunk per group, or the fluid need once it covers every step), the rest "
    "decode only; TPOT = mean step / (1 + a)",
    "TTFT = M/G/1 wait of the request's attention-DP group (budget C / G per step) + ceil(P / C_g) chunk "
    "steps + half a mean step + the framework's request overhead; percentiles from the exponential-tail "
    "wait law",
    "TPOT p-quantile: the mixed step at batch b + z sqrt(b/D) with its chunk",
    "closed loop: N = X (TTFT + O TPOT), its arrivals taken as Poisson at X; HBM-capped: TTFT = (N - D b)/X",
    "HBM cap: each running sequence holds the KV its framework's admission reserves (frameworks."
    "reserved_kv_len; P + O without a profile); KV of requests still in prefill is not held against HBM; "
    "the busiest group's chunk is not modelled",
]


def default_chunk_tokens(system: System, framework: str | None = None) -> int:
    """The chunked-prefill budget per engine step a framework starts with on ``system``'s devices: the
    profile's ``chunk_tokens`` (TensorRT-LLM's max_num_tokens: 8,192), else by device memory (module
    docstring: SGLang 0.5.23's rule). hgx-h200: 8,192; hgx-b200: 16,384; cloudmatrix384 (64 GB per die):
    8,192."""
    fw = frameworks.load(framework) if framework is not None else None
    if fw is not None and fw.chunk_tokens is not None:
        return fw.chunk_tokens
    mib = system.chip.hbm_bytes / 2**20
    if system.chip.name.startswith("ascend"):
        return 4096 if mib <= 32 * 1024 else 8192
    for limit, tokens in ((20, 2048), (60, 4096), (160, 8192)):
        if mib < limit * 1024:
            return tokens
    return 16384


@dataclass(frozen=True)
class Engine:
    """One aggregated engine: ``deployment`` is its decode record (devices, ep_size, attn_tp, moe_tp, mtp,
    precision, microbatches; the batch, KV and chunk knobs are set here), ``chunk_tokens`` the prompt tokens
    one step may carry over the whole engine (None: ``default_chunk_tokens`` of its framework)."""

    deployment: Deployment = field(default_factory=Deployment)
    chunk_tokens: float | None = None

    def chunk(self, system: System) -> float:
        if self.chunk_tokens is not None:
            return float(self.chunk_tokens)
        return float(default_chunk_tokens(system, self.deployment.framework))


@dataclass(frozen=True)
class AggregatedResult:
    system: str
    model: str
    load: str  # "poisson" | "closed-loop"
    inputs: dict
    rate_rps: float  # requests/s the engine serves (closed loop: its throughput)
    concurrency: float  # requests in flight (Poisson: lambda x (TTFT + O TPOT))
    batch_per_device: float  # decode sequences per device
    max_batch_per_device: float  # the batch where the engine stops (HBM or the chunk budget)
    limited_by: str  # what stops the batch growing: "HBM" | "chunk budget"
    waits_for_memory: bool  # closed loop at the HBM cap: the requests beyond it wait for KV memory
    chunk_tokens: float  # the engine's budget per step (G x the group's under chunk_scope "group")
    chunk_tokens_per_step: float  # prompt tokens the engine's mean step carries
    chunk_tokens_per_group: float  # one attention-DP group's budget (its share, or its own: chunk_scope)
    attention_dp_groups: int
    chunk_utilization: float  # mean chunk / budget (the prefill queue's utilization)
    prefill_steps_per_prompt: int
    step_s: float  # the mean step (chunk steps and decode-only steps)
    chunk_step_s: float  # a step that carries a chunk
    chunk_step_fraction: float  # share of the steps that carry one
    chunk_tokens_per_chunk_step: float  # prompt tokens over the engine in such a step
    decode_step_s: float  # the same batch's step without a chunk
    prefill_share: float  # (mean step - decode step) / mean step
    microbatches: int
    tokens_per_s_per_device: float  # decode (output) tokens
    input_tokens_per_s_per_device: float
    ttft_s: dict[str, float]  # mean, p50, p90, p99 and the SLO's
    ttft_wait_s: float  # mean queueing part of the TTFT
    ttft_request_s: float  # the framework's request overhead in every TTFT (outside the steps)
    ttft_first_wave_s: float | None  # closed loop: mean TTFT of N users started at once
    tpot_s: dict[str, float]  # mean, p99 and the SLO's
    slo: dict[str, float | str]
    slo_met: bool
    slo_attainment: float
    goodput_rps: float
    goodput_rps_per_device: float
    capacity_rps: float
    utilization: float
    overloaded: bool
    overload_reasons: list[str]
    max_rate_rps: dict[str, float | str]
    approximations: list[str]


# ---------------------------------------------------------------------------------------------- the engine


class _Curve:
    """The engine's mixed step on a batch grid, with c(b) = P b (1 + a) / O (everything rate-independent)."""

    def __init__(self, system: System, model: Model, wl: Workload, engine: Engine):
        self.system, self.model, self.wl = system, model, wl
        base = engine.deployment
        if base.phase != "decode":
            raise CmperfError("aggregated engine: give a decode deployment")
        self.chunk = engine.chunk(system)
        if not math.isfinite(self.chunk) or self.chunk < 1 or self.chunk != int(self.chunk):
            raise CmperfError(f"--chunk: must be a whole number of tokens >= 1, got {self.chunk:g}")
        kv_cap = wl.prompt_len + wl.output_len  # one sequence must fit whole
        # the batch cap: the KV a running sequence holds under the framework's admission rule
        kv_held = frameworks.reserved_kv_len(wl.prompt_len, wl.output_len, base.framework)
        # the chunk's prompts are the workload's: their length sets the chunk's causal attention
        probe = replace(
            base,
            batch_per_device=1.0,
            kv_len=wl.kv_mean_len,
            kv_capacity_len=kv_held,
            kv_cv=wl.kv_cv,
            prompt_len=wl.prompt_len,
        )
        reasons = replace(probe, kv_len=kv_cap, kv_capacity_len=kv_cap).check(system, model)
        if reasons:
            raise CmperfError(reasons[0])
        self.dep = probe.resolve(system, model)
        d = self.dep
        self.request_s = frameworks.request_overhead_s(d.framework)  # TTFT outside the steps
        self.devices = int(d.devices)
        ranks = self.devices * system.ranks_per_device
        self.groups = max(ranks // int(d.attn_tp if d.attn_tp is not None else 1), 1)
        self.scope = frameworks.chunk_scope(d.framework)
        self.budget = self.chunk  # the framework's knob (--chunk): the engine's or every group's
        if self.scope == "group":  # every group's scheduler has the whole budget (TensorRT-LLM)
            self.chunk_group, self.chunk = self.chunk, self.chunk * self.groups
        elif self.chunk < self.groups:
            raise CmperfError(
                f"--chunk: {self.chunk:g} tokens per step over {self.groups} attention-DP groups is less "
                f"than one token each; give at least {self.groups}"
            )
        else:
            self.chunk_group = self.chunk / self.groups
        self.per_step = 1.0 + float(dec.accepted_per_step(d.mtp, d.mtp_accept))
        p, o = wl.prompt_len, wl.output_len
        self.k = p * self.per_step / o  # chunk tokens per device per step, per sequence of batch
        b_chunk = self.chunk / self.devices / self.k  # the batch whose chunk fills the budget
        cap = float(np.asarray(self._eval(np.array([1.0]), counts=(1,))[2]).reshape(-1)[0])
        if not cap >= 1e-3:
            raise CmperfError(
                f"--devices: not even one {kv_held:g}-token sequence per device fits in HBM on "
                f"{self.devices} devices of {system.name}; use more devices or shorter lengths"
            )
        top = min(cap, b_chunk * (1.0 - 1e-6))
        self.limited_by = "HBM" if cap < b_chunk else "chunk budget"
        b = batch_grid(top, CURVE_POINTS)
        mean, mix, zero, f, n, feas = self.point(b)
        last = int(np.flatnonzero(feas)[-1]) if feas.any() else -1
        if last < 0:
            raise CmperfError(
                f"--devices: no decode batch with its prefill chunk fits in HBM on {self.devices} devices of "
                f"{system.name}; use more devices, a smaller --chunk or shorter lengths"
            )
        if last < b.size - 1:  # the chunk's activations cut the batch below the probe's cap
            self.limited_by = "HBM"
        keep = slice(0, last + 1)
        self.b, self.step, self.step_mix, self.step0 = b[keep], mean[keep], mix[keep], zero[keep]
        self.f, self.n = f[keep], n[keep]
        self.tpot = self.step / self.per_step
        self.top = float(self.b[-1])

    def mix(self, b):
        """(fraction of steps that carry a chunk, prompt tokens per device in such a step) at batch ``b``.

        Each group needs tau_g = c(b) D / G prompt tokens per step on average. A step that carries a chunk
        carries one prompt's (P, at most the group's budget C_g) while that covers the need, else the need
        itself (every step then carries a chunk: the fluid limit), at most C_g: s = min(C_g, max(min(P,
        C_g), tau_g)); a group carries a chunk in a share rho = tau_g / s of the steps. The groups meet in
        every layer's all-to-all, so a step is a chunk step when any group's is: f = 1 - (1 - rho)^G, and
        such a step carries c(b) / f per device on average (the engine's prompt tokens spread over the
        chunk steps)."""
        b = np.asarray(b, dtype=float)
        tau = self.k * b
        tau_g = tau * self.devices / self.groups
        s = np.minimum(self.chunk_group, np.maximum(min(self.wl.prompt_len, self.chunk_group), tau_g))
        rho = np.minimum(tau_g / s, 1.0)
        f = -np.expm1(self.groups * np.log1p(-np.minimum(rho, 1.0 - 1e-15)))
        f = np.where(rho >= 1.0, 1.0, f)
        c_mix = np.where(f > 1e-300, tau / np.maximum(f, 1e-300), s / self.devices)
        return f, c_mix

    def point(self, b):
        """(mean step, chunk step, decode-only step, chunk-step fraction, microbatches of the chunk step,
        feasible) at batches ``b`` (exact: two ``decode.evaluate`` calls, microbatches each their best)."""
        b = np.asarray(b, dtype=float)
        f, c_mix = self.mix(b)
        mix, feas, _, n = self._eval(b, chunk=c_mix)
        zero = self._eval(b, chunk=np.zeros_like(b))[0]
        return f * mix + (1.0 - f) * zero, mix, zero, f, n, feas

    def _eval(self, b, chunk=None, counts=AUTO, n_fixed=None):
        """(step, feasible, max batch, microbatches) at batches ``b`` with chunks ``chunk`` (default c(b)):
        the lowest step over the microbatch counts (fits first, then fewer: ``decode.best_microbatches``)."""
        b = np.asarray(b, dtype=float)
        c = self.k * b if chunk is None else np.asarray(chunk, dtype=float)
        mb = self.dep.microbatches
        if n_fixed is not None:
            cands = None
            mbs = np.asarray(n_fixed, dtype=float)
        elif counts is AUTO and mb == AUTO:
            cands = np.array(AUTO_COUNTS, dtype=float)
        else:
            cands = np.array(counts if counts not in (AUTO, None) else (mb,), dtype=float)
        if cands is None:
            dep = replace(self.dep, batch_per_device=b, prefill_chunk_tokens=c, microbatches=mbs.astype(int))
            ev = dec.evaluate(self.system, self.model, dep)
            shape = b.shape
            return (
                np.broadcast_to(np.asarray(ev.step_s, dtype=float), shape).copy(),
                np.broadcast_to(np.asarray(ev.feasible, dtype=bool), shape).copy(),
                np.broadcast_to(np.asarray(ev.max_batch_per_device, dtype=float), shape).copy(),
                mbs,
            )
        dep = replace(
            self.dep,
            batch_per_device=b[:, None],
            prefill_chunk_tokens=c[:, None],
            microbatches=cands.astype(int)[None, :],
        )
        ev = dec.evaluate(self.system, self.model, dep)
        shape = (b.size, cands.size)
        step = np.broadcast_to(np.asarray(ev.step_s, dtype=float), shape)
        feas = np.broadcast_to(np.asarray(ev.feasible, dtype=bool), shape)
        cap = np.broadcast_to(np.asarray(ev.max_batch_per_device, dtype=float), shape)
        per_rank = b[:, None] / self.system.ranks_per_device
        valid = (cands[None, :] == 1) | (cands[None, :] <= per_rank)
        key = np.where(valid & feas, step, np.inf)
        key = np.where(np.isinf(key).all(axis=1, keepdims=True), np.where(valid, step, np.inf), key)
        j = np.argmin(key, axis=1)
        rows = np.arange(b.size)
        return step[rows, j], feas[rows, j], cap[rows, j], cands[j]

    def at(self, b: float) -> float:
        """The mean step at batch ``b`` (interpolated on the grid)."""
        return float(np.interp(b, self.b, self.step))

    def at_mix(self, b: float) -> float:
        """The step that carries a chunk at batch ``b`` (interpolated)."""
        return float(np.interp(b, self.b, self.step_mix))

    def capacity_rps(self) -> float:
        """Largest request rate: D b (1 + a) / (O s(b)), the most over the grid (at its top)."""
        return self.devices * float(np.max(self.b / self.tpot)) / self.wl.output_len

    def solve_rate(self, rate: float) -> float:
        """Decode batch per device at Poisson ``rate``: b = (rate / D) O TPOT(b); inf when overloaded."""
        k = rate / self.devices * self.wl.output_len

        def f(x):
            return x - k * float(np.interp(x, self.b, self.tpot))

        if f(self.top) < 0:
            return math.inf
        return find_root(f, 0.0, self.top, xtol=1e-12 * self.top, rtol=1e-12)

    # -- the prefill queue of one attention-DP group

    def queue(self, rate: float, mix: float) -> QueueWait:
        """The M/G/1 prefill queue of one group: arrivals rate / G, a prompt's service P / C_g chunk steps
        (the budget's rate: prompts shorter than C_g share a step under load)."""
        service = self.wl.prompt_len / self.chunk_group * mix
        return mgc_wait(rate / self.groups, service, 1, service_scv=self.wl.prompt_cv**2)

    @property
    def prompt_steps(self) -> int:
        x = self.wl.prompt_len / self.chunk_group
        return max(math.ceil(x - 1e-9), 1)

    def service(self, mean: float, mix: float) -> float:
        """A prompt's own part of the TTFT: ceil(P / C_g) chunk steps + half a mean step (it arrives
        mid-step and joins the next) + the framework's request overhead (outside the steps)."""
        return self.prompt_steps * mix + 0.5 * mean + self.request_s

    def ttft_mean(self, rate: float, b: float) -> float:
        mean, mix = self.at(b), self.at_mix(b)
        return self.queue(rate, mix).mean_wait_s + self.service(mean, mix)

    def ttft_quantile(self, rate: float, b: float, q: float) -> float:
        mean, mix = self.at(b), self.at_mix(b)
        return float(self.queue(rate, mix).wait_quantile_s(q)) + self.service(mean, mix)

    def batch_quantile(self, b: float, q: float) -> float:
        return min(b + normal_quantile(q) * math.sqrt(b / self.devices), self.top)

    def solve_concurrency(self, n: float) -> tuple[float, float, bool]:
        """(batch per device, throughput X, HBM-capped) of a closed loop of ``n`` requests."""
        o, d = self.wl.output_len, self.devices

        def rate_at(b):
            return d * b / (o * float(np.interp(b, self.b, self.tpot)))

        def total(b):
            r = rate_at(b)
            return d * b + r * self.ttft_mean(r, b)

        top_n = total(self.top)
        if not math.isfinite(top_n) or top_n >= n:
            hi = self.top
            if not math.isfinite(top_n):  # the chunk budget saturates at the top: back off to finite
                hi = self.top * (1.0 - 1e-9)
                while not math.isfinite(total(hi)) and hi > 1e-12:
                    hi *= 0.999
            if total(hi) < n:
                return hi, rate_at(hi), False
            b = find_root(lambda x: total(x) - n, 0.0, hi, xtol=1e-12 * self.top, rtol=1e-12)
            return b, rate_at(b), False
        return self.top, rate_at(self.top), True


# ---------------------------------------------------------------------------------------------- evaluation


def _check(wl: Workload, model: Model, slo: SLO) -> None:
    wl.check(model)
    if wl.cache_hit is not None or wl.num_prefixes is not None:
        flag = "--cache-hit" if wl.cache_hit is not None else "--prefixes"
        raise CmperfError(
            f"{flag}: the aggregated engine models no prefix cache; leave it out with --mode agg"
        )
    if not slo.ttft_s > 0 or not slo.tpot_s > 0:
        raise CmperfError("--ttft-slo and --tpot-slo must be positive times")
    if not 0.5 <= slo.quantile < 1.0:
        raise CmperfError(f"--slo-percentile: must be in [50, 100), got {100 * slo.quantile:g}")


def _quantiles_at(curve: _Curve, rate: float, slo: SLO) -> tuple[float, float]:
    """(TTFT, TPOT) at the SLO's quantile under Poisson ``rate`` (interpolated curve; inf: overloaded)."""
    b = curve.solve_rate(rate)
    if not math.isfinite(b):
        return math.inf, math.inf
    ttft = curve.ttft_quantile(rate, b, slo.quantile)
    tpot = float(np.interp(curve.batch_quantile(b, slo.quantile), curve.b, curve.tpot))
    return ttft, tpot


def _limit(curve: _Curve, slo: SLO, which: int) -> float:
    """Largest Poisson rate whose SLO-quantile TTFT (0) or TPOT (1) meets its SLO (bisection: both rise
    with the rate)."""
    hi = curve.capacity_rps() * (1.0 - 1e-9)
    target = slo.ttft_s if which == 0 else slo.tpot_s
    if _quantiles_at(curve, hi * 1e-9, slo)[which] > target:
        return 0.0
    if _quantiles_at(curve, hi, slo)[which] <= target:
        return hi
    lo = 0.0
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        if _quantiles_at(curve, mid, slo)[which] <= target:
            lo = mid
        else:
            hi = mid
    return lo


def _limits(curve: _Curve, slo: SLO) -> dict[str, float | str]:
    lt, ld = _limit(curve, slo, 0), _limit(curve, slo, 1)
    return {
        "ttft_slo_rps": lt,
        "tpot_slo_rps": ld,
        "both_slo_rps": min(lt, ld),
        "capacity_rps": curve.capacity_rps(),
        "binding_slo": "ttft" if lt <= ld else "tpot",
    }


def evaluate(
    system: System,
    model: Model,
    wl: Workload,
    engine: Engine | None = None,
    slo: SLO | None = None,
    *,
    limits: bool = True,
) -> AggregatedResult:
    """TTFT / TPOT, batch, chunk and throughput of one aggregated engine under ``wl`` (Poisson
    ``rate_per_s`` or a closed loop of ``concurrency`` requests; module docstring for the model)."""
    slo = slo or SLO()
    engine = engine or Engine()
    _check(wl, model, slo)
    curve = _Curve(system, model, wl, engine)
    d, o, p = curve.devices, wl.output_len, wl.prompt_len
    hbm_wait = False
    if wl.rate_per_s is not None:
        load = "poisson"
        rate = float(wl.rate_per_s)
        b = curve.solve_rate(rate)
    else:
        assert wl.concurrency is not None  # Workload.check: a rate or a concurrency
        load = "closed-loop"
        b, rate, hbm_wait = curve.solve_concurrency(float(wl.concurrency))
    cap = curve.capacity_rps()
    overloaded = not math.isfinite(b)
    reasons: list[str] = []
    q = slo.quantile
    qlabel = slo.percentile_label
    nan, inf = math.nan, math.inf
    if overloaded:
        what = (
            "the HBM batch cap"
            if curve.limited_by == "HBM"
            else f"the {curve.chunk:g}-token chunk budget (prefill cannot admit more)"
        )
        reasons.append(
            f"aggregated engine: {rate:.4g} req/s exceeds its capacity of {cap:.4g} req/s at {what} "
            f"({curve.top:.1f} sequences per device)"
        )
        b = curve.top
    # the step at the batch (overloaded: the cap), then its p99 and SLO-quantile batches
    at = [b] if overloaded else [b, curve.batch_quantile(b, 0.99), curve.batch_quantile(b, q)]
    mean, mix, zero, f, n, _ = curve.point(np.array(at))
    step, step_mix, step0, frac, n_mb = float(mean[0]), float(mix[0]), float(zero[0]), float(f[0]), int(n[0])
    if overloaded:
        ttft = dict.fromkeys(("mean", "p50", "p90", "p99", qlabel), inf)
        tpot = dict.fromkeys(("mean", "p99", qlabel), inf)
        wait, att, util = inf, 0.0, rate / cap
    else:
        t_mean, t99, tq = (float(x) / curve.per_step for x in mean)
        tpot = {"mean": t_mean, "p99": t99, qlabel: tq}
        w = curve.queue(rate, step_mix)
        service = curve.service(step, step_mix)
        wait = w.mean_wait_s
        ttft = {"mean": wait + service}
        for qq in (*REPORTED_QUANTILES, q):
            ttft[f"p{100 * qq:g}"] = float(w.wait_quantile_s(qq)) + service
        if hbm_wait:  # the closed loop's rest waits for KV memory: Little's law
            assert wl.concurrency is not None
            extra = (float(wl.concurrency) - d * b) / rate - ttft["mean"]
            if extra > 0:
                wait += extra
                ttft = {k: v + extra for k, v in ttft.items()}
        sigma = max(t99 - t_mean, 0.0) / normal_quantile(0.99)
        p_tpot = normal_cdf((slo.tpot_s - t_mean) / sigma) if sigma > 0 else float(t_mean <= slo.tpot_s)
        t_left = slo.ttft_s - service - (wait - w.mean_wait_s)
        p_ttft = 0.0 if t_left < 0 else 1.0 - float(w.wait_tail(t_left))
        att = p_ttft * p_tpot
        util = rate / cap
    if not overloaded and not math.isfinite(ttft["mean"]):  # the group's prefill queue is saturated
        overloaded = True
        reasons.append(
            f"aggregated engine: prefill queue saturated at {rate:.4g} req/s ({curve.chunk:g}-token budget "
            f"over {curve.groups} groups)"
        )
    first_wave = None
    if load == "closed-loop" and not overloaded:
        users = float(wl.concurrency or 0)
        if hbm_wait:  # rounds of the d b users that fit; the rest wait for KV memory (module docstring)
            first_wave = _first_wave(curve, d * b) + max(users - d * b, 0.0) / rate
        else:
            first_wave = _first_wave(curve, users)
    c_step = curve.k * b * d
    met = (not overloaded) and ttft[qlabel] <= slo.ttft_s and tpot[qlabel] <= slo.tpot_s
    lim = _limits(curve, slo) if limits else {}
    concurrency = (
        float(wl.concurrency) if wl.concurrency is not None else rate * (ttft["mean"] + o * tpot["mean"])
    )
    dep = curve.dep
    inputs = {
        "rate_rps": wl.rate_per_s,
        "concurrency": wl.concurrency,
        **workload_inputs(wl),
        "devices": d,
        "ep_size": int(dep.ep_size),
        "attn_tp": int(dep.attn_tp) if dep.attn_tp is not None else 1,
        "moe_tp": int(dep.moe_tp) if dep.moe_tp is not None else 1,
        "chunk_tokens": curve.budget,
        "chunk_default": engine.chunk_tokens is None,
        "chunk_scope": curve.scope,
        "mtp": int(dep.mtp),
        "mtp_accept": dep.mtp_accept,
        "microbatches": dep.microbatches,
        "precision": dep.precision.__dict__ if dep.precision is not None else None,
        "moe": model.is_moe,  # false: a dense model, its TP degree splits the whole model and no EP
    }
    return AggregatedResult(
        system=system.name,
        model=model.name,
        load=load,
        inputs=inputs,
        rate_rps=rate,
        concurrency=concurrency,
        batch_per_device=b,
        max_batch_per_device=curve.top,
        limited_by=curve.limited_by,
        waits_for_memory=bool(hbm_wait),
        chunk_tokens=curve.chunk,
        chunk_tokens_per_step=c_step,
        chunk_tokens_per_group=curve.chunk_group,
        attention_dp_groups=curve.groups,
        chunk_utilization=c_step / curve.chunk,
        prefill_steps_per_prompt=curve.prompt_steps,
        step_s=step,
        chunk_step_s=step_mix,
        chunk_step_fraction=frac,
        chunk_tokens_per_chunk_step=c_step / frac if frac > 0 else 0.0,
        decode_step_s=step0,
        prefill_share=(step - step0) / step if step > 0 else nan,
        microbatches=n_mb,
        tokens_per_s_per_device=b / tpot["mean"] if not overloaded else b * curve.per_step / step,
        input_tokens_per_s_per_device=rate * p / d if not overloaded else c_step / step / d,
        ttft_s=ttft,
        ttft_wait_s=wait,
        ttft_request_s=curve.request_s,
        ttft_first_wave_s=first_wave,
        tpot_s=tpot,
        slo={"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "quantile": qlabel},
        slo_met=bool(met),
        slo_attainment=att,
        goodput_rps=rate * att,
        goodput_rps_per_device=rate * att / d,
        capacity_rps=cap,
        utilization=util,
        overloaded=overloaded,
        overload_reasons=reasons,
        max_rate_rps=lim,
        approximations=APPROXIMATIONS,
    )


def _first_wave(curve: _Curve, n: float) -> float:
    """Mean TTFT of ``n`` requests arriving at once (module docstring: the first wave)."""
    per_group = max(round(n / curve.groups), 1)
    p = curve.wl.prompt_len
    k = np.arange(1, per_group + 1, dtype=float)
    steps = np.ceil(k * p / curve.chunk_group - 1e-9)
    chunk_dev = min(curve.chunk, per_group * curve.groups * p) / curve.devices
    b_wave = min(max(n / curve.devices / 2.0, 1e-3), curve.top)
    step = float(curve._eval(np.array([b_wave]), chunk=np.array([chunk_dev]))[0][0])
    return float(np.mean(steps)) * step + curve.request_s


def slo_limits(
    system: System, model: Model, wl: Workload, engine: Engine | None = None, slo: SLO | None = None
) -> dict[str, float | str]:
    """Poisson rates at which the TTFT and TPOT SLO quantiles of one engine stop holding, its capacity."""
    slo = slo or SLO()
    wl = replace(wl, rate_per_s=wl.rate_per_s or 1.0, concurrency=None)
    _check(wl, model, slo)
    return _limits(_Curve(system, model, wl, engine or Engine()), slo)


# ---------------------------------------------------------------------------------------------- agg vs disagg


@dataclass(frozen=True)
class ModeComparison:
    """The best aggregated layout (engines x engine devices) against the disaggregated split on the same
    device total and SLOs. ``objective`` "total": the most requests/s per device within both SLOs (the
    sizing's objective; each mode at its best layout, which may leave devices idle); "rate": the fewest
    devices that serve ``rate_rps`` within them."""

    devices: int
    objective: str  # "total" | "rate"
    rate_rps: float | None
    slo: dict
    aggregated: dict  # engines, engine_devices, devices used, rate_rps, per device, limits, binding, ...
    disaggregated: dict  # prefill / decode devices, rate_rps, per device, limits, binding
    winner: str  # "aggregated" | "disaggregated" | "neither"
    ratio: float  # the winner's advantage: per-device rate ratio ("total") or device ratio ("rate")
    why: str
    candidates: list[dict]  # every aggregated engine size tried, best first


#: Chunk budgets the comparison tries per engine (with the framework default) when --chunk is not given:
#: the budget is an operator's setting (SGLang --chunked-prefill-size), part of an aggregated deployment.
CHUNK_GRID = (2048, 4096, 8192, 16384, 32768, 65536)


def engine_sizes(system: System, total: int) -> list[int]:
    """Engine sizes to try for ``total`` devices: the search's instance sizes (``search.instance_sizes``:
    powers of two below a node, then whole nodes) up to ``total``, and ``total``."""
    from .search import instance_sizes

    sizes = [int(s) for s in instance_sizes(system, total).tolist() if s <= total]
    return sorted({*sizes, total})


def _engine_row(system, model, wl, slo, base, size, chunk_tokens, total, rate) -> dict:
    """One engine size: its SLO limit (``slo_limits``) and the layout it gives on ``total`` devices."""
    engine = Engine(replace(base, devices=size, ep_size=None), chunk_tokens)
    row: dict = {
        "engine_devices": size,
        "engines": 0,
        "devices": 0,
        "rate_rps": 0.0,
        "rate_rps_per_device": 0.0,
    }
    try:
        curve = _Curve(system, model, wl, engine)
    except CmperfError as e:
        return {**row, "feasible": False, "note": str(e)}
    lim = _limits(curve, slo)
    per = float(lim["both_slo_rps"])
    k = total // size if rate is None else (math.ceil(rate / per * (1 - 1e-12)) if per > 0 else 0)
    row.update(
        engines=k,
        devices=k * size,
        rate_rps=k * per if rate is None else (rate if per > 0 else 0.0),
        rate_rps_per_device=per / size,
        engine_rate_rps=per,
        ttft_slo_rps=float(lim["ttft_slo_rps"]),
        tpot_slo_rps=float(lim["tpot_slo_rps"]),
        capacity_rps=float(lim["capacity_rps"]),
        binding_slo=lim["binding_slo"],
        chunk_tokens=curve.budget,
        limited_by=curve.limited_by,
        feasible=per > 0 and 0 < k * size <= total,
        note="",
    )
    if per > 0:
        b = curve.solve_rate(per * (1 - 1e-6))
        if math.isfinite(b):
            step, step0 = curve.at(b), float(np.interp(b, curve.b, curve.step0))
            row.update(
                batch_per_device=b,
                prefill_share=(step - step0) / step,
                tpot_mean_s=step / curve.per_step,
                chunk_utilization=curve.k * b * curve.devices / curve.chunk,
            )
    return row


def compare_modes(
    system: System,
    model: Model,
    wl: Workload,
    slo: SLO,
    devices: int,
    disagg: dict | None,
    base: Deployment | None = None,
    chunk_tokens: float | None = None,
) -> ModeComparison:
    """Aggregated engines against the disaggregated split ``disagg`` (``sizing.SizeResult.best`` of the
    same devices, SLOs and objective) on ``devices``. For every engine size E of ``engine_sizes``: the
    engine's largest Poisson rate within both SLO quantiles L_E (``slo_limits``); without a target rate
    the best size has the most L_E / E (floor(devices / E) engines), with ``wl.rate_per_s`` = R the
    fewest devices E ceil(R / L_E). The mode that serves more per device (or needs fewer devices) wins;
    the reason names what binds each: the SLO that caps the aggregated engine (with the share of its
    step the prefill chunk takes there) and the pool that caps the split."""
    base = base or Deployment()
    target = wl.rate_per_s
    wl = replace(wl, rate_per_s=wl.rate_per_s or 1.0, concurrency=None)
    _check(wl, model, slo)
    chunks = (
        [chunk_tokens]
        if chunk_tokens is not None
        else sorted({*CHUNK_GRID, default_chunk_tokens(system, base.framework)})
    )
    cands = []
    for size in engine_sizes(system, devices):
        rows = [_engine_row(system, model, wl, slo, base, size, c, devices, target) for c in chunks]
        if not any(r["feasible"] for r in rows) and "note" in rows[0] and rows[0].get("engines") == 0:
            cands.append(rows[0])  # the size itself fails (HBM): one row
            continue
        # per size the best chunk (most per device, or fewest devices; ties: the smaller chunk)
        if target is None:
            rows.sort(key=lambda r: (not r["feasible"], -r["rate_rps_per_device"], r.get("chunk_tokens", 0)))
        else:
            rows.sort(key=lambda r: (not r["feasible"], r["devices"] if r["feasible"] else math.inf))
        cands.append(rows[0])
    if target is None:
        cands.sort(key=lambda r: (not r["feasible"], -r["rate_rps_per_device"], r["engine_devices"]))
    else:
        cands.sort(
            key=lambda r: (
                not r["feasible"],
                r["devices"] if r["feasible"] else math.inf,
                r["engine_devices"],
            )
        )
    best = cands[0]
    dis: dict = {}
    d_ok = False
    if disagg:
        d_ok = bool(disagg.get("feasible", True)) and float(disagg.get("goodput_rps", 0.0)) > 0
        dis = {
            "prefill_devices": disagg.get("prefill_devices"),
            "decode_devices": disagg.get("decode_devices"),
            "devices": disagg.get("devices"),
            "rate_rps": float(disagg.get("goodput_rps", 0.0)),
            "rate_rps_per_device": float(disagg.get("goodput_rps_per_device", 0.0)),
            "ttft_slo_rps": disagg.get("ttft_slo_rps"),
            "tpot_slo_rps": disagg.get("tpot_slo_rps"),
            "binding": disagg.get("binding"),
            "feasible": d_ok,
        }
    a_ok = bool(best["feasible"])
    if not a_ok and not d_ok:
        winner, ratio = "neither", math.nan
    elif a_ok != d_ok:
        winner, ratio = ("aggregated" if a_ok else "disaggregated"), math.inf
    elif target is None:
        a, d = best["rate_rps_per_device"], dis["rate_rps_per_device"]
        winner, ratio = ("aggregated", a / d) if a > d else ("disaggregated", d / a)
    else:
        a, d = float(best["devices"]), float(dis["devices"] or 0)
        winner, ratio = ("aggregated", d / a) if a < d else ("disaggregated", a / d)
    q = slo.percentile_label
    why = _why(best, dis if disagg else None, winner, q, target)
    return ModeComparison(
        devices,
        "total" if target is None else "rate",
        target,
        {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "quantile": q},
        best,
        dis,
        winner,
        ratio,
        why,
        cands,
    )


def _why(agg: dict, disagg: dict | None, winner: str, q: str, target: float | None) -> str:
    layout = f"{agg.get('engines')} x {agg.get('engine_devices')}-device engine"
    layout += "s" if agg.get("engines") != 1 else ""
    if not agg.get("feasible"):
        a_text = "no aggregated engine meets both SLOs" + (
            f" ({agg['note']})" if agg.get("note") else f" at {target:g} req/s" if target else ""
        )
    elif agg.get("binding_slo") == "ttft":
        a_text = (
            f"aggregated ({layout}) is held by its TTFT {q}: prompts queue for the "
            f"{agg.get('chunk_tokens', 0):g}-token chunk budget"
        )
    else:
        a_text = f"aggregated ({layout}) is held by its TPOT {q}: every decode step carries the prefill chunk"
    if agg.get("feasible") and agg.get("prefill_share") is not None:
        a_text += f" ({100 * agg['prefill_share']:.0f}% of the step at its limit)"
    if disagg and disagg.get("feasible"):
        d_text = (
            f"disaggregated ({disagg.get('prefill_devices')} prefill + {disagg.get('decode_devices')} decode "
            f"devices) is held by {disagg.get('binding')}, its decode steps free of prefill"
        )
    elif disagg:
        d_text = "no disaggregated split meets both SLOs"
    else:
        d_text = "no disaggregated split was sized (no decode or prefill configuration meets the SLOs)"
    lead = {
        "aggregated": "aggregated wins",
        "disaggregated": "disaggregated wins",
        "neither": "neither serves",
    }
    return f"{lead[winner]}: {a_text}; {d_text}"
