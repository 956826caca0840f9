"""cmperf.step's list schedule: worked cases, the coarse formula it refines, decode's use of it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ddep

from cmperf import decode, specs, step

A, M = False, True  # segment keys: stream A (attention / compute), stream M (MoE / comm)


def _run(segs, n, count, extrapolate=False):
    chain, periods = step.pipeline_s([("x", segs, count)], n, extrapolate=extrapolate)
    return float(chain), float(periods["x"])


# ---------- worked cases (hand-computed)


@pytest.mark.parametrize("extrapolate", [False, True])
def test_one_microbatch_is_the_serial_sum(extrapolate):
    chain, period = _run([[A, 1.0], [M, 2.0], [A, 3.0]], 1, 4, extrapolate)
    assert chain == 24.0 and period == 6.0


def test_two_segments_one_layer_two_microbatches_is_fill_plus_drain():
    # A0 [0,1], A1 [1,2], M0 [1,2], M1 [2,3]
    assert _run([[A, 1.0], [M, 1.0]], 2, 1) == (3.0, 3.0)


@pytest.mark.parametrize("extrapolate", [False, True])
def test_equal_segments_many_layers_period_is_twice_the_max(extrapolate):
    chain, period = _run([[A, 1.0], [M, 1.0]], 2, 50, extrapolate)
    assert period == 2.0 and chain == 2.0 * 50 + 1.0  # + the drain of the last M segment


@pytest.mark.parametrize("extrapolate", [False, True])
def test_comm_behind_a_short_compute_segment_is_slower_than_the_coarse_formula(extrapolate):
    """Segments [A=2][M=1][A=1][M=2], n = 2 (module docstring). Coarse: max(2*3, 2*3, 3+3) = 6 per layer.
    Layer 1 by hand: A=2 of mb0 [0,2], mb1 [2,4]; M=1 mb0 [2,3], mb1 [4,5]; A=1 mb0 [4,5] (behind mb1's
    A=2), mb1 [5,6]; M=2 mb0 [5,7], mb1 [7,9]. Layer 2 starts mb0's A=2 at 7: one layer every 7."""
    segs = [[A, 2.0], [M, 1.0], [A, 1.0], [M, 2.0]]
    assert _run(segs, 2, 1, extrapolate) == (9.0, 9.0)
    chain, period = _run(segs, 2, 10, extrapolate)
    assert period == 7.0 and chain == 9.0 + 7.0 * 9
    coarse = max(2 * 3.0, 2 * 3.0, 3.0 + 3.0)
    assert period > coarse


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize(("a", "m"), [(1.0, 1.0), (0.75, 0.5), (0.5, 1.25), (3.0, 0.125)])
def test_split_cores_two_segments_steady_state_is_the_coarse_formula(n, a, m):
    """[A][M] per layer (a CloudMatrix384 decode layer): the steady state is exactly max(n*a, n*m, a+m)
    (dyadic times: no rounding), whether simulated layer by layer or extrapolated."""
    for extrapolate in (False, True):
        _, period = _run([[A, a], [M, m]], n, 40, extrapolate)
        assert period == max(n * a, n * m, a + m)


def test_a_backlog_from_the_previous_stage_is_worked_off_before_extrapolating():
    """An M-heavy stage then an A-heavy one whose streams nearly tie: the M backlog takes ~18 layers to
    drain, so a fixed few simulated layers would extrapolate the wrong period; per point, the schedule is
    simulated until periodic, and equals the full simulation."""
    layers = [("dense", [[A, 227.6], [M, 312.2]], 3), ("moe", [[A, 227.6], [M, 213.4]], 58)]
    full_chain, full = step.pipeline_s(layers, 3)
    chain, ext = step.pipeline_s(layers, 3, extrapolate=True)
    assert float(chain) == pytest.approx(float(full_chain), rel=1e-12)
    assert float(ext["moe"]) == pytest.approx(3 * 227.6, rel=1e-12) == float(full["moe"])
    # a fixed 4-layer window would have seen the M stream's 3 * 213.4 per layer instead
    _, four = step.pipeline_s([layers[0], ("moe", layers[1][1], 4)], 3)
    assert float(four["moe"]) == pytest.approx(3 * 213.4, rel=1e-12)


def test_arrays_equal_points_and_extrapolation_equals_full_simulation():
    rng = np.random.default_rng(5)
    k = 200
    n = rng.choice([1.0, 2.0, 3.0, 4.0], k)
    dense = [[A, rng.uniform(0.1, 1.0, k)], [M, rng.uniform(0.1, 1.0, k)]]
    moe = [[A, rng.uniform(0.1, 1.0, k)], [M, rng.uniform(0.05, 0.5, k)]]
    moe += [[A, rng.uniform(0.05, 0.5, k)], [M, rng.uniform(0.1, 1.0, k)]]
    mtp_count = rng.choice([0.0, 1.0], k)
    layers = [("dense", dense, 3), ("moe", moe, 58), ("mtp", moe, mtp_count)]
    full_chain, full = step.pipeline_s(layers, n)
    chain, per = step.pipeline_s(layers, n, extrapolate=True)
    np.testing.assert_allclose(chain, full_chain, rtol=1e-12)
    np.testing.assert_allclose(per["moe"], full["moe"], rtol=1e-12)
    for i in range(0, k, 7):
        pt = [(nm, [[s, d[i]] for s, d in segs], c if np.ndim(c) == 0 else c[i]) for nm, segs, c in layers]
        pt = [x for x in pt if np.ndim(x[2]) or x[2] > 0]
        c1, p1 = step.pipeline_s(pt, n[i], extrapolate=True)
        assert float(c1) == chain[i] and float(p1["moe"]) == per["moe"][i]  # exact, not a tolerance


# ---------- decode uses it


def _check_step_is_the_makespan(system, model, **knobs):
    ev = decode.evaluate(system, model, ddep(**knobs))
    policy = system.overlap_for("decode").policy
    chain_sts = [st for st in ev.stages if st.stage.name != "head"]
    head = next(st for st in ev.stages if st.stage.name == "head")
    chain, periods = step.compose(chain_sts, knobs.get("microbatches", 2), policy, rotate=True)
    np.testing.assert_allclose(ev.step_s, chain + head.period_s, rtol=1e-12)  # all layers simulated
    np.testing.assert_allclose(ev.moe_layer_s, periods["moe"], rtol=1e-12)
    assert np.all(ev.lower_tpot_s <= ev.tpot_s) and np.all(ev.tpot_s <= ev.upper_tpot_s)
    return ev, chain_sts


def test_cm384_decode_step_is_the_makespan_and_its_period_the_coarse_formula(cm384, r1):
    b = np.array([1.0, 8.0, 32.0, 96.0, 160.0])[:, None]
    n = np.array([1.0, 2.0, 3.0])[None, :]
    ev, sts = _check_step_is_the_makespan(
        cm384, r1, batch_per_device=b, kv_len=4096, ep_size=320, microbatches=n
    )
    moe = next(st for st in sts if st.stage.name == "moe")
    assert [m for m, _ in step.segments(moe, "split-cores", rotate=True)] == [A, M]
    # split cores, two segments per layer: the steady state is the coarse period (with its HBM floor)
    np.testing.assert_allclose(
        ev.moe_layer_s, np.broadcast_to(moe.period_s, ev.moe_layer_s.shape), rtol=1e-12
    )
    # only fill, drain and the stage boundaries differ: within 2% of the coarse step
    np.testing.assert_allclose(ev.step_s, ev.ideal_step_s, rtol=0.02)


def test_gpu_decode_comm_waits_behind_short_compute(r1):
    h800 = specs.load_system("dgx-h800")
    ev, sts = _check_step_is_the_makespan(
        h800, r1, batch_per_device=64, kv_len=4096, ep_size=144, microbatches=np.array([2.0, 3.0])
    )
    moe = next(st for st in sts if st.stage.name == "moe")
    segs = step.segments(moe, "compute-comm", rotate=True)
    assert [m for m, _ in segs] == [A, M, A, M]  # [residual + attention + gate][dispatch][experts][combine]
    assert len(step.segments(moe, "compute-comm")) == 5  # unrotated: the residual is a fifth segment
    coarse = np.broadcast_to(moe.period_s, (2,))
    # at 2 microbatches the combine waits behind the short expert segment: > 20% above the coarse period
    assert ev.moe_layer_s[0] > 1.2 * coarse[0]
    assert np.all(ev.moe_layer_s >= coarse * (1 - 1e-12))
    assert np.all(ev.step_s > ev.ideal_step_s)


def test_decode_extrapolation_equals_all_layers(cm384, r1, monkeypatch):
    rng = np.random.default_rng(9)
    real = step.compose

    def all_layers(*a, **k):
        return real(*a, **{**k, "extrapolate": False})

    for system in (cm384, specs.load_system("dgx-h800")):
        knobs = dict(
            batch_per_device=rng.choice([2.0, 8.0, 24.0, 96.0, 160.0], 300),
            kv_len=rng.choice([512.0, 4096.0, 16000.0], 300),
            ep_size=320.0 if system is cm384 else 144.0,
            microbatches=rng.choice([1.0, 2.0, 3.0], 300),
            mtp=rng.choice([0.0, 1.0], 300),
            imbalance=rng.choice([1.0, 1.3, 2.0], 300),
        )
        ev = decode.evaluate(system, r1, ddep(**knobs))
        monkeypatch.setattr(decode, "compose", all_layers)
        full = decode.evaluate(system, r1, ddep(**knobs))
        monkeypatch.setattr(decode, "compose", real)
        np.testing.assert_allclose(ev.step_s, full.step_s, rtol=1e-12)
        np.testing.assert_allclose(ev.moe_layer_s, full.moe_layer_s, rtol=1e-12)


def test_schedule_binding(r1):
    h800 = specs.load_system("dgx-h800")
    ev = decode.evaluate(h800, r1, ddep(batch_per_device=128, kv_len=4096, ep_size=144, microbatches=1))
    moe = next(st for st in ev.stages if st.stage.name == "moe")
    assert step.schedule_binding(moe, "compute-comm", 1, ev.periods["moe"], rotate=True) == 2  # serial
    assert step.schedule_binding(moe, "compute-comm", 1, 0.5 * float(moe.hbm_s)) == 3  # the HBM floor
    # [A=2][M=1][A=1][M=2], n = 2, steady state by hand: the critical cycle is mb0's M=2 -> mb0's A=2 ->
    # mb1's A=2 -> mb1's M=1 -> mb0's M=2 (ties go to the stream's previous segment): A 4 + M 3 = the
    # period 7, over the 5 counted layers A 20, M 15; A holds more of it
    on_path = step._critical_path_s([(A, 2.0), (M, 1.0), (A, 1.0), (M, 2.0)], 2)
    assert on_path == {A: 20.0, M: 15.0}
    # the dgx-h800 decode MoE layer at 2 microbatches: the compute stream holds more of the critical path
    ev2 = decode.evaluate(h800, r1, ddep(batch_per_device=128, kv_len=4096, ep_size=144, microbatches=2))
    moe2 = next(st for st in ev2.stages if st.stage.name == "moe")
    assert step.schedule_binding(moe2, "compute-comm", 2, ev2.periods["moe"], rotate=True) == 0
