"""Scenario files: one TOML holding a prediction's system, model and records (schema: docs/scenarios.md).

    name = "cm384-decode-50ms"          # must match the file name
    description = "..."
    source = "CM384 v2 §5.1 ..."        # citation for the setup
    command = "decode"                  # decode | prefill | serve | optimize | pareto | compare
    system = "cloudmatrix384"           # optional (the command's default otherwise)
    model = "deepseek-r1"
    [deployment]                        # cmperf.deployment.Deployment fields (decode, prefill)
    batch_per_device = 96
    [deployment.precision]              # cmperf.deployment.Precision fields (optional)
    [workload]                          # cmperf.serving.Workload fields (serve, optimize)
    [slo]                               # cmperf.serving.SLO fields (serve, optimize)
    [options]                           # the command's other options (click names), e.g. compare's systems

A scenario is found by path (``x.toml``) or by name in the ``scenarios/`` folders: each ``--spec-dir``
folder and its ``scenarios/`` subfolder, ``$CMPERF_PATH``, then the built-in ``scenarios/`` (beside the
package in a checkout, ``cmperf/data/scenarios`` in a wheel). Unknown keys are errors naming file and key.
``records`` turns a decode or prefill scenario into its ``Deployment`` (the library path of report,
validate and snapshot: no CLI involved).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .deployment import AUTO, DECODE_FIELDS, PREFILL_FIELDS, Deployment, Precision, kv_lengths, precision_from
from .domains import DEPLOYMENT, WORKLOAD, Domain, whole
from .domains import SLO as SLO_DOMAINS
from .errors import CmperfError
from .serving import SLO, Workload
from .specs import Model, System, builtin_dirs, load_model, load_system, search_dirs

COMMANDS = ("decode", "prefill", "serve", "optimize", "pareto", "compare")
TOP_KEYS = (
    "name",
    "description",
    "source",
    "command",
    "system",
    "model",
    "deployment",
    "workload",
    "slo",
    "options",
)
TABLES = {"deployment": Deployment, "workload": Workload, "slo": SLO}

#: ``[options]`` a decode or prefill scenario may hold besides its records (the command's other flags), read
#: by ``records`` exactly as the command reads them.
PHASE_OPTIONS = {
    "decode": ("prompt_len", "output_len", "weights", "experts_dtype", "kv_dtype"),
    "prefill": ("weights", "kv_dtype"),
}

#: Default system and model of every command (the CLI's --system / --model defaults).
DEFAULT_SYSTEM, DEFAULT_MODEL = "cloudmatrix384", "deepseek-r1"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    command: str
    system: str | None = None
    model: str | None = None
    deployment: dict[str, Any] = field(default_factory=dict)  # Deployment fields (precision apart)
    precision: dict[str, str] = field(default_factory=dict)  # Precision fields
    workload: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def defaults(self) -> dict[str, Any]:
        """The command-line defaults this scenario sets: its records' fields (the deployment flags carry
        the field names, cmperf.cli.knobs), system, model and [options]."""
        out: dict[str, Any] = {**self.deployment, **self.options}
        for key in ("system", "model"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


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
        if p.exists():
            raise CmperfError(
                f"{flag}: {name} is not a file; give a scenario .toml or a name from scenarios/"
            )
        raise CmperfError(
            f"{flag}: file {name} does not exist; give a scenario .toml or a name from scenarios/"
        )
    for d in scenario_dirs(spec_dirs):
        cand = d / f"{name}.toml"
        if cand.is_file():
            return cand
    have = ", ".join(available(spec_dirs)) or "none"
    raise CmperfError(f"{flag}: unknown scenario {name!r}; available: {have} (or give a path to a .toml)")


def _table(path: Path, raw: dict, key: str, record=None) -> dict[str, Any]:
    """``[key]`` of the file: a table of plain values whose keys are ``record``'s fields."""
    t = raw.get(key, {})
    if not isinstance(t, dict):
        raise CmperfError(f"{path}: key {key} must be a table [{key}]")
    names = {f.name for f in fields(record)} - {"phase"} if record is not None else None
    for k, v in t.items():
        if isinstance(v, dict) and not (key == "deployment" and k == "precision"):
            raise CmperfError(f"{path}: key {key}.{k}: nested tables are not values; give a plain value")
        if isinstance(v, list) and (key, k) not in LIST_FIELDS:
            raise CmperfError(f"{path}: key {key}.{k}: a list is not a value; give one number or string")
        if names is not None and k not in names:
            raise CmperfError(
                f"{path}: key {key}.{k} is not a field of [{key}] (allowed: {', '.join(sorted(names))})"
            )
    return dict(t)


#: (table, key) pairs that may hold a list: per-depth MTP acceptance rates (``--mtp-accept 0.9,0.7``) and
#: the attention-TP degrees optimize searches (``--attn-tp 1,8``).
LIST_FIELDS = {("deployment", "mtp_accept"), ("options", "mtp_accept"), ("options", "attn_tp")}

#: Fields of the records that hold a name (a string), not a number.
STRING_FIELDS = (
    "eplb",
    "cache_plane",
    "cache_prefetch",
    "weights",
    "experts_dtype",
    "kv_dtype",
    "system",
    "model",
    "draft_model",
)


def _values(path: Path, table: str, values: dict[str, Any], numeric: dict[str, Domain]) -> dict[str, Any]:
    """``[table]``'s values checked by file and key: a number in its domain (``cmperf.domains``: finite, in
    range, whole where it counts; a string is not a number), a string where a name belongs, ``microbatches``
    a count or "auto". Returns the values converted (a whole number read as an int)."""
    out = dict(values)
    for k, v in values.items():
        where = f"{path}: key {table}.{k}"
        if isinstance(v, list):  # a LIST_FIELDS key: one or more numbers, each in the field's domain
            if not v:
                raise CmperfError(f"{where}: an empty list; give one or more numbers, e.g. [0.9, 0.7]")
            if k in numeric:
                out[k] = tuple(numeric[k].check(x, where, text=False) for x in v)
        elif k in numeric:
            out[k] = numeric[k].check(v, where, text=False)
        elif k in STRING_FIELDS and not isinstance(v, str):
            raise CmperfError(f'{where}: {v!r} is not a name; write {k} = "..."')
        elif k == "microbatches" and table == "deployment":
            if isinstance(v, str):
                if v.strip().lower() != AUTO:
                    raise CmperfError(f'{where}: {v!r} is not a count; give 1, 2, 3, 4 or "auto"')
                out[k] = AUTO
            else:
                out[k] = whole(1, 4).check(v, where, text=False)
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A scenario or sweep file's table; one CmperfError line naming the file when it is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise CmperfError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CmperfError(f"{path}: cannot read ({e})") from None


def load(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--scenario") -> Scenario:
    """Read and check a scenario file (top-level keys, name = file stem, known command, record fields)."""
    path = find(name, spec_dirs, flag)
    raw = read_toml(path)
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise CmperfError(f"{path}: key {unknown[0]}: unknown key (allowed: {', '.join(TOP_KEYS)})")
    for key in ("name", "command"):
        if not isinstance(raw.get(key), str):
            raise CmperfError(f'{path}: key {key} is missing or not a string; add {key} = "..."')
    for key in ("system", "model", "description", "source"):
        if key in raw and not isinstance(raw[key], str):
            raise CmperfError(f'{path}: key {key} must be a string; write {key} = "..."')
    if raw["name"] != path.stem:
        raise CmperfError(f"{path}: name = {raw['name']!r} must match the file name {path.stem!r}")
    if raw["command"] not in COMMANDS:
        raise CmperfError(f"{path}: key command: {raw['command']!r} is not one of {', '.join(COMMANDS)}")
    dep = _table(path, raw, "deployment", Deployment)
    other = {"decode": PREFILL_FIELDS, "prefill": DECODE_FIELDS}.get(raw["command"], ())
    for k in sorted(dep):
        if k in other:
            raise CmperfError(
                f"{path}: key deployment.{k} is a {'prefill' if raw['command'] == 'decode' else 'decode'} "
                f"knob; a {raw['command']} scenario does not read it"
            )
    opts = _table(path, raw, "options")
    for k in sorted(opts) if raw["command"] in PHASE_OPTIONS else ():
        if k not in PHASE_OPTIONS[raw["command"]]:
            hint = (
                " (deployment knobs go in [deployment], by field name)"
                if k not in ("system", "model")
                else ""
            )
            raise CmperfError(
                f"{path}: key options.{k} is not an option of `cmperf {raw['command']}` here{hint}; "
                f"[options] takes {', '.join(PHASE_OPTIONS[raw['command']])}"
            )
    dep = _values(path, "deployment", dep, DEPLOYMENT)
    if raw["command"] in PHASE_OPTIONS:
        opts = _values(path, "options", opts, {k: v for k, v in WORKLOAD.items() if k in opts})
    for table, values in (("deployment", dep), ("options", opts)):
        if values.get("mtp") == 0 and "mtp_accept" in values:
            raise CmperfError(
                f"{path}: key {table}.mtp_accept: has no effect with {table}.mtp = 0 (no speculative "
                f"tokens); drop it or set mtp = 1 or more"
            )
    prec = dep.pop("precision", {})
    names = {f.name for f in fields(Precision)}
    for k, v in prec.items():
        if k not in names or not isinstance(v, str):
            raise CmperfError(
                f"{path}: key deployment.precision.{k}: give a datatype string for one of "
                f"{', '.join(sorted(names))}"
            )
    return Scenario(
        raw["name"],
        str(raw.get("description", "")),
        str(raw.get("source", "")),
        raw["command"],
        raw.get("system"),
        raw.get("model"),
        dep,
        dict(prec),
        _values(path, "workload", _table(path, raw, "workload", Workload), WORKLOAD),
        _values(path, "slo", _table(path, raw, "slo", SLO), SLO_DOMAINS),
        opts,
        str(path),
    )


def check_options(sc: Scenario, param_names, command: str | None = None) -> None:
    """Every ``[deployment]`` and ``[options]`` key must be a parameter of the command that runs it."""
    if command is not None and command != sc.command:
        raise CmperfError(
            f"{sc.path}: key command = {sc.command!r}, but it was given to `cmperf {command}`; "
            f"run it with `cmperf {sc.command} --scenario {sc.name}`"
        )
    names = set(param_names)
    for key in ("system", "model"):
        if getattr(sc, key) is not None and key not in names:
            hint = (
                " (list the systems in [options] systems)" if key == "system" and "systems" in names else ""
            )
            raise CmperfError(f"{sc.path}: key {key}: `cmperf {sc.command}` has no --{key}; drop it{hint}")
    for table, keys in (("deployment", sc.deployment), ("options", sc.options)):
        for k in sorted(keys):
            if k not in names:
                have = ", ".join(sorted(names - {"scenario", "fmt", "output", "help"}))
                hint = " (deployment knobs go in [deployment], by field name)" if table == "options" else ""
                raise CmperfError(
                    f"{sc.path}: key {table}.{k} is not an option of `cmperf {sc.command}`{hint} "
                    f"(it takes: {have})"
                )
    for table in ("workload", "slo"):
        if getattr(sc, table) and sc.command not in ("serve", "optimize"):
            raise CmperfError(
                f"{sc.path}: [{table}] is read by serve and optimize, not by `cmperf {sc.command}`"
            )


def specs_of(sc: Scenario, spec_dirs: tuple[str, ...] | list[str] = ()) -> tuple[System, Model]:
    """The scenario's system and model (the commands' defaults when it names none)."""
    return load_system(
        sc.system or DEFAULT_SYSTEM, spec_dirs, f"{sc.path}: key system" if sc.system else "--system"
    ), load_model(sc.model or DEFAULT_MODEL, spec_dirs, f"{sc.path}: key model" if sc.model else "--model")


def records(sc: Scenario, system: System, model: Model) -> Deployment:
    """The ``Deployment`` of a decode or prefill scenario, as its command builds it from the file: the
    [deployment] fields on the record's defaults; precision from the [options] dtype flags and
    [deployment.precision]; for decode, [options] prompt_len + output_len set the KV knobs
    (``deployment.kv_lengths``, as ``--prompt-len/--output-len``)."""
    if sc.command not in PHASE_OPTIONS:
        raise CmperfError(
            f"{sc.path}: a {sc.command} scenario has no single deployment; use a decode or prefill one"
        )
    o = sc.options
    prec = precision_from(system, o.get("weights"), o.get("experts_dtype"), o.get("kv_dtype"), sc.precision)
    knobs = dict(sc.deployment)
    if sc.command == "decode" and ("prompt_len" in o or "output_len" in o):
        if "prompt_len" not in o or "output_len" not in o or "kv_len" in knobs:
            raise CmperfError(
                f"{sc.path}: give options.prompt_len with options.output_len, and no deployment.kv_len"
            )
        kv, cap, cv = kv_lengths(model, float(o["prompt_len"]), float(o["output_len"]))
        knobs = {"kv_capacity_len": cap, "kv_cv": cv, **knobs, "kv_len": kv}
    if isinstance(knobs.get("draft_model"), str):  # a draft model by name, as --draft-model takes it
        knobs["draft_model"] = load_model(knobs["draft_model"], flag=f"{sc.path}: key deployment.draft_model")
    return Deployment(phase=sc.command, precision=prec, **knobs)


def predict(sc: Scenario, system: System, model: Model):
    """The scenario's prediction record through the library (decode or prefill): exactly what
    ``cmperf <command> --scenario <name>`` prints, with no CLI in between."""
    from . import decode, prefill

    dep = records(sc, system, model)
    if sc.command == "decode":
        return decode.predict(system, model, dep)
    return prefill.predict(system, model, dep)
