"""cmperf.step's fast paths give the bits of the plain computations they replace.

* ``_periodic_stage`` checks the points still simulated in rounds of several layers: equal, bit for bit,
  to checking after every layer (``_reference_periodic``, the plain form of the same rule), whether a
  round is one layer (a plain gather of its periodic points) or many.
* ``pipeline_s`` keeps its state at the broadcast shape of the inputs seen so far: an open mesh equals the
  same points given as flat arrays.
* ``stage_time(keep_ops=False)`` sums op times from work buffers and sums a prefix of ops that two stages
  share once: equal to the per-op breakdown (``keep_ops=True``) and to no sharing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import ddep

from cmperf import decode, roofline, specs, step

A, M = False, True


def _reference_periodic(segs, x, nd, count):
    """``step._periodic_stage`` one point at a time, checked after every layer (its docstring's rule); also
    the layer each point is found periodic at (count + 1: never)."""
    x = x.copy()
    used = sorted({bool(m) for m, _ in segs})
    rows = [*range(nd), *(nd + int(k) for k in used)]
    period, at = np.empty(x.shape[1]), np.full(x.shape[1], count + 1)
    for p in range(x.shape[1]):
        one = [(m, [d[p : p + 1] for d in ds]) for m, ds in segs]
        s = x[:, p : p + 1].copy()
        for i in range(1, count + 1):
            before, last = s.copy(), s[:nd].max(axis=0)
            step._layer(one, s, nd)
            moved = s[rows] - before[rows]
            hi = moved.max(axis=0)
            if 1 < i < count and hi - moved.min(axis=0) <= step.PERIODIC_RTOL * s[:nd].max(axis=0):
                s[rows] += (count - i) * hi
                period[p], at[p] = hi[0], i
                break
            if i == count:
                period[p] = (s[:nd].max(axis=0) - last)[0]
        x[:, p] = s[:, 0]
    return x, period, at


def _backlogged_stage(rng, k, nd, streams=(A, M)):
    """(segments, state) of k points with n in 1..nd microbatches: an M-heavy stage's state, then a stage
    whose streams nearly tie, so the backlog takes from one layer to more than the stage to work off
    (``streams=(A,)``: a stage of stream A alone, whose M free time does not move)."""
    n = rng.integers(1, nd + 1, k)
    pad = lambda d: [np.where(j < n, d, 0.0) for j in range(nd)]  # noqa: E731
    a = rng.uniform(0.5, 1.0, k)
    x = np.zeros((nd + 2, k))
    for _ in range(3):
        step._layer([(A, pad(a)), (M, pad(a * rng.uniform(1.2, 1.6, k)))], x, nd)
    m = a * rng.uniform(0.95, 1.0, k)
    return [(s, pad(a if s == A else m)) for s in streams], x


@pytest.mark.parametrize("round_point_layers", [1, 64, 8192, 10**9])
@pytest.mark.parametrize("streams", [(A, M), (A,)])
def test_rounds_of_checks_equal_a_check_after_every_layer(monkeypatch, round_point_layers, streams):
    monkeypatch.setattr(step, "ROUND_POINT_LAYERS", round_point_layers)
    k, nd, count = 200, 3, 40
    segs, x0 = _backlogged_stage(np.random.default_rng(3), k, nd, streams)
    x = x0.copy()
    period = step._periodic_stage(segs, x, nd, count)
    ref_x, ref_period, at = _reference_periodic(segs, x0, nd, count)
    if streams == (A, M):  # points periodic at the first check, over many later layers, and never
        assert at.min() == 2 and (at == count + 1).any() and len(set(at.tolist())) > 10
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(period, ref_period)


def test_rounds_of_one_layer_and_of_all_layers_give_the_same_bytes(monkeypatch):
    """A round of one layer takes its periodic points by a plain gather (each one's first periodic layer
    is that layer); one round of all the layers searches each point's first: the same bytes, those of the
    check after every layer."""
    k, nd, count = 300, 3, 40
    segs, x0 = _backlogged_stage(np.random.default_rng(5), k, nd)
    got = []
    for round_point_layers in (1, 10**9):  # k = 1 in every round; one round of count - 2 layers
        monkeypatch.setattr(step, "ROUND_POINT_LAYERS", round_point_layers)
        x = x0.copy()
        got.append((step._periodic_stage(segs, x, nd, count).tobytes(), x.tobytes()))
    ref_x, ref_period, _ = _reference_periodic(segs, x0, nd, count)
    assert got[0] == got[1] == (ref_period.tobytes(), ref_x.tobytes())


def test_an_open_mesh_equals_its_points_flat():
    rng = np.random.default_rng(11)
    n = np.array([1.0, 2.0, 3.0])[:, None, None]
    dense = [[A, rng.uniform(0.1, 1.0, (3, 1, 1))], [M, rng.uniform(0.1, 1.0, (3, 4, 1))]]
    moe = [[A, rng.uniform(0.1, 1.0, (3, 1, 5))], [M, rng.uniform(0.05, 1.0, (3, 4, 5))]]
    mtp = rng.choice([0.0, 1.0], (1, 4, 5))
    layers: list[tuple[str, list, Any]] = [("dense", dense, 3), ("moe", moe, 30), ("mtp", moe, mtp)]
    floors = {"dense": rng.uniform(0.0, 6.0, (3, 4, 1)), "moe": 25.0}
    shape = (3, 4, 5)

    def flat(x):
        return np.broadcast_to(x, shape).reshape(-1)

    flat_layers: list[tuple[str, list, Any]] = [
        (nm, [[m, flat(d)] for m, d in segs], c if np.ndim(c) == 0 else flat(c)) for nm, segs, c in layers
    ]
    for extrapolate in (False, True):
        chain, per = step.pipeline_s(layers, n, extrapolate=extrapolate, floors=floors)
        fchain, fper = step.pipeline_s(
            flat_layers, flat(n), extrapolate=extrapolate, floors={k: flat(v) for k, v in floors.items()}
        )
        assert chain.shape == shape and all(p.shape == shape for p in per.values())
        np.testing.assert_array_equal(chain.reshape(-1), fchain)
        for name in per:
            np.testing.assert_array_equal(per[name].reshape(-1), fper[name])


def _stage_arrays(st):
    return [st.a_s, st.m_s, st.period_s, st.lower_s, st.upper_s, st.hbm_s, *(t for _, t in st.runs)]


@pytest.mark.parametrize("system_name", ["cloudmatrix384", "dgx-h800"])
def test_summed_stage_times_equal_the_breakdown_and_no_sharing(system_name, r1):
    system = specs.load_system(system_name)
    rng = np.random.default_rng(2)
    k = 64
    dep = ddep(
        batch_per_device=rng.choice([2.0, 24.0, 160.0], k),
        kv_len=rng.choice([512.0, 12000.0], k),
        microbatches=rng.choice([1.0, 2.0, 3.0], k),
        mtp=rng.choice([0.0, 1.0], k),
    ).resolve(system, r1)
    stages = decode._stages(
        system,
        r1,
        dep.precision,
        np.asarray(dep.batch_per_device) / system.ranks_per_device,
        np.asarray(dep.kv_len),
        np.asarray(dep.ep_size, dtype=float),
        np.asarray(dep.microbatches),
        np.asarray(dep.mtp),
        decode.placement_arrays(
            r1, np.asarray(dep.ep_size, dtype=float), dep.num_redundant, dep.slots_per_rank
        ),
        (dep.eplb, dep.imbalance),
    )[0][:-1]
    policy = system.overlap_for("decode").policy
    share = decode.attention_cores(system, None) / system.chip.cube_cores if policy == "split-cores" else 1.0
    assert step._shared_prefixes(stages)[:2] == [10, 10]  # the dense and MoE layers share attention
    kept, *kept_sums = step.step_time(stages, system, dep.microbatches, policy, share, keep_ops=True)
    fast, *fast_sums = step.step_time(stages, system, dep.microbatches, policy, share, keep_ops=False)
    memo: dict = {}
    alone = [
        step.stage_time(s, system, dep.microbatches, policy, share, keep_ops=False, memo=memo) for s in stages
    ]
    for a, b, c in zip(kept, fast, alone, strict=True):
        assert [m for m, _ in a.runs] == [m for m, _ in b.runs] == [m for m, _ in c.runs]
        for x, y, z in zip(_stage_arrays(a), _stage_arrays(b), _stage_arrays(c), strict=True):
            np.testing.assert_array_equal(np.broadcast_to(y, np.shape(x)), x)
            np.testing.assert_array_equal(y, z)
    for x, y in zip(kept_sums, fast_sums, strict=True):
        np.testing.assert_array_equal(np.broadcast_to(y, np.shape(x)), x)


def test_op_totals_into_work_buffers_equal_new_arrays(cm384, r1):
    ev = decode.evaluate(cm384, r1, ddep(batch_per_device=np.array([8.0, 96.0]), kv_len=4096.0))
    scratch = roofline.Scratch()
    for st in ev.stages:
        for op in st.stage.ops:
            if op.kind == "comm":
                continue
            rate = None
            if op.kind != "vector":
                rate = roofline.compute_rate(cm384.chip, op.kind, op.dtype, np.array([1.0, 0.5])[:, None])
            plain = roofline.op_totals(op, cm384.chip, rate)
            into = roofline.op_totals(op, cm384.chip, rate, scratch)
            assert all(isinstance(x, np.ndarray) for x in into)
            for x, y in zip(plain, into, strict=True):
                np.testing.assert_array_equal(x, y)
