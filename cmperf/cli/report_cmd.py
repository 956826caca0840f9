"""`cmperf report`, `explain`, `validate`, `snapshot`, `diff`: reports, closed forms, checks, CI regression.

A scenario runs through the library (``cmperf.scenario.predict``: the scenario's records into the phase
predictor), the same path its own command takes, so every number in a report, snapshot or validation row
is what ``cmperf decode --scenario X`` prints; no command is invoked from here.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import CheckFailed, Infeasible, emit, format_option, guarded, progress
from .types import option

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
    "--points",
    "points_csv",
    type=click.Path(dir_okay=False),
    metavar="FILE.csv",
    help="Measured operating points (docs/points.md): predict each posable row and print predicted vs "
    "measured TPOT, error statistics per group, the worst rows and skipped counts (exit 0).",
)
@format_option(("table", "markdown", "json", "csv"))
@guarded
def validate(spec_dirs, points_csv, fmt, output):
    """Check predictions against the shipped published numbers (exit 1 if any is outside its tolerance)."""
    from .. import render
    from .. import validate as val

    if points_csv is not None:
        _validate_points(points_csv, spec_dirs, fmt, output)
        return
    rows = val.rows(spec_dirs)
    if fmt == "json":
        emit(render.to_json({"points": rows}, "validate"), output)
    elif fmt == "csv":
        emit(render.to_csv(rows), output)
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


def _validate_points(path, spec_dirs, fmt, output):
    """``validate --points``: every row of the points CSV predicted (``cmperf.points``), errors reported."""
    from .. import points as pts
    from .. import render

    with progress("predicting the measured points"):
        rows = pts.read(path)
        results = pts.evaluate(rows, spec_dirs)
    groups, worst, skipped = pts.groups(results), pts.worst(results), pts.skipped(results)
    versions = pts.versions(results)
    repeats = pts.repeats(rows)
    summary = pts.summary(results, repeats)
    sections = [
        render.Section(
            "TPOT error by group (error = predicted / measured - 1)", pts.GROUP_HEADER, pts.group_rows(groups)
        ),
        render.Section(
            "TPOT error by stack version (one configuration can differ twofold between images)",
            pts.VERSION_HEADER,
            pts.version_rows(versions),
        ),
        render.Section(
            f"worst {len(worst)} rows by |error|", pts.WORST_HEADER, pts.worst_rows(worst), pts.WORST_DROP
        ),
        render.Section("skipped rows by reason", pts.SKIP_HEADER, pts.skip_rows(skipped)),
    ]
    if fmt == "json":
        doc = {
            "points": results,
            "groups": groups,
            "versions": versions,
            "worst": [r.id for r in worst],
            "skipped": skipped,
            "repeats": repeats,
        }
        emit(render.to_json(doc, "validate"), output)
    elif fmt == "csv":
        emit(render.to_csv(results), output)
    elif fmt == "markdown":
        md = [f"# cmperf validate --points {Path(path).name}\n\n", render.markdown_table(("", ""), summary)]
        md += [f"\n## {t.title}\n\n" + render.markdown_table(t.header, t.rows) for t in sections]
        emit("".join(md), output)
    else:
        emit(render.tables(f"cmperf validate --points {Path(path).name}", summary, sections), output)
    click.echo(f"validate: {pts.summary_line(results)}", err=True)


# ---------------------------------------------------------------------------------------------- explain


def _decode_only(sc):
    from ..errors import CmperfError

    if sc.command != "decode":
        raise CmperfError(
            f"--scenario {sc.name}: closed forms and elasticities exist for decode scenarios only "
            f"(this one runs `cmperf {sc.command}`)"
        )


def _decode_record(doc) -> tuple[object, float]:
    """(the Deployment record, the experts' imbalance max/mean) of a decode prediction's JSON body."""
    from ..deployment import Deployment

    return Deployment.from_knobs(doc["deployment"]), float(doc["imbalance"])


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
@format_option(("table", "markdown", "json"))
@guarded
def explain(scenario_name, spec_dirs, fmt, output):
    """Closed forms (sympy) and elasticities d ln(tokens/s per device) / d ln(hardware parameter)."""
    from .. import render, scenario, sensitivity, symbolic

    sc = scenario.load(scenario_name, spec_dirs)
    _decode_only(sc)
    doc, system, model = run_scenario(sc, spec_dirs)
    dep, imbalance = _decode_record(doc)
    with progress("deriving closed forms and elasticities"):
        forms = sensitivity.decode_forms(system, model, dep, imbalance)
        rows = sensitivity.elasticities(system, model, dep, forms)
    checks = {
        "numeric_tokens_per_s_per_device": doc["tokens_per_s_per_device"],
        **sensitivity.closed_form_values(forms),
    }
    tex = symbolic.latex_forms(forms)
    if fmt == "json":
        emit(
            render.to_json(
                {"scenario": sc.name, "forms_latex": dict(tex), "values": checks, "elasticities": rows},
                "explain",
            ),
            output,
        )
        return
    el_rows = [
        (
            r.parameter,
            r.symbol or "-",
            f"{r.numeric:+.3f}",
            "-" if r.symbolic is None else f"{r.symbolic:+.3f}",
            "-" if r.agree is None else ("ok" if r.agree else "differs"),
            f"{10 * r.numeric:+.2f}%",
        )
        for r in rows
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
    text = [f"{t}:\n    {x}\n" for (t, _), x in zip(tex, sensitivity.plain_forms(forms), strict=True)]
    head_text = "cmperf explain: closed forms (sympy; model constants folded in)\n\n" + "\n".join(text) + "\n"
    tables = render.tables(
        f"cmperf explain: {sc.name}",
        summary,
        [("elasticity d ln(tokens/s per device) / d ln(parameter)", head, el_rows)],
    )
    emit(head_text + tables, output)


# ---------------------------------------------------------------------------------------------- report


def _optimizer(system, model, framework: str | None = None) -> tuple[dict | None, str]:
    """The optimizer (``search.optimize`` with ``cmperf optimize``'s defaults: 4K/256, TPOT 50 ms, TTFT
    2 s) on the scenario's system and model, under ``framework``: (its JSON body, note)."""
    from .. import render, search, serving
    from ..deployment import Deployment

    wl = serving.Workload(rate_per_s=None, prompt_len=4096.0, output_len=256.0)
    res = search.optimize(
        system,
        model,
        workload=wl,
        slo=serving.SLO(ttft_s=2.0, tpot_s=0.05),
        decode=Deployment(framework=framework),
        prefill=Deployment(phase="prefill", framework=framework),
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
@click.option(
    "--framework",
    metavar="NAME",
    default=None,
    help="Serving-framework profile (frameworks/NAME.toml) for every part of the report: the scenario, the "
    "prefill and serving sections and the optimizer [default: the scenario's deployment.framework, else "
    "none].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Markdown file (written atomically).")
@guarded
def report(scenario_name, spec_dirs, framework, output):
    """One markdown report: what to do, predictions, per-op breakdown, chart, prefill, serving, the
    optimizer, validation, closed forms, sources."""
    with progress("building the report"):
        text = _report_text(scenario_name, spec_dirs, framework)
    emit(text, output)


#: The TPOT SLO the report marks when its scenario names none (``cmperf optimize``'s default).
REPORT_TPOT_SLO_S = 0.05


def _report_text(scenario_name, spec_dirs, framework: str | None = None) -> str:
    from dataclasses import replace

    from .. import __version__, frameworks, render, scenario, sensitivity, serving, symbolic
    from .. import prefill as pf
    from .. import report as rep
    from .. import validate as val
    from ..deployment import Deployment

    sc = scenario.load(scenario_name, spec_dirs)
    if framework is not None:
        frameworks.load(framework)  # an unknown name: its one-line --framework error
        sc = replace(sc, deployment={**sc.deployment, "framework": framework})
    framework = sc.deployment.get("framework")  # every section runs on the scenario's profile
    doc, system, model = run_scenario(sc, spec_dirs)
    sweep, forms, note, elasticities = None, None, "Closed forms exist for decode scenarios only.", None
    why = symbolic.closed_form_reason(model)
    if sc.command == "decode" and why is not None:
        dep, imbalance = _decode_record(doc)
        sweep = rep.batch_sweep(system, model, dep)
        note = f"No closed forms: {why} (they describe the DeepSeek-V3 family)."
    elif sc.command == "decode":
        dep, imbalance = _decode_record(doc)
        sweep = rep.batch_sweep(system, model, dep)
        f = sensitivity.decode_forms(system, model, dep, imbalance)
        forms = symbolic.latex_forms(f)
        elasticities = sensitivity.elasticities(system, model, dep, f)
        tokens_s = symbolic.evaluate(f.tokens_per_s, f.values)
        note = (
            "Simplified closed forms of the decode model (cmperf.symbolic), model constants folded in; "
            f"at this "
            f"scenario the closed form gives {tokens_s:,.0f} tokens/s per "
            f"device against {doc['tokens_per_s_per_device']:,.0f} from the numeric model. "
            "Symbols: b batch per "
            "device, L KV length, P peaks per rank, B bandwidths per rank, e efficiencies, c fixed costs per "
            "kernel, alpha collective latencies."
        )
    slo_s = float(sc.slo.get("tpot_s", REPORT_TPOT_SLO_S)) if isinstance(sc.slo, dict) else REPORT_TPOT_SLO_S
    prefill_dep = Deployment(phase="prefill", framework=framework)
    prefill_doc = render.to_jsonable(pf.predict(system, model, prefill_dep))
    pools = serving.default_pools(system, model)
    if framework is not None:
        pools = replace(
            pools,
            decode=replace(pools.decode, framework=framework),
            prefill=replace(pools.prefill, framework=framework),
        )
    serve_res = serving.evaluate(system, model, serving.Workload(), pools, serving.SLO())
    serve_doc = render.to_jsonable(serve_res)
    rows = val.rows(spec_dirs)
    return rep.build(
        scenario=sc,
        system=system,
        model=model,
        spec_hash=spec_hash(sc, system, model),
        version=__version__,
        doc=doc,
        sweep=sweep,
        optimizer=_optimizer(system, model, framework),
        validation=(val.TABLE_HEADER, val.table_rows(rows)),
        forms=forms,
        forms_note=note,
        elasticities=elasticities,
        prefill=prefill_doc,
        serving=serve_doc,
        slo_tpot_s=slo_s,
    )


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
        if not doc.get("feasible", True):
            # a snapshot pins predictions; an infeasible scenario has none (its numbers would be nulls)
            raise Infeasible(
                f"snapshot: scenario {sc.name} is infeasible ({'; '.join(doc.get('reasons') or [])}); "
                "nothing written: fix the scenario or leave it out"
            )
        out[sc.name] = {
            "command": sc.command,
            "spec_hash": spec_hash(sc, system, model),
            "metrics": regress.flatten(doc),
        }
    emit(render.to_json({"cmperf_version": __version__, "scenarios": out}, "snapshot"), output)


def _read_snapshot(path: str) -> dict:
    """The snapshot at ``path``, checked against the schema (``regress.read_snapshot``), or CmperfError."""
    from .. import regress
    from ..errors import CmperfError
    from ..render import SCHEMA_VERSION

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CmperfError(
            f"{path}: cannot read a snapshot ({e.strerror}); make one with `cmperf snapshot`"
        ) from None
    return regress.read_snapshot(data, path, SCHEMA_VERSION)


def _metrics(doc: dict) -> dict:
    from .. import regress

    return regress.metrics(doc)


def _metric_rtol(values) -> dict[str, float]:
    """``--metric-rtol NAME=R`` values: R a finite number >= 0 (``regress.check_rtol``), NAME given once."""
    from .. import regress
    from ..errors import CmperfError

    out: dict[str, float] = {}
    for v in values:
        name, eq, r = v.partition("=")
        name = name.strip()
        if not eq or not name:
            raise CmperfError(f"--metric-rtol {v!r}: write NAME=R, e.g. tpot_s=0.02")
        if name in out:
            raise CmperfError(f"--metric-rtol {v!r}: {name} is given twice")
        try:
            tol = float(r)
        except ValueError:
            raise CmperfError(
                f"--metric-rtol {v!r}: write NAME=R with R a number >= 0, e.g. tpot_s=0.02"
            ) from None
        out[name] = regress.check_rtol(tol, f"--metric-rtol {name}")
    return out


def _check_metric_names(per_metric: dict[str, float], a: dict, b: dict, old: str, new: str) -> None:
    """Every ``--metric-rtol`` NAME matches a metric diff compares (``regress.rtol_for``: the full
    ``scenario/metric`` name, the part after the first ``/``, the metric's own name, or a glob of any);
    else one line naming the closest metric name of the snapshots' records, or the names there are."""
    import difflib

    from .. import regress
    from ..errors import CmperfError

    compared = {**_metrics(a), **_metrics(b)}

    def matches(pat: str) -> bool:
        return any(regress.rtol_for(m, -1.0, {pat: 0.0}) == 0.0 for m in compared)

    names = sorted(
        {m for doc in (a, b) for rec in doc["scenarios"].values() for m in rec.get("metrics", {})}
        | {"error" for doc in (a, b) for rec in doc["scenarios"].values() if "error" in rec}
    )
    for name in sorted(per_metric):
        if matches(name):
            continue
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            known = f"did you mean {close[0]}?"
        elif names:
            more = f", ... ({len(names)} in all)" if len(names) > 12 else ""
            known = f"the metrics are {', '.join(names[:12])}{more}"
        else:
            known = "the snapshots hold no metrics"
        raise CmperfError(
            f"--metric-rtol {name}: no metric of {old} or {new} matches {name!r} (a metric, "
            f"scenario/metric or a glob); {known}"
        )


@click.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option(
    "--rtol",
    type=option("rtol"),
    default=0.01,
    show_default=True,
    help="Relative tolerance of every metric (a finite number >= 0).",
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
@format_option(("table", "markdown", "json"))
@guarded
def diff(old, new, rtol, metric_rtol, fail_on, fmt, output):
    """Compare two snapshots: regression / improvement / drift / added / removed (exit 1 beyond tolerance)."""
    from .. import regress, render

    per_metric = _metric_rtol(metric_rtol)
    a, b = _read_snapshot(old), _read_snapshot(new)
    _check_metric_names(per_metric, a, b, old, new)
    changes = regress.diff(_metrics(a), _metrics(b), rtol, per_metric)
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
