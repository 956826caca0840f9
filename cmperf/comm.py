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

Other collectives (the SP-TP-SP all-gather and all-to-all of prefill attention) use the plane's
latency, the chip's fixed comm cost and the same bandwidth term.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import CmperfError
from .roofline import LATENCY, LINK, OpTime
from .specs import DTYPE_BYTES, System


def message_bytes(hidden: int, dtype: str, scale_bytes: float, align_bytes: float) -> float:
    """Bytes of one token message: hidden * dtype bytes + scale, rounded up to the alignment.

    >>> message_bytes(7168, "int8", 4, 512)   # CM384 §4.2: 7.5 KB
    7680.0
    >>> message_bytes(7168, "bf16", 0, 512)   # 14 KB
    14336.0
    """
    raw = hidden * DTYPE_BYTES[dtype] + scale_bytes
    return float(math.ceil(raw / align_bytes) * align_bytes)


def ep_message_bytes(system: System, hidden: int, prec) -> tuple[float, float]:
    """(dispatch, combine) bytes per (token, expert) message on ``system`` for precision ``prec``."""
    d = system.collectives.get("dispatch")
    c = system.collectives.get("combine")
    if d is None or c is None:
        raise CmperfError(
            f"{system.path}: [collectives.dispatch] and [collectives.combine] are needed for EP"
        )
    return (
        message_bytes(hidden, prec.dispatch, d.scale_bytes, d.message_align_bytes),
        message_bytes(hidden, prec.combine, c.scale_bytes, c.message_align_bytes),
    )


def _split_bytes(system: System, plane_name: str, payload, group_size, send_local: bool = False):
    """(bytes over the scale-up plane, bytes over the scale-out plane) for one rank's payload."""
    plane = system.planes[plane_name]
    e = np.maximum(np.asarray(group_size, dtype=float), 1.0)
    remote = np.asarray(payload, dtype=float) * (1.0 if send_local else (e - 1.0) / e)
    if plane.scale == "out":
        return np.zeros_like(remote), remote
    domain_ranks = plane.domain_devices * system.ranks_per_device
    f_in = np.where(e > 1, (np.minimum(e, domain_ranks) - 1.0) / np.maximum(e - 1.0, 1.0), 1.0)
    return remote * f_in, remote * (1.0 - f_in)


def _link_s(
    system: System, up_plane: str, out_plane: str | None, up_bytes, out_bytes, eff: float | None = None
):
    """Slower of the two planes; ``eff`` (a kernel's fitted efficiency) replaces the scale-up plane's."""
    up = system.planes[up_plane]
    t_up = up_bytes / (up.bytes_per_s_per_rank * (eff or up.efficiency))
    if out_plane is None:
        # no scale-out plane named: traffic beyond the domain also rides the scale-up plane
        return t_up + out_bytes / (up.bytes_per_s_per_rank * (eff or up.efficiency))
    out = system.planes[out_plane]
    return np.maximum(t_up, out_bytes / (out.bytes_per_s_per_rank * out.efficiency))


def ep_collective_time(system: System, name: str, payload_bytes, ep_size) -> OpTime:
    """Dispatch or combine of ``payload_bytes`` per rank over an EP group of ``ep_size`` ranks."""
    c = system.collectives[name]
    e = np.asarray(ep_size, dtype=float)
    up_b, out_b = _split_bytes(system, c.plane, payload_bytes, e, c.local_copies == "send")
    link_s = _link_s(system, c.plane, c.scaleout_plane, up_b, out_b, c.efficiency)
    alpha_s = np.where(e > 1, c.alpha_s + c.alpha_per_log2_ep_s * np.log2(np.maximum(e, 1.0)), 0.0)
    link_s = np.where(e > 1, link_s, 0.0)
    ideal = _ideal_link_s(system, c.plane, c.scaleout_plane, up_b, out_b)
    return _comm_optime(link_s, alpha_s, ideal)


def _ideal_link_s(system, up_plane, out_plane, up_b, out_b):
    up = system.planes[up_plane]
    out = system.planes[out_plane] if out_plane else up
    return np.maximum(up_b / up.bytes_per_s_per_rank, out_b / out.bytes_per_s_per_rank)


def _comm_optime(link_s, alpha_s, ideal_s) -> OpTime:
    link_s, alpha_s = np.broadcast_arrays(np.asarray(link_s, float), np.asarray(alpha_s, float))
    zero = np.zeros_like(link_s)
    bound = np.where(link_s >= alpha_s, LINK, LATENCY).astype(np.int8)
    return OpTime(zero, zero, link_s, alpha_s, link_s + alpha_s, bound, ideal_s + zero, link_s + alpha_s)


def plane_collective_time(system: System, plane_name: str, payload_bytes, group_size) -> OpTime:
    """A generic collective (all-gather, all-to-all) moving ``payload_bytes`` per rank on one plane:
    t = latency * ceil(log2 group) + fixed comm cost + bytes / (bw * eff); zero for a group of one."""
    plane = system.planes[plane_name]
    g = np.asarray(group_size, dtype=float)
    link_s = np.asarray(payload_bytes, dtype=float) / (plane.bytes_per_s_per_rank * plane.efficiency)
    alpha_s = plane.latency_s * np.ceil(np.log2(np.maximum(g, 1.0))) + system.chip.overhead_s["comm"]
    active = g > 1
    ideal = np.asarray(payload_bytes, dtype=float) / plane.bytes_per_s_per_rank
    return _comm_optime(
        np.where(active, link_s, 0.0), np.where(active, alpha_s, 0.0), np.where(active, ideal, 0.0)
    )


def transfer_s(system: System, plane_name: str, nbytes, where: str = "plane"):
    """Point-to-point bulk transfer of ``nbytes`` by one rank: latency + bytes / (bw * eff)."""
    plane = system.plane(plane_name, where=where)
    return plane.latency_s + np.asarray(nbytes, dtype=float) / (plane.bytes_per_s_per_rank * plane.efficiency)
