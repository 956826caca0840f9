"""Fit the EP dispatch/combine alpha-beta model to CM384 Table 7 (three parameters per operation).

Model (cmperf.comm.ep_collective_time), per rank, 128 tokens x top-8 copies:

    t(EP) = alpha + alpha_per_log2_ep * log2(EP) + remote_bytes / (bw_ub * efficiency)
    remote_bytes = tokens * top_k * msg_bytes * (EP - 1) / EP

Fitted: alpha, alpha_per_log2_ep and the kernel's achieved fraction of the 196 GB/s UB link, by non-negative
least squares on relative error (scipy.optimize.nnls). The payload is the same at every EP, so alpha and the
bandwidth term are separated only through the (EP - 1)/EP share of remote bytes (0.875 at EP8, 0.996 at
EP256): the fit is data-driven but weakly determined, and says the kernels run mostly in the per-byte regime
(AIV quantization/packing and 7.5-14 KB messages reach 39-59% of the link) with a small fixed latency.
Run: python scripts/fit_comm.py
"""

import numpy as np
from scipy.optimize import nnls

EP = np.array([8, 16, 32, 64, 128, 256])
TABLE7_US = {
    "dispatch": np.array([116, 131, 133, 141, 152, 152.0]),
    "combine": np.array([118, 132, 146, 150, 150, 149.0]),
}
MSG_BYTES = {"dispatch": 7680.0, "combine": 14336.0}  # INT8 7168 + 4 B scale padded to 7.5 KB; BF16 14 KB
BW, TOKENS, TOPK = 196e9, 128, 8


def fit(op: str) -> tuple[float, float, float, np.ndarray]:
    t = TABLE7_US[op] * 1e-6
    remote = TOKENS * TOPK * MSG_BYTES[op] * (EP - 1) / EP
    a = np.stack([np.ones_like(t), np.log2(EP), remote / BW], axis=1) / t[:, None]
    (a0, a1, inv_eff), _ = nnls(a, np.ones_like(t))
    pred = a0 + a1 * np.log2(EP) + remote / BW * inv_eff
    return a0, a1, 1.0 / inv_eff, pred


if __name__ == "__main__":
    for op in ("dispatch", "combine"):
        a0, a1, eff, pred = fit(op)
        err = (pred * 1e6 - TABLE7_US[op]) / TABLE7_US[op] * 100
        print(
            f"{op}: alpha = {a0 * 1e6:.2f} us, alpha_per_log2_ep = {a1 * 1e6:.2f} us, efficiency = {eff:.3f}"
        )
        for e, p, m, x in zip(EP, pred * 1e6, TABLE7_US[op], err, strict=True):
            print(f"  EP{e:>3}: predicted {p:6.1f} us, Table 7 {m:5.0f} us, error {x:+.1f}%")
