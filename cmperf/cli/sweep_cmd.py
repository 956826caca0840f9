"""`cmperf sweep`: the cross product of a sweep file, one prediction per cell, one CSV or Parquet table."""

from __future__ import annotations

import click

from .common import emit, guarded, write_atomic


@click.command()
@click.argument("sweep_file", metavar="SWEEP")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the table to this file (atomically): .parquet is Parquet, anything else CSV [default: CSV "
    "on stdout].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="Table format [default: from the -o suffix, else csv].",
)
@click.option(
    "--executor",
    type=click.Choice(["process", "dask"]),
    default="process",
    show_default=True,
    help="Where the cells run: local processes, or a dask.distributed cluster (pip install 'cmperf[dask]').",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Local processes (or LocalCluster workers with --executor dask); 1 runs in this process "
    "[default: the CPU count].",
)
@click.option(
    "--scheduler",
    default=None,
    help="With --executor dask: the scheduler address of a running cluster, e.g. tcp://10.0.0.1:8786 "
    "[default: a LocalCluster of --jobs workers].",
)
@click.option(
    "--spec-dir",
    "spec_dirs",
    multiple=True,
    type=click.Path(),
    help="Extra folder of spec files and sweeps/ (repeatable; searched before CMPERF_PATH and built-ins).",
)
@guarded
def sweep(sweep_file, output, fmt, executor, jobs, scheduler, spec_dirs):
    """Run every cell of SWEEP (a .toml file, or a name in scenarios/sweeps/): systems x models x
    workloads x SLOs x deployment knobs x frameworks, one decode / prefill / serve / optimize prediction
    per cell, one row per cell (its inputs, then tokens/s per device, TPOT, TTFT, the configuration, what
    binds it, and its status: ok, infeasible or error with the reason). Schema: docs/sweep.md."""
    from pathlib import Path

    from .. import sweep as sw
    from ..errors import CmperfError
    from ..extras import require
    from .optimize_cmd import _Progress

    fmt = fmt or ("parquet" if output and Path(output).suffix.lower() == ".parquet" else "csv")
    if fmt == "parquet":
        if not output:
            raise CmperfError("--format parquet: Parquet is binary; give -o FILE.parquet")
        require("pyarrow.parquet", "-o FILE.parquet")
    if scheduler is not None and executor != "dask":
        raise CmperfError("--scheduler: a scheduler address needs --executor dask")
    if executor == "dask":
        require("dask.distributed", "--executor dask")
    if output and not Path(output).parent.is_dir():
        raise CmperfError(
            f"--output: folder {Path(output).parent} does not exist; create it or choose another path"
        )
    spec = sw.load(sweep_file, spec_dirs)
    prog = _Progress(f"sweeping {spec.size:,} cells")
    try:
        rows = sw.run(spec, executor=executor, jobs=jobs, scheduler=scheduler, progress=prog)
    finally:
        prog.close()
    if fmt == "parquet":
        write_atomic(output, sw.to_parquet(rows))
    else:
        emit(sw.to_csv(rows), output)


COMMANDS = [sweep]
