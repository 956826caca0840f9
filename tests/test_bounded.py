"""Bounded-memory evaluation (issue 18): a grid cut into blocks gives the bits of one call, ``.at(i)`` of a
summary-only grid is the point's own prediction, and memory stays bounded per point."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from conftest import ddep

from cmperf import decode, prefill, specs
from cmperf.deployment import Deployment


def _scattered(rng, n, ep_choices, ranks_per_device):
    """n random points over every decode knob (MTP 0/1 mixed, core splits, EP, KV spread)."""
    ep = rng.choice(ep_choices, n)
    return {
        "batch_per_device": rng.choice([2.0, 8.0, 24.0, 96.0, 160.0], n),
        "kv_len": rng.choice([512.0, 4096.0, 12000.0], n),
        "devices": ep / ranks_per_device,
        "ep_size": ep,
        "microbatches": rng.choice([1.0, 2.0, 3.0], n),
        "mtp": rng.choice([0.0, 1.0], n),
        "mtp_accept": rng.choice([0.5, 0.7, 0.9], n),
        "attention_cube_cores": rng.choice([8.0, 12.0, 16.0, 20.0], n),
        "kv_cv": rng.choice([0.0, 0.05], n),
    }


def _mesh(system):
    """The optimizer's open-mesh layout: MTP x microbatches x cores x instance size x batch (720 points)."""
    rpd = system.ranks_per_device
    sizes = np.array([32.0, 64.0, 160.0]) if rpd == 2 else np.array([32.0, 64.0, 144.0])
    return ddep(
        mtp=np.array([0.0, 1.0])[:, None, None, None, None],
        microbatches=np.array([1.0, 2.0, 3.0])[None, :, None, None, None],
        attention_cube_cores=np.array([np.nan, 8.0, 20.0, 16.0])[None, None, :, None, None],
        devices=sizes[None, None, None, :, None],
        ep_size=sizes[None, None, None, :, None] * rpd,
        batch_per_device=np.arange(1, 11, dtype=float)[None, None, None, None, :] * 8.0,
        kv_len=4224.0,
        kv_cv=0.03,
    )


def _assert_summary_equal(a, b, names):
    for k in names:
        x, y = np.asarray(getattr(a, k)), np.asarray(getattr(b, k))
        # identical arithmetic per point: exact equality, NaN where both are NaN
        np.testing.assert_array_equal(np.broadcast_to(x, a.shape), np.broadcast_to(y, b.shape), err_msg=k)


@pytest.mark.parametrize("system_name", ["cloudmatrix384", "dgx-h800"])
def test_chunked_decode_equals_one_call_bit_for_bit(system_name, r1):
    s = specs.load_system(system_name)
    ep = [32.0, 64.0, 320.0] if s.ranks_per_device == 2 else [32.0, 64.0, 144.0]
    knobs = _scattered(np.random.default_rng(5), 300, ep, s.ranks_per_device)
    one = decode.evaluate(s, r1, ddep(**knobs), keep_ops=False)  # 300 points: one block
    tiny = decode.evaluate(s, r1, ddep(**knobs), chunk_points=7)  # 43 blocks, the last of 6 points
    assert one.shape == tiny.shape == (300,)
    assert tiny.stages == () and tiny.memory_parts == {} and tiny.periods == {}
    _assert_summary_equal(one, tiny, decode._SUMMARY)
    mesh = _mesh(s)
    whole = decode.evaluate(s, r1, mesh, keep_ops=True)  # the per-op path, one call
    for chunk in (5, 37, 100):  # blocks cut inside the batch axis, across the size axis, across two axes
        cut = decode.evaluate(s, r1, mesh, chunk_points=chunk)
        assert cut.shape == (2, 3, 4, 3, 10)
        _assert_summary_equal(whole, cut, decode._SUMMARY)
    # the last point of the last block is the point evaluated alone
    alone = decode.evaluate(s, r1, decode.point_deployment(cut.deployment, cut.shape, 719))
    assert float(cut.tpot_s[1, 2, 3, 2, 9]) == float(alone.tpot_s) > 0.01
    if system_name == "cloudmatrix384":  # the knobs matter: 2 microbatches beat 1 at batch 80, EP320
        assert cut.tpot_s[1, 1, 0, 2, 9] < cut.tpot_s[1, 0, 0, 2, 9]


def test_grid_blocks_partition_the_grid():
    # the docstring's worked case: 5 modes x 40 sizes x 300 batches per block, 2 x 5 blocks
    blocks = list(decode.grid_blocks((2, 23, 40, 300), 1 << 16))
    assert len(blocks) == 10
    full = np.zeros((2, 23, 40, 300))
    assert {full[b].shape for b in blocks[:4]} == {(1, 5, 40, 300)}
    for shape, chunk in (((7,), 3), ((3, 5, 4), 6), ((2, 1, 9), 4), ((4, 4), 100), ((), 8)):
        seen = np.zeros(shape, dtype=int)
        for b in decode.grid_blocks(shape, chunk):
            assert seen[b].size <= chunk or seen[b].ndim == 0
            seen[b] += 1
        assert np.all(seen == 1), (shape, chunk)  # every point in exactly one block


def test_at_of_a_summary_grid_is_the_points_prediction(cm384, r1):
    knobs = _scattered(np.random.default_rng(9), 120, [64.0, 160.0, 320.0], 2)
    ev = decode.evaluate(cm384, r1, ddep(**knobs), chunk_points=16)
    assert ev.stages == ()  # summary only: .at(i) evaluates the point again
    for i in (0, 57, 119):
        point = {k: float(v[i]) for k, v in knobs.items()}
        for k in ("devices", "ep_size", "microbatches", "mtp", "attention_cube_cores"):
            point[k] = int(point[k])
        p = decode.predict(cm384, r1, ddep(**point))
        got = ev.at(i)
        assert got.tpot_s == p.tpot_s == float(ev.tpot_s[i])
        assert (
            got.ops == p.ops and got.streams == p.streams and got.hbm_breakdown_bytes == p.hbm_breakdown_bytes
        )
        assert got.lower_tpot_s == p.lower_tpot_s and got.upper_tpot_s == p.upper_tpot_s
        assert len(got.ops) > 20 and got.tpot_s > 0.005


def test_small_grids_keep_the_breakdown_and_predict_is_unchanged(cm384, r1):
    small = decode.evaluate(cm384, r1, ddep(batch_per_device=np.array([8.0, 96.0]), kv_len=4096, ep_size=320))
    assert small.stages is not None and len(small.stages) == 4  # dense, moe, mtp, head
    assert all(t is not None for st in small.stages for t in st.op_times)
    # the paper's 50 ms point (README): 49.49 ms, 1,940 tokens/s per NPU, from the kept breakdown
    p = decode.predict(cm384, r1, Deployment())
    assert round(p.tpot_s * 1e3, 2) == 49.49 and round(p.tokens_per_s_per_device) == 1940


def test_chunked_prefill_equals_one_call(cm384, r1):
    base = Deployment(phase="prefill", devices=16, ep_size=32)
    grid = replace(
        base,
        tokens_per_device=np.array([4096.0, 16384.0, 32768.0])[:, None, None],
        microbatches=np.array([1.0, 2.0])[None, :, None],
        cache_hit=np.array([0.0, 0.25, 0.5])[None, None, :],
    )
    whole = prefill.evaluate(cm384, r1, grid, keep_ops=True)
    cut = prefill.evaluate(cm384, r1, grid, chunk_points=2)
    assert cut.shape == (3, 2, 3) and cut.stages == ()
    _assert_summary_equal(whole, cut, prefill._SUMMARY)
    p = prefill.predict(cm384, r1, replace(base, tokens_per_device=16384, microbatches=2, cache_hit=0.25))
    got = cut.at(1 * 6 + 1 * 3 + 1)
    assert got.batch_s == p.batch_s and got.ops == p.ops and got.ttft_s == p.ttft_s
    assert 1.0 < got.batch_s < 3.0


def test_memory_is_bounded_per_point(cm384, r1):
    """tracemalloc peak (numpy's buffers included) of one call: the optimizer-layout mesh at 2e5 points
    stays under 1 kB per point (the summary arrays are ~110 B of it); scattered points under 4 MB per
    thousand points of a block plus the summary, whatever the grid's size (measured: ~2.6 kB per point of
    a block)."""
    mesh = replace(
        _mesh(cm384),
        batch_per_device=np.arange(1, 84, dtype=float)[None, None, None, None, :, None] * 2.0,
        kv_len=np.linspace(2048.0, 8192.0, 40)[None, None, None, None, None, :],
        mtp=np.array([0.0, 1.0])[:, None, None, None, None, None],
        microbatches=np.array([1.0, 2.0, 3.0])[None, :, None, None, None, None],
        attention_cube_cores=np.array([np.nan, 8.0, 20.0, 16.0])[None, None, :, None, None, None],
        devices=np.array([32.0, 64.0, 160.0])[None, None, None, :, None, None],
        ep_size=np.array([64.0, 128.0, 320.0])[None, None, None, :, None, None],
    )
    n = 2 * 3 * 4 * 3 * 83 * 40
    assert n == 239_040

    def peak(dep, **kw):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            ev = decode.evaluate(cm384, r1, dep, **kw)
            return tracemalloc.get_traced_memory()[1], ev
        finally:
            tracemalloc.stop()

    bytes_, ev = peak(mesh)
    assert ev.tpot_s.shape == (2, 3, 4, 3, 83, 40) and np.isfinite(ev.tpot_s).all()
    assert bytes_ < 1000 * n, bytes_ / n
    knobs = _scattered(np.random.default_rng(1), 40_000, [64.0, 160.0, 320.0], 2)
    bytes_small, _ = peak(ddep(**knobs), chunk_points=4096)
    assert bytes_small < 4096 * 4000 + 40_000 * 200, bytes_small  # one block of 4,096, not 40,000 points
