"""decode.evaluate broadcasts every knob: an array call equals per-point scalar calls, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ddep

from cmperf import decode, specs

FIELDS = (
    "step_s",
    "tpot_s",
    "tokens_per_s_per_device",
    "lower_tpot_s",
    "upper_tpot_s",
    "moe_layer_s",
    "dense_layer_s",
    "imbalance",
    "hbm_bytes_per_rank",
    "max_batch_per_device",
    "feasible",
    "comm_bound_tpot_s",
)


def _grid(rng, n, ep_choices):
    """n random points over every knob (MTP 0/1/2 mixed, attention cores 8..20 mixed, EP mixed)."""
    return {
        "batch_per_device": rng.choice([2.0, 8.0, 24.0, 96.0, 160.0], n),
        "kv_len": rng.choice([512.0, 4096.0, 12000.0], n),
        "ep_size": rng.choice(ep_choices, n),
        "microbatches": rng.choice([1.0, 2.0, 3.0], n),
        "mtp": rng.choice([0.0, 1.0, 2.0], n),
        "mtp_accept": rng.choice([0.5, 0.7, 0.9], n),
        "attention_cube_cores": rng.choice([8.0, 12.0, 16.0, 20.0], n),
    }


def _assert_points_equal(ev, knobs, system, model, extra=None):
    extra = extra or {}
    n = len(next(iter(knobs.values())))
    arrays = {f: np.broadcast_to(getattr(ev, f), (n,)) for f in FIELDS}
    for i in range(n):
        point = {k: float(v[i]) for k, v in knobs.items()}
        one = decode.evaluate(system, model, ddep(**point, **extra))
        for f in FIELDS:
            # identical arithmetic per point: exact equality, not a tolerance
            assert arrays[f][i] == np.asarray(getattr(one, f)), (f, point)
        for k, v in one.memory_parts.items():
            assert np.broadcast_to(ev.memory_parts[k], (n,))[i] == v, (k, point)


@pytest.mark.parametrize("system_name", ["cloudmatrix384", "dgx-h800"])
def test_array_equals_scalar_on_random_grid(system_name, r1):
    s = specs.load_system(system_name)
    rng = np.random.default_rng(7)
    ep_choices = [32.0, 64.0, 128.0, 256.0, 320.0] if s.ranks_per_device == 2 else [32.0, 64.0, 72.0, 144.0]
    knobs = _grid(rng, 60, ep_choices)
    ev = decode.evaluate(s, r1, ddep(**knobs))
    assert np.shape(ev.tpot_s) == (60,)
    _assert_points_equal(ev, knobs, s, r1)


def test_imbalance_and_kv_capacity_broadcast(cm384, r1):
    rng = np.random.default_rng(11)
    knobs = _grid(rng, 24, [64.0, 320.0])
    knobs["imbalance"] = rng.choice([1.0, 1.3, 2.0], 24)
    knobs["kv_capacity_len"] = knobs["kv_len"] + rng.choice([0.0, 256.0, 4096.0], 24)
    _assert_points_equal(decode.evaluate(cm384, r1, ddep(**knobs)), knobs, cm384, r1)


def test_open_mesh_over_mtp_and_cores(cm384, r1):
    """The optimizer's layout: orthogonal axes broadcast to the full mesh, one call."""
    mtp = np.array([0.0, 1.0])[:, None, None]
    cores = np.array([8.0, 12.0, 16.0, 20.0])[None, :, None]
    b = np.array([8.0, 48.0, 96.0])[None, None, :]
    ev = decode.evaluate(
        cm384, r1, ddep(batch_per_device=b, kv_len=4096, ep_size=320, mtp=mtp, attention_cube_cores=cores)
    )
    assert ev.tpot_s.shape == (2, 4, 3)
    for i, m in enumerate(mtp.ravel()):
        for j, c in enumerate(cores.ravel()):
            one = decode.evaluate(
                cm384,
                r1,
                ddep(batch_per_device=b.ravel(), kv_len=4096, ep_size=320, mtp=m, attention_cube_cores=c),
            )
            np.testing.assert_array_equal(ev.tpot_s[i, j], one.tpot_s)
            hbm = np.broadcast_to(ev.hbm_bytes_per_rank, ev.tpot_s.shape)  # no core axis in memory
            np.testing.assert_array_equal(hbm[i, j], one.hbm_bytes_per_rank)
    # the knobs matter: MTP off runs a shorter step, and the core split moves the step at batch 96
    assert np.all(ev.step_s[0] < ev.step_s[1])
    assert np.ptp(ev.step_s[1, :, 2]) > 0


def test_mixed_mtp_stage_counts_and_nan_cores(cm384, r1):
    ev = decode.evaluate(
        cm384, r1, ddep(batch_per_device=96, kv_len=4096, ep_size=320, mtp=np.array([0.0, 1.0, 0.0]))
    )
    mtp_stage = next(st for st in ev.stages if st.stage.name == "mtp")
    assert np.asarray(mtp_stage.stage.count).tolist() == [0.0, 1.0, 0.0]
    head = next(st for st in ev.stages if st.stage.name == "head")
    names = [op.name for op in head.stage.ops]
    mtp_head = [t for op, t in zip(head.stage.ops, head.op_times, strict=True) if op.name.startswith("mtp.")]
    assert names[-2:] == ["mtp.proj", "mtp.lm_head"]
    for t in mtp_head:  # the MTP head ops cost nothing where MTP is off
        time_s = np.broadcast_to(t.time_s, (3,))
        assert time_s[0] == 0.0 and time_s[2] == 0.0 and time_s[1] > 0.0
    # NaN cores = the system default (16 on CloudMatrix384), like None
    a = decode.evaluate(
        cm384,
        r1,
        ddep(batch_per_device=96, kv_len=4096, ep_size=320, attention_cube_cores=np.array([np.nan, 8.0])),
    )
    d = decode.evaluate(cm384, r1, ddep(batch_per_device=96, kv_len=4096, ep_size=320))
    e = decode.evaluate(
        cm384, r1, ddep(batch_per_device=96, kv_len=4096, ep_size=320, attention_cube_cores=8)
    )
    assert a.tpot_s.tolist() == [float(d.tpot_s), float(e.tpot_s)]
