"""Speed benchmarks (``make bench``): PASS/FAIL per target, exit 1 if any target fails.

Targets (issues 2 and 5):
1. one ``cmperf decode`` process <= 1.5x ``python -c "import numpy, click, rich"`` (best of repeats, both
   sides: on a shared 2-core VM the median of a ~0.1 s process moves by 20% between runs, the minimum is
   the machine's cost of the work, as the timeit documentation recommends);
2. ``decode.evaluate`` on 100,000 operating points (arrays of batch, KV length, EP size) < 1 s;
3. the decode search grid evaluates >= 1,000,000 configurations per second;
4. the default ``cmperf optimize`` finishes in < 5 s wall.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPEATS = 7
# Steady-state CLI latency: the warm-up run writes the bytecode caches a normal install has (pip compiles
# wheels; an editable install compiles on first import). With PYTHONDONTWRITEBYTECODE set (some CI and
# container images) every run would recompile cmperf's modules from source and time the compiler instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], repeats: int = REPEATS, best: bool = False) -> float:
    """Median (``best``: minimum) wall time of a subprocess over ``repeats`` runs, after one warm-up run."""
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, env=ENV)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, env=ENV)
        times.append(time.perf_counter() - t)
        if r.returncode not in (0, 1):
            raise SystemExit(
                f"bench: {' '.join(cmd)} failed with exit {r.returncode}: {r.stderr.decode()[-400:]}"
            )
    return min(times) if best else statistics.median(times)


def best_of(fn, repeats: int = 5) -> float:
    """Median in-process time of ``fn()`` (after one warm-up call that fills caches)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    from cmperf import decode, search, specs
    from cmperf.deployment import Deployment

    sysm = specs.load_system("cloudmatrix384")
    mod = specs.load_model("deepseek-r1")
    rows = []

    # 1. CLI start-up + one prediction vs the bare imports
    base = wall([sys.executable, "-c", "import numpy, click, rich"], repeats=15, best=True)
    one = wall([str(BIN / "cmperf"), "decode", "--format", "json"], repeats=15, best=True)
    rows.append(
        (
            "cmperf decode process vs import numpy,click,rich",
            f"{one:.3f} s vs {base:.3f} s = {one / base:.2f}x",
            "<= 1.5x",
            one / base <= 1.5,
        )
    )

    # 2. decode.evaluate on 100,000 scattered operating points
    rng = np.random.default_rng(0)
    n = 100_000
    ep_choices = search.instance_sizes(sysm) * sysm.ranks_per_device
    ep_choices = ep_choices[search.placement_ok(mod, ep_choices)]
    b = rng.integers(1, 129, n).astype(float)
    kv = rng.integers(512, 32_769, n).astype(float)
    ep = rng.choice(ep_choices, n)
    pts = Deployment(batch_per_device=b, kv_len=kv, ep_size=ep, microbatches=2)
    t_pts = best_of(lambda: decode.evaluate(sysm, mod, pts))
    rows.append(
        ("decode.evaluate, 100,000 points (batch, KV, EP arrays)", f"{t_pts:.3f} s", "< 1 s", t_pts < 1.0)
    )

    # 3. decode search grid throughput (the grid of `cmperf optimize`: MTP x pipeline modes x sizes x batches)
    grid_base = Deployment(kv_len=4224.0, kv_capacity_len=4352.0).resolve(sysm, mod)
    space = search.decode_space(sysm, mod, grid_base)
    calls = []
    t_grid = best_of(
        lambda: search.evaluate_decode_grid(
            sysm, mod, space, grid_base, progress=lambda i, n: calls.append(n)
        ),
        repeats=5,
    )
    rate = space.size / t_grid
    rows.append(
        (
            f"decode grid throughput ({calls[-1]} decode.evaluate call(s))",
            f"{space.size:,} configs in {t_grid:.3f} s = {rate:,.0f}/s",
            ">= 1,000,000/s",
            rate >= 1e6,
        )
    )

    # 4. default `cmperf optimize`
    t_opt = wall([str(BIN / "cmperf"), "optimize", "--format", "json"], repeats=3)
    rows.append(("cmperf optimize (defaults), wall", f"{t_opt:.3f} s", "< 5 s", t_opt < 5.0))

    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'measured':<48}  {'target':<15}  result")
    for name, got, target, ok in rows:
        print(f"{name:<{w}}  {got:<48}  {target:<15}  {'PASS' if ok else 'FAIL'}")
    failed = [r[0] for r in rows if not r[3]]
    if failed:
        print(f"\n{len(failed)} target(s) failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
