import numpy as np
import pytest
from conftest import ddep

from cmperf import comm, deployment, graph, roofline
from cmperf.deployment import Precision

EP = [8, 16, 32, 64, 128, 256]
TABLE7_US = {  # CM384 Table 7: per die, 128 tokens per rank, top-8, INT8 dispatch / BF16 combine, UB
    "dispatch": [116, 131, 133, 141, 152, 152],
    "combine": [118, 132, 146, 150, 150, 149],
}
TABLE7_GBPS = {"dispatch": [71, 63, 62, 58, 54, 54], "combine": [131, 117, 105, 103, 103, 103]}


@pytest.mark.parametrize("op", ["dispatch", "combine"])
def test_table7_within_10_percent(cm384, op):
    msg = comm.message_bytes(
        7168,
        "int8" if op == "dispatch" else "bf16",
        cm384.collectives[op].scale_bytes,
        cm384.collectives[op].message_align_bytes,
    )
    payload = 128 * 8 * msg
    t = comm.ep_collective_time(cm384, op, payload, np.array(EP)).time_s
    err = t * 1e6 / np.array(TABLE7_US[op]) - 1
    print(op, np.round(t * 1e6, 1), np.round(100 * err, 1))
    assert np.all(np.abs(err) < 0.10)
    # the implied bandwidth, payload / time, against the table's per-rank GB/s (not fitted)
    bw_err = payload / t / 1e9 / np.array(TABLE7_GBPS[op]) - 1
    assert np.all(np.abs(bw_err) < 0.10)


def test_message_sizes():
    assert comm.message_bytes(7168, "int8", 4, 512) == 7680  # 7.5 KB incl. scale (CM384 §4.2)
    assert comm.message_bytes(7168, "bf16", 0, 512) == 14336  # 14 KB


def test_hierarchical_split(cm384):
    up, out = comm._split_bytes(cm384, "ub", 1e6, 320)
    assert out == 0 and up == pytest.approx(1e6 * 319 / 320)  # EP320 on CloudMatrix384 is all UB


def test_roofline_worked_number(cm384, r1):
    # INT8 expert up-projection, 853 tokens on 8 of 24 AIC (decode MoE stream): compute-bound
    op = graph.gemm("moe.experts.up", "moe", 853.0, 7168, 4096, "int8")
    t = roofline.compute_op_time(op, cm384.chip, cube_share=8 / 24)
    expected = 2 * 853 * 7168 * 4096 / (752e12 * 0.797 * 0.74 / 3)  # Table 10 x pipeline_compute
    assert float(t.compute_s) == pytest.approx(expected, rel=1e-12)
    assert roofline.BOUNDS[int(t.bound)] == "compute"
    assert float(t.time_s) == pytest.approx(expected + 5e-6, rel=1e-12)
    # the same GEMM for 4 tokens streams 29 MB of weights: memory-bound
    small = roofline.compute_op_time(graph.gemm("x", "moe", 4.0, 7168, 4096, "int8"), cm384.chip)
    assert roofline.BOUNDS[int(small.bound)] == "memory"
    assert float(small.memory_s) == pytest.approx((7168 * 4096 + 4 * 7168 + 4 * 4096 * 2) / (1.6e12 * 0.841))


def test_fused_ops_pay_one_fixed_cost(cm384):
    ops = graph.fuse([graph.vector("a", "attn", 1.0, 10, 10), graph.vector("b", "attn", 1.0, 10, 10)])
    fixed = [float(roofline.compute_op_time(o, cm384.chip).fixed_s) for o in ops]
    assert fixed == [2e-6, 0.0]


def test_param_totals(r1):
    total, active = graph.param_totals(r1)
    assert total == pytest.approx(671e9, rel=0.005)
    assert active == pytest.approx(37e9, rel=0.03)


@pytest.mark.parametrize(
    ("ep", "slots", "red", "shared"),
    [(320, 1, 32, 32), (32, 9, 32, 32), (144, 2, 32, 144), (72, 4, 32, 72), (256, 1, 0, 256)],
)
def test_placement(r1, ep, slots, red, shared):
    p = deployment.place_experts(r1, ep)
    assert (p.routed_slots_per_rank, p.num_redundant, p.shared_ranks) == (slots, red, shared)


def test_precision_missing_dtype_is_an_error(cm384):
    from cmperf.errors import CmperfError

    with pytest.raises(CmperfError, match="no fp8 compute"):
        Precision(gemm="fp8", experts="fp8").check(cm384)


def test_pipeline_compute_scales_compute_ceilings_only(cm384, r1):
    """pipeline_compute (0.74 on the 910C, calibrated on decode batch 96) divides every compute ceiling and
    leaves HBM and fixed costs alone: it moves compute-bound large-batch decode ~1/0.74 and memory-bound
    small-batch decode little."""
    import dataclasses

    from cmperf import decode
    from cmperf.deployment import default_precision

    assert cm384.chip.eff["pipeline_compute"] == pytest.approx(0.74)
    raw_chip = dataclasses.replace(cm384.chip, eff={**cm384.chip.eff, "pipeline_compute": 1.0})
    raw = dataclasses.replace(cm384, chip=raw_chip)
    op = graph.gemm("moe.experts.up", "moe", 853.0, 7168, 4096, "int8")
    cal, unc = roofline.compute_op_time(op, cm384.chip), roofline.compute_op_time(op, raw_chip)
    assert float(cal.compute_s) == pytest.approx(float(unc.compute_s) / 0.74, rel=1e-12)
    assert float(cal.memory_s) == float(unc.memory_s) and float(cal.fixed_s) == float(unc.fixed_s)

    prec = default_precision(cm384)

    def tpot(system, batch, n):
        ev = decode.evaluate(
            system, r1, ddep(batch_per_device=batch, kv_len=4096, ep_size=320, microbatches=n, precision=prec)
        )
        return float(np.asarray(ev.tpot_s).reshape(-1)[0])

    big = tpot(cm384, 96, 2) / tpot(raw, 96, 2)  # attention stream compute-bound: most of 1/0.74 = 1.35
    small = tpot(cm384, 8, 1) / tpot(raw, 8, 1)  # HBM / latency-bound
    assert 1.15 < big < 1.36 and 1.0 < small < 1.05


@pytest.mark.parametrize(
    ("key", "op_kind", "ceiling"),
    [
        ("gemm_compute", "gemm", "compute_s"),
        ("gemm_memory", "gemm", "memory_s"),
        ("attention_compute", "attention", "compute_s"),
        ("attention_memory", "attention", "memory_s"),
        ("vector_memory", "vector", "memory_s"),
    ],
)
def test_each_efficiency_moves_exactly_its_ceiling(cm384, r1, key, op_kind, ceiling):
    """Halving one efficiency doubles that ceiling of the ops of its kind and leaves the others alone."""
    import dataclasses

    half = dataclasses.replace(cm384.chip, eff={**cm384.chip.eff, key: cm384.chip.eff[key] / 2})
    ops = graph.mla_decode_ops(r1, Precision(), 48.0, 24.0, 4096.0)
    ops = [o for o in ops if o.kind == op_kind]
    assert ops
    for op in ops:
        a, b = roofline.compute_op_time(op, cm384.chip), roofline.compute_op_time(op, half)
        for c in ("compute_s", "memory_s", "fixed_s"):
            want = 2.0 * float(getattr(a, c)) if c == ceiling else float(getattr(a, c))
            assert float(getattr(b, c)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kind", ["gemm", "attention", "vector"])
def test_each_fixed_cost_is_added_once_per_unfused_kernel(cm384, r1, kind):
    """overhead.<kind> is the fixed cost of every kernel of that kind that is not fused into a neighbour
    (CM384 §4.2 fuses the MLA prolog into one kernel: its parts carry no fixed cost of their own)."""
    ops = [o for o in graph.mla_decode_ops(r1, Precision(), 48.0, 24.0, 4096.0) if o.kind == kind]
    assert ops
    for op in ops:
        t = roofline.compute_op_time(op, cm384.chip)
        assert float(t.fixed_s) == (0.0 if op.fused else cm384.chip.overhead_s[kind])
        assert float(t.time_s) == pytest.approx(max(float(t.compute_s), float(t.memory_s)) + float(t.fixed_s))


def test_comm_fixed_cost_is_in_every_intra_instance_collective(cm384):
    """overhead.comm (10 us, msModeling) is the per-call cost of the SP-TP-SP collectives (plus the plane
    latency per log2 step); the EP kernels carry their own fitted alpha instead."""
    base = comm.plane_collective_time(cm384, "ub", 1e6, 16)
    assert float(base.fixed_s) == pytest.approx(1.9e-6 * 4 + cm384.chip.overhead_s["comm"], rel=1e-12)


def test_host_reads_use_the_table1_read_efficiency(cm384):
    """EMS context-cache loads read CPU DRAM over UB: CM384 Table 1 NPU->CPU read 147 of 196 GB/s (0.75)
    instead of the NPU->NPU write figure (0.699) the all-to-all uses; planes without the key use theirs."""
    ub = cm384.planes["ub"]
    assert ub.host_read_eff == pytest.approx(0.75) and ub.efficiency == pytest.approx(0.699)
    nbytes = 1e9
    assert float(comm.transfer_s(cm384, "ub", nbytes, from_host=True)) == pytest.approx(
        ub.latency_s + nbytes / (196e9 * 0.75), rel=1e-12
    )
    assert float(comm.transfer_s(cm384, "vpc", nbytes, from_host=True)) == float(
        comm.transfer_s(cm384, "vpc", nbytes)
    )
