"""Shared CLI plumbing: common options, one-line errors with exit codes, atomic output."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from ..errors import CmperfError


class Infeasible(Exception):
    """A valid request whose deployment does not fit: reasons printed, exit code 3."""

    exit_code = 3


class CheckFailed(Exception):
    """A check the user asked for failed (validate, diff, unmeetable SLO): exit code 1."""

    exit_code = 1


def guarded(fn):
    """Run a command body; user errors become one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CmperfError as e:
            click.echo(f"cmperf: error: {e}", err=True)
            sys.exit(e.exit_code)
        except (Infeasible, CheckFailed) as e:
            if str(e):
                click.echo(f"cmperf: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def system_model_options(fn):
    """--system, --model, --spec-dir (CMPERF_PATH adds folders too)."""
    fn = click.option(
        "--spec-dir",
        "spec_dirs",
        multiple=True,
        type=click.Path(),
        help="Extra folder of spec files (repeatable; searched before CMPERF_PATH and built-ins).",
    )(fn)
    fn = click.option(
        "--model", default="deepseek-r1", show_default=True, help="Model spec name or .toml path."
    )(fn)
    fn = click.option(
        "--system",
        default="cloudmatrix384",
        show_default=True,
        help="System spec name or .toml path (`cmperf specs list`).",
    )(fn)
    return fn


def format_option(choices=("table", "json", "markdown")):
    def deco(fn):
        fn = click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False),
            help="Write to this file (atomically) instead of stdout.",
        )(fn)
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default=choices[0],
            show_default=True,
            help="Output format.",
        )(fn)

    return deco


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    if not target.parent.exists():
        raise CmperfError(
            f"--output: folder {target.parent} does not exist; create it or choose another path"
        )
    import tempfile  # only when writing a file (keeps the stdout path light)

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit(text: str, output: str | None) -> None:
    if output:
        write_atomic(output, text)
    else:
        click.echo(text, nl=False)


def parse_quantity(value: str, kind: str, flag: str) -> float:
    from ..units import parse

    return parse(value, kind, where=flag)
