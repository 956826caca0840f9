"""cmperf: first-principles performance model of DeepSeek-R1-class MoE serving on rack-scale systems.

The public Python API (worked example: docs/api.md; scenario files: docs/scenarios.md)::

    import cmperf

    system, model = cmperf.load_system("cloudmatrix384"), cmperf.load_model("deepseek-r1")
    p = cmperf.predict(system, model, cmperf.Deployment(devices=160, ep_size=320, batch_per_device=96))
    p.tpot_s, p.tokens_per_s_per_device                     # 0.04949 s, 1,940 tokens/s per NPU

* loaders: ``load_system``, ``load_model`` (``cmperf.specs``), ``load_scenario`` (``cmperf.scenario.load``);
* records: ``Deployment`` and ``Precision`` (``cmperf.deployment``), ``Workload``, ``SLO`` and ``Pools``
  (``cmperf.serving``);
* entry points: ``predict`` and ``evaluate`` (dispatch on ``Deployment.phase`` to ``cmperf.decode`` /
  ``cmperf.prefill``), ``serve`` (``cmperf.serving.evaluate``), ``size`` (``cmperf.sizing.size``) and
  ``optimize`` (``cmperf.search.optimize``);
* ``CmperfError``: the one error type users can cause (the message names the flag or file and the fix).

``import cmperf`` is light: the names above resolve on first use (PEP 562 module ``__getattr__``) and the
entry points import their modules when called, so ``cmperf --help`` and a single ``cmperf decode`` (which
import this package first) pay only for what they run, never for scipy or sympy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CmperfError

__version__ = "0.1.0"

if TYPE_CHECKING:  # the lazily resolved names, for type checkers and IDEs
    from .decode import DecodeEval, DecodePrediction
    from .deployment import Deployment, Precision
    from .prefill import PrefillEval, PrefillPrediction
    from .scenario import load as load_scenario
    from .search import OptimizeResult
    from .serving import SLO, Pools, ServeResult, Workload
    from .sizing import SizeResult
    from .specs import Model, System, load_model, load_system

__all__ = [
    "SLO",
    "CmperfError",
    "Deployment",
    "Pools",
    "Precision",
    "Workload",
    "__version__",
    "evaluate",
    "load_model",
    "load_scenario",
    "load_system",
    "optimize",
    "predict",
    "serve",
    "size",
]

#: Re-exported names resolved on first access: name -> (module, attribute).
_LAZY = {
    "load_system": ("specs", "load_system"),
    "load_model": ("specs", "load_model"),
    "load_scenario": ("scenario", "load"),
    "Deployment": ("deployment", "Deployment"),
    "Precision": ("deployment", "Precision"),
    "Workload": ("serving", "Workload"),
    "SLO": ("serving", "SLO"),
    "Pools": ("serving", "Pools"),
}


def __getattr__(name: str) -> Any:
    """PEP 562: ``cmperf.Deployment`` (or ``from cmperf import Deployment``) loads its module on first use."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cmperf' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _check_phase(dep: Deployment) -> None:
    """CmperfError naming the field unless ``dep.phase`` is decode or prefill."""
    if dep.phase not in ("decode", "prefill"):
        raise CmperfError(f"Deployment.phase: {dep.phase!r} is not one of decode, prefill")


def predict(system: System, model: Model, dep: Deployment) -> DecodePrediction | PrefillPrediction:
    """The validated scalar prediction of ``dep`` with its full breakdown (ops, streams, bounds, memory):
    ``cmperf.decode.predict`` (TPOT, tokens/s per device; ``microbatches="auto"`` picks the count) or
    ``cmperf.prefill.predict`` (batch time, TTFT, input tokens/s per device) by ``dep.phase``.
    CmperfError naming the flag when ``dep`` is invalid (``Deployment.check``)."""
    _check_phase(dep)
    if dep.phase == "prefill":
        from . import prefill

        return prefill.predict(system, model, dep)
    from . import decode

    return decode.predict(system, model, dep)


def evaluate(system: System, model: Model, dep: Deployment) -> DecodeEval | PrefillEval:
    """The vectorized evaluation of ``dep`` by ``dep.phase`` (``cmperf.decode.evaluate`` /
    ``cmperf.prefill.evaluate``): its numeric knobs may be numpy arrays, which broadcast, so one call is a
    whole grid; the record's fields are arrays over the grid and ``.at(i)`` is point i's full prediction.
    No validation (a grid may hold infeasible points: see ``feasible``); decode ``microbatches`` is a count
    here, not ``"auto"``."""
    _check_phase(dep)
    if dep.phase == "prefill":
        from . import prefill

        return prefill.evaluate(system, model, dep)
    if dep.microbatches is None or isinstance(dep.microbatches, str):
        raise CmperfError(
            f"Deployment.microbatches: evaluate takes a count or an array of counts, got "
            f"{dep.microbatches or 'the default auto'}; give e.g. microbatches=np.array([1, 2, 3]) "
            f"(the auto choice is predict's)"
        )
    from . import decode

    return decode.evaluate(system, model, dep)


def serve(
    system: System,
    model: Model,
    workload: Workload,
    pools: Pools | None = None,
    slo: SLO | None = None,
    *,
    limits: bool = True,
) -> ServeResult:
    """One load on prefill / decode / cache pools (``cmperf.serving.evaluate``, ``cmperf serve``): TTFT and
    TPOT percentiles, goodput under ``slo`` (default: TTFT 2 s, TPOT 50 ms on p99), utilization, bottleneck
    and (``limits``) the rates at which each SLO stops holding. ``pools`` None: ``serving.default_pools``
    (CloudMatrix384: the paper's 96 prefill + 160 decode NPUs)."""
    from . import serving

    if pools is None:
        pools = serving.default_pools(system, model)
    return serving.evaluate(system, model, workload, pools, slo, limits=limits)


def size(
    system: System,
    model: Model,
    workload: Workload,
    pools: Pools | None = None,
    slo: SLO | None = None,
    **kwargs: Any,
) -> SizeResult:
    """The prefill / decode / cache-DRAM split (``cmperf.sizing.size``, ``cmperf serve --size``): the most
    goodput per device for ``total_devices=`` (default: the whole system), or with ``workload.rate_per_s``
    set the fewest devices serving that rate. ``pools`` None: ``serving.default_pools`` (its instance
    size, microbatches, MTP and precision are kept; the device counts are what is sized). Other keywords
    go to ``sizing.size`` (``total_devices``, ``cache_fractions``, ``decode_step``)."""
    from . import serving, sizing

    if pools is None:
        pools = serving.default_pools(system, model)
    return sizing.size(system, model, workload, pools, slo, **kwargs)


def optimize(
    system: System,
    model: Model,
    *,
    devices: int | None = None,
    workload: Workload | None = None,
    slo: SLO | None = None,
    decode: Deployment | None = None,
    prefill: Deployment | None = None,
    top_k: int = 10,
) -> OptimizeResult:
    """The decode search, the prefill search and the serving split of ``devices`` (``cmperf.search.optimize``,
    ``cmperf optimize``): ``workload`` gives the lengths (and ``rate_per_s``: the fewest devices for it),
    ``slo`` the TTFT / TPOT limits, ``decode`` / ``prefill`` the knobs the searches keep fixed."""
    from . import search

    return search.optimize(
        system,
        model,
        devices=devices,
        workload=workload,
        slo=slo,
        decode=decode,
        prefill=prefill,
        top_k=top_k,
    )
