"""cmperf.runtime (issue 18): the heap setting changes no number; a large grid's point with the system's
default attention cores (NaN in the grid) gives its breakdown."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cmperf import decode, runtime
from cmperf.deployment import Deployment
from cmperf.specs import load_model, load_system


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_heap_is_idempotent_and_changes_no_number():
    s, m = load_system("cloudmatrix384"), load_model("deepseek-r1")
    before = decode.predict(s, m, Deployment()).tpot_s
    assert runtime.keep_heap() and runtime.keep_heap()
    assert decode.predict(s, m, Deployment()).tpot_s == before


def test_point_of_a_blockwise_grid_with_default_cores():
    """``.at(i)`` of a grid beyond one block whose attention cores are NaN (the system default) is the
    scalar prediction (decode.point_deployment used to call int(NaN))."""
    s, m = load_system("cloudmatrix384"), load_model("deepseek-r1")
    b = np.linspace(8.0, 96.0, 70_000)
    cores = np.full(b.shape, np.nan)  # NaN: the system default, as the search passes it
    ev = decode.evaluate(s, m, Deployment(batch_per_device=b, microbatches=2, attention_cube_cores=cores))
    p = ev.at(123)
    assert p.tpot_s == decode.predict(s, m, Deployment(batch_per_device=float(b[123]), microbatches=2)).tpot_s
