"""The Examples section ending every command's ``--help`` (click's epilog, attached by ``LazyGroup``).

Each example runs as written from any folder (a test runs them; names are built-in specs and scenarios).
"""

from __future__ import annotations

#: command path (as typed after ``cmperf``) -> example command lines.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "cmperf decode",
        "cmperf serve --rate 40 --ttft-slo 2s --tpot-slo 50ms",
        "cmperf optimize --tpot-slo 50ms",
        "cmperf report -o report.md",
    ),
    "decode": (
        "cmperf decode",
        "cmperf decode --devices 160 --ep 320 --batch 96 --kv-len 4096",
        "cmperf decode --system dgx-h800 --batch 64 --step-overhead 0.7ms --format json",
        "cmperf decode --model qwen3-235b-a22b --system hgx-h200 --batch 32",
        "cmperf decode --mtp 3 --mtp-accept 0.9,0.7,0.5",
        "cmperf decode --system hgx-h200 --model llama-3.1-70b --devices 8 --attn-tp 8 --batch 64",
    ),
    "prefill": (
        "cmperf prefill",
        "cmperf prefill --devices 16 --tokens-per-device 16384 --prompt-len 4096",
        "cmperf prefill --cache-hit 0.5 --format markdown",
    ),
    "serve": (
        "cmperf serve --rate 40 --ttft-slo 2s --tpot-slo 50ms",
        "cmperf serve --rate 40 --slo-percentile 90 --format json",
        "cmperf serve --size --devices-total 384 --ttft-slo 2s --tpot-slo 50ms",
        "cmperf serve --mode agg --system hgx-h200 --devices 8 --rate 2 --prompt-len 1024 --output-len 1024",
    ),
    "optimize": (
        "cmperf optimize --tpot-slo 50ms",
        "cmperf optimize --tpot-slo 15ms --ttft-slo none --top 5",
        "cmperf optimize --rate 100 --format csv -o candidates.csv",
        "cmperf optimize --system dgx-h800 --emit sglang -o launch.sh",
        "cmperf optimize --plot optimize.png",
        "cmperf optimize --system hgx-h200 --devices 32 --prompt-len 1024 --output-len 1024 --compare-modes",
    ),
    "pareto": (
        "cmperf pareto",
        "cmperf pareto --phase prefill --format markdown",
        "cmperf pareto --format csv -o frontier.csv",
        "cmperf pareto --plot frontier.svg",
    ),
    "compare": (
        "cmperf compare",
        "cmperf compare --systems cloudmatrix384,dgx-h800 --phase prefill",
        "cmperf compare --systems gb200-nvl72,hgx-b200 --batch 128 --experts-dtype native --format csv",
    ),
    "comm": (
        "cmperf comm",
        "cmperf comm --op combine --ep 256 --tokens-per-rank 96",
        "cmperf comm --system dgx-h800 --phase prefill --format json",
    ),
    "report": (
        "cmperf report -o report.md",
        "cmperf report --scenario cm384-decode-15ms -o report-15ms.md",
    ),
    "explain": (
        "cmperf explain",
        "cmperf explain --scenario cm384-decode-15ms --format markdown",
    ),
    "validate": ("cmperf validate", "cmperf validate --format json", "cmperf validate --points points.csv"),
    "snapshot": ("cmperf snapshot cm384-decode-50ms cm384-prefill -o before.json",),
    "diff": (
        "cmperf diff before.json after.json",
        "cmperf diff before.json after.json --rtol 0.005 --metric-rtol 'ttft*=0.02' --fail-on any",
    ),
    "sweep": (
        "cmperf sweep decode-planner -o results.csv",
        "cmperf sweep decode-planner --executor dask -o results.parquet",
    ),
    "specs": ("cmperf specs list", "cmperf specs show cloudmatrix384"),
    "specs list": ("cmperf specs list", "cmperf specs list --format json"),
    "specs show": ("cmperf specs show cloudmatrix384", "cmperf specs show ascend-910c --format markdown"),
    "specs import": (
        "cmperf specs import Kimi-K2-Instruct/config.json --name kimi-k2 -o models/kimi-k2.toml",
    ),
}


def epilog(path: str) -> str | None:
    """The Examples section of ``cmperf PATH --help`` (``\\b`` keeps click from re-wrapping the lines)."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {x}" for x in lines)


def attach(cmd, path: str) -> None:
    """Set the epilog of ``cmd`` (and of a group's subcommands) from ``EXAMPLES``, once."""
    import click

    if cmd.epilog is None:
        cmd.epilog = epilog(path)
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            attach(sub, f"{path} {name}".strip())
