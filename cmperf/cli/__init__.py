"""The ``cmperf`` command line: thin click commands (parse, load, call, render, exit code).

Subcommands live in the modules of this package; each exposes ``COMMANDS`` (a list of click commands),
and they are collected here in a fixed order so ``cmperf --help`` is stable. Exit codes: 0 ok,
1 a check failed (validate, diff, an SLO nobody meets), 2 bad input, 3 infeasible deployment.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="cmperf")
def main() -> None:
    """Predict DeepSeek-R1-class MoE serving (tokens/s per device, TPOT, TTFT) from first principles."""


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")):
    for _cmd in importlib.import_module(f"{__name__}.{_mod}").COMMANDS:
        main.add_command(_cmd)
