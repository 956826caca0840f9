"""Deployment flags: parse -> ``Deployment`` record, one spelling for flags, scenario files and the record.

Each deployment flag's click parameter is named after the ``cmperf.deployment.Deployment`` field it sets
(``--batch`` -> ``batch_per_device``, ``--ep`` -> ``ep_size``), so a scenario's ``[deployment]`` table
(field names) fills the flags' defaults through click's ``default_map`` and a flag the user gives
overrides it. A flag left out is ``None`` and the record's default applies (``Deployment.resolve``).
Adding a knob: a field on the record, the code that reads it, and one ``knob(...)`` option here or in
the command: nothing else passes it along.
"""

from __future__ import annotations

from dataclasses import fields

import click

from ..domains import DEPLOYMENT
from ..specs import DTYPE_BYTES
from .types import dep, require_unit, where

#: Datatypes a flag may name: the spec's (cmperf.specs.DTYPE_BYTES) without the internal fp32 and int4.
DTYPE_NAMES = tuple(d for d in DTYPE_BYTES if d not in ("fp32", "int4"))
DTYPES = click.Choice(DTYPE_NAMES)


def knob(flag: str, field: str, **kw):
    """``click.option(flag, field, default=None, ...)``: a flag that sets ``Deployment.<field>``."""
    return click.option(flag, field, default=None, **kw)


class _Microbatches(click.ParamType):
    """``auto`` or a count (from the command line, or an int or "auto" from a scenario file)."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            return int(text)
        except ValueError:
            return str(value)  # Deployment.check reports it (one line naming the flag, exit 2)


MICROBATCHES = _Microbatches()


class _Seconds(click.ParamType):
    """A time with its unit on the command line ("0.7ms", "2 s"); a scenario file's number is seconds (the
    field is named ``*_s``). A bare number on the command line is refused: 50 could be ms or s."""

    name = "TIME"

    def convert(self, value, param, ctx):
        from ..units import parse

        flag = where(param, ctx)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return FINITE.check(value, flag)
        text = str(value).strip()
        require_unit(text, "s", flag)
        return FINITE.check(parse(text, "s", where=flag), flag)


#: The step overhead's domain in seconds (the record's, ``cmperf.domains.DEPLOYMENT``).
FINITE = DEPLOYMENT["step_overhead_s"]
SECONDS = _Seconds()


def precision_options(fn):
    fn = knob("--kv-dtype", "kv_dtype", type=DTYPES, help="KV-cache datatype [default: bf16].")(fn)
    fn = knob(
        "--weights",
        "weights",
        type=DTYPES,
        help="GEMM and expert datatype [default: fp8 where the chip has it, else int8].",
    )(fn)
    return fn


def experts_dtype_option(fn):
    return knob(
        "--experts-dtype",
        "experts_dtype",
        type=click.Choice([*DTYPE_NAMES, "native"]),
        help="Expert datatype [default: as --weights; native = the chip's fastest 4-bit type].",
    )(fn)


def common_options(fn):
    """Knobs both phases read: instance, EP, expert balance, serving framework."""
    fn = knob(
        "--framework",
        "framework",
        metavar="NAME",
        help="Serving-framework profile (frameworks/NAME.toml: cloudmatrix-infer, sglang, tensorrt-llm, "
        "vllm): the microbatch counts it runs (auto picks among them), whether it runs MTP chains deeper "
        "than 1, its per-step host time, added to --step-overhead, and how it loads a context-cache hit "
        "[default: none, no profile].",
    )(fn)
    fn = knob(
        "--imbalance",
        "imbalance",
        type=dep("imbalance"),
        help="Set max/mean routed load directly (overrides --eplb).",
    )(fn)
    fn = knob(
        "--eplb",
        "eplb",
        type=click.Choice(["model", "perfect", "none", "static", "dynamic"]),
        help="Expert load: model (Zipf routing + EPLB), perfect balance, or the measured "
        "DeepSeek-R1 routing statistics with no EPLB, EPLB planned on another dataset (static) or on a "
        "recent window (dynamic), the all-to-all timed at its busiest rank (cmperf.routing) [default: "
        "model in decode, perfect in prefill (the paper's prefill headline assumes it)].",
    )(fn)
    fn = knob(
        "--slots-per-rank",
        "slots_per_rank",
        type=dep("slots_per_rank"),
        help="Routed-expert slots on every rank, the shared experts replicated on every rank (N x EP - "
        "experts redundant copies, EPLB over them) [default: the placement rule: one expert per rank "
        "and dedicated shared-expert ranks when EP exceeds the experts].",
    )(fn)
    fn = knob(
        "--moe-tp",
        "moe_tp",
        type=dep("moe_tp"),
        help="MoE tensor parallelism: ranks each expert's FFN is split over, EP = ranks / N; the tokens "
        "are all-gathered and the outputs reduce-scattered instead of the all-to-all (decode and "
        "prefill) [default: 1].",
    )(fn)
    fn = knob(
        "--attn-tp",
        "attn_tp",
        type=dep("attn_tp"),
        help="Attention TP degree (ranks). Decode: heads split over N ranks holding N x the rank's "
        "sequences (MLA's latent cache replicated on each), dense FFN and LM head too, all-reduce after "
        "each [default: 1, data-parallel attention]. Prefill: the SP-TP-SP layout [default: the system's "
        "attention_tp_devices (CloudMatrix384: 8 NPUs = 16 dies; 1 on the NVIDIA systems)]; a dense GQA "
        "model's prefill runs Megatron TP instead (projections and MLP split, weights 1/N per rank). A "
        "dense model's default, both phases: one TP group, the largest power of two of a scale-up domain "
        "up to its KV heads (Llama-3.1-70B: TP8 on 8 GPUs).",
    )(fn)
    fn = knob(
        "--ep",
        "ep_size",
        type=dep("ep_size"),
        help="EP size in ranks [default: all ranks of --devices / --moe-tp].",
    )(fn)
    return fn


def precision(system, params: dict, table: dict | None = None):
    """``deployment.precision_from`` the --weights / --experts-dtype / --kv-dtype parameters."""
    from ..deployment import precision_from

    return precision_from(
        system, params.get("weights"), params.get("experts_dtype"), params.get("kv_dtype"), table
    )


def deployment(phase: str, system, params: dict, precision_table: dict | None = None):
    """The ``Deployment`` of ``phase`` from a command's parameters (every field-named one not None)."""
    from ..deployment import Deployment

    names = {f.name for f in fields(Deployment)} - {"phase", "precision"}
    given = {k: v for k, v in params.items() if k in names and v is not None}
    return Deployment(phase=phase, precision=precision(system, params, precision_table), **given)


def check_mtp_accept(mtp) -> None:
    """``--mtp-accept`` given on the command line with ``--mtp 0`` (or a scenario's ``mtp = 0``): no draft
    token to accept, so the rate would be ignored; one line, exit 2. The default rate is never refused
    (a file holding both keys is refused when it is read: ``cmperf.scenario.load``)."""
    from click.core import ParameterSource

    from ..errors import CmperfError

    ctx = click.get_current_context(silent=True)
    if mtp != 0 or ctx is None:
        return
    if ctx.get_parameter_source("mtp_accept") not in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    ):
        return
    given = "--mtp 0"
    sc = ctx.meta.get("cmperf.scenario")
    if ctx.get_parameter_source("mtp") == ParameterSource.DEFAULT_MAP and sc is not None:
        given = f"{sc.path}'s {'deployment' if 'mtp' in sc.deployment else 'options'}.mtp = 0"
    raise CmperfError(
        f"--mtp-accept: has no effect with {given} (no speculative tokens); drop it or give --mtp 1 or more"
    )


def scenario_precision() -> dict | None:
    """The ``[deployment.precision]`` table of the scenario the current command runs, if any."""
    ctx = click.get_current_context(silent=True)
    sc = ctx.meta.get("cmperf.scenario") if ctx is not None else None
    return sc.precision if sc is not None else None


def make_precision(system, weights: str | None, kv_dtype: str | None, experts: str | None = None):
    """``deployment.precision_from`` the --weights / --kv-dtype / --experts-dtype flags."""
    from ..deployment import precision_from

    return precision_from(system, weights, experts, kv_dtype)
