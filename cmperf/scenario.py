"""Scenario files: one TOML holding everything a prediction command needs (system, model, deployment, SLOs).

Format (the contract in docs/HELPERS.md)::

    name = "cm384-decode-50ms"          # must match the file name
    description = "..."
    source = "CM384 v2 §5.1 ..."        # citation for the setup
    command = "decode"                  # decode | prefill | serve | optimize | pareto | compare
    [options]                           # click parameter names of that command (dashes -> underscores)
    batch = 96

A scenario is found by path (``x.toml``) or by name in the ``scenarios/`` folders: each ``--spec-dir``
folder and its ``scenarios/`` subfolder, ``$CMPERF_PATH``, then the built-in ``scenarios/`` (beside the
package in a checkout, ``cmperf/data/scenarios`` in a wheel). Unknown keys are errors naming file and key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CmperfError
from .specs import builtin_dirs, search_dirs

COMMANDS = ("decode", "prefill", "serve", "optimize", "pareto", "compare")
TOP_KEYS = ("name", "description", "source", "command", "options")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    command: str
    options: dict = field(default_factory=dict)
    path: str = ""


def scenario_dirs(spec_dirs: tuple[str, ...] | list[str] = ()) -> list[Path]:
    dirs = []
    for d in search_dirs(spec_dirs):
        dirs += [d, d / "scenarios"] if d not in builtin_dirs() else [d / "scenarios"]
    return [d for d in dirs if d.is_dir()]


def available(spec_dirs: tuple[str, ...] | list[str] = ()) -> list[str]:
    names: list[str] = []
    for d in scenario_dirs(spec_dirs):
        for p in sorted(d.glob("*.toml")):
            try:
                raw = tomllib.loads(p.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                continue
            if "command" in raw and "kind" not in raw and p.stem not in names:
                names.append(p.stem)
    return names


def find(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--scenario") -> Path:
    p = Path(name)
    if p.suffix == ".toml":
        if p.is_file():
            return p
        raise CmperfError(
            f"{flag}: file {name} does not exist; give a scenario .toml or a name from scenarios/"
        )
    for d in scenario_dirs(spec_dirs):
        cand = d / f"{name}.toml"
        if cand.is_file():
            return cand
    have = ", ".join(available(spec_dirs)) or "none"
    raise CmperfError(f"{flag}: unknown scenario {name!r}; available: {have} (or give a path to a .toml)")


def load(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--scenario") -> Scenario:
    """Read and check a scenario file (top-level keys, name = file stem, known command)."""
    path = find(name, spec_dirs, flag)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CmperfError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CmperfError(f"{path}: cannot read ({e})") from None
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise CmperfError(f"{path}: key {unknown[0]}: unknown key (allowed: {', '.join(TOP_KEYS)})")
    for key in ("name", "command"):
        if not isinstance(raw.get(key), str):
            raise CmperfError(f'{path}: key {key} is missing or not a string; add {key} = "..."')
    if raw["name"] != path.stem:
        raise CmperfError(f"{path}: name = {raw['name']!r} must match the file name {path.stem!r}")
    if raw["command"] not in COMMANDS:
        raise CmperfError(f"{path}: key command: {raw['command']!r} is not one of {', '.join(COMMANDS)}")
    opts = raw.get("options", {})
    if not isinstance(opts, dict):
        raise CmperfError(f"{path}: key options must be a table [options]")
    for k, v in opts.items():
        if isinstance(v, dict):
            raise CmperfError(f"{path}: key options.{k}: nested tables are not options; give a plain value")
    return Scenario(
        raw["name"],
        str(raw.get("description", "")),
        str(raw.get("source", "")),
        raw["command"],
        dict(opts),
        str(path),
    )


def check_options(sc: Scenario, param_names, command: str | None = None) -> None:
    """Every ``[options]`` key must be a parameter of the command that runs the scenario."""
    if command is not None and command != sc.command:
        raise CmperfError(
            f"{sc.path}: key command = {sc.command!r}, but it was given to `cmperf {command}`; "
            f"run it with `cmperf {sc.command} --scenario {sc.name}`"
        )
    names = set(param_names)
    for k in sorted(sc.options):
        if k not in names:
            have = ", ".join(sorted(names - {"scenario", "fmt", "output", "help"}))
            raise CmperfError(
                f"{sc.path}: key options.{k} is not an option of `cmperf {sc.command}` (it takes: {have})"
            )
