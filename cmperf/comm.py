"""Alpha-beta time of one collective on the system's planes.

EP all-to-all (dispatch, combine), per rank, for a payload of B bytes over an EP group of E ranks:

    t = alpha + alpha_per_log2_ep * log2(E) + max(B_up / (bw_up * eff_up), B_out / (bw_out * eff_out))

B counts every (token, expert) copy (or one per destination rank for ``copies = "per-rank"``); the
local copy (1/E of it) does not cross a link unless the collective says ``local_copies = "send"``
(the "Insights" bound counts every copy). Of the remote bytes, the share addressed to ranks in
the sender's scale-up domain (D ranks) goes over the scale-up plane, the rest over the scale-out
plane: f_in = (min(E, D) - 1) / (E - 1). EP320 on CloudMatrix384 is all UB (D = 768 dies); EP144 on
18 DGX-H800 nodes is 7/143 NVLink and 136/143 InfiniBand. Worked number (CM384 Table 7, EP256
dispatch): 49.6 + 5.96*8 us + 128*8*7,680 B*255/256 / (196 GB/s*0.699) = 154 us (table: 152 us).

Kernels that deduplicate per destination domain (``copies = "per-domain"``, DeepEP's normal kernels in
prefill): a token crosses the scale-out plane once per remote domain it is routed to (one RDMA message
per node) and is then forwarded inside that domain over the scale-up plane to each destination rank.
With B = tokens x distinct destination ranks x message and D = ranks per domain,

    B_up = B * (min(E, D) - 1) / min(E, D)            (delivered to every destination rank but the forwarder)
    B_out = tokens x distinct remote domains x message (given by the caller: it depends on the routing)

(for E <= D this is the flat split above). Worked number (DeepEP normal dispatch, EP32 = 4 H800 nodes,
4,096 tokens, top-8 of 256 experts uniform, FP8 7,392 B): 3.61 distinct nodes, 2.71 remote per token ->
33 us + 82.1 MB / (50 GB/s * 0.896) = 1.87 ms; DeepEP's benchmark: 58 GB/s "RDMA", which counts the own
node's copy too, 4096*3.61*7392 B / 58 GB/s = 1.89 ms (hardware/dgx-h800.toml, scripts/fit_deepep.py).

A phase may bring its own kernels (``System.collective(name, phase)``: [collectives.prefill.dispatch]);
decode uses [collectives.dispatch] / [collectives.combine], and so does a phase that defines none.

Other collectives (the SP-TP-SP all-gather and all-to-all of prefill attention) use the plane's
latency, the chip's fixed comm cost and the same bandwidth term.

Torus planes (``topology = "torus"``, TPU ICI): no switch, so a rank's all-to-all rate is not its injection
bandwidth but what the torus' bisection and total link capacity allow (``torus_alltoall_bandwidth``); the
EP group is a compact sub-torus of the plane (``torus_group_dims``) and its diameter adds hop latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import CmperfError
from .graph import ZERO, Array, Op
from .roofline import LINK, OpTime
from .specs import DTYPE_BYTES, Model, System


@dataclass(frozen=True)
class DomainDedupOp(Op):
    """A dispatch/combine op of a ``copies = "per-domain"`` kernel. ``comm_bytes`` is the per-rank payload
    deduplicated per destination rank (the scale-up side); ``scaleout_bytes`` the per-rank bytes over the
    scale-out plane, one message per (token, remote destination domain)."""

    scaleout_bytes: Array = ZERO


def _miss(m: float, big_m: float, k: float, experts_known: bool) -> float:
    """P(none of k picks among big_m candidate experts lands in a given m of them): without replacement
    (top-k picks distinct experts) when the counts are whole, else (1 - m/M)^k."""
    if experts_known and float(m).is_integer() and float(big_m).is_integer() and float(k).is_integer():
        p = 1.0
        for i in range(int(k)):
            p *= max(big_m - m - i, 0.0) / (big_m - i)
        return p
    return (1.0 - m / big_m) ** k


@lru_cache(maxsize=4096)
def _distinct_scalar(n: float, k: float, groups: int, topk_groups: int, experts: int) -> float:
    known = experts > 0
    e = float(experts) if known else 1.0  # without a count: fractions, picks with replacement
    if not float(n).is_integer() or groups <= 1 or topk_groups >= groups:
        return n * (1.0 - _miss(e / n, e, k, known and (experts / n).is_integer()))
    n_i = int(n)
    per_group = e / groups
    cand = topk_groups * per_group  # candidate experts of a token: its chosen groups
    if n_i >= groups and n_i % groups == 0:  # each group spans n/groups destinations
        c = topk_groups * n_i / groups
        return c * (1.0 - _miss(e / n_i, cand, k, known and experts % n_i == 0))
    if n_i < groups and groups % n_i == 0:  # each destination holds groups/n whole groups
        per = groups // n_i
        total = math.comb(groups, topk_groups)
        hit = 0.0
        for g in range(0, min(per, topk_groups) + 1):
            p = math.comb(per, g) * math.comb(groups - per, topk_groups - g) / total
            hit += p * (1.0 - _miss(g * per_group, cand, k, known and experts % groups == 0))
        return n_i * hit
    return n * (1.0 - _miss(e / n, e, k, False))


def distinct_destinations(num_dest, k, groups: int = 1, topk_groups: int = 1, experts: int = 0) -> np.ndarray:
    """Expected number of distinct destinations (ranks or scale-up domains) of one token's ``k`` expert
    copies, ``experts`` routed experts laid out contiguously over ``num_dest`` equal destinations.

    Uniform routing: n * (1 - miss), miss = the chance that none of the k distinct experts a token picks
    is on a given destination: C(E - E/n, k) / C(E, k) when ``experts`` (E) is given, else (1 - 1/n)^k.
    Group-limited routing (DeepSeek-V3 §2.1.2: ``groups`` expert groups, a token picks ``topk_groups`` of
    them, then its k experts among theirs; EPLB packs groups onto nodes) when the groups tile the
    destinations: a group spanning s = n/groups destinations leaves c = topk_groups*s candidate
    destinations; a destination holding groups/n whole groups, g of them chosen (hypergeometric), is hit
    unless all k picks avoid its g groups' experts. Otherwise uniform.

    >>> round(float(distinct_destinations(4, 8)), 3)  # uniform, with replacement, 4 nodes: 3.60
    3.6
    >>> round(float(distinct_destinations(4, 8, 8, 4, 256)), 3)  # R1 (256 experts, 8 groups, top-4)
    2.928
    """
    n = np.maximum(np.asarray(num_dest, dtype=float), 1.0)
    kk = np.asarray(k, dtype=float)
    fn = np.vectorize(
        lambda a, b: _distinct_scalar(float(a), float(b), int(groups), int(topk_groups), int(experts))
    )
    return np.asarray(fn(n, kk), dtype=float)


def domain_scaleout_bytes(system: System, name: str, phase: str, ep_size, tokens, k, msg_bytes, model=None):
    """Per-rank bytes over the scale-out plane of a ``copies = "per-domain"`` kernel (None for other kernels):
    tokens x distinct remote scale-up domains per token x message. Remote domains = distinct domains x
    (N - 1)/N over the N = EP / (ranks per domain) domains of the EP group, under the model's group-limited
    routing when ``model`` is given (``distinct_destinations``), else uniform. Worked number (R1, EP32 on 4
    H800 nodes, 256 experts in 8 groups, top-4 groups, top-8): 2.93 nodes per token, 2.20 remote (uniform
    routing, as DeepEP's benchmark, 3.61 and 2.71); 8,192 tokens x 2.20 x 7,392 B = 133 MB per dispatch."""
    c = system.collective(name, phase)
    if c.copies != "per-domain":
        return None
    dom = system.domain_ranks(c.plane)
    n_dom = np.maximum(np.asarray(ep_size, dtype=float) / dom, 1.0)
    groups = (model.n_group, model.topk_group, model.n_routed_experts) if model is not None else (1, 1, 0)
    hit = distinct_destinations(n_dom, k, *groups)
    return np.asarray(tokens, dtype=float) * hit * (n_dom - 1.0) / n_dom * msg_bytes


def message_bytes(hidden: int, dtype: str, scale_bytes: float, align_bytes: float) -> float:
    """Bytes of one token message: hidden * dtype bytes + scale, rounded up to the alignment.

    >>> message_bytes(7168, "int8", 4, 512)   # CM384 §4.2: 7.5 KB
    7680.0
    >>> message_bytes(7168, "bf16", 0, 512)   # 14 KB
    14336.0
    """
    raw = hidden * DTYPE_BYTES[dtype] + scale_bytes
    return float(math.ceil(raw / align_bytes) * align_bytes)


def ep_message_bytes(system: System, hidden: int, prec, phase: str = "decode") -> tuple[float, float]:
    """(dispatch, combine) bytes per (token, expert) message of ``phase``'s kernels for precision ``prec``."""
    if "dispatch" not in system.collectives or "combine" not in system.collectives:
        raise CmperfError(
            f"{system.path}: [collectives.dispatch] and [collectives.combine] are needed for EP"
        )
    d, c = system.collective("dispatch", phase), system.collective("combine", phase)
    return (
        message_bytes(hidden, prec.dispatch, d.scale_bytes, d.message_align_bytes),
        message_bytes(hidden, prec.combine, c.scale_bytes, c.message_align_bytes),
    )


def torus_group_dims(dims: tuple[int, ...], group) -> np.ndarray:
    """Axis lengths of a compact group of ``group`` chips inside a torus of ``dims`` (the slice an EP group
    is given): axes filled smallest first, each k = min(axis, remaining ** (1 / axes left)), real-valued so
    the cost is continuous in the group size. TPU7x 16x24x24 pod, EP64 -> (4, 4, 4); EP512 -> (8, 8, 8);
    the whole pod -> (16, 24, 24). Shape (..., len(dims)) for an array of group sizes.

    >>> [round(float(k), 3) for k in torus_group_dims((16, 24, 24), 64)]
    [4.0, 4.0, 4.0]
    """
    g = np.maximum(np.asarray(group, dtype=float), 1.0)
    order = sorted(range(len(dims)), key=lambda i: dims[i])
    ks: list[np.ndarray] = [np.ones_like(g)] * len(dims)
    rest = g
    for j, i in enumerate(order):
        k = np.minimum(float(dims[i]), np.round(rest ** (1.0 / (len(dims) - j)), 9))  # 64 ** (1/3) = 4
        ks[i] = k
        rest = rest / k
    return np.stack(ks, axis=-1)


def torus_alltoall_bandwidth(dims: tuple[int, ...], link_bytes_per_s: float, group=None) -> np.ndarray:
    """Per-rank all-to-all rate (bytes/s one rank's uniform all-to-all payload moves at) on a group of the
    torus ``dims`` (``torus_group_dims``; the whole torus when ``group`` is None), every axis a ring with
    wraparound and each of the 2n links per chip carrying ``link_bytes_per_s`` per direction.

    Uniform all-to-all of P bytes per rank over N = prod(k) ranks; two bounds (Dally & Towles, "Principles
    and Practices of Interconnection Networks", 2004, §3.3-3.4: bisection and channel-load bounds of k-ary
    n-cubes):

    * bisection: cutting the longest axis k_max crosses 2 N / k_max links per direction (two cuts per ring
      with wraparound); half of every rank's bytes cross it, N P / 4 each way ->
      t >= P k_max / (8 b);
    * channel load: a message travels k/4 hops on average along each axis of a bidirectional ring (even
      k), total link-bytes N P sum(k)/4 over N 2n links -> t >= P sum(k) / (8 n b);
    * and no rank injects faster than its 2n links: t >= P / (2 n b).

    rate = P / t = b * min(8 / k_max, 8 n / sum(k), 2 n). Worked number (TPU7x: 1,200 GB/s bidirectional
    over 6 links = 100 GB/s per link per direction; Google Cloud TPU7x docs): a 4x4x4 cube gives
    100 GB/s * min(8/4, 24/12, 6) = 200 GB/s per chip, a third of the 600 GB/s it injects; the 16x24x24
    pod 100 * min(8/24, 24/64) = 33.3 GB/s. A switch of the same injection would give 600 GB/s.

    >>> float(torus_alltoall_bandwidth((4, 4, 4), 100e9)) / 1e9
    200.0
    """
    k = torus_group_dims(dims, math.prod(dims) if group is None else group)
    n = float(len(dims))
    kmax = np.max(k, axis=-1)
    bis = np.where(kmax > 1.0, 8.0 / np.maximum(kmax, 1.0), np.inf)
    load = np.where(np.sum(k, axis=-1) > n, 8.0 * n / np.maximum(np.sum(k, axis=-1), 1.0), np.inf)
    return link_bytes_per_s * np.minimum(np.minimum(bis, load), 2.0 * n)


def torus_diameter_hops(dims: tuple[int, ...], group) -> np.ndarray:
    """Hops of the farthest pair of a ``group`` sub-torus: sum over axes of floor(k / 2) (4x4x4: 6)."""
    return np.sum(np.floor(torus_group_dims(dims, group) / 2.0), axis=-1)


def _rate(system: System, plane_name: str, group=None):
    """Per-rank bytes/s of an all-to-all over ``plane_name`` among ``group`` ranks: the plane's bandwidth
    on a switch; on a torus, ``torus_alltoall_bandwidth`` of the group's sub-torus (its chips = ranks /
    ranks per device), the plane's bandwidth being the 2n links' injection rate."""
    plane = system.planes[plane_name]
    if plane.topology != "torus" or group is None:
        return plane.bytes_per_s_per_rank
    chips = np.maximum(np.asarray(group, dtype=float) / system.ranks_per_device, 1.0)
    link = plane.bytes_per_s_per_rank * system.ranks_per_device / (2 * len(plane.dims))
    per_chip = torus_alltoall_bandwidth(plane.dims, link, np.minimum(chips, plane.domain_devices))
    return per_chip / system.ranks_per_device


def _hops_s(system: System, plane_name: str, group):
    """Hop latency of a torus plane's farthest message in a ``group`` (0 on a switch)."""
    plane = system.planes[plane_name]
    if plane.topology != "torus":
        return 0.0
    chips = np.maximum(np.asarray(group, dtype=float) / system.ranks_per_device, 1.0)
    return plane.hop_latency_s * torus_diameter_hops(plane.dims, np.minimum(chips, plane.domain_devices))


def _split_bytes(
    system: System, plane_name: str, payload, group_size, send_local: bool = False, drop_zero: bool = False
):
    """(bytes over the scale-up plane, bytes over the scale-out plane) for one rank's payload.

    ``drop_zero``: None for the scale-out bytes when they are remote * 0.0 at every point (every group
    inside one scale-up domain) and every remote byte count is finite and >= 0: those zeros then change
    no time they enter (``_link_s``, ``_ideal_link_s``: t + 0.0 and max(t, 0.0) are t for t >= 0)."""
    plane = system.planes[plane_name]
    e = np.maximum(np.asarray(group_size, dtype=float), 1.0)
    remote = np.asarray(payload, dtype=float) * (1.0 if send_local else (e - 1.0) / e)
    if plane.scale == "out":
        return np.zeros_like(remote), remote
    domain_ranks = system.domain_ranks(plane_name)
    f_in = np.where(e > 1, (np.minimum(e, domain_ranks) - 1.0) / np.maximum(e - 1.0, 1.0), 1.0)
    if drop_zero and np.all(f_in == 1.0) and remote.size and remote.min() >= 0.0 and remote.max() < np.inf:
        return remote * f_in, None  # (NaN fails both tests: it keeps the general path)
    return remote * f_in, remote * (1.0 - f_in)


def _link_s(
    system: System,
    up_plane: str,
    out_plane: str | None,
    up_bytes,
    out_bytes,
    eff: float | None = None,
    eff_out: float | None = None,
    group=None,
):
    """Slower of the two planes; ``eff`` / ``eff_out`` (a kernel's fitted efficiencies) replace the
    scale-up / scale-out plane's; ``group`` (ranks) sets a torus plane's all-to-all rate (``_rate``).
    ``out_bytes`` None: no scale-out bytes (``_split_bytes(drop_zero=True)``), the scale-up time."""
    up = system.planes[up_plane]
    up_bw = _rate(system, up_plane, group)
    t_up = up_bytes / (up_bw * (eff or up.efficiency))
    if out_bytes is None:
        return t_up
    if out_plane is None:
        # no scale-out plane named: traffic beyond the domain also rides the scale-up plane
        return t_up + out_bytes / (up_bw * (eff or up.efficiency))
    out = system.planes[out_plane]
    return np.maximum(t_up, out_bytes / (out.bytes_per_s_per_rank * (eff_out or out.efficiency)))


def ep_link_bytes(
    system: System,
    name: str,
    payload_bytes,
    ep_size,
    phase: str = "decode",
    scaleout_bytes=None,
    drop_zero: bool = False,
):
    """(bytes over the scale-up plane, bytes over the scale-out plane) of one rank's dispatch or combine.

    Flat kernels: the (E-1)/E remote share split by f_in (module docstring). ``copies = "per-domain"``
    with ``scaleout_bytes`` given: the hierarchical split (forwarding inside the destination domain); a
    per-domain kernel without it (a caller that does not know the routing) falls back to the flat split.
    ``drop_zero``: the flat split may give None for all-zero scale-out bytes (``_split_bytes``)."""
    c = system.collective(name, phase)
    e = np.asarray(ep_size, dtype=float)
    if c.copies != "per-domain" or scaleout_bytes is None or system.planes[c.plane].scale == "out":
        return _split_bytes(system, c.plane, payload_bytes, e, c.local_copies == "send", drop_zero)
    d = system.domain_ranks(c.plane)
    m = np.maximum(np.minimum(e, d), 1.0)
    payload = np.asarray(payload_bytes, dtype=float)
    up = payload * (1.0 if c.local_copies == "send" else (m - 1.0) / m)
    out = np.where(e > d, np.asarray(scaleout_bytes, dtype=float), 0.0)
    return up, out


def ep_plane_seconds(
    system: System, name: str, payload_bytes, ep_size, phase: str = "decode", scaleout_bytes=None
) -> dict[str, np.ndarray]:
    """Link time of one dispatch or combine on each plane it uses (the slower one binds)."""
    c = system.collective(name, phase)
    up_b, out_b = ep_link_bytes(system, name, payload_bytes, ep_size, phase, scaleout_bytes)
    up = system.planes[c.plane]
    up_bw = _rate(system, c.plane, ep_size)
    res = {up.name: up_b / (up_bw * (c.efficiency or up.efficiency))}
    if c.scaleout_plane is None:
        res[up.name] = res[up.name] + out_b / (up_bw * (c.efficiency or up.efficiency))
    else:
        out = system.planes[c.scaleout_plane]
        res[out.name] = out_b / (out.bytes_per_s_per_rank * (c.scaleout_efficiency or out.efficiency))
    return res


def ep_collective_time(
    system: System, name: str, payload_bytes, ep_size, phase: str = "decode", scaleout_bytes=None
) -> OpTime:
    """Dispatch or combine of ``payload_bytes`` per rank over an EP group of ``ep_size`` ranks, with the
    kernel ``phase`` uses (``System.collective``); ``scaleout_bytes`` only for ``copies = "per-domain"``."""
    c = system.collective(name, phase)
    e = np.asarray(ep_size, dtype=float)
    alpha = c.alpha_s + c.alpha_per_log2_ep_s * np.log2(np.maximum(e, 1.0)) + _hops_s(system, c.plane, e)
    active = e > 1
    alpha_s = np.where(active, alpha, 0.0)
    share = _scaleup_share(system, c, e, scaleout_bytes)
    payload = np.asarray(payload_bytes, dtype=float)
    if share is not None and payload.size and payload.min() >= 0.0 and payload.max() < np.inf:
        # every remote byte on the scale-up plane: link and ideal times are the payload times a factor
        # per EP size (one pass over the points each; ``_split_bytes(drop_zero=True)`` otherwise)
        up_bw = _rate(system, c.plane, e)
        eff = c.efficiency or system.planes[c.plane].efficiency
        link_s = payload * np.where(active, share / (up_bw * eff), 0.0)
        return _comm_optime(link_s, alpha_s, payload * (share / up_bw))
    up_b, out_b = ep_link_bytes(system, name, payload_bytes, e, phase, scaleout_bytes, drop_zero=True)
    link_s = _link_s(
        system, c.plane, c.scaleout_plane, up_b, out_b, c.efficiency, c.scaleout_efficiency, group=e
    )
    link_s = _where_active(active, link_s)
    ideal = _ideal_link_s(system, c.plane, c.scaleout_plane, up_b, out_b, group=e)
    return _comm_optime(link_s, alpha_s, ideal)


def _scaleup_share(system: System, c, e: np.ndarray, scaleout_bytes) -> np.ndarray | None:
    """The share of a dispatch or combine payload that crosses the scale-up plane per EP size ``e``, when
    the flat split (``ep_link_bytes``) sends every remote byte there (every group inside one scale-up
    domain); None otherwise."""
    plane = system.planes[c.plane]
    if (c.copies == "per-domain" and scaleout_bytes is not None) or plane.scale == "out":
        return None
    e1 = np.maximum(e, 1.0)
    domain_ranks = system.domain_ranks(c.plane)
    if not (e1.size and e1.min() >= 2.0 and e1.max() <= domain_ranks):  # (then f_in = 1 everywhere)
        f_in = np.where(e1 > 1, (np.minimum(e1, domain_ranks) - 1.0) / np.maximum(e1 - 1.0, 1.0), 1.0)
        if not np.all(f_in == 1.0):  # some bytes leave the domain (``_split_bytes``)
            return None
    return np.ones_like(e1) if c.local_copies == "send" else (e1 - 1.0) / e1


@dataclass(frozen=True)
class EPCollectiveEstimate:
    """One rank's EP dispatch or combine, every term of ``ep_collective_estimate`` (SI units)."""

    op: str  # dispatch | combine
    phase: str  # whose kernel: decode | prefill
    ep_size: int
    tokens_per_rank: float
    top_k: int  # expert copies per token
    copies_per_token: float  # messages per token: top_k, or distinct destination ranks (per-domain kernels)
    scaleout_bytes: float | None  # per-rank bytes over the scale-out plane (per-domain kernels only)
    dtype: str
    message_bytes: float  # one token's message
    payload_bytes: float  # tokens_per_rank x copies_per_token x message_bytes
    time_s: float  # latency_s + link_s
    latency_s: float
    link_s: float
    bandwidth_bytes_per_s: float  # payload_bytes / time_s (0 for a zero time)
    bound: str  # link | latency


def ep_collective_estimate(
    system: System,
    model: Model,
    op: str,
    ep_size: int,
    tokens_per_rank: float,
    top_k: int | None = None,
    dtype: str | None = None,
    phase: str = "decode",
) -> EPCollectiveEstimate:
    """Payload and time of one rank's ``op`` (dispatch or combine) of ``tokens_per_rank`` tokens over an
    EP group of ``ep_size`` ranks, with the kernel ``phase`` uses (``System.collective``).

    payload = tokens x copies x message, message = ``message_bytes`` of the model's hidden size in
    ``dtype`` (default int8 dispatch, bf16 combine), copies = ``top_k`` (default the model's) or, for a
    ``copies = "per-domain"`` kernel, the distinct destination ranks under the model's group-limited routing
    (``distinct_destinations``, with ``domain_scaleout_bytes`` over the scale-out plane); time =
    ``ep_collective_time``. Worked number (CM384 Table 7 conditions, EP32, 128 tokens, top-8, INT8 7,680 B):
    128 x 8 x 7,680 B = 7.86 MB in 36.6 us latency + 99.4 us link = 136 us (Table 7: 133 us).

    Inputs a user can get wrong raise CmperfError naming the ``cmperf comm`` flag."""
    t_in = float(tokens_per_rank)
    if not math.isfinite(t_in) or t_in < 0:
        raise CmperfError(f"--tokens-per-rank: must be a finite number >= 0, got {tokens_per_rank!r}")
    if float(ep_size) < 1 or not float(ep_size).is_integer():
        raise CmperfError(f"--ep: EP size must be a whole number of ranks >= 1, got {ep_size!r}")
    if top_k is not None and (float(top_k) < 1 or not float(top_k).is_integer()):
        raise CmperfError(f"--top-k: copies per token must be a whole number >= 1, got {top_k!r}")
    if op not in system.collectives:
        raise CmperfError(f"--op: system {system.name} defines no {op} collective")
    dtype = dtype or ("int8" if op == "dispatch" else "bf16")
    if dtype not in DTYPE_BYTES:
        raise CmperfError(f"--dtype: unknown datatype {dtype!r} (one of {', '.join(DTYPE_BYTES)})")
    ep = int(ep_size)
    c = system.collective(op, phase)
    k = model.num_experts_per_tok if top_k is None else int(top_k)
    msg = message_bytes(model.hidden_size, dtype, c.scale_bytes, c.message_align_bytes)
    out_b = domain_scaleout_bytes(system, op, phase, ep, t_in, k, msg, model)
    copies = float(k)
    if out_b is not None:  # per-domain kernels send one copy per distinct destination rank
        routing = (model.n_group, model.topk_group, model.n_routed_experts)
        copies = float(distinct_destinations(ep, k, *routing))
    payload = t_in * copies * msg
    t = ep_collective_time(system, op, payload, ep, phase, out_b)
    time_s = float(t.time_s)
    return EPCollectiveEstimate(
        op=op,
        phase=phase,
        ep_size=ep,
        tokens_per_rank=t_in,
        top_k=k,
        copies_per_token=copies,
        scaleout_bytes=None if out_b is None else float(out_b),
        dtype=dtype,
        message_bytes=msg,
        payload_bytes=payload,
        time_s=time_s,
        latency_s=float(t.fixed_s),
        link_s=float(t.link_s),
        bandwidth_bytes_per_s=payload / time_s if time_s > 0 else 0.0,
        bound=("compute", "memory", "link", "latency")[int(t.bound)],
    )


def _ideal_link_s(system, up_plane, out_plane, up_b, out_b, group=None):
    up_bw = _rate(system, up_plane, group)
    if out_b is None:  # no scale-out bytes (``_split_bytes(drop_zero=True)``)
        return up_b / up_bw
    out_bw = _rate(system, out_plane, group) if out_plane else up_bw
    return np.maximum(up_b / up_bw, out_b / out_bw)


def _where_active(active: np.ndarray, x) -> np.ndarray:
    """``np.where(active, x, 0.0)``; ``x`` itself (the same values, no full-size copy) when every point is
    active and ``x`` already spans ``active``'s shape (an EP group of more than one rank everywhere)."""
    x = np.asarray(x, dtype=float)
    if active.all() and np.broadcast_shapes(active.shape, x.shape) == x.shape:
        return x
    return np.where(active, x, 0.0)


def _comm_optime(link_s, alpha_s, ideal_s) -> OpTime:
    link_s, alpha_s = np.asarray(link_s, float), np.asarray(alpha_s, float)
    total = link_s + alpha_s  # (on the inputs' own shapes: no pass over a broadcast view)
    shape = total.shape
    # np.where(link >= alpha, LINK, LATENCY) in int8 (LATENCY = LINK + 1; NaN: LATENCY) in one pass
    bound = np.add(~np.greater_equal(link_s, alpha_s), np.int8(LINK))
    zero = np.broadcast_to(0.0, shape)  # read-only views: no full-size zeros or copies
    link_s, alpha_s = np.broadcast_to(link_s, shape), np.broadcast_to(alpha_s, shape)
    ideal = np.broadcast_to(np.asarray(ideal_s, dtype=float), shape)
    return OpTime(zero, zero, link_s, alpha_s, total, np.broadcast_to(bound, shape), ideal, total)


def _plane_collective(system: System, plane_name: str, payload_bytes, g):
    """(link_s, alpha_s, ideal_s) of a generic collective on one plane (``plane_collective_time``)."""
    plane = system.planes[plane_name]
    bw = _rate(system, plane_name, g)
    link_s = np.asarray(payload_bytes, dtype=float) / (bw * plane.efficiency)
    alpha_s = plane.latency_s * np.ceil(np.log2(np.maximum(g, 1.0))) + system.chip.overhead_s["comm"]
    alpha_s = alpha_s + _hops_s(system, plane_name, g)
    return link_s, alpha_s, np.asarray(payload_bytes, dtype=float) / bw


def plane_collective_time(
    system: System, plane_name: str, payload_bytes, group_size, collective: str = "allgather"
) -> OpTime:
    """A generic collective (all-gather, all-to-all) moving ``payload_bytes`` per rank on one plane:
    t = latency * ceil(log2 group) + fixed comm cost + bytes / (bw * eff); zero for a group of one.

    A group of g ranks larger than the plane's domain (D ranks, n = g / D domains) sends part of the
    payload over the scale-out plane: an all-gather hierarchically (each rank first gathers its n - 1
    peers' shards in the other domains over the scale-out plane, then the domain all-gathers n shards
    per rank: (n - 1) / (g - 1) and (g - n) / (g - 1) of the payload, one after the other); an
    all-to-all directly (the g - D remote peers' share over the scale-out plane while the D - 1 local
    peers' goes over the scale-up plane: the slower of the two)."""
    g = np.asarray(group_size, dtype=float)
    link_s, alpha_s, ideal = _plane_collective(system, plane_name, payload_bytes, g)
    domain = float(system.domain_ranks(plane_name))
    across = g > domain
    if np.any(across):
        s = np.asarray(payload_bytes, dtype=float)
        d = np.full_like(g, domain)
        n, peers = np.maximum(g / d, 1.0), np.maximum(g - 1.0, 1.0)
        hier = collective == "allgather"
        local, remote = (g - n, n - 1.0) if hier else (d - 1.0, g - d)
        up = _plane_collective(system, plane_name, s * local / peers, d)
        out = _plane_collective(system, system.scaleout_plane(), s * remote / peers, n if hier else g)
        if hier:
            both = [u + o for u, o in zip(up, out, strict=True)]
        else:  # concurrent: the slower plane's link and latency
            slow = up[0] + up[1] >= out[0] + out[1]
            both = [np.where(slow, u, o) for u, o in zip(up, out, strict=True)]
        link_s, alpha_s, ideal = (
            np.where(across, x, y) for x, y in zip(both, (link_s, alpha_s, ideal), strict=True)
        )
    active = g > 1
    return _comm_optime(
        np.where(active, link_s, 0.0), np.where(active, alpha_s, 0.0), np.where(active, ideal, 0.0)
    )


#: All-reduce algorithms as (latency steps, bytes each rank moves per payload byte) for a group of g:
#: one-shot (every rank reads its g - 1 peers' whole buffers and reduces: one step; TensorRT-LLM's
#: AllReduceStrategy.ONESHOT, its small-message choice), two-shot (a direct reduce-scatter then
#: all-gather: 2 steps, 2(g-1)/g; TWOSHOT), ring (2(g-1) steps, 2(g-1)/g: NCCL's ring all-reduce, the
#: busbw factor of nccl-tests doc/PERFORMANCE.md; HCCL's ring likewise).
ALLREDUCE_ALGORITHMS = {
    "one-shot": (lambda g: np.ones_like(g), lambda g: g - 1.0),
    "two-shot": (lambda g: 2.0 + 0.0 * g, lambda g: 2.0 * (g - 1.0) / g),
    "ring": (lambda g: 2.0 * (g - 1.0), lambda g: 2.0 * (g - 1.0) / g),
}


def _allreduce_terms(system: System, plane_name: str, s, g, algorithm: str, bw=None, fixed=None):
    """(link_s, alpha_s, ideal_s) of one of ``ALLREDUCE_ALGORITHMS`` on one plane (``bw``, ``fixed``: the
    plane's rate and fixed cost for ``g``, when the caller has them)."""
    plane = system.planes[plane_name]
    steps, factor = ALLREDUCE_ALGORITHMS[algorithm]
    bw = _rate(system, plane_name, g) if bw is None else bw
    fixed = system.chip.overhead_s["comm"] + _hops_s(system, plane_name, g) if fixed is None else fixed
    return s * factor(g) / (bw * plane.efficiency), plane.latency_s * steps(g) + fixed, s * factor(g) / bw


def _best_allreduce(system: System, plane_name: str, s, g):
    """(link_s, alpha_s, ideal_s) of the cheapest ``ALLREDUCE_ALGORITHMS`` per point on one plane."""
    bw = _rate(system, plane_name, g)
    fixed = system.chip.overhead_s["comm"] + _hops_s(system, plane_name, g)
    best_link = best_alpha = best_ideal = np.full(np.broadcast(s, g).shape, np.inf)
    for algorithm in ALLREDUCE_ALGORITHMS:
        link, alpha, ideal = _allreduce_terms(system, plane_name, s, g, algorithm, bw, fixed)
        better = link + alpha < best_link + best_alpha
        best_link = np.where(better, link, best_link)
        best_alpha = np.where(better, alpha, best_alpha)
        best_ideal = np.where(better, ideal, best_ideal)
    return best_link, best_alpha, best_ideal


def allreduce_time(system: System, plane_name: str, payload_bytes, group_size) -> OpTime:
    """All-reduce of ``payload_bytes`` per rank over ``group_size`` ranks on one plane: the cheapest of
    ``ALLREDUCE_ALGORITHMS`` per point (the runtimes pick by message size: TensorRT-LLM's AUTO strategy,
    NCCL's tuner), t = steps * latency + fixed comm cost + hops + bytes moved / (bw * eff); zero for a
    group of one. Worked number (hgx-h200 NVLink, 450 GB/s x 0.8, 1.5 us per step, 2 us fixed; TP8,
    1.835 MB = 128 tokens x 7,168 x 2 B): one-shot 1.5 + 2 + 12.8 MB / 360 GB/s = 39.2 us, two-shot
    3.0 + 2 + 3.21 MB / 360 GB/s = 13.9 us, ring 21 + 2 + 8.9 = 31.9 us: two-shot.

    A group larger than the plane's domain (D ranks; TP16 over two 8-GPU nodes) runs hierarchically, as
    NCCL's tree / CollNet algorithms and every multi-node TP runtime do: a reduce-scatter inside each
    domain (two-shot's first half), an all-reduce of each rank's 1/D shard with its peers in the other
    g / D domains over the scale-out plane (the cheapest algorithm there, every rank on its own NIC), and
    an all-gather inside the domain: t = two-shot(s, D) + all-reduce_out(s / D, g / D)."""
    g = np.maximum(np.asarray(group_size, dtype=float), 1.0)
    s = np.asarray(payload_bytes, dtype=float)
    link, alpha, ideal = _best_allreduce(system, plane_name, s, g)
    domain = float(system.domain_ranks(plane_name))
    across = g > domain
    if np.any(across):
        d = np.full_like(g, domain)
        in_link, in_alpha, in_ideal = _allreduce_terms(system, plane_name, s, d, "two-shot")
        out_link, out_alpha, out_ideal = _best_allreduce(system, system.scaleout_plane(), s / d, g / d)
        link = np.where(across, in_link + out_link, link)
        alpha = np.where(across, in_alpha + out_alpha, alpha)
        ideal = np.where(across, in_ideal + out_ideal, ideal)
    active = g > 1
    return _comm_optime(
        np.where(active, link, 0.0), np.where(active, alpha, 0.0), np.where(active, ideal, 0.0)
    )


def transfer_s(system: System, plane_name: str, nbytes, where: str = "plane", from_host: bool = False):
    """Point-to-point bulk transfer of ``nbytes`` by one rank: latency + bytes / (bw * eff); ``from_host``:
    a read of host memory (EMS context cache), at the plane's ``host_read_eff`` (CM384 Table 1: NPU reads
    of CPU memory over UB reach 147 of 196 GB/s inter-node, against 137 for NPU-to-NPU writes)."""
    plane = system.plane(plane_name, where=where)
    eff = plane.host_read_eff if from_host else plane.efficiency
    return plane.latency_s + np.asarray(nbytes, dtype=float) / (plane.bytes_per_s_per_rank * eff)
