"""Serving-framework profiles (``frameworks/*.toml``, kind = "framework"): what is software, not hardware.

A profile holds the microbatch counts the framework runs (SGLang's two-batch overlap: 1 or 2, so
``--microbatches auto`` never picks 3 under it), whether it runs MTP chains deeper than one draft, and its
per-step host and scheduler time outside the layers (graph launch, sampling, scheduling), each value with
its ``source`` like the hardware specs. ``Deployment.framework`` names one (None: no profile, today's
behaviour exactly); ``--framework NAME`` sets it. The step overhead adds to ``--step-overhead``
(``Deployment.step_overhead_s``: host time beyond the framework's). Profiles: docs/frameworks.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CmperfError
from .specs import _header, _read, _Table, builtin_dirs


@dataclass(frozen=True)
class Framework:
    name: str
    description: str
    path: str
    microbatches: tuple[int, ...]  # microbatch counts the framework runs
    mtp_chains: bool  # runs MTP chains deeper than one draft
    step_overhead_s: float  # host time per decode step outside the layers
    sources: dict[str, str] = field(repr=False)


def framework_dir() -> Path:
    return builtin_dirs()[0] / "frameworks"


def known() -> list[str]:
    """Names of the shipped profiles, sorted."""
    d = framework_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def unknown_reason(name: Any) -> str | None:
    """The ``--framework`` error for a name no profile has (None when it exists)."""
    if isinstance(name, str) and name in known():
        return None
    return f"--framework: unknown framework {name!r}; known: {', '.join(known())}"


@functools.cache
def load(name: str) -> Framework:
    """The profile ``name`` (CmperfError naming --framework and listing the known ones)."""
    bad = unknown_reason(name)
    if bad:
        raise CmperfError(bad)
    path = framework_dir() / f"{name}.toml"
    sources: dict[str, str] = {}
    t = _Table(_read(path), path, "", sources)
    fname, desc = _header(t, "framework")
    entry = t._entry("microbatches", True)
    assert entry is not None
    counts = entry["value"]
    if not (isinstance(counts, list) and counts and all(isinstance(c, int) and 1 <= c <= 4 for c in counts)):
        raise CmperfError(f"{t.where('microbatches')}: expected a list of counts in 1..4, got {counts!r}")
    entry = t._entry("mtp_chains", True)
    assert entry is not None
    if not isinstance(entry["value"], bool):
        raise CmperfError(f"{t.where('mtp_chains')}: expected true or false, got {entry['value']!r}")
    over = t.quantity("step_overhead", "s", 0.0, 0.999)
    t.done()
    return Framework(fname, desc, str(path), tuple(sorted(set(counts))), entry["value"], over, sources)


def of(dep: Any) -> Framework | None:
    """The profile a deployment names, or None."""
    name = getattr(dep, "framework", None)
    return None if name is None else load(name)


def reasons(dep: Any) -> list[str]:
    """What a (resolved, scalar) deployment asks of its framework that the framework cannot run."""
    name = dep.framework
    if name is None:
        return []
    bad = unknown_reason(name)
    if bad:
        return [bad]
    fw = load(name)
    out = []
    counts = " or ".join(str(c) for c in fw.microbatches)
    mb = dep.microbatches
    if not isinstance(mb, str) and mb not in fw.microbatches and mb in (1, 2, 3, 4):
        out.append(f"--microbatches: framework {fw.name} runs {counts} microbatches, got {mb}")
    if dep.phase == "decode" and not fw.mtp_chains and dep.mtp is not None and dep.mtp > 1:
        out.append(
            f"--mtp: framework {fw.name} runs MTP chains of one draft only, got --mtp {dep.mtp}; use --mtp 1"
        )
    return out
