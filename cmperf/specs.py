"""Spec files (TOML) -> validated frozen dataclasses in SI units, and the search path for spec names.

Three kinds: ``chip`` (one rank: a die or a GPU), ``system`` (devices, ranks per device, network planes,
EP collective kernels, overlap policy) and ``model`` (a config.json architecture). Every number is an
inline table ``{ value = "1.6 TB/s", source = "...", mark = "Q|S|I" }``; model architecture integers
share the table's ``source``. Unknown keys, missing sources, bad units and out-of-range values are
errors naming the file and the key.

Search order for a name: ``--spec-dir`` folders, then ``$CMPERF_PATH`` (os.pathsep-separated), then the
built-in library (``hardware/``, ``models/`` beside the package in a checkout, or ``cmperf/data`` in a
wheel). Each folder is searched itself and in its ``hardware/`` and ``models/`` subfolders.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from . import units
from .domains import MAX_DEVICES
from .errors import CmperfError

if TYPE_CHECKING:
    from pathlib import Path

DTYPE_BYTES = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "int4": 0.5,
    # Microscaling formats carry their block scales in the element cost. OCP Microscaling (MX) spec v1.0:
    # blocks of 32 elements share one 8-bit E8M0 scale -> 1 + 1/32 and 0.5 + 1/32 bytes per element.
    # NVFP4 (NVIDIA Blackwell): blocks of 16 FP4 E2M1 values share one FP8 E4M3 scale -> 0.5 + 1/16 (the
    # per-tensor FP32 scale is negligible).
    "mxfp8": 1.0 + 1.0 / 32.0,
    "mxfp4": 0.5 + 1.0 / 32.0,
    "nvfp4": 0.5 + 1.0 / 16.0,
}
#: Element width in bits (scales aside): datatypes of one width compete for the same tensor-core path, so a
#: chip whose rate for one of them is far below the best of that width runs it on a crippled path.
DTYPE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "mxfp8": 8}
DTYPE_BITS |= {"fp4": 4, "int4": 4, "mxfp4": 4, "nvfp4": 4}
#: A datatype whose peak is below this fraction of the chip's best peak of the same width is "crippled"
#: (Chip.crippled): Blackwell Ultra runs INT8 at 153.5 TOPS against FP8 4,500 TFLOPS (3.4%; aiconfigurator
#: systems/b300_sxm.yaml). Every other shipped chip runs its same-width types at 50-100% of each other.
CRIPPLED_FRACTION = 0.25
EFFICIENCY_KEYS = ("gemm_compute", "gemm_memory", "attention_compute", "attention_memory", "vector_memory")
#: Optional efficiency keys and their defaults. pipeline_compute: the fraction of the microbenchmark compute
#: efficiency (gemm_compute, attention_compute) a kernel sustains inside the serving loop (cmperf.roofline).
OPTIONAL_EFFICIENCY = {"pipeline_compute": 1.0}
#: expert_memory: the HBM fraction the routed experts' grouped GEMMs stream their weights at (cmperf.graph's
#: moe.experts.* ops); a file without it streams them at its gemm_memory.
EXPERT_MEMORY = "expert_memory"
OVERHEAD_KEYS = ("gemm", "attention", "vector", "comm")
#: Architecture integers (config.json field names) every model has.
ARCH_KEYS = "hidden_size num_layers num_attention_heads vocab_size max_position_embeddings".split()
#: Attention kinds the op graph builds (cmperf.graph) and the integers each needs. MLA: DeepSeek-V2/V3's
#: latent attention; GQA: grouped-query attention (MHA when num_key_value_heads = heads, MQA when 1).
ATTENTION_KEYS = {
    "mla": ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
    "gqa": ("num_key_value_heads", "head_dim"),
    # DeepSeek-V4's compressed attention (cmperf.attention_v4): MQA of one K=V head of head_dim, a q LoRA,
    # grouped low-rank output (o_groups groups of o_lora_rank), per-layer compression ([layers] attention)
    "dsv4": ("head_dim", "qk_rope_head_dim", "q_lora_rank", "o_lora_rank", "o_groups", "sliding_window"),
    # Kimi Delta Attention hybrids (cmperf.attention_kda: Kimi-Linear, Kimi-K3): "kda" layers (the linear_*
    # integers) beside gated MLA full-attention layers (these MLA integers)
    "kda": ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
}
#: MoE integers, required when n_routed_experts > 0 (a model with 0 routed experts is dense).
MOE_KEYS = ("moe_intermediate_size", "num_experts_per_tok")
#: Optional integers and their defaults: dense-first layers, shared experts, group-limited routing
#: (DeepSeek-V3 §2.1.2), q LoRA (MLA), MTP modules, the top-k sparse-attention indexer (DeepSeek-V3.2:
#: index_topk keys per query chosen by index_n_heads heads of index_head_dim; 0 = dense attention), the
#: sliding window and the attention chunk of the layers whose pattern says so.
ARCH_OPTIONAL = {
    "first_k_dense": 0,
    "intermediate_size": 0,
    "n_routed_experts": 0,
    "n_shared_experts": 0,
    "n_group": 1,
    "topk_group": 1,
    "q_lora_rank": 0,
    "num_mtp_modules": 0,
    "index_n_heads": 0,
    "index_head_dim": 0,
    "index_topk": 0,
    "sliding_window": 0,
    "attention_chunk_size": 0,
    "attn_output_gate": 0,
    "linear_num_key_heads": 0,
    "linear_num_value_heads": 0,
    "linear_key_head_dim": 0,
    "linear_value_head_dim": 0,
    "linear_conv_kernel_dim": 0,
    # DeepSeek-V4: hyper-connection streams (0 or 1: a plain residual), hash-routed first MoE layers, the
    # MTP layer's compress ratio (0 sliding window only, 4, 128)
    "hc_mult": 0,
    "num_hash_layers": 0,
    "mtp_compress_ratio": 0,
    # Kimi-K3 / Kimi-Linear (attention kda only, cmperf.attention_kda): KDA's full-rank output gate (0: the
    # low-rank g_a/g_b pair), the latent MoE's expert width (0: experts in hidden_size) and its RMSNorm
    # (0/1), the attention-residual block size (0: a plain residual)
    "kda_full_rank_gate": 0,
    "routed_expert_hidden_size": 0,
    "latent_moe_norm": 0,
    "attn_res_block_size": 0,
}
#: The fields only the kda attention kind models (cmperf.attention_kda).
KDA_ONLY = ("kda_full_rank_gate", "routed_expert_hidden_size", "latent_moe_norm", "attn_res_block_size")
#: The linear-attention integers a "linear" layer (Gated DeltaNet: Qwen3-Next / Qwen3.5) or a "kda" layer
#: (Kimi Delta Attention: Kimi-Linear / Kimi-K3, key and value heads and dims equal there) needs.
LINEAR_KEYS = (
    "linear_num_key_heads",
    "linear_num_value_heads",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "linear_conv_kernel_dim",
)
#: Per-layer attention variants ([layers] attention) and the integer each needs; per-layer FFN kinds.
LAYER_ATTENTION = {
    "full": "",
    "sliding": "sliding_window",
    "chunked": "attention_chunk_size",
    "linear": "linear_num_value_heads",
    # DeepSeek-V4 (attention dsv4): the window + every 128-token compressed entry / the indexer's top-k of
    # the 4-token compressed entries (cmperf.attention_v4)
    "c128": "sliding_window",
    "c4": "index_topk",
    # Kimi Delta Attention (attention kda): the linear_* integers (heads, head dims, conv kernel)
    "kda": "linear_num_value_heads",
}
#: Layer variants of each attention kind that restricts them (any other kind takes the rest).
KIND_VARIANTS = {"dsv4": ("sliding", "c4", "c128"), "kda": ("kda", "full")}
LAYER_FFN = ("dense", "moe")


@dataclass(frozen=True)
class Chip:
    """One rank's hardware. Peaks are dense FLOP/s per rank by dtype; efficiencies are fractions."""

    name: str
    description: str
    path: str
    rank: str
    peak_flops: dict[str, float]
    cube_cores: int
    vector_cores: int
    hbm_bytes: float
    hbm_bytes_per_s: float
    hbm_reserved_bytes: float
    eff: dict[str, float]
    overhead_s: dict[str, float]
    sources: dict[str, str] = field(repr=False)
    power_w: float | None = None  # key power: per rank (board/TDP watts); None = not known

    def peak(self, dtype: str, where: str = "precision") -> float:
        """Peak FLOP/s for ``dtype``; a clear error when the chip has no such datatype."""
        if dtype not in self.peak_flops:
            have = ", ".join(sorted(self.peak_flops))
            raise CmperfError(
                f"{where}: chip {self.name} has no {dtype} compute (it has {have}); choose one of those"
            )
        return self.peak_flops[dtype]

    def crippled(self, dtype: str) -> tuple[str, float] | None:
        """(best same-width datatype, its peak) when ``dtype``'s peak is below CRIPPLED_FRACTION of it, else
        None. b300: int8 153.5 TOPS against fp8 4,500 TFLOPS -> ("fp8", 4.5e15)."""
        bits = DTYPE_BITS.get(dtype)
        if bits is None or dtype not in self.peak_flops:
            return None
        same = {d: v for d, v in self.peak_flops.items() if DTYPE_BITS.get(d) == bits}
        best = max(same, key=lambda d: same[d])
        if self.peak_flops[dtype] < CRIPPLED_FRACTION * same[best]:
            return best, same[best]
        return None


#: Plane topologies: "switch" (every rank reaches every other at its full per-rank bandwidth: NVSwitch, UB,
#: a fat-tree) or "torus" (a k-ary n-cube, TPU ICI: an all-to-all is bounded by bisection and hop count,
#: cmperf.comm.torus_alltoall_bandwidth).
TOPOLOGIES = ("switch", "torus")


@dataclass(frozen=True)
class Plane:
    """An interconnect plane: per-rank bandwidth per direction, latency, achieved fraction of bandwidth."""

    name: str
    scale: str  # "up" (scale-up domain) or "out"
    domain_devices: int
    bytes_per_s_per_rank: float
    latency_s: float
    efficiency: float
    host_read_efficiency: float | None = None  # reads of host (CPU DRAM, EMS) memory; None: ``efficiency``
    topology: str = "switch"  # one of TOPOLOGIES
    dims: tuple[int, ...] = ()  # torus: chips along each axis (product = domain_devices)
    hop_latency_s: float = 0.0  # torus: per-hop latency added per hop of the group's diameter

    @property
    def host_read_eff(self) -> float:
        """Achieved fraction of the link when a rank reads host memory over this plane (context-cache loads
        from the EMS DRAM pool): ``host_read_efficiency`` where the spec gives it, else ``efficiency``."""
        return self.host_read_efficiency if self.host_read_efficiency is not None else self.efficiency


#: Message deduplication of an EP kernel (cmperf.comm): "per-expert" one message per (token, expert) copy;
#: "per-rank" one per destination rank; "per-domain" one per destination rank inside the scale-up domain and
#: one per destination *domain* over the scale-out plane, forwarded inside that domain over the scale-up
#: plane (DeepEP normal kernels: one RDMA message per node, then NVLink forwarding).
COPIES = ("per-expert", "per-rank", "per-domain")
#: Phases that may override the EP kernels: [collectives.prefill.dispatch] / [collectives.prefill.combine].
#: The decode kernels are [collectives.dispatch] / [collectives.combine] and are every phase's fallback.
PHASE_COLLECTIVES = ("prefill",)
EP_COLLECTIVES = ("dispatch", "combine")
#: The kinds of spec file (a TOML file of another ``kind``, or none, is no spec: scenarios share folders).
SPEC_KINDS = ("chip", "system", "model")
#: Upper bound of a spec quantity when its reader gives none (finite, and far beyond any real part: an
#: infinity or 1e300 in a spec file is a typo, and products of such numbers overflow to inf and NaN).
MAX_QUANTITY = {"bytes": 1e18, "bytes_per_s": 1e18, "flops": 1e21, "s": 3600.0, "per_s": 1e12, "watts": 1e9}


@dataclass(frozen=True)
class Collective:
    """An EP all-to-all kernel: t = alpha + alpha_per_log2_ep*log2(EP) + bytes/(bw*eff) (cmperf.comm)."""

    name: str
    plane: str
    alpha_s: float
    alpha_per_log2_ep_s: float
    scale_bytes: float
    message_align_bytes: float
    copies: str  # one of COPIES
    scaleout_plane: str | None = None
    # "skip": the 1/EP local share stays on the rank; "send": it crosses the link too
    local_copies: str = "skip"
    # achieved fraction of the scale-up / scale-out link for this kernel; None: the plane's efficiency
    efficiency: float | None = None
    scaleout_efficiency: float | None = None


@dataclass(frozen=True)
class Overlap:
    """How one phase overlaps its microbatches (``[overlap.<phase>]`` of a system spec).

    ``policy``: "split-cores" (CM384 decode: the attention stream owns ``attention_cube_cores`` of the
    cube cores, the MoE stream the rest, §4.2) or "compute-comm" (GPUs: compute and communication
    kernels overlap, DeepSeek two-batch overlap). ``comm_cube_cores``: cube cores (SMs) the comm kernels
    hold while the other microbatch computes (DeepEP normal: 20 of 132 H800 SMs). ``attention_tp_devices``:
    devices one prompt's attention spans in prefill (None: cmperf.prefill's default; 1 = data parallel)."""

    policy: str = "compute-comm"
    attention_cube_cores: int = 0
    attention_vector_cores: int = 0
    comm_cube_cores: int = 0
    attention_tp_devices: int | None = None


@dataclass(frozen=True)
class System:
    name: str
    description: str
    path: str
    chip: Chip
    num_devices: int
    ranks_per_device: int
    devices_per_node: int
    cpu_dram_per_node_bytes: float
    planes: dict[str, Plane]
    collectives: dict[str, Collective]
    overlap: dict[str, Overlap]
    sources: dict[str, str] = field(repr=False)
    # per-phase EP kernels that replace ``collectives`` in that phase: {"prefill": {"dispatch": ...}}
    phase_collectives: dict[str, dict[str, Collective]] = field(default_factory=dict)
    kv_plane: str = ""  # key kv_transfer_plane; "" = default rule (kv_transfer_plane())
    power_w: float | None = None  # key power: the whole system's watts (per node: scaled); None = not known

    def power_per_device(self) -> tuple[float, str] | None:
        """(watts per device, what they cover): the system's power / num_devices where the spec gives it
        ("system": GPUs, CPUs, switches, cooling of the rack or node), else the chip's power x ranks per
        device ("chip": the accelerator alone); None when neither is known (never a guess)."""
        if self.power_w is not None:
            return self.power_w / self.num_devices, "system"
        if self.chip.power_w is not None:
            return self.chip.power_w * self.ranks_per_device, "chip"
        return None

    @property
    def num_ranks(self) -> int:
        return self.num_devices * self.ranks_per_device

    def collective(self, name: str, phase: str = "decode") -> Collective:
        """The EP kernel ``name`` used in ``phase``: the phase's own ([collectives.prefill.dispatch]) when
        the spec defines it, else the decode one ([collectives.dispatch]); CM384 has one set (Table 7)."""
        c = self.phase_collectives.get(phase, {}).get(name) or self.collectives.get(name)
        if c is None:
            raise CmperfError(f"{self.path}: [collectives.{name}] is missing; EP needs dispatch and combine")
        return c

    def scaleout_plane(self, phase: str = "prefill") -> str:
        """The scale-out plane: the dispatch kernel's ``scaleout_plane``, else the first plane with
        scale = "out", else the dispatch plane (a single-plane system). dgx-h800: ib; CloudMatrix384: rdma."""
        d = self.phase_collectives.get(phase, {}).get("dispatch") or self.collectives.get("dispatch")
        if d is not None and d.scaleout_plane:
            return d.scaleout_plane
        out = [p.name for p in self.planes.values() if p.scale == "out"]
        if out:
            return out[0]
        return d.plane if d is not None else next(iter(self.planes))

    def scaleup_plane(self) -> str:
        """The scale-up plane intra-instance collectives (TP all-reduce, SP-TP-SP) ride: the dispatch
        kernel's plane, else the first plane with scale = "up", else the first plane."""
        d = self.collectives.get("dispatch")
        if d is not None:
            return d.plane
        up = [p.name for p in self.planes.values() if p.scale == "up"]
        return up[0] if up else next(iter(self.planes))

    def domain_ranks(self, plane_name: str) -> int:
        """Ranks in one domain of ``plane_name`` (its domain_devices x ranks per device): a collective over
        more ranks than this crosses the scale-out plane."""
        return self.planes[plane_name].domain_devices * self.ranks_per_device

    def kv_transfer_plane(self) -> str:
        """Plane that moves prefill's KV cache to the decode instances: key ``kv_transfer_plane``, else the
        scale-out plane (CM384 §4: "KV moves prefill->decode over the RDMA plane")."""
        return self.kv_plane or self.scaleout_plane("prefill")

    def overlap_for(self, phase: str) -> Overlap:
        """The phase's overlap policy; a spec without ``[overlap.<phase>]`` overlaps compute and comm."""
        return self.overlap.get(phase) or Overlap()

    def plane(self, name: str, where: str = "plane") -> Plane:
        if name not in self.planes:
            raise CmperfError(
                f"{where}: system {self.name} has no plane {name!r} (it has {', '.join(self.planes)})"
            )
        return self.planes[name]


@dataclass(frozen=True)
class Model:
    """A transformer architecture (config.json field names in ``arch``): an attention kind (``attention``,
    a key of ATTENTION_KEYS), and per layer an attention variant and an FFN kind (``layer_attention``,
    ``layer_ffn``: num_layers entries each; default all "full", first_k_dense "dense" then "moe")."""

    name: str
    description: str
    path: str
    aliases: tuple[str, ...]
    arch: dict[str, int]
    popularity_zipf: float
    sources: dict[str, str] = field(repr=False)
    attention: str = "mla"
    layer_attention: tuple[str, ...] = ()
    layer_ffn: tuple[str, ...] = ()

    def __getattr__(self, key: str) -> int:
        arch: dict[str, int] = self.__dict__.get("arch", {})
        if key in arch:
            return arch[key]
        raise AttributeError(key)

    @property
    def is_moe(self) -> bool:
        """True when some layer routes to experts (a dense model has none)."""
        return "moe" in self.layer_ffn


# ---------------------------------------------------------------------------------------------- search path


# A command's lookup of a built-in spec runs on str paths (os.path, ``_locate``): pathlib costs ~2.5 ms of a
# `cmperf decode` (it imports urllib.parse and ipaddress). The public functions answer with Path objects.


def _builtin_dir() -> str:
    """``builtin_dirs()[0]`` as a str path."""
    here = os.path.dirname(os.path.realpath(__file__))
    data = os.path.join(here, "data")
    return data if os.path.isdir(data) else os.path.dirname(here)


def builtin_dirs() -> list[Path]:
    """Built-in spec folders: cmperf/data in a wheel, else the repository root beside the package."""
    from pathlib import Path

    return [Path(_builtin_dir())]


def search_dirs(spec_dirs: tuple[str, ...] | list[str] = ()) -> list[Path]:
    from pathlib import Path

    dirs = [Path(d) for d in spec_dirs]
    for d in dirs:
        if not d.is_dir():
            raise CmperfError(f"--spec-dir: {d} is not a folder; give a folder holding .toml spec files")
    env = os.environ.get("CMPERF_PATH", "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return dirs + builtin_dirs()


def _candidate_files(dirs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        for sub in (d, d / "hardware", d / "models"):
            if sub.is_dir():
                files += sorted(sub.glob("*.toml"))
    return files


def _read(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CmperfError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    except UnicodeDecodeError:
        raise CmperfError(f"{path}: not UTF-8 text (a binary file?); a spec file is UTF-8 TOML") from None
    except OSError as e:
        raise CmperfError(f"{path}: cannot read ({e.strerror})") from None


_HEAD_KEYS = ("name", "kind", "description", "aliases")
_HEAD_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*=")
_HEAD_STRING = re.compile(r'^([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"\\]*)"\s*(?:#.*)?$')


def _head(path: str | Path) -> dict[str, Any]:
    """The top-level keys a lookup needs (name, kind, description, aliases): each parsed from its own line
    before the first table header, so that finding a spec by name does not parse every file on the
    search path; a header these lines do not parse goes through tomllib whole."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CmperfError(f"{path}: not UTF-8 text (a binary file?); a spec file is UTF-8 TOML") from None
    except OSError as e:
        raise CmperfError(f"{path}: cannot read ({e.strerror}); fix the file") from None
    lines: list[str] = []
    head: dict[str, Any] = {}
    whole = False  # a header line tomllib alone cannot parse: parse the header whole
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            break
        lines.append(line)
        m = _HEAD_LINE.match(stripped)
        if m and m.group(1) in _HEAD_KEYS:
            plain = _HEAD_STRING.match(stripped)
            if plain:  # key = "plain string" (the common case, no TOML parse needed)
                head[plain.group(1)] = plain.group(2)
                continue
            try:
                head.update(tomllib.loads(stripped))
            except tomllib.TOMLDecodeError:
                whole = True
                break
    if not whole:
        return head
    try:
        return tomllib.loads("\n".join(lines))
    except tomllib.TOMLDecodeError:
        return _read(path)  # the full parse reports the error with its position


def catalog(spec_dirs: tuple[str, ...] | list[str] = ()) -> list[dict[str, str]]:
    """Every spec found on the search path, first occurrence of a name wins: name, kind, description, path."""
    seen: dict[str, dict[str, str]] = {}
    for path in _candidate_files(search_dirs(spec_dirs)):
        raw = _head(path)
        kind = raw.get("kind")
        if kind not in ("chip", "system", "model") or "name" not in raw:
            continue  # scenarios and other TOML files share folders
        name = str(raw["name"])
        if name not in seen:
            seen[name] = {
                "name": name,
                "kind": kind,
                "description": str(raw.get("description", "")),
                "path": str(path),
            }
    return sorted(seen.values(), key=lambda r: (r["kind"], r["name"]))


def _aliases(path: str | Path, head: dict[str, Any]) -> list[str]:
    """A spec header's ``aliases``: a list of names, or CmperfError naming the file and the key."""
    aliases = head.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise CmperfError(f'{path}: key aliases: expected a list of names, e.g. ["r1"], got {aliases!r}')
    return aliases


def _named_file(d: str | Path, name: str) -> str | None:
    """The file ``name``.toml of search folder ``d`` (itself, then hardware/, models/), if there is one."""
    if name in ("", ".") or os.path.basename(name) != name:  # a path, not a file stem
        return None
    for sub in (d, os.path.join(d, "hardware"), os.path.join(d, "models")):
        path = os.path.join(sub, f"{name}.toml")
        if os.path.isfile(path):
            return path
    return None


def _scan(name: str, kind: str, files: list[Path]) -> Path | None:
    """The first of ``files`` that is the ``kind`` spec ``name`` (its name, an alias or its file stem)."""
    for path in files:
        raw = _head(path)
        found = raw.get("kind")
        aliases = _aliases(path, raw) if found in SPEC_KINDS else []
        if found != kind:
            if path.stem == name:  # a file named like the spec asked for: never skip it silently
                if found is None:
                    _read(path)  # not TOML at all: that error (line and column), not "no kind"
                what = f"has kind = {found!r}" if found is not None else "has no kind (empty or unfinished?)"
                raise CmperfError(
                    f'{path}: named like the {kind} {name!r} but {what}; write kind = "{kind}" or rename '
                    f"the file"
                )
            continue
        if raw.get("name") == name or name in aliases or path.stem == name:
            return path
    return None


def _named_spec(d: str | Path, name: str, kind: str) -> str | None:
    """``_named_file`` of folder ``d`` when it holds a spec of ``kind`` (its header alone is read)."""
    named = _named_file(d, name)
    if named is None:
        return None
    raw = _head(named)
    if raw.get("kind") != kind:
        return None
    _aliases(named, raw)
    return named


def find(name: str, kind: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "") -> Path:
    """Path of the spec ``name`` (or a model alias) of ``kind``; the error lists what exists.

    Folders are searched in order. A folder holding ``name``.toml of that kind answers with that file
    alone (the built-in specs are named like their files): a lookup then reads one header, not the
    header of every file on the search path (~3 ms of a `cmperf decode`). Other folders, aliases and
    names that differ from their file's stem go through every header of the folder."""
    from pathlib import Path

    flag = flag or f"--{'system' if kind == 'system' else kind}"
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        _aliases(p, _head(p))
        return p
    for d in search_dirs(spec_dirs):
        named = _named_spec(d, name, kind)
        if named is not None:
            return Path(named)
        found = _scan(name, kind, _candidate_files([d]))  # (a named file of another kind: its error)
        if found is not None:
            return found
    have = ", ".join(r["name"] for r in catalog(spec_dirs) if r["kind"] == kind) or "none"
    raise CmperfError(f"{flag}: unknown {kind} {name!r}; available: {have} (or add a folder with --spec-dir)")


def _suffix(file: str) -> str:
    """The suffix of a file name as pathlib has it: from the last dot, unless it leads or ends the name."""
    dot = file.rfind(".")
    return file[dot:] if 0 < dot < len(file) - 1 else ""


def _json_path(name: str) -> Path | None:
    """``Path(name)`` when it names a .json file (a config.json), else None; pathlib only for such a name."""
    if ".json" not in name:
        return None
    from pathlib import Path

    path = Path(name)
    return path if path.suffix == ".json" else None


def _locate(name: str, kind: str, spec_dirs: tuple[str, ...] | list[str], flag: str) -> str | Path:
    """``find``'s answer; without --spec-dir and CMPERF_PATH, a built-in file named like the spec (a
    command's usual lookup) as a str path, without pathlib."""
    if not spec_dirs and not os.environ.get("CMPERF_PATH") and ".toml" not in name:  # (a .toml path: find)
        named = _named_spec(_builtin_dir(), name, kind)
        if named is not None:
            return named
    return find(name, kind, spec_dirs, flag)


# ---------------------------------------------------------------------------------------------- validation


class _Table:
    """Reads one TOML table, tracking which keys were used so unknown keys can be reported."""

    def __init__(self, raw: dict[str, Any], path: str | Path, prefix: str, sources: dict[str, str]) -> None:
        self.raw, self.path, self.prefix, self.sources = raw, path, prefix, sources
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}: key {self.prefix}{key}"

    def _entry(self, key: str, required: bool) -> dict[str, Any] | None:
        self.used.add(key)
        if key not in self.raw:
            if required:
                raise CmperfError(f"{self.where(key)} is missing; add it with a value and a source")
            return None
        entry = self.raw[key]
        if not isinstance(entry, dict) or "value" not in entry:
            raise CmperfError(
                f'{self.where(key)}: write {{ value = ..., source = "..." }} so every number has a source'
            )
        extra = set(entry) - {"value", "source", "mark", "per"}
        if extra:
            raise CmperfError(
                f"{self.where(key)}: unknown field {sorted(extra)[0]!r} (allowed: value, source, mark, per)"
            )
        if not str(entry.get("source", "")).strip():
            raise CmperfError(f"{self.where(key)} has no source; every number needs one")
        if entry.get("mark", "Q") not in ("Q", "S", "I"):
            raise CmperfError(f"{self.where(key)}: mark must be Q (quoted), S (secondary) or I (derived)")
        self.sources[self.prefix + key] = str(entry["source"])
        return entry

    def quantity(
        self,
        key: str,
        kind: str,
        lo: float = 0.0,
        hi: float = float("inf"),
        required: bool = True,
        default: float | None = None,
    ) -> float:
        entry = self._entry(key, required)
        if entry is None:
            assert default is not None, f"{key}: an optional quantity needs a default"
            return default
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise CmperfError(
                f"{self.where(key)}: {value!r} is not a quantity; write a number or a string with its unit, "
                f'e.g. value = "1.6 TB/s"'
            )
        v = units.parse(value, kind, where=self.where(key))
        hi = min(hi, MAX_QUANTITY.get(kind, math.inf))
        if not (math.isfinite(v) and lo <= v <= hi):
            raise CmperfError(f"{self.where(key)}: {value!r} is out of range [{lo:g}, {hi:g}] (finite)")
        return v

    def number(self, key: str, lo: float, hi: float, required: bool = True, default: float = 0.0) -> float:
        """A plain number (no unit) in [lo, hi]."""
        entry = self._entry(key, required)
        if entry is None:
            return default
        v = entry["value"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not (math.isfinite(v) and lo <= v <= hi):
            raise CmperfError(f"{self.where(key)}: expected a plain number in [{lo:g}, {hi:g}], got {v!r}")
        return float(v)

    def integer(self, key: str, lo: int = 1, hi: int = 10**9, required: bool = True, default: int = 0) -> int:
        entry = self._entry(key, required)
        if entry is None:
            return default
        v = entry["value"]
        if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
            raise CmperfError(f"{self.where(key)}: expected a whole number in [{lo}, {hi}], got {v!r}")
        return v

    @overload
    def fraction(self, key: str, required: bool = ..., default: float = ..., lo: float = ...) -> float: ...
    @overload
    def fraction(self, key: str, required: bool = ..., *, default: None, lo: float = ...) -> float | None: ...
    def fraction(
        self, key: str, required: bool = True, default: float | None = 1.0, lo: float = 0.0
    ) -> float | None:
        entry = self._entry(key, required)
        if entry is None:
            return default
        v = entry["value"]
        if (
            not isinstance(v, int | float)
            or isinstance(v, bool)
            or not (lo <= v <= 1.0)
            or (v == 0 and lo == 0.0)
        ):
            raise CmperfError(f"{self.where(key)}: expected a fraction in (0, 1], got {v!r}")
        return float(v)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """An optional entry's value, one of ``choices`` (``default`` where the key is absent)."""
        entry = self._entry(key, False)
        v = default if entry is None else entry["value"]
        if v not in choices:
            raise CmperfError(f"{self.where(key)}: expected one of {', '.join(choices)}, got {v!r}")
        return v

    def string(
        self, key: str, choices: tuple[str, ...] | None = None, required: bool = True, default: str = ""
    ) -> str:
        self.used.add(key)
        if key not in self.raw:
            if required:
                raise CmperfError(f"{self.where(key)} is missing")
            return default
        v = self.raw[key]
        if not isinstance(v, str) or (choices and v not in choices):
            raise CmperfError(f"{self.where(key)}: expected one of {', '.join(choices or ())}, got {v!r}")
        return v

    def sub(self, key: str, required: bool = True) -> _Table:
        self.used.add(key)
        raw = self.raw.get(key)
        if raw is None:
            if required:
                raise CmperfError(f"{self.where(key)}: table [{self.prefix}{key}] is missing")
            raw = {}
        if not isinstance(raw, dict):
            raise CmperfError(f"{self.where(key)}: expected a table")
        return _Table(raw, self.path, f"{self.prefix}{key}.", self.sources)

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise CmperfError(
                f"{self.where(unknown[0])}: unknown key; check the spelling (see `cmperf specs show`)"
            )


def _header(t: _Table, kind: str) -> tuple[str, str]:
    if "kind" not in t.raw:
        raise CmperfError(f'{t.path}: has no kind (empty or unfinished?); write kind = "{kind}" at the top')
    if t.raw.get("kind") != kind:
        raise CmperfError(f"{t.path}: kind = {t.raw.get('kind')!r}, expected {kind!r}")
    t.used.add("kind")
    name = t.string("name")
    file = os.path.basename(t.path)
    suffix = _suffix(file)
    stem = file[: len(file) - len(suffix)]
    if name != stem and suffix == ".toml":  # a config.json is named by its importer
        raise CmperfError(f"{t.path}: name = {name!r} must match the file name {stem!r}")
    return name, t.string("description", required=False)


def load_chip(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--chip") -> Chip:
    path = _locate(name, "chip", spec_dirs, flag)
    sources: dict[str, str] = {}
    t = _Table(_read(path), path, "", sources)
    name, desc = _header(t, "chip")
    rank = t.string("rank", ("die", "gpu", "device"))
    peak_t = t.sub("peak")
    peaks = {d: peak_t.quantity(d, "flops", lo=1e9) for d in DTYPE_BYTES if d in peak_t.raw}
    if not peaks:
        raise CmperfError(f"{path}: [peak] needs at least one datatype ({', '.join(DTYPE_BYTES)})")
    peak_t.done()
    cores = t.sub("cores")
    cube, vector = cores.integer("cube"), cores.integer("vector")
    cores.done()
    hbm = t.sub("hbm")
    cap = hbm.quantity("capacity", "bytes", lo=1e9)
    bw = hbm.quantity("bandwidth", "bytes_per_s", lo=1e9)
    reserved = hbm.quantity("reserved", "bytes", hi=cap, required=False, default=0.0)
    hbm.done()
    eff_t = t.sub("efficiency")
    eff = {k: eff_t.fraction(k) for k in EFFICIENCY_KEYS}
    eff.update({k: eff_t.fraction(k, required=False, default=d) for k, d in OPTIONAL_EFFICIENCY.items()})
    eff[EXPERT_MEMORY] = eff_t.fraction(EXPERT_MEMORY, required=False, default=eff["gemm_memory"])
    eff_t.done()
    ov = t.sub("overhead")
    overhead = {k: ov.quantity(k, "s", hi=1e-2) for k in OVERHEAD_KEYS}
    ov.done()
    # optional; 0 stands for "absent" and is out of range in a file (a power must be > 0: lo = 1 W)
    power = t.quantity("power", "watts", lo=1.0, required=False, default=0.0) or None
    t.done()
    return Chip(
        name, desc, str(path), rank, peaks, cube, vector, cap, bw, reserved, eff, overhead, sources, power
    )


def load_system(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--system") -> System:
    path = _locate(name, "system", spec_dirs, flag)
    sources: dict[str, str] = {}
    t = _Table(_read(path), path, "", sources)
    name, desc = _header(t, "system")
    chip = load_chip(t.string("chip"), spec_dirs, flag=f"{path}: key chip")
    num_devices = t.integer("num_devices", hi=MAX_DEVICES)
    ranks_per_device = t.integer("ranks_per_device", hi=16)
    devices_per_node = t.integer("devices_per_node", hi=num_devices)
    dram = t.quantity("cpu_dram_per_node", "bytes", required=False, default=0.0)
    power = _system_power(t, chip, num_devices, ranks_per_device, devices_per_node)
    planes: dict[str, Plane] = {}
    planes_t = t.sub("planes")
    for pname in planes_t.raw:
        p = planes_t.sub(pname)
        per = (
            p.raw.get("bandwidth", {}).get("per", "rank")
            if isinstance(p.raw.get("bandwidth"), dict)
            else "rank"
        )
        ranks_per = {"rank": 1, "device": ranks_per_device, "node": ranks_per_device * devices_per_node}
        if not isinstance(per, str) or per not in ranks_per:
            raise CmperfError(f"{p.where('bandwidth')}: per must be rank, device or node, got {per!r}")
        bw = p.quantity("bandwidth", "bytes_per_s", lo=1e6) / ranks_per[per]
        scale = p.string("scale", ("up", "out"))
        domain = p.integer("domain_devices", hi=10**6)
        latency = p.quantity("latency", "s", hi=1e-2)
        eff = p.fraction("efficiency")
        host_eff = p.fraction("host_read_efficiency", required=False, default=None)
        topology = p.string("topology", TOPOLOGIES, required=False, default="switch")
        dims: tuple[int, ...] = ()
        hop = 0.0
        if topology == "torus":
            dims = _torus_dims(p, domain, num_devices)
            hop = p.quantity("hop_latency", "s", hi=1e-3)
        planes[pname] = Plane(pname, scale, domain, bw, latency, eff, host_eff, topology, dims, hop)
        p.done()
    planes_t.done()
    if not planes:
        raise CmperfError(f"{path}: [planes] needs at least one plane")
    colls: dict[str, Collective] = {}
    phase_colls: dict[str, dict[str, Collective]] = {}
    coll_t = t.sub("collectives")
    for cname in coll_t.raw:
        if cname in PHASE_COLLECTIVES:
            ph = coll_t.sub(cname)
            for sub in ph.raw:
                if sub not in EP_COLLECTIVES:
                    raise CmperfError(f"{ph.where(sub)}: unknown collective ({', '.join(EP_COLLECTIVES)})")
                phase_colls.setdefault(cname, {})[sub] = _collective(ph.sub(sub), sub, planes)
            ph.done()
        elif cname in EP_COLLECTIVES:
            colls[cname] = _collective(coll_t.sub(cname), cname, planes)
        else:
            allowed = [*EP_COLLECTIVES, *(f"{p}.{c}" for p in PHASE_COLLECTIVES for c in EP_COLLECTIVES)]
            raise CmperfError(f"{coll_t.where(cname)}: unknown collective ({', '.join(allowed)})")
    coll_t.done()
    kv_plane = t.string("kv_transfer_plane", tuple(planes), required=False, default="")
    overlap: dict[str, Overlap] = {}
    ov_t = t.sub("overlap", required=False)
    for phase in ov_t.raw:
        if phase not in ("decode", "prefill"):
            raise CmperfError(f"{ov_t.where(phase)}: unknown phase (decode, prefill)")
        o = ov_t.sub(phase)
        policy = o.string("policy", ("split-cores", "compute-comm"))
        rec: dict[str, Any] = {"policy": policy}
        if policy == "split-cores" and min(chip.cube_cores, chip.vector_cores) < 2:
            # the chip cannot be split (the system file is right; the chip lacks the cores)
            raise CmperfError(
                f"{chip.path}: key cores: chip {chip.name} has {chip.cube_cores} cube and "
                f"{chip.vector_cores} vector core(s), but {path} splits them between two streams "
                f'([overlap.{phase}] policy = "split-cores"): it needs at least 2 of each; fix the chip, '
                f'or use policy = "compute-comm"'
            )
        if policy == "split-cores":
            rec["attention_cube_cores"] = o.integer("attention_cube_cores", hi=chip.cube_cores - 1)
            rec["attention_vector_cores"] = o.integer("attention_vector_cores", hi=chip.vector_cores - 1)
        elif phase == "prefill":
            # cube cores (SMs) the comm kernels hold while the other microbatch computes (DeepEP normal
            # kernels: 20 of 132 H800 SMs); the compute stream gets the rest when microbatches > 1
            rec["comm_cube_cores"] = o.integer(
                "comm_cube_cores", lo=0, hi=chip.cube_cores - 1, required=False, default=0
            )
        if phase == "prefill" and "attention_tp_devices" in o.raw:
            # devices one prompt's attention is spread over (CM384 SP-TP-SP; 1 = data-parallel attention)
            rec["attention_tp_devices"] = o.integer("attention_tp_devices", lo=1, hi=num_devices)
        o.done()
        overlap[phase] = Overlap(**rec)
    ov_t.done()
    t.done()
    return System(
        name,
        desc,
        str(path),
        chip,
        num_devices,
        ranks_per_device,
        devices_per_node,
        dram,
        planes,
        colls,
        overlap,
        sources,
        phase_colls,
        kv_plane,
        power,
    )


def _system_power(
    t: _Table, chip: Chip, num_devices: int, ranks_per_device: int, devices_per_node: int
) -> float | None:
    """A system file's optional ``power = { value = "132 kW", per = "system" | "node", source = ... }`` as
    the whole system's watts (per node: x num_devices / devices_per_node); None when absent. A system that
    draws less per device than its chips' own ``power`` is an error (the file or the chip is wrong)."""
    watts = t.quantity("power", "watts", lo=1.0, required=False, default=0.0)  # 0: absent (lo = 1 W)
    if not watts:
        return None
    per = t.raw["power"].get("per", "system")
    if per not in ("system", "node"):
        raise CmperfError(f"{t.where('power')}: per must be system or node, got {per!r}")
    total = watts * (num_devices / devices_per_node if per == "node" else 1.0)
    if chip.power_w is not None and total / num_devices < chip.power_w * ranks_per_device:
        raise CmperfError(
            f"{t.where('power')}: {total / num_devices:,.0f} W per device is below its chip {chip.name}'s "
            f"own {chip.power_w * ranks_per_device:,.0f} W; fix the system or the chip power"
        )
    return total


def _torus_dims(p: _Table, domain: int, num_devices: int) -> tuple[int, ...]:
    """A torus plane's ``dims = { value = [x, y, z], source = ... }``: whole numbers >= 1 whose product is
    the plane's domain_devices and at most the system's devices (a torus larger than the pod is an error)."""
    entry = p._entry("dims", True)
    assert entry is not None
    v = entry["value"]
    if (
        not isinstance(v, list)
        or not 1 <= len(v) <= 6
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
    ):
        raise CmperfError(
            f"{p.where('dims')}: expected a list of 1-6 whole numbers >= 1, e.g. [4, 4, 4]; got {v!r}"
        )
    n = math.prod(v)
    if n > num_devices:
        raise CmperfError(
            f"{p.where('dims')}: a {'x'.join(map(str, v))} torus is {n} chips, larger than the system's "
            f"num_devices = {num_devices}; shrink dims or raise num_devices"
        )
    if n != domain:
        raise CmperfError(
            f"{p.where('dims')}: the {'x'.join(map(str, v))} torus is {n} chips but domain_devices = "
            f"{domain}; make them equal"
        )
    return tuple(v)


def _collective(c: _Table, cname: str, planes: dict[str, Plane]) -> Collective:
    """One [collectives.*] table (schema: see Collective and cmperf.comm)."""
    plane = c.string("plane", tuple(planes))
    scaleout = c.string("scaleout_plane", tuple(planes), required=False, default="") or None
    coll = Collective(
        cname,
        plane,
        c.quantity("alpha", "s", hi=1e-2),
        c.quantity("alpha_per_log2_ep", "s", hi=1e-3),
        c.quantity("scale_bytes", "bytes", hi=1e6),
        c.quantity("message_align", "bytes", lo=1.0, hi=1e6),
        c.string("copies", COPIES),
        scaleout,
        c.string("local_copies", ("skip", "send"), required=False, default="skip"),
        c.fraction("efficiency", required=False, default=None),
        c.fraction("scaleout_efficiency", required=False, default=None),
    )
    if coll.scaleout_efficiency is not None and scaleout is None:
        raise CmperfError(f"{c.where('scaleout_efficiency')}: needs scaleout_plane (the plane it applies to)")
    c.done()
    return coll


#: Upper bounds of the architecture integers (beyond any published model by orders of magnitude; a bound
#: keeps a typo from overflowing the arithmetic). Other keys: 2**20.
ARCH_MAX = {"vocab_size": 1 << 24, "max_position_embeddings": 1 << 27, "intermediate_size": 1 << 22}


def _check_architecture(a: _Table, arch: dict[str, int]) -> None:
    """Structure the op graph relies on, each violation named by key: layer counts, top-k within the
    experts, group-limited routing (n_group divides the routed experts, topk_group <= n_group, and the
    top-k experts fit in the topk_group groups a token may use: DeepSeek-V3 §2.1.2), KV heads dividing the
    query heads (GQA), the sparse-attention indexer given whole."""
    if arch["first_k_dense"] > arch["num_layers"]:
        raise CmperfError(
            f"{a.where('first_k_dense')}: {arch['first_k_dense']} exceeds num_layers {arch['num_layers']}"
        )
    kv = arch.get("num_key_value_heads")
    if kv is not None and arch["num_attention_heads"] % kv:
        raise CmperfError(
            f"{a.where('num_key_value_heads')}: {kv} KV heads do not divide the "
            f"{arch['num_attention_heads']} attention heads"
        )
    _check_dsv4(a, arch)
    index = [arch[k] for k in ("index_n_heads", "index_head_dim", "index_topk")]
    if any(index) and not all(index):
        raise CmperfError(
            f"{a.where('index_topk')}: the sparse-attention indexer needs index_n_heads, index_head_dim and "
            "index_topk all above 0 (or all 0 for dense attention)"
        )
    r = arch["n_routed_experts"]
    if not r:
        return
    k, g, tg = arch["num_experts_per_tok"], arch["n_group"], arch["topk_group"]
    if k > r:
        raise CmperfError(f"{a.where('num_experts_per_tok')}: top-{k} exceeds the {r} routed experts")
    if r % g:
        raise CmperfError(f"{a.where('n_group')}: {g} groups do not divide the {r} routed experts")
    if tg > g:
        raise CmperfError(f"{a.where('topk_group')}: {tg} exceeds n_group {g}")
    if k > tg * (r // g):
        raise CmperfError(
            f"{a.where('num_experts_per_tok')}: top-{k} does not fit in topk_group {tg} groups of "
            f"{r // g} experts"
        )


def _check_dsv4(a: _Table, arch: dict[str, int]) -> None:
    """DeepSeek-V4's integers: o_groups dividing the heads, the rope slice inside head_dim, an MTP compress
    ratio of 0, 4 or 128, hash layers within the layers; its fields only with attention dsv4."""
    if "o_groups" not in arch:
        for k in ("hc_mult", "num_hash_layers", "mtp_compress_ratio"):
            if arch[k]:
                raise CmperfError(f'{a.where(k)}: a DeepSeek-V4 field; it needs attention = "dsv4"')
        return
    if arch["num_attention_heads"] % arch["o_groups"]:
        raise CmperfError(
            f"{a.where('o_groups')}: {arch['o_groups']} groups do not divide the "
            f"{arch['num_attention_heads']} attention heads"
        )
    if arch["qk_rope_head_dim"] >= arch["head_dim"]:
        raise CmperfError(f"{a.where('qk_rope_head_dim')}: must be below head_dim {arch['head_dim']}")
    if arch["mtp_compress_ratio"] not in (0, 4, 128):
        raise CmperfError(
            f"{a.where('mtp_compress_ratio')}: expected 0, 4 or 128, got {arch['mtp_compress_ratio']}"
        )
    if arch["num_hash_layers"] > arch["num_layers"]:
        raise CmperfError(f"{a.where('num_hash_layers')}: exceeds num_layers {arch['num_layers']}")


def _check_kda(a: _Table, arch: dict[str, int], attention: str) -> None:
    """The Kimi-K3 / Kimi-Linear integers (cmperf.attention_kda): only with attention kda; flags 0 or 1; a
    latent expert width below hidden_size, on a model with routed experts; its norm only with it; no MTP
    modules (SGLang 0.5.23 has no Kimi-K3 / Kimi-Linear NextN module)."""
    if attention != "kda":
        for k in KDA_ONLY:
            if arch[k]:
                raise CmperfError(f'{a.where(k)}: a Kimi-K3 / Kimi-Linear field; it needs attention = "kda"')
        return
    for k in ("kda_full_rank_gate", "latent_moe_norm", "attn_output_gate"):
        if arch[k] > 1:
            raise CmperfError(f"{a.where(k)}: expected 0 or 1, got {arch[k]}")
    r = arch["routed_expert_hidden_size"]
    if r and (r >= arch["hidden_size"] or not arch["n_routed_experts"]):
        raise CmperfError(
            f"{a.where('routed_expert_hidden_size')}: {r} must be below hidden_size {arch['hidden_size']} "
            "on a model with routed experts (0: experts in the hidden size)"
        )
    if arch["latent_moe_norm"] and not r:
        raise CmperfError(f"{a.where('latent_moe_norm')}: needs routed_expert_hidden_size > 0")
    if arch["num_mtp_modules"]:
        raise CmperfError(
            f"{a.where('num_mtp_modules')}: no MTP module of a kda model is modelled (SGLang 0.5.23 has "
            "none for Kimi-K3 / Kimi-Linear); use 0"
        )


def _arch_int(a: _Table, key: str, lo: int) -> int:
    a.used.add(key)
    v = a.raw.get(key)
    hi = ARCH_MAX.get(key, 1 << 20)
    if v is None:
        raise CmperfError(f"{a.where(key)} is missing; add it (a whole number from the config.json)")
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise CmperfError(f"{a.where(key)}: expected a whole number in [{lo}, {hi}], got {v!r}")
    return v


def _pattern(
    t: _Table, key: str, choices: tuple[str, ...], layers: int, default: tuple[str, ...]
) -> tuple[str, ...]:
    """A per-layer list: one entry per layer, or a period repeated over the layers (num_layers % len == 0)."""
    t.used.add(key)
    v = t.raw.get(key)
    if v is None:
        return default
    if not isinstance(v, list) or not v or any(x not in choices for x in v):
        raise CmperfError(f"{t.where(key)}: expected a list of {', '.join(choices)}, got {v!r}")
    if layers % len(v):
        raise CmperfError(
            f"{t.where(key)}: {len(v)} entries neither equal nor divide num_layers {layers}; give one per "
            "layer or a repeating period"
        )
    return tuple(v) * (layers // len(v))


def _layers(t: _Table, arch: dict[str, int], kind: str = "mla") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The [layers] table: per-layer attention variants and FFN kinds, each checked against the integers
    it needs (a "sliding" layer needs sliding_window, a "moe" layer routed experts) and the attention
    ``kind`` (dsv4 layers are sliding, c4 or c128, and only dsv4 has c4 / c128 layers)."""
    n = arch["num_layers"]
    lt = t.sub("layers", required=False)
    if lt.raw:
        lt.string("source")
    ffn_default = ("dense",) * arch["first_k_dense"] + ("moe" if arch["n_routed_experts"] else "dense",) * (
        n - arch["first_k_dense"]
    )
    attention = _pattern(lt, "attention", tuple(LAYER_ATTENTION), n, ("full",) * n)
    ffn = _pattern(lt, "ffn", LAYER_FFN, n, ffn_default)
    # a kind with no list of its own takes every variant but those only another kind has (c4, c128)
    only = {v for vs in KIND_VARIANTS.values() for v in vs} - {"sliding", "full"}
    allowed = KIND_VARIANTS.get(kind, tuple(v for v in LAYER_ATTENTION if v not in only))
    for variant in sorted(set(attention)):
        if variant not in allowed:
            raise CmperfError(
                f"{lt.where('attention')}: {variant!r} layers are not {kind} layers "
                f"(use {', '.join(allowed)})"
            )
    for variant in sorted(set(attention)):
        needs = LINEAR_KEYS if variant in ("linear", "kda") else (LAYER_ATTENTION[variant],)
        for need in needs:
            if need and not arch[need]:
                raise CmperfError(f"{lt.where('attention')}: {variant!r} layers need architecture.{need} > 0")
    if "moe" in ffn and not arch["n_routed_experts"]:
        raise CmperfError(f"{lt.where('ffn')}: 'moe' layers need architecture.n_routed_experts > 0")
    if "dense" in ffn and not arch["intermediate_size"]:
        raise CmperfError(f"{lt.where('ffn')}: 'dense' layers need architecture.intermediate_size > 0")
    lt.done()
    return attention, ffn


def load_model(name: str, spec_dirs: tuple[str, ...] | list[str] = (), flag: str = "--model") -> Model:
    """A model by name or alias, a models/*.toml path, or a Hugging Face config.json path (cmperf.hf);
    errors name ``flag``."""
    config = _json_path(name)
    path: str | Path
    if config is not None:
        from . import hf

        if not config.is_file():
            raise CmperfError(f"{flag}: file {name} does not exist; give a config.json, .toml or model name")
        path, raw = config, hf.spec_from_config(config)
    else:
        path = _locate(name, "model", spec_dirs, flag)
        raw = _read(path)
    sources: dict[str, str] = {}
    t = _Table(raw, path, "", sources)
    name, desc = _header(t, "model")
    t.used.add("aliases")
    aliases = tuple(t.raw.get("aliases", []))
    a = t.sub("architecture")
    src = a.string("source")
    attention = a.string("attention", tuple(ATTENTION_KEYS), required=False, default="mla")
    arch: dict[str, int] = {k: _arch_int(a, k, 1) for k in ARCH_KEYS + list(ATTENTION_KEYS[attention])}
    for k, default in ARCH_OPTIONAL.items():
        arch[k] = _arch_int(a, k, 0) if k in a.raw else default
    if arch["n_routed_experts"]:
        arch.update({k: _arch_int(a, k, 1) for k in MOE_KEYS})
    else:
        arch.update(dict.fromkeys(MOE_KEYS, 0))
    for k in arch:
        sources["architecture." + k] = src
    a.done()
    _check_architecture(a, arch)
    _check_kda(a, arch, attention)
    layer_attention, layer_ffn = _layers(t, arch, attention)
    r = t.sub("routing", required=False)
    # Zipf exponent of expert popularity: a plain number (no unit)
    zipf = r.number("popularity_zipf", 0.0, 3.0, required=False, default=0.0)
    r.done()
    t.done()
    return Model(name, desc, str(path), aliases, arch, zipf, sources, attention, layer_attention, layer_ffn)


def spec_hash(*paths: str) -> str:
    """sha256 over the bytes of the given spec files (for snapshots): first 16 hex digits."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]
