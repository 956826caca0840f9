"""`cmperf report`, `explain`, `validate`, `snapshot`, `diff`: reports, closed forms, checks, CI regression.

A scenario runs through the library (``cmperf.scenario.predict``: the scenario's records into the phase
predictor), the same path its own command takes, so every number in a report, snapshot or validation row
is what ``cmperf decode --scenario X`` prints; no command is invoked from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import CheckFailed, emit, guarded

DEFAULT_SCENARIO = "cm384-decode-50ms"
SPEC_DIR = click.option(
    "--spec-dir",
    "spec_dirs",
    multiple=True,
    type=click.Path(),
    help="Extra folder of spec files, passed to the scenario's command (repeatable).",
)


def run_scenario(sc, spec_dirs=()) -> tuple[dict, object, object]:
    """(the scenario's prediction as its command's JSON body, system, model), through the library."""
    from .. import render, scenario

    system, model = scenario.specs_of(sc, spec_dirs)
    doc = render.to_jsonable(scenario.predict(sc, system, model))
    return doc, system, model


def spec_hash(sc, system, model) -> str:
    from .. import specs

    return specs.spec_hash(system.path, system.chip.path, model.path, sc.path)


# ---------------------------------------------------------------------------------------------- validate


@click.command()
@SPEC_DIR
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (atomically).")
@guarded
def validate(spec_dirs, fmt, output):
    """Check predictions against the shipped published numbers (exit 1 if any is outside its tolerance)."""
    from .. import render
    from .. import validate as val

    rows = val.rows(spec_dirs)
    if fmt == "json":
        emit(render.to_json({"points": rows}, "validate"), output)
    elif fmt == "markdown":
        emit(render.markdown_table(val.TABLE_HEADER, val.table_rows(rows)), output)
    else:
        section = ("cmperf validate: predicted vs published", val.TABLE_HEADER, val.table_rows(rows))
        emit(render.tables("", [], [section]), output)
    bad = [r.id for r in rows if r.status == "FAIL"]
    n_ok = sum(r.status == "pass" for r in rows)
    n_skip = sum(r.status == "skipped" for r in rows)
    summary = f"{n_ok} pass, {len(bad)} fail, {n_skip} skipped"
    if bad:
        raise CheckFailed(f"validate: {summary}; outside tolerance: {', '.join(bad)}")
    click.echo(f"validate: {summary}", err=True)


# ---------------------------------------------------------------------------------------------- explain


def _decode_only(sc):
    from ..errors import CmperfError

    if sc.command != "decode":
        raise CmperfError(
            f"--scenario {sc.name}: closed forms and elasticities exist for decode scenarios only "
            f"(this one runs `cmperf {sc.command}`)"
        )


def _forms(system, model, doc):
    from .. import symbolic
    from ..deployment import Deployment

    d = Deployment.from_knobs(doc["deployment"])
    return symbolic.decode_forms(
        system,
        model,
        batch_per_device=float(d.batch_per_device),
        kv_len=float(d.kv_len),
        ep_size=d.ep_size,
        microbatches=d.microbatches,
        mtp=d.mtp,
        mtp_accept=d.mtp_accept,
        precision=d.precision,
        imbalance=float(doc["imbalance"]),
        attention_cube_cores=d.attention_cube_cores,
    )


def _perturbations(system, prec):
    """(label, symbol or '', function(system, factor) -> system) for every hardware parameter."""
    from dataclasses import replace

    chip = system.chip
    out = []

    def chip_dict(attr, key):
        return lambda s, f: replace(
            s, chip=replace(s.chip, **{attr: {**getattr(s.chip, attr), key: getattr(s.chip, attr)[key] * f}})
        )

    for dt in sorted(chip.peak_flops):
        sym = "P_g" if dt == prec.gemm else ("P_a" if dt == prec.attention else "")
        out.append((f"peak {dt}", sym, chip_dict("peak_flops", dt)))
    out.append(
        (
            "HBM bandwidth",
            "B_HBM",
            lambda s, f: replace(s, chip=replace(s.chip, hbm_bytes_per_s=s.chip.hbm_bytes_per_s * f)),
        )
    )
    ep_planes = sorted(
        {c.plane for c in system.collectives.values()}
        | {c.scaleout_plane for c in system.collectives.values() if c.scaleout_plane}
    )
    disp_plane = system.collectives["dispatch"].plane if "dispatch" in system.collectives else ""
    for pn in ep_planes:
        for attr, label, sym in (
            ("bytes_per_s_per_rank", "bandwidth", "B_EP"),
            ("efficiency", "efficiency", "e_EP"),
            ("latency_s", "latency", ""),
        ):

            def fn(s, f, pn=pn, attr=attr):
                p = s.planes[pn]
                return replace(s, planes={**s.planes, pn: replace(p, **{attr: getattr(p, attr) * f})})

            out.append((f"{pn} plane {label}", sym if pn == disp_plane else "", fn))
    eff_sym = {
        "gemm_compute": "e_gc",
        "gemm_memory": "e_gm",
        "attention_compute": "e_ac",
        "attention_memory": "e_am",
        "pipeline_compute": "e_p",
    }
    for k in sorted(chip.eff):
        out.append((f"efficiency {k}", eff_sym.get(k, ""), chip_dict("eff", k)))
    ov_sym = {"gemm": "c_g", "attention": "c_a"}
    for k in sorted(chip.overhead_s):
        out.append((f"fixed cost {k}", ov_sym.get(k, ""), chip_dict("overhead_s", k)))
    for cn in sorted(system.collectives):
        for attr, sym in (
            ("alpha_s", {"dispatch": "alpha_d", "combine": "alpha_c"}.get(cn, "")),
            ("alpha_per_log2_ep_s", ""),
        ):

            def fn(s, f, cn=cn, attr=attr):
                c = s.collectives[cn]
                return replace(
                    s, collectives={**s.collectives, cn: replace(c, **{attr: getattr(c, attr) * f})}
                )

            out.append((f"{cn} {attr.removesuffix('_s')}", sym, fn))
    return out


# |numeric - symbolic| allowed before a row is flagged: max(0.05, 20% of numeric). The closed form drops
# vector ops, the A+M / shared-HBM terms and the MTP layer (TPOT within ~10% of the numeric model).
ELASTICITY_ATOL, ELASTICITY_RTOL = 0.05, 0.20


def elasticities(system, model, doc, forms, h=0.01):
    """Rows (parameter, numeric, symbolic or None, agree): d ln(tokens/s per device) / d ln(parameter).

    Numeric: central differences of decode.evaluate with the spec dataclass scaled by 1 ± h
    (dataclasses.replace); symbolic: sympy derivative of b / TPOT(b, L) at the scenario."""
    import math

    import numpy as np

    from .. import decode, symbolic
    from ..deployment import Deployment

    dep = Deployment.from_knobs(doc["deployment"])
    rows = []
    for label, sym, fn in _perturbations(system, dep.precision):
        lo = decode.evaluate(fn(system, 1 - h), model, dep).tokens_per_s_per_device
        hi = decode.evaluate(fn(system, 1 + h), model, dep).tokens_per_s_per_device
        num = float((np.log(hi) - np.log(lo)).reshape(-1)[0]) / (math.log(1 + h) - math.log(1 - h))
        s_val = symbolic.elasticity(forms.tokens_per_s, forms.symbols[sym], forms.values) if sym else None
        agree = (
            None if s_val is None else abs(num - s_val) <= max(ELASTICITY_ATOL, ELASTICITY_RTOL * abs(num))
        )
        rows.append((label, sym, num, s_val, agree))
    return rows


@click.command()
@click.option(
    "--scenario",
    "scenario_name",
    default=DEFAULT_SCENARIO,
    show_default=True,
    metavar="FILE|NAME",
    help="Decode scenario whose deployment the forms and elasticities use.",
)
@SPEC_DIR
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (atomically).")
@guarded
def explain(scenario_name, spec_dirs, fmt, output):
    """Closed forms (sympy) and elasticities d ln(tokens/s per device) / d ln(hardware parameter)."""
    from .. import render, scenario, symbolic

    sc = scenario.load(scenario_name, spec_dirs)
    _decode_only(sc)
    doc, system, model = run_scenario(sc, spec_dirs)
    forms = _forms(system, model, doc)
    rows = elasticities(system, model, doc, forms)
    checks = {
        "numeric_tokens_per_s_per_device": doc["tokens_per_s_per_device"],
        "symbolic_tokens_per_s_per_device": symbolic.evaluate(forms.tokens_per_s, forms.values),
        "ridge_batch_per_device": symbolic.evaluate(forms.ridge_batch, forms.values),
        "core_compute_bound_queries_per_sequence": symbolic.evaluate(forms.core_queries, forms.values),
    }
    tex = symbolic.latex_forms(forms)
    if fmt == "json":
        emit(
            render.to_json(
                {
                    "scenario": sc.name,
                    "forms_latex": dict(tex),
                    "values": checks,
                    "elasticities": [
                        {"parameter": r[0], "symbol": r[1], "numeric": r[2], "symbolic": r[3], "agree": r[4]}
                        for r in rows
                    ],
                },
                "explain",
            ),
            output,
        )
        return
    el_rows = [
        (
            label,
            sym or "-",
            f"{num:+.3f}",
            "-" if s is None else f"{s:+.3f}",
            "-" if ok is None else ("ok" if ok else "differs"),
            f"{10 * num:+.2f}%",
        )
        for label, sym, num, s, ok in rows
    ]
    head = ("parameter", "symbol", "numeric", "symbolic", "agree (max(0.05, 20%))", "+10% buys")
    summary = [
        ("scenario", sc.name),
        ("tokens/s per device (numeric model)", f"{checks[next(iter(checks))]:,.0f}"),
        ("tokens/s per device (closed form)", f"{checks['symbolic_tokens_per_s_per_device']:,.0f}"),
        (
            "batch where the MLA projections turn compute-bound",
            f"{checks['ridge_batch_per_device']:,.0f} per device",
        ),
        (
            "queries/sequence/step above which the MLA core is compute-bound",
            f"{checks['core_compute_bound_queries_per_sequence']:.3f}",
        ),
    ]
    if fmt == "markdown":
        text = (
            [
                f"# cmperf explain: {sc.name}\n\n",
                render.markdown_table(("quantity", "value"), summary),
                "\n## Closed forms\n\n",
            ]
            + [f"**{t}**\n\n$$\n{x}\n$$\n\n" for t, x in tex]
            + ["## Elasticities of tokens/s per device\n\n", render.markdown_table(head, el_rows)]
        )
        emit("".join(text), output)
        return
    text = [f"{t}:\n    {x}\n" for (t, _), x in zip(tex, _pretty(forms), strict=True)]
    head_text = "cmperf explain: closed forms (sympy; model constants folded in)\n\n" + "\n".join(text) + "\n"
    tables = render.tables(
        f"cmperf explain: {sc.name}",
        summary,
        [("elasticity d ln(tokens/s per device) / d ln(parameter)", head, el_rows)],
    )
    emit(head_text + tables, output)


def _pretty(forms) -> list[str]:
    import sympy as sp

    exprs = [
        forms.t_core,
        forms.attn_stream,
        forms.moe_stream,
        forms.tpot,
        sp.Symbol("b") / sp.Symbol("TPOT"),
        forms.ridge_tokens,
        forms.ridge_batch,
        forms.core_queries,
    ]
    return [sp.sstr(sp.N(e, 4)) for e in exprs]


# ---------------------------------------------------------------------------------------------- report


def _optimizer(system, model) -> tuple[dict | None, str]:
    """The optimizer (``search.optimize`` with ``cmperf optimize``'s defaults: 4K/256, TPOT 50 ms, TTFT
    2 s) on the scenario's system and model: (its JSON body, note)."""
    from .. import render, search

    res = search.optimize(
        system, model, devices=None, prompt_len=4096.0, output_len=256.0, tpot_slo_s=0.05, ttft_slo_s=2.0
    )
    return render.to_jsonable(search.optimize_json(res)), ""


@click.command()
@click.option(
    "--scenario",
    "scenario_name",
    default=DEFAULT_SCENARIO,
    show_default=True,
    metavar="FILE|NAME",
    help="Scenario to report on (a .toml or a name in scenarios/).",
)
@SPEC_DIR
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Markdown file (written atomically).")
@guarded
def report(scenario_name, spec_dirs, output):
    """One markdown report: inputs, predictions, per-op breakdown, chart, validation, closed forms."""
    from .. import __version__, scenario, symbolic
    from .. import report as rep
    from .. import validate as val
    from ..deployment import Deployment

    sc = scenario.load(scenario_name, spec_dirs)
    doc, system, model = run_scenario(sc, spec_dirs)
    sweep, forms, note = None, None, "Closed forms exist for decode scenarios only."
    if sc.command == "decode":
        sweep = rep.batch_sweep(system, model, Deployment.from_knobs(doc["deployment"]))
        f = _forms(system, model, doc)
        forms = symbolic.latex_forms(f)
        note = (
            "Simplified closed forms of the decode model (cmperf.symbolic), model constants folded in; "
            f"at this "
            f"scenario the closed form gives {symbolic.evaluate(f.tokens_per_s, f.values):,.0f} tokens/s per "
            f"device against {doc['tokens_per_s_per_device']:,.0f} from the numeric model. "
            "Symbols: b batch per "
            "device, L KV length, P peaks per rank, B bandwidths per rank, e efficiencies, c fixed costs per "
            "kernel, alpha collective latencies."
        )
    rows = val.rows(spec_dirs)
    text = rep.build(
        scenario=sc,
        system=system,
        model=model,
        spec_hash=spec_hash(sc, system, model),
        version=__version__,
        doc=doc,
        sweep=sweep,
        optimizer=_optimizer(system, model),
        validation=(val.TABLE_HEADER, val.table_rows(rows)),
        forms=forms,
        forms_note=note,
    )
    emit(text, output)


# ------------------------------------------------------------------------------------------- snapshot / diff


@click.command()
@click.argument("scenarios", nargs=-1, required=True)
@SPEC_DIR
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="JSON file (written atomically).")
@guarded
def snapshot(scenarios, spec_dirs, output):
    """Record every key prediction of SCENARIOS (files or names) with the cmperf version and spec hashes."""
    from .. import __version__, regress, render, scenario
    from ..errors import CmperfError

    out = {}
    for name in scenarios:
        sc = scenario.load(name, spec_dirs, flag="SCENARIO")
        if sc.name in out:
            raise CmperfError(f"SCENARIO: {sc.name} is given twice")
        doc, system, model = run_scenario(sc, spec_dirs)
        out[sc.name] = {
            "command": sc.command,
            "spec_hash": spec_hash(sc, system, model),
            "metrics": regress.flatten(doc),
        }
    emit(render.to_json({"cmperf_version": __version__, "scenarios": out}, "snapshot"), output)


def _read_snapshot(path: str) -> dict:
    from ..errors import CmperfError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CmperfError(f"{path}: cannot read a snapshot ({e}); make one with `cmperf snapshot`") from None
    if not isinstance(doc, dict) or doc.get("kind") != "snapshot":
        raise CmperfError(
            f"{path}: not a cmperf snapshot (kind != snapshot); make one with `cmperf snapshot`"
        )
    return doc


def _metrics(doc: dict) -> dict:
    return {f"{sc}/{k}": v for sc, rec in doc["scenarios"].items() for k, v in rec["metrics"].items()}


def _metric_rtol(values) -> dict[str, float]:
    from ..errors import CmperfError

    out = {}
    for v in values:
        name, _, r = v.partition("=")
        try:
            out[name.strip()] = float(r)
        except ValueError:
            raise CmperfError(f"--metric-rtol {v!r}: write NAME=R, e.g. tpot_s=0.02") from None
        if not name.strip() or out[name.strip()] < 0:
            raise CmperfError(f"--metric-rtol {v!r}: write NAME=R with R >= 0")
    return out


@click.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option(
    "--rtol", type=float, default=0.01, show_default=True, help="Relative tolerance of every metric."
)
@click.option(
    "--metric-rtol",
    multiple=True,
    metavar="NAME=R",
    help="Tolerance of one metric (name, scenario/name or a glob; repeatable).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["regression", "any"]),
    default="regression",
    show_default=True,
    help="Exit 1 on a regression beyond tolerance, or on any change beyond tolerance.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "markdown", "json"]), default="table", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (atomically).")
@guarded
def diff(old, new, rtol, metric_rtol, fail_on, fmt, output):
    """Compare two snapshots: regression / improvement / drift / added / removed (exit 1 beyond tolerance)."""
    from .. import regress, render
    from ..errors import CmperfError

    if rtol < 0:
        raise CmperfError("--rtol must be >= 0")
    a, b = _read_snapshot(old), _read_snapshot(new)
    changes = regress.diff(_metrics(a), _metrics(b), rtol, _metric_rtol(metric_rtol))
    rows = regress.rows(changes)
    summary = regress.summary_line(changes)
    info = [
        ("old", f"{old} (cmperf {a.get('cmperf_version')})"),
        ("new", f"{new} (cmperf {b.get('cmperf_version')})"),
    ]
    for sc in sorted(set(a["scenarios"]) & set(b["scenarios"])):
        ha, hb = a["scenarios"][sc].get("spec_hash"), b["scenarios"][sc].get("spec_hash")
        if ha != hb:
            info.append((f"{sc} spec hash", f"{ha} -> {hb}"))
    info.append(("summary", summary))
    if fmt == "json":
        emit(
            render.to_json(
                {
                    "changes": [c for c in changes if c.category != "unchanged"],
                    "counts": regress.counts(changes),
                    "fail_on": fail_on,
                },
                "diff",
            ),
            output,
        )
    elif fmt == "markdown":
        md = ["### cmperf prediction diff\n\n", render.markdown_table(("", ""), info), "\n"]
        md.append(render.markdown_table(regress.HEADER, rows) if rows else "No change beyond tolerance.\n")
        emit("".join(md), output)
    else:
        sections = [("changes beyond tolerance", regress.HEADER, rows)] if rows else []
        emit(render.tables("cmperf diff", info, sections), output)
    if regress.failed(changes, fail_on):
        raise CheckFailed(f"diff: {summary} (--fail-on {fail_on})")


COMMANDS = [report, explain, validate, snapshot, diff]
