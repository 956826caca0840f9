"""`cmperf specs list`, `cmperf specs show NAME`, `cmperf specs import CONFIG.json`."""

from __future__ import annotations

import click

from .common import emit, format_option, guarded


@click.group()
def specs() -> None:
    """List and show hardware, system and model spec files."""


@specs.command("list")
@click.option("--spec-dir", "spec_dirs", multiple=True, type=click.Path(), help="Extra folder of spec files.")
@format_option(("table", "json", "markdown"))
@guarded
def list_(spec_dirs, fmt, output):
    """Every spec on the search path (--spec-dir, $CMPERF_PATH, built-ins)."""
    from .. import render
    from .. import specs as sp

    rows = sp.catalog(spec_dirs)
    if fmt == "json":
        emit(render.to_json({"specs": rows}, "specs"), output)
        return
    table = [(r["kind"], r["name"], r["description"], r["path"]) for r in rows]
    if fmt == "markdown":
        emit(render.markdown_table(("kind", "name", "description", "path"), table), output)
    else:
        emit(render.tables("", [], [("specs", ("kind", "name", "description", "path"), table)]), output)


@specs.command("show")
@click.argument("name")
@click.option("--spec-dir", "spec_dirs", multiple=True, type=click.Path(), help="Extra folder of spec files.")
@format_option(("table", "json", "markdown"))
@guarded
def show(name, spec_dirs, fmt, output):
    """Show one spec (validated), with the source of every number."""
    from .. import render
    from .. import specs as sp
    from ..errors import CmperfError

    kinds = {r["name"]: r["kind"] for r in sp.catalog(spec_dirs)}
    kind = kinds.get(name)
    if kind is None:
        try:
            sp.find(name, "model", spec_dirs)
            kind = "model"
        except CmperfError:
            raise CmperfError(f"NAME: unknown spec {name!r}; available: {', '.join(sorted(kinds))}") from None
    loader = {"chip": sp.load_chip, "system": sp.load_system, "model": sp.load_model}[kind]
    spec = loader(name, spec_dirs)
    data = render.to_jsonable(spec)
    if kind == "system":
        data["chip"] = spec.chip.name
    sources = data.pop("sources")
    if fmt == "json":
        emit(render.to_json({"spec": data, "sources": sources}, "spec"), output)
        return
    flat = []

    def walk(prefix, v):
        if isinstance(v, dict):
            for k2, v2 in v.items():
                walk(f"{prefix}.{k2}" if prefix else k2, v2)
        else:
            flat.append((prefix, display_value(prefix, v), _source_for(prefix, sources)))

    walk("", data)
    header = ("key", "value", "source")
    if fmt == "markdown":
        emit(f"# {kind} {spec.name}\n\n" + render.markdown_table(header, flat), output)
    else:
        emit(render.tables("", [], [(f"{kind} {spec.name}: {spec.path}", header, flat)]), output)


def display_value(key: str, v) -> str:
    """A spec field in display units, chosen by the unit its name carries (JSON keeps SI):
    ``hbm_bytes_per_s`` 1.6e12 -> "1.60 TB/s", ``latency_s`` 1.9e-06 -> "1.9 µs", ``peak_flops.int8``
    7.52e14 -> "752 TFLOP/s", ``hbm_bytes`` 6.4e10 -> "64.00 GB"; "None" reads "-" (not set)."""
    from ..units import fmt_bytes, fmt_rate, fmt_s

    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if v == 0:
        return "0"
    parts = key.split(".")
    last = parts[-1]
    if "bytes_per_s" in last:
        return fmt_rate(v)
    if last.endswith("_bytes") or last == "bytes":
        return fmt_bytes(v)
    if last.endswith("_s") or "overhead_s" in parts[:-1]:
        return fmt_s(v)
    if "peak_flops" in parts[:-1]:
        return f"{v / 1e12:g} TFLOP/s"
    return f"{v:g}" if isinstance(v, float) else str(v)


#: Spec-record fields whose spec-file key is spelled differently (the chip's ``[hbm]`` and ``[cores]``).
_FIELD_KEYS = {
    "hbm_bytes": "hbm.capacity",
    "hbm_bytes_per_s": "hbm.bandwidth",
    "hbm_reserved_bytes": "hbm.reserved",
    "cube_cores": "cores.cube",
    "vector_cores": "cores.vector",
}
#: Record tables whose spec-file table is spelled differently (the chip's ``[efficiency]`` ...).
_TABLES = {"eff": "efficiency", "overhead_s": "overhead", "peak_flops": "peak"}
#: Field-name stems whose spec-file key differs (a plane's ``bandwidth = "196 GB/s", per = "rank"``).
_STEMS = {"bytes_per_s_per_rank": "bandwidth", "latency_s": "latency", "cpu_dram_per_node_bytes": "cpu_dram"}


def _source_for(key: str, sources: dict) -> str:
    """The source of a flattened spec field: the spec-file key it came from, matched on the whole path
    first (field names carry SI suffixes: alpha_s <- alpha; phase_collectives <- collectives; a plane's
    bytes_per_s_per_rank <- bandwidth), then on the last component alone, but never from a sibling
    entry of the same table (planes.rdma.host_read_efficiency does not take planes.ub's source)."""
    if key in _FIELD_KEYS and _FIELD_KEYS[key] in sources:
        return sources[_FIELD_KEYS[key]]
    parts = key.replace("phase_collectives.", "collectives.").split(".")
    parts[0] = _TABLES.get(parts[0], parts[0]) if len(parts) > 1 else parts[0]
    last = parts[-1]
    stems = [last] + [last[: -len(x)] for x in ("_bytes_per_s", "_bytes", "_s") if last.endswith(x)]
    if last in _STEMS:
        stems.insert(0, _STEMS[last])
    for stem in stems:
        full = ".".join([*parts[:-1], stem])
        for k, v in sources.items():
            if k == full or full.endswith("." + k):
                return v
    parent = ".".join(parts[:-1])
    for k, v in sources.items():
        kparts = k.split(".")
        if len(parts) > 1 and len(kparts) > 1 and kparts[0] == parts[0] and ".".join(kparts[:-1]) != parent:
            continue  # another entry of the same table (a sibling plane or collective)
        if k in (key, last) or k.endswith("." + last):
            return v
    return ""


@specs.command("import")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Model name [default: from the file name, e.g. kimi-k2-instruct].")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the spec here (e.g. models/NAME.toml)."
)
@guarded
def import_(config, name, output):
    """Write a model spec from a Hugging Face config.json (read locally), its source recorded.

    Example: cmperf specs import Kimi-K2-Instruct/config.json --name kimi-k2 -o models/kimi-k2.toml"""
    from pathlib import Path

    from .. import hf
    from ..errors import CmperfError

    spec = hf.spec_from_config(config, name)
    if output and Path(output).stem != spec["name"]:
        raise CmperfError(
            f"--output: a spec file is named like its model; write {spec['name']}.toml or pass --name"
        )
    emit(hf.to_toml(spec), output)


COMMANDS = [specs]
