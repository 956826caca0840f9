"""``@scenario_option``: ``--scenario FILE-or-name`` fills a command's defaults from a scenario file.

The option is eager, so its callback runs before the other parameters are resolved; it sets
``ctx.default_map`` from the file's ``[deployment]`` table (the deployment flags are named after the record's
fields, cmperf.cli.knobs), ``system``, ``model`` and ``[options]``, and click then uses those values wherever
the user gave no flag (explicit flags override the file). The file is looked up with the command line's
``--spec-dir`` folders (read from the arguments the group kept in ``ctx.meta["cmperf.args"]``, since the
eager callback runs before ``--spec-dir`` is parsed) and ``$CMPERF_PATH``. Unknown keys, or a scenario
written for another command, are one error line naming the file and the key, exit 2. The loaded scenario
is kept in ``ctx.meta["cmperf.scenario"]``.

Usage: put ``@scenario_option`` directly under ``@click.command()``.
"""

from __future__ import annotations

import click

from ..errors import CmperfError


def spec_dirs_in(args: list[str]) -> tuple[str, ...]:
    """The ``--spec-dir`` values among raw command-line arguments (``--spec-dir X`` or ``--spec-dir=X``)."""
    out = []
    for i, a in enumerate(args):
        if a == "--spec-dir" and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--spec-dir="):
            out.append(a.split("=", 1)[1])
    return tuple(out)


#: Flags of ``serve`` / ``optimize`` whose name differs from the Workload / SLO field they set.
RECORD_FLAGS = {"rate_per_s": "rate", "ttft_s": "ttft_slo", "tpot_s": "tpot_slo"}


def record_flags(sc) -> dict:
    """A scenario's [workload] and [slo] as the serve / optimize flags they set (times in seconds, the
    percentile from ``quantile``)."""
    out = {RECORD_FLAGS.get(k, k): v for k, v in {**sc.workload, **sc.slo}.items() if k != "quantile"}
    if "quantile" in sc.slo:
        out["slo_percentile"] = 100.0 * float(sc.slo["quantile"])
    return out


def apply_scenario(ctx: click.Context, name: str) -> None:
    from .. import scenario

    try:
        sc = scenario.load(name, spec_dirs_in(ctx.meta.get("cmperf.args", [])))
        params = {p.name for p in ctx.command.params}
        scenario.check_options(sc, params, ctx.command.name)
        for k in sorted(record_flags(sc)):
            if k not in params:
                raise CmperfError(
                    f"{sc.path}: `cmperf {sc.command}` has no option for the [workload]/[slo] key {k}"
                )
    except CmperfError as e:
        click.echo(f"cmperf: error: {e}", err=True)
        ctx.exit(e.exit_code)
    ctx.default_map = {**sc.defaults(), **record_flags(sc), **(ctx.default_map or {})}
    ctx.meta["cmperf.scenario"] = sc


def _callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None and not ctx.resilient_parsing:
        apply_scenario(ctx, value)


def scenario_option(fn):
    return click.option(
        "--scenario",
        is_eager=True,
        expose_value=False,
        callback=_callback,
        metavar="FILE|NAME",
        help="Scenario TOML (or a name in scenarios/) whose [options] set the defaults; flags override it.",
    )(fn)
