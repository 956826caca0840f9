"""Speed benchmarks (``make bench``, issue 18): every target measured side by side in one run, a table of
measured value, target and PASS/FAIL, exit 1 if any target is missed.

What is measured (a shared 2-core VM: in-process times are medians; a CLI command's ratio to the import
floor takes the minimum of each side over interleaved runs, the machine's cost of the work as the timeit
documentation recommends, the floor being ``python -c "import numpy, click, rich"``):

* the grid path: ``decode.evaluate`` on the optimizer's open mesh (MTP x microbatch/core-split mode x
  instance size x batch, and a KV-length axis for the larger sizes) on CloudMatrix384 at 1e4, 1e5, 1e6
  and 4e6 points: configurations/s (>= 3 M/s from 1e5 up) and peak traced memory per point (tracemalloc,
  a separate run; <= 1 KB at every size);
* scattered points: ``decode.evaluate`` on random (batch, KV length, EP size, microbatches) points;
* ``cmperf optimize`` wall time: CloudMatrix384 (default), hgx-h200 on 32 GPUs, atlas-950-superpod on
  4,096 and on all 8,192 NPUs (a run past twice its target is stopped and reported as a miss);
* ``cmperf serve --rate 40`` and ``cmperf decode --format json`` as ratios to the floor, ``cmperf serve
  --size`` (the README's sizing question) and ``cmperf report`` wall times.

``python scripts/bench.py --only grid,scatter`` runs a subset (names: grid, scatter, optimize, cli).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CMPERF = str(BIN / "cmperf")
FLOOR = [sys.executable, "-c", "import numpy, click, rich"]
# Steady-state CLI latency: the warm-up run writes the bytecode caches a normal install has (pip compiles
# wheels; an editable install compiles on first import). With PYTHONDONTWRITEBYTECODE set (some CI and
# container images) every run would recompile cmperf's modules from source and time the compiler instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

GRID_POINTS = (10_000, 100_000, 1_000_000, 4_000_000)
GRID_RATE_PER_S = 3e6  # sustained from 1e5 points up
SCATTER_POINTS = 500_000
SCATTER_RATE_PER_S = 1e6
PEAK_BYTES_PER_POINT = 1000.0
OPTIMIZE = (  # (label, extra flags, target wall s)
    ("optimize cloudmatrix384 (default)", [], 1.0),
    ("optimize hgx-h200 --devices 32", ["--system", "hgx-h200", "--devices", "32"], 1.0),
    (
        "optimize atlas-950-superpod --devices 4096",
        ["--system", "atlas-950-superpod", "--devices", "4096"],
        10.0,
    ),
    ("optimize atlas-950-superpod (8192)", ["--system", "atlas-950-superpod"], 20.0),
)
SERVE_SIZE = ["serve", "--size", "--devices-total", "384", "--ttft-slo", "2s", "--tpot-slo", "50ms"]


class Slow(Exception):
    """A command ran past its time limit."""


def run_once(cmd: list[str], timeout_s: float | None = None) -> float:
    """Wall time of one subprocess run; exit codes 0 and 1 (a check failed) count as a run."""
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, env=ENV, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise Slow from e
    wall_s = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(
            f"bench: {' '.join(cmd)} failed with exit {r.returncode}: {r.stderr.decode()[-400:]}"
        )
    return wall_s


def wall(cmd: list[str], repeats: int, timeout_s: float | None = None) -> float:
    """Median wall time over ``repeats`` runs after one warm-up run (bytecode caches, page cache)."""
    run_once(cmd, timeout_s)
    return statistics.median(run_once(cmd, timeout_s) for _ in range(repeats))


def ratio_to_floor(cmd: list[str], repeats: int = 15) -> tuple[float, float]:
    """(min wall of ``cmd``, min wall of the import floor) over interleaved runs, after a warm-up each."""
    run_once(cmd), run_once(FLOOR)
    a, b = [], []
    for _ in range(repeats):
        a.append(run_once(cmd))
        b.append(run_once(FLOOR))
    return min(a), min(b)


def median_time(fn, repeats: int) -> float:
    """Median in-process time of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def traced_peak_bytes(fn) -> int:
    """Peak bytes traced while ``fn()`` runs (numpy's buffers included), above what was live before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def available_bytes() -> float:
    """MemAvailable from /proc/meminfo (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def grid_deployment(system, model, points: int):
    """The optimizer's open mesh on ``system`` (cmperf.search.decode_space around the 4K/256 workload's
    KV) cut or extended along batch and a KV-length axis to about ``points`` configurations."""
    from cmperf import search
    from cmperf.deployment import Deployment

    base = Deployment(kv_len=4224.0, kv_capacity_len=4352.0).resolve(system, model)
    space = search.decode_space(system, model, base)
    mb, cores = search.decode_modes(space)
    dev = space.devices[space.placement_ok].astype(float)
    per_batch = len(space.mtp) * mb.size * dev.size
    n_kv = max(1, round(points / (per_batch * space.batch_per_device.size)))
    n_b = min(space.batch_per_device.size, max(1, round(points / (per_batch * n_kv))))
    kv = np.linspace(2048.0, 8192.0, n_kv) if n_kv > 1 else np.array([4224.0])
    rpd = system.ranks_per_device
    grid = replace(
        base,
        mtp=np.array(space.mtp, dtype=float)[:, None, None, None, None],
        microbatches=mb[None, :, None, None, None],
        attention_cube_cores=np.where(cores < 0, np.nan, cores)[None, :, None, None, None],
        devices=dev[None, None, :, None, None],
        ep_size=dev[None, None, :, None, None] * rpd,
        batch_per_device=space.batch_per_device[:n_b][None, None, None, :, None],
        kv_len=kv[None, None, None, None, :],
        kv_capacity_len=kv[None, None, None, None, :] + 128.0,
    )
    return grid, per_batch * n_b * n_kv


def bench_grid(system, model, rows: list) -> None:
    from cmperf import decode, runtime

    runtime.keep_heap()  # as the CLI runs (cmperf.runtime)

    for target in GRID_POINTS:
        grid, n = grid_deployment(system, model, target)
        name = f"grid path, {n:,} points"
        need = max((r[4] for r in rows if r[4]), default=PEAK_BYTES_PER_POINT * 4) * n * 1.5
        if need > available_bytes():
            rows.append((name, f"skipped: needs ~{need / 1e9:.1f} GB", "", False, 0.0))
            continue
        peak = traced_peak_bytes(lambda g=grid: decode.evaluate(system, model, g)) / n
        t = median_time(lambda g=grid: decode.evaluate(system, model, g), 5 if n <= 1e6 else 2)
        sustained = target >= 100_000
        rows.append(
            (
                name,
                f"{n / t / 1e6:.2f} M configs/s ({t:.3f} s), peak {peak:,.0f} B/point",
                f">= {GRID_RATE_PER_S / 1e6:g} M/s, <= {PEAK_BYTES_PER_POINT:,.0f} B"
                if sustained
                else "<= 1,000 B",
                (n / t >= GRID_RATE_PER_S or not sustained) and peak <= PEAK_BYTES_PER_POINT,
                peak,
            )
        )


def bench_scatter(system, model, rows: list) -> None:
    from cmperf import decode, runtime, search
    from cmperf.deployment import Deployment

    runtime.keep_heap()  # as the CLI runs (cmperf.runtime)

    rng = np.random.default_rng(0)
    n = SCATTER_POINTS
    sizes = search.instance_sizes(system)
    sizes = sizes[search.placement_ok(model, sizes * system.ranks_per_device)].astype(float)
    dev = rng.choice(sizes, n)
    pts = Deployment(
        batch_per_device=rng.integers(1, 129, n).astype(float),
        kv_len=rng.integers(512, 32_769, n).astype(float),
        devices=dev,
        ep_size=dev * system.ranks_per_device,
        microbatches=rng.integers(1, 4, n).astype(float),
    )
    t = median_time(lambda: decode.evaluate(system, model, pts), 3)
    rate = n / t
    rows.append(
        (
            f"scattered points, {n:,} (batch, KV, EP, microbatches)",
            f"{rate / 1e6:.2f} M configs/s ({t:.3f} s)",
            f">= {SCATTER_RATE_PER_S / 1e6:g} M/s",
            rate >= SCATTER_RATE_PER_S,
            0.0,
        )
    )


def bench_optimize(rows: list) -> None:
    for label, flags, target_s in OPTIMIZE:
        cmd = [CMPERF, "optimize", *flags, "--format", "json"]
        repeats = 3 if target_s <= 1 else 1
        try:
            t = wall(cmd, repeats, timeout_s=2 * target_s + 5)
            got = f"{t:.2f} s"
        except Slow:
            t, got = float("inf"), f"> {2 * target_s + 5:.0f} s (stopped)"
        rows.append((label, got, f"<= {target_s:g} s", t <= target_s, 0.0))


def bench_cli(rows: list) -> None:
    for label, args, target in (
        ("cmperf decode --format json vs floor", ["decode", "--format", "json"], 1.3),
        ("cmperf serve --rate 40 vs floor", ["serve", "--rate", "40", "--format", "json"], 2.0),
    ):
        one, floor = ratio_to_floor([CMPERF, *args])
        rows.append(
            (
                label,
                f"{one:.3f} s vs {floor:.3f} s = {one / floor:.2f}x",
                f"<= {target:g}x",
                one / floor <= target,
                0.0,
            )
        )
    t = wall([CMPERF, *SERVE_SIZE, "--format", "json"], 3, timeout_s=30)
    rows.append(("cmperf " + " ".join(SERVE_SIZE), f"{t:.2f} s", "<= 2 s", t <= 2.0, 0.0))
    with tempfile.TemporaryDirectory() as tmp:
        t = wall([CMPERF, "report", "-o", str(Path(tmp) / "report.md")], 1, timeout_s=120)
    rows.append(("cmperf report -o report.md", f"{t:.2f} s", "(no target)", True, 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="grid,scatter,optimize,cli", help="comma-separated benchmark groups")
    only = set(ap.parse_args(argv).only.split(","))
    from cmperf import specs

    system = specs.load_system("cloudmatrix384")
    model = specs.load_model("deepseek-r1")
    rows: list = []
    t0 = time.perf_counter()
    if "grid" in only:
        bench_grid(system, model, rows)
    if "scatter" in only:
        bench_scatter(system, model, rows)
    if "optimize" in only:
        bench_optimize(rows)
    if "cli" in only:
        bench_cli(rows)
    w = max(len(r[0]) for r in rows)
    m = max(len(r[1]) for r in rows)
    print(f"{'benchmark':<{w}}  {'measured':<{m}}  {'target':<26}  result")
    for name, got, target, ok, _ in rows:
        print(f"{name:<{w}}  {got:<{m}}  {target:<26}  {'PASS' if ok else 'FAIL'}")
    print(f"(bench wall time {time.perf_counter() - t0:.0f} s)")
    failed = [r[0] for r in rows if not r[3]]
    if failed:
        print(f"\n{len(failed)} target(s) missed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
