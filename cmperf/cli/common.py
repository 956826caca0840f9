"""Shared CLI plumbing: common options, one-line errors with exit codes, atomic output."""

from __future__ import annotations

import functools
import os
import sys

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


#: Ops shown by default in the per-op tables of decode and prefill (table and markdown; JSON has all).
DEFAULT_OPS = 12


def ops_limit(value) -> int | None:
    """An ``--ops`` value as a count, None for all (also from a scenario file: 12 or "all")."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().lower()
        if text == "all":
            return None
        try:
            n = int(text)
        except ValueError:
            n = 0
    if n < 1:
        raise CmperfError(f"--ops: {value!r} is not a count; give a number >= 1 or all")
    return n


class _Ops(click.ParamType):
    name = "N|all"

    def convert(self, value, param, ctx):
        try:
            return ops_limit(value)
        except CmperfError as e:
            self.fail(str(e).removeprefix("--ops: "), param, ctx)


def ops_option(fn):
    """--ops N|all: the N heaviest ops by time per step (heaviest first), or every op in graph order."""
    return click.option(
        "--ops",
        "ops",
        type=_Ops(),
        default=str(DEFAULT_OPS),
        show_default=True,
        help="Per-op rows in table and markdown output: the N heaviest by time per step, or all "
        "(JSON always has every op).",
    )(fn)


def _plot_path(ctx, param, value):
    """Check ``--plot FILE`` before any work: a .png or .svg suffix and an existing folder (exit 2)."""
    if value is None:
        return None
    from pathlib import Path

    from ..plot import image_format

    image_format(value)
    if not Path(value).parent.exists():
        raise CmperfError(
            f"--plot: folder {Path(value).parent} does not exist; create it or choose another path"
        )
    return value


def plot_option(what: str):
    """``--plot FILE.png|svg``: an image of ``what`` through matplotlib (``pip install 'cmperf[plot]'``)."""
    return click.option(
        "--plot",
        "plot",
        type=click.Path(dir_okay=False),
        default=None,
        callback=_plot_path,
        metavar="FILE.png|svg",
        help=f"Also draw {what} to this image (format from the suffix; needs cmperf[plot]).",
    )


def write_plot(path: str | None, draw) -> None:
    """Write the image ``draw(fmt)`` returns to ``path`` (atomically; errors name --plot), if ``path``."""
    if path:
        from ..plot import image_format

        write_atomic(path, draw(image_format(path)), flag="--plot")


def _new_file_mode() -> int:
    """0666 less the umask: the mode open() would give a new file (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str, text: str | bytes, flag: str = "--output") -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the mode a plain write would: an existing file keeps its mode, a new one gets 0666 less
    the umask (mkstemp's 0600 is replaced before the rename). On any error the temporary file is removed
    and the target is untouched. Bytes (an image) are written as they are; errors name ``flag``."""
    from pathlib import Path  # only when writing a file (keeps the stdout path light, as below)

    target = Path(path)
    if not target.parent.exists():
        raise CmperfError(f"{flag}: folder {target.parent} does not exist; create it or choose another path")
    data = text if isinstance(text, bytes) else text.encode("utf-8")

    def cannot(e: OSError) -> CmperfError:
        return CmperfError(f"{flag}: cannot write {path} ({e.strerror or e}); choose another path")

    if target.exists() and not target.is_file():  # /dev/null, a FIFO: write through, never replace it
        try:
            with open(target, "wb") as f:
                f.write(data)
        except OSError as e:
            raise cannot(e) from None
        return
    import stat
    import tempfile  # only when writing a file (keeps the stdout path light)

    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = _new_file_mode()
    except OSError as e:
        raise cannot(e) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as e:  # a read-only or virtual folder (/proc), no permission
        raise CmperfError(
            f"{flag}: cannot write in {target.parent} ({e.strerror or e}); choose another path"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise cannot(e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit(text: str, output: str | None) -> None:
    """The one output path of every command and format: ``text`` to stdout, or atomically to ``output``."""
    if output:
        write_atomic(output, text)
    else:
        click.echo(text, nl=False)


def parse_quantity(value: str, kind: str, flag: str) -> float:
    from ..units import parse

    return parse(value, kind, where=flag)


class progress:  # used as a context manager, like open
    """A spinner with ``label`` on stderr while a long command works (``serve --size``, ``explain``,
    ``report``, ``optimize``: seconds), only when stderr is a terminal: piped output, ``-o`` files and
    tests (no TTY) stay byte-identical. The line is removed when the work ends.

    ``with progress("sizing the P/D/cache split"): res = sizing.size(...)``"""

    def __init__(self, label: str) -> None:
        self.label = label
        self._status = None

    def __enter__(self) -> progress:
        if os.environ.get("CMPERF_NO_PROGRESS") or not _stderr_is_terminal():
            return self
        try:
            from rich.console import Console

            self._status = Console(stderr=True).status(f"cmperf: {self.label}...", spinner="dots")
            self._status.__enter__()
        except Exception:  # a progress line must never break a command
            self._status = None
        return self

    def update(self, label: str) -> None:
        """Change the label (the next stage of the work)."""
        self.label = label
        if self._status is not None:
            self._status.update(f"cmperf: {label}...")

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
            self._status = None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
