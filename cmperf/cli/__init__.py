"""The ``cmperf`` command line: thin click commands (parse, load, call, render, exit code).

Subcommands live in the ``*_cmd`` modules of this package, each exposing ``COMMANDS``. ``COMMAND_MODULES``
maps every command name to its module so that a single command imports only its own module (a test
checks the map against the modules). Exit codes: 0 ok, 1 a check failed (validate, diff, an SLO nobody
meets), 2 bad input, 3 infeasible deployment.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys

from .. import __version__
from . import examples as _examples

# One BLAS thread unless the user chose otherwise: starting OpenBLAS's thread pool costs ~55 ms of every
# command (measured: `import numpy` 0.142 s vs 0.086 s), and cmperf's only BLAS calls are 1-D dot products
# (cmperf.queueing). Set before numpy is first imported; the library (import cmperf) leaves it alone.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _is_program() -> bool:
    """True when this process is the cmperf program (its console script or ``python -m cmperf``), not a
    process that imports the CLI (tests, the docs generator, a user's script)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "cmperf.__main__"
    return os.path.splitext(os.path.basename(getattr(main, "__file__", None) or ""))[0] == "cmperf"


# No cyclic GC while a command starts and runs: its start-up allocates ~10^5 objects that live to its end
# (click, numpy, cmperf's modules and options, spec records), and the collector walks them dozens of times
# to free nothing (~10 ms of a `cmperf decode`, 2 ms of it in click's import: the program turns it off
# here, before that import). Commands that run for seconds turn it back on (main: GRID_COMMANDS), and
# ``LazyGroup.main`` restores what it found when the command ends (tests run many commands in a process).
_PROGRAM = _is_program()
_gc_restore = _PROGRAM and gc.isenabled()  # turn it back on when the command ends
if _gc_restore:
    gc.disable()

import click  # noqa: E402  (after the collector is off: ~2 ms of its collections in click's import)

COMMAND_MODULES = {
    "decode": "decode_cmd",
    "prefill": "prefill_cmd",
    "serve": "serve_cmd",
    "optimize": "optimize_cmd",
    "pareto": "optimize_cmd",
    "compare": "compare_cmd",
    "comm": "decode_cmd",
    "report": "report_cmd",
    "explain": "report_cmd",
    "validate": "report_cmd",
    "snapshot": "report_cmd",
    "diff": "report_cmd",
    "specs": "specs_cmd",
    "sweep": "sweep_cmd",
}


def _enable_gc() -> None:
    """Turn the collector back on (if it was on before the command) with the objects allocated meanwhile
    in the oldest generation: re-enabled as they are, the next allocation would walk all of them at once
    (~6 ms) to free next to nothing; a full collection still frees their cycles."""
    global _gc_restore
    if not _gc_restore:
        return
    _gc_restore = False
    if gc.get_freeze_count() == 0:  # (someone else's frozen objects stay frozen)
        gc.freeze()
        gc.unfreeze()
    gc.enable()


# The console script, not ``python -m cmperf``: runpy may run the program in a process that goes on after
# its SystemExit (tests/test_startup.py does), which ``_end_now`` must not cut short.
_SCRIPT = _PROGRAM and getattr(sys.modules.get("__main__"), "__spec__", None) is None
_quick = False  # the command is one of QUICK_COMMANDS, run by the console script


def _end_now(code: object) -> None:
    """End the process with exit status ``code`` (a SystemExit's) once stdout and stderr are flushed,
    skipping the interpreter's teardown (~2-4 ms of a `cmperf decode`: it frees every module's objects,
    numpy's too, one by one; the OS reclaims the memory at once). Returns, to let the interpreter exit as
    usual and report it, when a flush fails or the code is not a number."""
    code = 0 if code is None else code
    if not isinstance(code, int):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)


def _skip_exit_collection() -> None:
    """At the program's exit: move every object to the permanent generation, so that the exit-time
    collection does not walk them all to free nothing (~12 ms of a `cmperf decode`; the OS reclaims the
    process's memory). atexit runs it after the command; the interpreter flushes stdout after it."""
    gc.freeze()


def _scenario_key(e: click.UsageError) -> str | None:
    """``FILE: key TABLE.FIELD (or --flag)`` when click refused a value that a ``--scenario`` file set
    (``cmperf.cli.types.where``), else None (the value came from the command line)."""
    param = getattr(e, "param", None)
    if not isinstance(e, click.BadParameter) or param is None or e.ctx is None or param.name is None:
        return None
    from click.core import ParameterSource

    if e.ctx.get_parameter_source(param.name) != ParameterSource.DEFAULT_MAP:
        return None
    if e.ctx.meta.get("cmperf.scenario") is None:
        return None
    from .types import where

    return where(param, e.ctx)


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def main(self, *args, **kwargs):
        global _gc_restore
        _gc_restore = _gc_restore or gc.isenabled()
        gc.disable()
        if _PROGRAM:
            atexit.register(_skip_exit_collection)
        try:
            return super().main(*args, **kwargs)
        except SystemExit as e:
            if _quick:
                _end_now(e.code)
            raise
        finally:
            _enable_gc()

    def list_commands(self, ctx):
        return list(COMMAND_MODULES)

    def get_command(self, ctx, name):
        mod = COMMAND_MODULES.get(name)
        if mod is None:
            return None
        for cmd in importlib.import_module(f"{__name__}.{mod}").COMMANDS:
            if cmd.name == name:
                from .examples import attach

                attach(cmd, name)
                return cmd
        return None

    def invoke(self, ctx):
        # a user error raised while a subcommand's parameters are converted (before its body's guard runs)
        from ..errors import CmperfError

        try:
            return super().invoke(ctx)
        except CmperfError as e:
            click.echo(f"cmperf: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except click.UsageError as e:
            # click's own parse errors (an unknown flag, a value outside a Choice): one line too, exit 2
            where = e.ctx.command_path if e.ctx is not None else "cmperf"
            from_file = _scenario_key(e)
            if from_file is not None:  # a bad value a scenario file set: name the file and its key
                click.echo(f"cmperf: error: {from_file}: {e.message}", err=True)
                ctx.exit(e.exit_code)
            click.echo(f"cmperf: error: {e.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(e.exit_code)

    def resolve_command(self, ctx, args):
        # the subcommand's raw arguments, for --scenario to find --spec-dir before click parses it
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["cmperf.args"] = list(rest)
        return name, cmd, rest

    @property
    def commands(self):  # every command, for documentation checks
        return {name: self.get_command(None, name) for name in COMMAND_MODULES}

    @commands.setter
    def commands(self, value):
        pass


#: Commands that evaluate grids block by block (cmperf.runtime.keep_heap pays off there).
GRID_COMMANDS = ("optimize", "pareto", "sweep", "serve", "report", "compare")
#: Commands that print one prediction (~0.1 s, no worker process or temporary file to clean up): the
#: console script ends them with ``_end_now``.
QUICK_COMMANDS = ("decode", "prefill", "comm")


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=_examples.epilog(""),
)
@click.version_option(__version__, prog_name="cmperf")
def main() -> None:
    """Predict DeepSeek-R1-class MoE serving (tokens/s per device, TPOT, TTFT) from first principles."""
    global _quick
    ctx = click.get_current_context()
    _quick = _SCRIPT and ctx.invoked_subcommand in QUICK_COMMANDS
    if ctx.invoked_subcommand in GRID_COMMANDS:  # freed evaluation blocks stay in the heap: no page-fault
        from ..runtime import keep_heap  # churn (cmperf.runtime); a single prediction skips ctypes' import

        keep_heap()
        _enable_gc()  # seconds of evaluation: keep cyclic garbage bounded
