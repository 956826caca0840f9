"""The measured-routing EPLB modes in decode (issue 14 items 1-2 wired in): imbalance moves TPOT where
the all-to-all binds, the modes order as their planning does, and the old modes are unchanged."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cmperf import decode
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.specs import load_model, load_system

R1 = load_model("deepseek-r1")


def _tpot(system: str, eplb: str) -> float:
    return decode.predict(load_system(system), R1, Deployment(eplb=eplb)).tpot_s


def test_imbalance_moves_tpot_where_communication_binds():
    """dgx-h100 at its default EP96 decode: the DeepEP all-to-all binds, so today's "model" equals
    "perfect" to 0.1%; timed at its busiest rank, no EPLB is 2-3.5x slower than dynamic EPLB (SGLang
    measured EPLB speeding decode up 2.54x, routing.md; not fitted), and static (planned on another
    dataset) sits between."""
    perfect, model = _tpot("dgx-h100", "perfect"), _tpot("dgx-h100", "model")
    dyn, static, none = (_tpot("dgx-h100", e) for e in ("dynamic", "static", "none"))
    assert model == pytest.approx(perfect, rel=1e-3)
    assert perfect < dyn < static < none
    assert 2.0 < none / dyn < 3.5


def test_old_modes_unchanged_and_prefill_takes_measured_modes():
    """model/perfect keep their numbers (the goldens check them bit for bit); prefill takes the measured
    modes (CM384 prefill: 7,173 tokens/s per NPU balanced, 3,786 with dynamic EPLB, whose busiest rank's
    receive buffers for 16K tokens per NPU need 60.7 GB per die: within the 62.7 GB a 64 GiB die leaves,
    not the 58 GB a decimal 64 GB left, exit 3 then) and names a bad one."""
    s = load_system("cloudmatrix384")
    assert decode.predict(s, R1, Deployment()).tpot_s == pytest.approx(0.04949, rel=2e-3)
    r = CliRunner().invoke(main, ["prefill", "--eplb", "dynamic", "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["tokens_per_s_per_device"] == pytest.approx(3786, rel=0.02) and d["feasible"] is True
    bad = CliRunner().invoke(main, ["prefill", "--eplb", "balanced"])
    assert bad.exit_code == 2 and "--eplb" in bad.stderr
