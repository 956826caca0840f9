"""Serving-framework profiles (``frameworks/*.toml``, kind = "framework"): what is software, not hardware.

A profile holds the microbatch counts the framework runs (SGLang's two-batch overlap: 1 or 2, so
``--microbatches auto`` never picks 3 under it), whether it runs MTP chains deeper than one draft, its
per-step host and scheduler time outside the layers (graph launch, sampling, scheduling), a request's time
to its first token outside the engine's steps (``request_overhead``: HTTP, tokenization, admission,
streaming the token; added to every TTFT, cmperf.aggregated and cmperf.serving), the prompt tokens an
aggregated engine's step carries by default (``chunk_tokens``; unset: the rule by device memory,
``cmperf.aggregated.default_chunk_tokens``) and whether that budget is the engine's or each attention-DP
group's (``chunk_scope``), and how it loads
a context-cache hit (``cache_prefetch``: the whole cached prefix before the prefill computes, or layer by
layer behind the compute; ``cache_block_tokens``: the block one cache message carries; cmperf.prefill),
the redundant expert copies it places unless told (``expert_redundancy``, ``EXPERT_REDUNDANCY``), each value
with its ``source`` like the hardware specs. ``Deployment.framework`` names one (None: no
profile, the defaults below); ``--framework NAME`` sets it. The step overhead adds to ``--step-overhead``
(``Deployment.step_overhead_s``: host time beyond the framework's). Profiles: docs/frameworks.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CmperfError
from .specs import _header, _read, _Table, builtin_dirs

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Framework:
    name: str
    description: str
    path: str
    microbatches: tuple[int, ...]  # microbatch counts the framework runs
    mtp_chains: bool  # runs MTP chains deeper than one draft
    step_overhead_s: float  # host time per decode step outside the layers
    request_overhead_s: float  # a request's path to its first token outside the engine's steps (TTFT)
    chunk_tokens: int | None  # aggregated engine's prompt tokens per step (None: by device memory)
    chunk_scope: str  # what the budget bounds: "engine" (one budget split over the groups) | "group"
    kv_reserve_ratio: float  # share of a running sequence's remaining output its KV admission reserves
    kv_reserve_clip_tokens: int | None  # the remaining output counted at most this many tokens (None: all)
    cache_prefetch: str  # "prefix" | "layer" (CACHE_PREFETCH)
    cache_block_tokens: int  # tokens per context-cache block (one message per block)
    # the redundant expert copies it places by default: "eplb" (cmperf's rule) | "even" (EXPERT_REDUNDANCY)
    expert_redundancy: str
    sources: dict[str, str] = field(repr=False)


#: The profile each engine name runs on (an aiconfigurator row's backend, ``cmperf optimize --emit``).
ENGINE_PROFILES = {"trtllm": "tensorrt-llm", "sglang": "sglang", "vllm": "vllm"}

#: ``expert_redundancy`` choices: "eplb" places up to R/8 redundant copies of hot experts (the CM384 and
#: DeepSeek layouts, cmperf.deployment.placement_arrays; the default without a profile); "even" only the
#: fewest that split the R experts evenly over EP ranks, ceil(R / EP) EP - R (0 at EP8, 32 at EP72), as
#: frameworks whose EPLB is off by default place them (SGLang, TensorRT-LLM, vLLM).
EXPERT_REDUNDANCY = ("eplb", "even")

#: ``chunk_scope`` choices: "engine": the chunk budget bounds a step of the whole engine and each of its G
#: attention-DP groups gets C / G (SGLang divides ``chunked_prefill_size`` by the DP size; the default
#: without a profile); "group": every attention-DP group's scheduler has the whole budget (TensorRT-LLM's
#: ``max_num_tokens`` under attention DP), so the engine's step carries up to G C.
CHUNK_SCOPES = ("engine", "group")

#: ``cache_prefetch`` choices: "prefix" loads every cached block before the prefill computes (the load is on
#: the critical path); "layer" loads layer l+1's blocks while layer l computes (only the first layer and any
#: excess over the compute are exposed).
CACHE_PREFETCH = ("prefix", "layer")
#: Without a profile: load before compute, the default of most stacks (vLLM + LMCache ``use_layerwise``
#: false; TensorRT-LLM's KV-cache reuse onboards the reused blocks before the forward), in blocks of 128
#: tokens (the low end of CM384 §4.4's 128-512: the most messages, so the most per-block cost).
DEFAULT_CACHE_PREFETCH = "prefix"
DEFAULT_CACHE_BLOCK_TOKENS = 128


def framework_dir() -> Path:
    return builtin_dirs()[0] / "frameworks"


@functools.cache
def known() -> list[str]:
    """Names of the shipped profiles, sorted."""
    d = framework_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def unknown_reason(name: Any) -> str | None:
    """The ``--framework`` error for a name no profile has (None when it exists)."""
    if isinstance(name, str) and name in known():
        return None
    return f"--framework: unknown framework {name!r}; known: {', '.join(known())}"


@functools.cache
def load(name: str) -> Framework:
    """The profile ``name`` (CmperfError naming --framework and listing the known ones)."""
    bad = unknown_reason(name)
    if bad:
        raise CmperfError(bad)
    path = framework_dir() / f"{name}.toml"
    sources: dict[str, str] = {}
    t = _Table(_read(path), path, "", sources)
    fname, desc = _header(t, "framework")
    entry = t._entry("microbatches", True)
    assert entry is not None
    counts = entry["value"]
    if not (isinstance(counts, list) and counts and all(isinstance(c, int) and 1 <= c <= 4 for c in counts)):
        raise CmperfError(f"{t.where('microbatches')}: expected a list of counts in 1..4, got {counts!r}")
    entry = t._entry("mtp_chains", True)
    assert entry is not None
    if not isinstance(entry["value"], bool):
        raise CmperfError(f"{t.where('mtp_chains')}: expected true or false, got {entry['value']!r}")
    over = t.quantity("step_overhead", "s", 0.0, 0.999)
    request = t.quantity("request_overhead", "s", 0.0, 60.0, required=False, default=0.0)
    mode = t.choice("cache_prefetch", CACHE_PREFETCH, DEFAULT_CACHE_PREFETCH)
    block = t.integer("cache_block_tokens", 1, 1 << 20, required=False, default=DEFAULT_CACHE_BLOCK_TOKENS)
    chunk = t.integer("chunk_tokens", 1, 1 << 24, required=False, default=0) or None
    scope = t.choice("chunk_scope", CHUNK_SCOPES, "engine")
    reserve = t.number("kv_reserve_ratio", 0.0, 1.0, required=False, default=1.0)
    clip = t.integer("kv_reserve_clip_tokens", 1, 1 << 30, required=False, default=0) or None
    redundancy = t.choice("expert_redundancy", EXPERT_REDUNDANCY, "eplb")
    t.done()
    chains = entry["value"]
    counts_t = tuple(sorted(set(counts)))
    return Framework(
        fname,
        desc,
        str(path),
        counts_t,
        chains,
        over,
        request,
        chunk,
        scope,
        reserve,
        clip,
        mode,
        block,
        redundancy,
        sources,
    )


def reserved_kv_len(prompt_len: float, output_len: float, framework: str | None) -> float:
    """Mean KV tokens a running sequence holds against HBM under the profile's admission rule: its current
    length plus ``kv_reserve_ratio`` of its remaining output (counted at most ``kv_reserve_clip_tokens``),
    averaged over a sequence's life (progress t uniform on [0, O]):

        L = P + O/2 + r * E[min(O - t, C)],  E = O/2 (no clip, or O <= C), else C - C^2 / (2 O)

    r = 1 without a clip (no profile, or TensorRT-LLM's GUARANTEED_NO_EVICT) gives P + O: every sequence
    holds its whole length from admission. SGLang reserves r = 0.098 of min(remaining, 4,096)."""
    fw = load(framework) if framework is not None else None
    r, c = (fw.kv_reserve_ratio, fw.kv_reserve_clip_tokens) if fw is not None else (1.0, None)
    if r == 1.0 and c is None:
        return float(prompt_len) + float(output_len)  # the whole length (and its bits: P + O)
    o = float(output_len)
    mean_left = o / 2 if c is None or o <= c else c - c * c / (2 * o)
    return float(prompt_len) + o / 2 + r * mean_left


def of(dep: Any) -> Framework | None:
    """The profile a deployment names, or None."""
    name = getattr(dep, "framework", None)
    return None if name is None else load(name)


def _known_or_none(name: str | None) -> Framework | None:
    """The profile ``name``, or None for None or a name no profile has (its check reports that)."""
    return None if name is None or unknown_reason(name) else load(name)


def cache_facts(name: str | None) -> tuple[str, int]:
    """(cache_prefetch, cache_block_tokens) of the profile ``name`` (None or unknown: the defaults)."""
    fw = _known_or_none(name)
    if fw is None:
        return DEFAULT_CACHE_PREFETCH, DEFAULT_CACHE_BLOCK_TOKENS
    return fw.cache_prefetch, fw.cache_block_tokens


def expert_redundancy(name: str | None) -> str:
    """The profile's ``expert_redundancy`` (None or unknown: "eplb")."""
    fw = _known_or_none(name)
    return fw.expert_redundancy if fw else "eplb"


def request_overhead_s(name: str | None) -> float:
    """The profile's request overhead in seconds (None or unknown: 0)."""
    fw = _known_or_none(name)
    return fw.request_overhead_s if fw else 0.0


def chunk_scope(name: str | None) -> str:
    """What the profile's chunk budget bounds (``CHUNK_SCOPES``; None or unknown: "engine")."""
    fw = _known_or_none(name)
    return fw.chunk_scope if fw else "engine"


def microbatch_counts(fw: Framework, model: Any) -> tuple[int, ...]:
    """The microbatch counts ``fw`` runs for ``model``: its ``microbatches`` for an MoE model, one for a
    dense model. Every profile's overlap hides an MoE layer's expert-parallel all-to-all behind the other
    microbatch's compute (SGLang two-batch overlap and vLLM dual-batch overlap over DeepEP, TensorRT-LLM
    wide-EP, CloudMatrix-Infer's attention | MoE streams: the sources in frameworks/*.toml); none of them
    splits a dense model's batch to overlap its TP all-reduce."""
    return fw.microbatches if model.is_moe else (1,)


def runnable(fw: Framework, model: Any, counts) -> tuple[int, ...]:
    """The microbatch ``counts`` that ``fw`` runs for ``model`` (``microbatch_counts``), in order; its least
    when it runs none of them."""
    runs = microbatch_counts(fw, model)
    return tuple(c for c in counts if c in runs) or runs[:1]


def reasons(dep: Any, model: Any) -> list[str]:
    """What a (resolved, scalar) deployment asks of its framework that the framework cannot run."""
    name = dep.framework
    if name is None:
        return []
    bad = unknown_reason(name)
    if bad:
        return [bad]
    fw = load(name)
    out = []
    runs = microbatch_counts(fw, model)
    counts = " or ".join(str(c) for c in runs)
    mb = dep.microbatches
    if not isinstance(mb, str) and mb not in runs and mb in (1, 2, 3, 4):
        what = "" if model.is_moe else f" for a dense model ({model.name}: no all-to-all to overlap)"
        out.append(f"--microbatches: framework {fw.name} runs {counts} microbatches{what}, got {mb}")
    if dep.phase == "decode" and not fw.mtp_chains and dep.mtp is not None and dep.mtp > 1:
        out.append(
            f"--mtp: framework {fw.name} runs MTP chains of one draft only, got --mtp {dep.mtp}; use --mtp 1"
        )
    return out
