#!/usr/bin/env python3
"""Turn the CSV ``../shared/tools/aic_dev_rows.py`` writes into a points CSV (docs/points.md).

usage: .venv/bin/python scripts/aic_points.py AIC_ROWS.csv OUT.csv

One output row per distinct measurement: rows with the same key (the one aic_dev_rows.py hashes: system,
backend, ISL, OSL, client concurrency, measured TPOT and TTFT) are one measurement in several dumps and are
merged, keeping the ``db-dump`` row (its parallel encoding is the one to trust for disagg), then the row
that records the decode batch, then the lowest id; ``copies`` counts the rows merged. Mappings:

* system: h100_sxm -> dgx-h100, h200_sxm -> hgx-h200, b200_sxm -> hgx-b200, gb200 -> gb200-nvl72,
  b300_sxm -> hgx-b300, gb300 -> gb300-nvl72 (any other name is kept: cmperf skips it as unknown-system).
* precision: ``gemm_quant_mode`` -> ``weights``, ``moe_quant_mode`` -> ``experts_dtype``: fp8 and fp8_block
  -> fp8; nvfp4 -> nvfp4 where the system's chip has an nvfp4 peak, else fp4 (B200 and GB200 specs list
  one 4-bit peak).
* parallel degrees, batch and workers: the ``decode_*`` columns for disagg rows, the plain ones for agg.
  MTP and its acceptance are not recorded: left empty.
* KV datatype (not recorded): fp8 (``KV_DTYPE``). aiconfigurator-core 0.12.0, whose validation rows these
  are, models an FP8-block or NVFP4 checkpoint (every row here) with an FP8 KV cache and FP8 attention
  (sdk/models/helpers.py ``_infer_quant_modes_from_raw_config``), and the rows' memory agrees: hgx-h200
  TensorRT-LLM at attention TP8, 1K/8K, ran 128 users without a wait for memory (TTFT 1.4 s), which its
  admission rule (the whole 9,216 tokens held per request) fits in 141 GiB only with 1-byte KV (41 GB of
  KV beside 84 GB of experts; BF16 would need 83 GB). The attention compute stays BF16 (the Precision
  default): posed in FP8 as well, the development half's disagg TPOT went from 7.7% / 19.6% (median /
  p90 |error|) to 8.7% / 26.8%.
* agg rows whose MoE degrees are equal and above 1 (moe_tp = moe_ep = e) and whose attention degrees
  multiply to e * e (``agg_degrees``): the 2026-04-06 file and the db-dump encode the configuration the
  row's name calls ``tpX_epY`` with tp_size (or attention_dp_size) and moe_tp_size multiplied by Y. The
  same configuration in the 2026-03-25 file, on the same 8-GPU systems, is (tp 8, dp 1, moe_tp 1,
  moe_ep 8) where the newer dumps say (64, 1, 8, 8), and (1, 8, 1, 8) where they say (1, 64, 8, 8);
  a 64-GPU HGX row named ``tp8_ep8`` would not be. Those rows are divided back: the one of tp and dp that
  is e * e by e, moe_tp 1, and the batch per rank is the concurrency over the attention-DP degree.

The output holds measured rows: keep it out of the repository.
"""

from __future__ import annotations

import csv
import re
import sys

from cmperf import points
from cmperf.specs import load_system

SYSTEMS = {
    "h100_sxm": "dgx-h100",
    "h200_sxm": "hgx-h200",
    "b200_sxm": "hgx-b200",
    "gb200": "gb200-nvl72",
    "b300_sxm": "hgx-b300",
    "gb300": "gb300-nvl72",
}
QUANT = {"fp8": "fp8", "fp8_block": "fp8", "nvfp4": "nvfp4"}


def concurrency(row: dict) -> str:
    m = re.search(r"silicon_concurrency=(\d+)", row["silicon_data_source"])
    return m.group(1) if m else ""


def key(row: dict) -> str:
    """The measurement's identity, as aic_dev_rows.py hashes it."""
    tpot, ttft = float(row["silicon_tpot_ms"]), float(row["silicon_ttft_ms"])
    parts = [row["system"], row["backend"], row["isl"], row["osl"], concurrency(row) or "None"]
    return "|".join([*parts, f"{tpot:.4f}", f"{ttft:.3f}"])


def preference(row: dict) -> tuple:
    """Sort key of the copy to keep: db-dump first, then a recorded decode batch, then the id."""
    batch = row["decode_batch_size"] if row["mode"] == "disagg" else row["batch_size"]
    return (not row["silicon_data_source"].startswith("db-dump"), not batch, row["id"])


def dtype(quant: str, four_bit: str) -> str:
    d = QUANT.get(quant, quant)
    return four_bit if d == "nvfp4" else d


def four_bit_name(system: str) -> str:
    """nvfp4 where the cmperf chip has an nvfp4 peak, else fp4; fp4 for a system cmperf lacks."""
    if system not in SYSTEMS.values():
        return "fp4"
    return "nvfp4" if "nvfp4" in load_system(system).chip.peak_flops else "fp4"


#: The KV-cache datatype the rows are posed with (module docstring: not recorded; aiconfigurator's).
KV_DTYPE = "fp8"

#: The columns of a row's parallel degrees and batch (prefixed ``decode_`` in a disagg row).
DEGREES = ("tp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "batch_size")


def agg_degrees(row: dict) -> tuple[str, ...]:
    """The ``DEGREES`` of an agg row, undoing the newer dumps' encoding (module docstring): moe_tp = moe_ep
    = e > 1 and one of tp and dp is 1, the other e * e -> that one / e, moe_tp 1, the batch per rank
    concurrency / dp."""
    tp, dp, mtp, ep, batch = (row[k] for k in DEGREES)
    try:
        t, d, m, e = int(tp), int(dp), int(mtp), int(ep)
    except ValueError:
        return tp, dp, mtp, ep, batch
    if not (m == e > 1 and min(t, d) == 1 and t * d == e * e):
        return tp, dp, mtp, ep, batch
    (t, d), c = ((t // e, d) if t > 1 else (t, d // e)), concurrency(row)
    batch = str(int(c) // d) if c and int(c) % d == 0 else ""
    return str(t), str(d), "1", str(e), batch


def convert(row: dict, copies: int) -> dict:
    system = SYSTEMS.get(row["system"], row["system"])
    four = four_bit_name(system)
    p = "decode_" if row["mode"] == "disagg" else ""
    tp, dp, mtp, ep, batch = tuple(row[p + k] for k in DEGREES) if p else agg_degrees(row)
    return {
        "id": row["id"],
        "system": system,
        "model": "deepseek-r1",  # R1, V3 and V3.1 share the architecture (models/deepseek-r1.toml)
        "backend": row["backend"],
        "backend_version": row["backend_version"],
        "mode": row["mode"],
        "attn_tp": tp,
        "attn_dp": dp,
        "moe_tp": mtp,
        "moe_ep": ep,
        "workers": row["decode_num_workers"] if p else "",
        "batch_per_rank": batch,
        "concurrency": concurrency(row),
        "isl": row["isl"],
        "osl": row["osl"],
        "mtp": "",
        "mtp_accept": "",
        "weights": dtype(row["gemm_quant_mode"], four),
        "experts_dtype": dtype(row["moe_quant_mode"], four),
        "kv_dtype": KV_DTYPE,
        "tpot_s": f"{float(row['silicon_tpot_ms']) / 1e3:.9g}",
        "ttft_s": f"{float(row['silicon_ttft_ms']) / 1e3:.9g}",
        "tokens_per_s_per_device": "",
        "copies": str(copies),
        "source": f"aiconfigurator-core 0.12.0 silicon_sample.csv: {row['silicon_data_source']}",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit(__doc__)
    src, out = argv
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    merged: dict[str, list[dict]] = {}
    for r in rows:
        merged.setdefault(key(r), []).append(r)
    kept = [convert(min(group, key=preference), len(group)) for group in merged.values()]
    kept.sort(key=lambda r: r["id"])
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(points.COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
    print(f"{len(kept)} distinct measurements (from {len(rows)} rows) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
