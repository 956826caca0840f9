"""Fit a framework profile's request overhead on measured points (frameworks/*.toml, request_overhead), and
print the TPOT error tables without and with the profiles.

Usage: .venv/bin/python scripts/fit_framework.py POINTS.csv [--after]

POINTS.csv is the development half of aiconfigurator's measured rows (docs/points.md; never committed).
The per-step host time (``step_overhead``) is fitted jointly with the GPUs' expert weight-streaming
fraction, which trades off against it on the same rows: scripts/fit_gpu_pipeline.py.

Request overhead (a request's path to its first token outside the engine's steps: HTTP, tokenization,
admission, streaming): aggregated rows with at most ``FIT_CONCURRENCY`` users per worker (the prefill they
carry is small, so the rest of the TTFT shows), posed with the backend's profile; the median of measured -
predicted first-wave TTFT with the profile's own request overhead taken out (it adds to that TTFT exactly).
"""

from __future__ import annotations

import sys

import numpy as np

from cmperf import frameworks, points

FIT_CONCURRENCY = 8.0  # users per aggregated worker at most (the request overhead fit)


def _median_fits(residuals) -> dict[str, tuple[float, int]]:
    """{framework: (median residual floored at 0 s, rows)} over the backends with a shipped profile;
    ``residuals(backend, profile)`` lists one backend's measured - predicted seconds."""
    out = {}
    for backend, name in points.BACKEND_FRAMEWORKS.items():
        if name not in frameworks.known():
            continue
        res = residuals(backend, frameworks.load(name))
        if res:
            out[name] = (max(float(np.median(res)), 0.0), len(res))
    return out


def fit_request(results: list[points.Result]) -> dict[str, tuple[float, int]]:
    """{framework: (request overhead s, rows)} from results posed with the profiles (each row's own
    overhead taken out: it adds to the first-wave TTFT exactly)."""
    return _median_fits(
        lambda backend, fw: [
            r.measured_ttft_s - (r.predicted_ttft_s - fw.request_overhead_s)
            for r in results
            if r.backend == backend
            and r.ttft_error is not None
            and r.concurrency is not None
            and r.concurrency <= FIT_CONCURRENCY
        ]
    )


def _line(label: str, e: list[float]) -> str:
    """One row of an error table: label, rows, median and p90 of |error|."""
    return f"{label} n={len(e):3d} median {100 * np.median(e):5.1f}%  p90 {100 * np.percentile(e, 90):5.1f}%"


def ttft_table(results: list[points.Result]) -> list[str]:
    lines = []
    for backend in sorted({r.backend for r in results}):
        e = [abs(r.ttft_error) for r in results if r.ttft_error is not None and r.backend == backend]
        if e:
            lines.append(_line(f"{backend:8s} agg TTFT", e))
    return lines


def table(results: list[points.Result]) -> list[str]:
    lines = []
    for backend in [*sorted({r.backend for r in results}), None]:  # None: all backends
        for mode in points.MODES:
            e = [
                abs(r.error)
                for r in results
                if r.error is not None and backend in (None, r.backend) and r.mode == mode
            ]
            if e:
                lines.append(_line(f"{backend or 'all':8s} {mode:6s}", e))
    return lines


def main(argv: list[str]) -> None:
    pts = points.read(argv[0])
    print("TPOT |error| without framework profiles:")
    print("\n".join(table(points.evaluate(pts, frameworks=False))))
    after = points.evaluate(pts, frameworks=True)
    for name, (o, n) in fit_request(after).items():
        print(f"fit {name}: request_overhead = {1e3 * o:.1f} ms on {n} rows")
    if "--after" in argv:
        print("TPOT |error| with framework profiles (as shipped):")
        print("\n".join(table(after)))
        print("first-wave TTFT |error| with framework profiles (as shipped):")
        print("\n".join(ttft_table(after)))


if __name__ == "__main__":
    main(sys.argv[1:])
