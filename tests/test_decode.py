import numpy as np
import pytest

from cmperf import decode
from cmperf.deployment import DecodeDeployment

PAPER = {96: (1943.0, 49.4e-3), 8: (538.0, 14.9e-3)}  # CM384 §5: tokens/s per NPU, TPOT


def test_vectorized_matches_scalar(cm384, r1):
    b = np.array([8.0, 32.0, 96.0])
    ev = decode.evaluate(cm384, r1, batch_per_device=b, kv_len=4096, ep_size=320)
    for i, bi in enumerate(b):
        p = decode.predict(cm384, r1, DecodeDeployment(batch_per_device=float(bi)))
        assert p.tpot_s == pytest.approx(float(ev.tpot_s[i]), rel=1e-12)


def test_tpot_monotone_in_batch_and_kv(cm384, r1):
    b = np.arange(1, 257, dtype=float)[:, None]
    kv = np.array([512.0, 1024, 2048, 4096, 8192, 16384, 32768])[None, :]
    ev = decode.evaluate(cm384, r1, batch_per_device=b, kv_len=kv, ep_size=320)
    assert np.all(np.diff(ev.tpot_s, axis=0) >= -1e-12), "TPOT falls as batch grows"
    assert np.all(np.diff(ev.tpot_s, axis=1) >= -1e-12), "TPOT falls as KV grows"
    thr = np.where(ev.feasible, ev.tokens_per_s_per_device, np.inf)
    ok = np.diff(ev.tokens_per_s_per_device, axis=0) >= -1e-9
    assert np.all(ok | ~np.isfinite(thr[1:])), "tokens/s per device falls as batch grows while it fits"


def test_memory_limit_and_infeasible(cm384, r1):
    p = decode.predict(cm384, r1, DecodeDeployment(batch_per_device=96, kv_len=4096))
    assert p.feasible and 150 < p.max_batch_per_device < 400
    big = decode.predict(cm384, r1, DecodeDeployment(batch_per_device=96, kv_len=32768))
    assert not big.feasible and "largest batch that fits" in big.reasons[0]
    assert big.max_batch_per_device < 96


def test_microbatching_and_mtp_effects(cm384, r1):
    base = decode.predict(cm384, r1, DecodeDeployment())
    no_mtp = decode.predict(cm384, r1, DecodeDeployment(mtp=0))
    # MTP: the step grows (verifying 2 tokens) but TPOT falls, since 1.7 tokens are emitted per step
    assert no_mtp.step_s < base.step_s and no_mtp.tpot_s > base.tpot_s
    one = decode.predict(cm384, r1, DecodeDeployment(microbatches=1))
    assert one.step_s > base.step_s  # overlap of the two streams helps at batch 96
    perfect = decode.predict(cm384, r1, DecodeDeployment(eplb="perfect"))
    assert perfect.imbalance == 1.0 and base.imbalance > 1.0
    assert perfect.tpot_s <= base.tpot_s


def test_bounds_bracket_prediction(cm384, r1):
    for b in (1, 8, 96, 200):
        p = decode.predict(cm384, r1, DecodeDeployment(batch_per_device=b))
        assert p.lower_tpot_s < p.tpot_s < p.upper_tpot_s


def test_breakdown_names_and_bounds(cm384, r1):
    p = decode.predict(cm384, r1, DecodeDeployment())
    names = {r.name for r in p.ops}
    for n in (
        "mla.q_down",
        "mla.q_up",
        "mla.kv_down",
        "mla.k_absorb",
        "mla.attention",
        "mla.v_absorb",
        "mla.o_proj",
        "moe.gate",
        "moe.dispatch",
        "moe.experts.up",
        "moe.experts.down",
        "moe.combine",
        "lm_head",
        "embed",
        "mtp.proj",
        "dense.up",
    ):
        assert n in names
    att = next(r for r in p.ops if r.stage == "moe" and r.name == "mla.attention")
    assert att.bound == "compute"  # 2 query tokens x 128 heads over 4K latent KV at batch 48 per die
    small = decode.predict(cm384, r1, DecodeDeployment(batch_per_device=8))
    disp = next(r for r in small.ops if r.stage == "moe" and r.name == "moe.dispatch")
    assert disp.bound == "latency"
