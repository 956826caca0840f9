"""`cmperf specs list`, `cmperf specs show NAME`, `cmperf specs import CONFIG.json`."""

from __future__ import annotations

import click

from ..specs import ATTENTION_KEYS, LAYER_ATTENTION, LAYER_FFN
from .common import emit, format_option, guarded


@click.group()
def specs() -> None:
    """List, show, template and import hardware, system and model spec files."""


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
    if last == "power_w":
        return f"{v:,.0f} W"
    return f"{v:g}" if isinstance(v, float) else str(v)


#: Spec-record fields whose spec-file key is spelled differently (the chip's ``[hbm]`` and ``[cores]``).
_FIELD_KEYS = {
    "hbm_bytes": "hbm.capacity",
    "hbm_bytes_per_s": "hbm.bandwidth",
    "hbm_reserved_bytes": "hbm.reserved",
    "cube_cores": "cores.cube",
    "vector_cores": "cores.vector",
    "power_w": "power",
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


#: Every spec-file key: (unit, meaning). ``*`` stands for a name the file chooses (a plane, a collective, a
#: phase, a datatype, an architecture field). One table for ``specs new`` comments, the JSON Schema
#: (docs/spec.schema.json) and the key reference of docs/specs.md.
KEY_DOCS: dict[str, tuple[str, str]] = {
    "name": ("a name", "the name on the command line; the file is named NAME.toml"),
    "kind": ("chip, system or model", "what the file describes"),
    "description": ("text", "one line shown by `cmperf specs list`"),
    "aliases": ("list of names", "other names the model answers to"),
    # chip
    "rank": ("die, gpu or device", "the unit that holds one EP shard"),
    "peak.*": (
        'FLOP/s, e.g. "989 TFLOPS"',
        "dense peak of this datatype per rank (bf16, fp16, fp8, int8, fp4, ...)",
    ),
    "cores.cube": ("count", "matrix cores per rank (Ascend AIC, NVIDIA SMs)"),
    "cores.vector": ("count", "vector cores per rank (Ascend AIV; SMs on GPUs)"),
    "hbm.capacity": ('bytes, e.g. "141 GB"', "HBM per rank"),
    "hbm.bandwidth": ('bytes/s, e.g. "4.8 TB/s"', "HBM bandwidth per rank"),
    "hbm.reserved": ("bytes", "HBM the runtime, workspace and fragmentation take (optional, default 0)"),
    "efficiency.gemm_compute": ("fraction in (0, 1]", "achieved share of peak FLOP/s of compute-bound GEMMs"),
    "efficiency.gemm_memory": ("fraction in (0, 1]", "achieved share of HBM bandwidth of memory-bound GEMMs"),
    "efficiency.attention_compute": ("fraction in (0, 1]", "achieved share of peak FLOP/s of attention"),
    "efficiency.attention_memory": ("fraction in (0, 1]", "achieved share of HBM bandwidth of attention"),
    "efficiency.vector_memory": ("fraction in (0, 1]", "achieved share of HBM bandwidth of vector ops"),
    "efficiency.expert_memory": (
        "fraction in (0, 1]",
        "achieved share of HBM bandwidth of routed experts' grouped GEMMs (optional, default gemm_memory)",
    ),
    "efficiency.pipeline_compute": (
        "fraction in (0, 1]",
        "share of the compute efficiencies sustained inside the serving loop (optional, default 1)",
    ),
    "power": (
        'watts, e.g. "1400 W"; a system\'s per = system|node',
        "power where a source states it (optional): a chip's per rank, a system's whole or per node",
    ),
    "overhead.*": (
        'seconds, e.g. "3 us"',
        "fixed cost per kernel of this kind (gemm, attention, vector, comm)",
    ),
    # system
    "chip": ("a chip name", "the chip spec of every device"),
    "num_devices": ("count", "devices (packages: NPUs, GPUs) in the system"),
    "ranks_per_device": ("count", "ranks per device (2 dies per Ascend 910C)"),
    "devices_per_node": ("count", "devices per server node"),
    "cpu_dram_per_node": ("bytes", "host DRAM per node, the context cache (optional, default 0)"),
    "kv_transfer_plane": ("a plane name", "the plane prefill-to-decode KV transfers use (optional)"),
    "planes.*.scale": ("up or out", "scale-up domain or scale-out network"),
    "planes.*.domain_devices": ("count", "devices one domain of this plane reaches"),
    "planes.*.bandwidth": ('bytes/s, e.g. "400 Gb/s", per = rank|device|node', "bandwidth per direction"),
    "planes.*.latency": ("seconds", "one-way latency of a message"),
    "planes.*.efficiency": ("fraction in (0, 1]", "achieved share of the bandwidth"),
    "planes.*.host_read_efficiency": (
        "fraction in (0, 1]",
        "achieved share when reading CPU DRAM (optional)",
    ),
    "planes.*.topology": ("switch or torus", "how the plane connects its devices (optional, default switch)"),
    "planes.*.dims": ("list of counts", "torus: chips along each axis (product = domain_devices)"),
    "planes.*.hop_latency": ("seconds", "torus: latency per hop"),
    "collectives.*.plane": ("a plane name", "the plane this EP kernel runs on"),
    "collectives.*.scaleout_plane": (
        "a plane name",
        "the plane for peers outside the scale-up domain (optional)",
    ),
    "collectives.*.alpha": ("seconds", "fixed latency of one call"),
    "collectives.*.alpha_per_log2_ep": ("seconds", "latency added per doubling of EP"),
    "collectives.*.efficiency": ("fraction in (0, 1]", "achieved share of the plane's bandwidth (optional)"),
    "collectives.*.scaleout_efficiency": ("fraction in (0, 1]", "the same on scaleout_plane (optional)"),
    "collectives.*.scale_bytes": ("bytes", "quantization scales and header per token message"),
    "collectives.*.message_align": ("bytes", "messages are padded to a multiple of this"),
    "collectives.*.copies": ("per-expert, per-rank or per-domain", "one message per what"),
    "collectives.*.local_copies": (
        "skip or send",
        "whether the 1/EP local share crosses the link (optional)",
    ),
    "overlap.*.policy": ("split-cores or compute-comm", "how the phase overlaps its microbatches"),
    "overlap.*.attention_cube_cores": ("count", "split-cores: cube cores of the attention stream"),
    "overlap.*.attention_vector_cores": ("count", "split-cores: vector cores of the attention stream"),
    "overlap.*.comm_cube_cores": ("count", "compute-comm prefill: cores the comm kernels hold (optional)"),
    "overlap.*.attention_tp_devices": ("count", "prefill: devices one prompt's attention spans (1 = DP)"),
    # model
    "architecture.source": ("text", "where the architecture integers come from (the config.json)"),
    "architecture.attention": (" or ".join(ATTENTION_KEYS), "the attention kind (optional, default mla)"),
    "architecture.*": ("integer", "the config.json field of the same name"),
    "layers.source": ("text", "where the per-layer patterns come from"),
    "layers.attention": (
        "list of " + ", ".join(LAYER_ATTENTION),
        "attention variant per layer, or a period repeated over the layers (optional)",
    ),
    "layers.ffn": ("list of " + ", ".join(LAYER_FFN), "FFN kind per layer, or a period repeated (optional)"),
    "routing.popularity_zipf": (
        "number in [0, 3]",
        "Zipf exponent of expert popularity (optional, default 0)",
    ),
}
MARKS = {
    "Q": "quoted: the source states this number",
    "S": "secondary: another source or tool's default",
    "I": "derived: computed, fitted or assumed",
}

#: Keys whose value is a plain TOML value, not a sourced ``{ value, source, mark }`` table: their JSON Schema.
_PLAIN: dict[str, dict] = {
    "name": {"type": "string"},
    "kind": {"enum": ["chip", "system", "model"]},
    "description": {"type": "string"},
    "aliases": {"type": "array", "items": {"type": "string"}},
    "rank": {"enum": ["die", "gpu", "device"]},
    "chip": {"type": "string"},
    "kv_transfer_plane": {"type": "string"},
    "planes.*.scale": {"enum": ["up", "out"]},
    "planes.*.topology": {"enum": ["switch", "torus"]},
    "collectives.*.plane": {"type": "string"},
    "collectives.*.scaleout_plane": {"type": "string"},
    "collectives.*.copies": {"enum": ["per-expert", "per-rank", "per-domain"]},
    "collectives.*.local_copies": {"enum": ["skip", "send"]},
    "overlap.*.policy": {"enum": ["split-cores", "compute-comm"]},
    "architecture.source": {"type": "string", "minLength": 1},
    "architecture.attention": {"enum": list(ATTENTION_KEYS)},
    "architecture.*": {"type": "integer"},
    "layers.source": {"type": "string"},
    "layers.attention": {"type": "array", "items": {"enum": list(LAYER_ATTENTION)}},
    "layers.ffn": {"type": "array", "items": {"enum": list(LAYER_FFN)}},
}


def spec_schema() -> dict:
    """The JSON Schema of a spec TOML file (docs/spec.schema.json), built from ``KEY_DOCS``: a sourced value
    is ``{ value, source, mark, per }``; ``*`` keys are ``additionalProperties``."""
    tree: dict = {}
    for path in KEY_DOCS:
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = path

    def build(node) -> dict:
        if isinstance(node, str):
            unit, meaning = KEY_DOCS[node]
            leaf = dict(_PLAIN.get(node, {"$ref": "#/$defs/sourced"}))
            return {**leaf, "description": f"{meaning} [{unit}]"}
        props = {k: build(v) for k, v in node.items() if k != "*"}
        out: dict = {"type": "object", "properties": props, "additionalProperties": False}
        if "*" in node:
            out["additionalProperties"] = build(node["*"])
        return out

    coll = build(tree["collectives"]["*"])
    tree_schema = build(tree)
    tree_schema["properties"]["collectives"]["properties"]["prefill"] = {
        "type": "object",
        "description": "prefill-only EP kernels (dispatch, combine)",
        "additionalProperties": coll,
    }
    sourced = {
        "type": "object",
        "required": ["value", "source"],
        "properties": {
            "value": {"type": ["string", "number", "array"], "description": "the number, with its unit"},
            "source": {"type": "string", "minLength": 1, "description": "where the number comes from"},
            "mark": {"enum": list(MARKS), "description": "; ".join(f"{k} {v}" for k, v in MARKS.items())},
            "per": {"enum": ["rank", "device", "node", "system"], "description": "what the figure is per"},
        },
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cmperf spec file (chip, system or model)",
        "description": "Generated by cmperf.cli.specs_cmd.spec_schema; key reference: docs/specs.md",
        **tree_schema,
        "required": ["name", "kind"],
        "$defs": {"sourced": sourced},
    }


def key_doc(path: str) -> tuple[str, str]:
    """(unit, meaning) of a spec-file key path ("planes.ib.bandwidth" -> the ``planes.*.bandwidth`` entry)."""
    parts = path.split(".")
    if parts[0] == "collectives" and len(parts) == 4:  # [collectives.prefill.dispatch]
        parts = [parts[0], parts[2], parts[3]]
    for cand in (parts, [parts[0], "*", *parts[2:]], [parts[0], "*"]):
        k = ".".join(cand)
        if k in KEY_DOCS:
            return KEY_DOCS[k]
    raise KeyError(path)


def _toml(v) -> str:
    """A TOML value: strings as JSON-escaped basic strings, inline tables in key order."""
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return repr(v)


def template(raw: dict, like: str, name: str) -> str:
    """The spec ``raw`` (parsed TOML of spec ``like``) renamed ``name``, every key preceded by its unit and
    meaning and, for a sourced value, by its mark and source, which the user replaces with their own."""
    lines = [
        f"# {raw['kind']} spec {name}: a template made by `cmperf specs new --like {like}`.",
        "# Replace each value with your own and its source: where the number comes from (paper and section,",
        '# data sheet, measurement, fit script, or "assumption: ..."), and its mark: '
        + "; ".join(f"{k} {v}" for k, v in MARKS.items())
        + ".",
        "# Check it with `cmperf specs show NAME --spec-dir DIR`; key reference: docs/specs.md.",
    ]

    def entry(path: str, key: str, v) -> None:
        unit, meaning = key_doc(path)
        lines.append(f"# {meaning} [{unit}]")
        if isinstance(v, dict) and "value" in v:
            mark = v.get("mark", "Q")
            lines.append(
                f"# mark {mark} ({MARKS[mark].split(':')[0]}): replace value, source and mark with yours"
            )
        if path == "aliases":  # the original's other names: a copy answering to them would shadow it
            lines.append(f"# aliases = {_toml(v)}  (of {like}; give your own, or none)")
            return
        lines.append(f"{key} = {_toml(name if path == 'name' else v)}")

    def table(prefix: str, t: dict) -> None:
        for k, v in t.items():
            if not (isinstance(v, dict) and "value" not in v):
                entry(f"{prefix}{k}", k, v)
        for k, v in t.items():
            if isinstance(v, dict) and "value" not in v:
                sub = {x: y for x, y in v.items() if not (isinstance(y, dict) and "value" not in y)}
                if sub:
                    lines.extend(["", f"[{prefix}{k}]"])
                    table(f"{prefix}{k}.", sub)
                nested = {x: y for x, y in v.items() if isinstance(y, dict) and "value" not in y}
                if nested:
                    table(f"{prefix}{k}.", nested)

    table("", raw)
    return "\n".join(lines) + "\n"


@specs.command(
    "new",
    epilog="\b\nExamples:\n  cmperf specs new --like hgx-h200 -o my-system.toml\n"
    "  cmperf specs new --like deepseek-r1 -o my-model.toml",
)
@click.option(
    "--like", required=True, help="The spec to copy: a chip, system or model name (or its .toml file)."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The new spec file, NAME.toml: its name is the file name.",
)
@click.option("--spec-dir", "spec_dirs", multiple=True, type=click.Path(), help="Extra folder of spec files.")
@guarded
def new(like, output, spec_dirs):
    """Write a commented template of a new spec: a copy of --like, every key with its unit, meaning, mark
    and source."""
    import re
    from pathlib import Path

    from .. import specs as sp
    from ..errors import CmperfError

    name = Path(output).stem
    if Path(output).suffix != ".toml" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise CmperfError(f"--output: {output} must be NAME.toml, NAME of letters, digits, '.', '_' or '-'")
    kinds = {r["name"]: r["kind"] for r in sp.catalog(spec_dirs)}
    kind = sp._head(Path(like)).get("kind") if Path(like).is_file() else kinds.get(like)
    if kind is None:
        try:
            sp.find(like, "model", spec_dirs, "--like")  # a model alias
            kind = "model"
        except CmperfError:
            raise CmperfError(
                f"--like: unknown spec {like!r}; available: {', '.join(sorted(kinds))}"
            ) from None
    path = sp.find(like, kind, spec_dirs, "--like")
    emit(template(sp._read(path), like, name), output)
