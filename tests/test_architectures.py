"""Attention kinds, layer patterns and MoE variants (cmperf.graph, cmperf.hf): parameter totals against the
model cards, KV bytes per token from the attention kind, the per-layer groups, and bad [layers] tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import decode, prefill, specs
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.graph import causal_pairs, kv_bytes_per_seq, layer_groups, param_totals, weight_params

ROOT = Path(__file__).resolve().parent.parent

#: (model, card total, card activated, activated counts the embedding table, source). Cards differ on
#: whether the activated count includes the embedding lookup: OpenAI's gpt-oss card does not (5.71B with
#: it, 5.13B without = the card's 5.1B), nor does Kimi-K2's (32.9B with, 31.7B without, card 32B).
CARDS = [
    ("deepseek-r1", 671e9, 37e9, True, "DeepSeek-V3 technical report: 671B total, 37B activated"),
    ("kimi-k2", 1.04e12, 32e9, False, "Kimi-K2 model card: 1T (1.04T) total, 32B activated"),
    ("qwen3-235b-a22b", 235e9, 22e9, True, "Qwen3 model card: 235B total, 22B activated"),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, True, "Qwen3 model card: 30.5B total, 3.3B activated"),
    ("gpt-oss-120b", 117e9, 5.1e9, False, "gpt-oss model card: 117B total, 5.1B active"),
    ("llama-3.1-70b", 70.6e9, 70.6e9, True, "Llama-3.1 model card: 70.6B (dense)"),
    ("mixtral-8x22b", 141e9, 39e9, True, "Mixtral-8x22B card: 141B total, 39B active"),
    ("llama-4-maverick", 400e9, 17e9, True, "Llama-4 model card: 400B total, 17B active"),
    ("qwen3.5-397b-a17b", 397e9, 17e9, True, "the model's name: 397B total, 17B activated (A17B)"),
]


@pytest.mark.parametrize("name, total, active, with_embedding, source", CARDS)
def test_parameters_within_two_percent_of_the_card(name, total, active, with_embedding, source):
    m = specs.load_model(name)
    t, a = param_totals(m)
    if not with_embedding:
        a -= weight_params(m)["embedding"]
    assert t == pytest.approx(total, rel=0.02), source
    # a figure read off a model's name ("A17B") is rounded to whole billions: +-0.5B on top of the 2%
    slack = 0.5e9 if "name" in source else 0.0
    assert a == pytest.approx(active, rel=0.02, abs=slack), source


@pytest.mark.parametrize(
    "name, bytes_per_token",
    [
        ("deepseek-r1", 61 * 576 * 2),  # MLA latent 512 + 64 in BF16
        ("deepseek-v3.2", 61 * (576 * 2 + 128 + 4)),  # + the indexer's FP8 key and FP32 scale
        ("qwen3-235b-a22b", 94 * 2 * 4 * 128 * 2),  # GQA: K and V of 4 KV heads of 128
        ("llama-3.1-70b", 80 * 2 * 8 * 128 * 2),
        # gpt-oss: 18 full layers cache 4,096 tokens, 18 sliding layers only the last 128
        ("gpt-oss-120b", 18 * 2 * 8 * 64 * 2 * (1 + 128 / 4096)),
        # Qwen3.5: 15 gated-GQA layers (2 KV heads of 256) + 45 Gated DeltaNet layers holding a constant
        # FP32 state of 64 x 128 x 128 and 3 conv inputs of 2*16*128 + 64*128 channels per sequence
        ("qwen3.5-397b-a17b", 15 * 2 * 2 * 256 * 2 + 45 * (64 * 128 * 128 * 4 + 3 * 12288 * 2) / 4096),
    ],
)
def test_kv_bytes_per_token_from_the_attention_kind(name, bytes_per_token):
    m = specs.load_model(name)
    assert float(kv_bytes_per_seq(m, "bf16", 4096.0)) / 4096 == pytest.approx(bytes_per_token, rel=1e-12)


def test_layer_groups_follow_the_patterns():
    assert layer_groups(specs.load_model("deepseek-r1")) == [
        ("dense", "full", "dense", 3),
        ("moe", "full", "moe", 58),
    ]
    assert layer_groups(specs.load_model("gpt-oss-120b")) == [
        ("moe.sliding", "sliding", "moe", 18),
        ("moe", "full", "moe", 18),
    ]
    # Llama-4-Maverick: MoE every 2nd layer, chunked attention except every 4th (NoPE) layer
    assert layer_groups(specs.load_model("llama-4-maverick")) == [
        ("dense.chunked", "chunked", "dense", 24),
        ("moe.chunked", "chunked", "moe", 12),
        ("moe", "full", "moe", 12),
    ]
    assert layer_groups(specs.load_model("llama-3.1-70b")) == [("dense", "full", "dense", 80)]


def test_causal_pairs_closed_forms():
    assert causal_pairs(4096.0, 0.0) == 4096 * 4097 / 2
    # a window of 128: the first 128 queries see 1..128 keys, the rest 128 each
    assert causal_pairs(4096.0, 0.0, window=128) == 128 * 129 / 2 + (4096 - 128) * 128
    # chunks of 1,000 over 2,500 positions: two whole chunks and half of one
    assert causal_pairs(2500.0, 0.0, chunk=1000) == 2 * 1000 * 1001 / 2 + 500 * 501 / 2
    # brute force against the definition, with a cached prefix
    i = np.arange(301, 1201)
    assert causal_pairs(1200.0, 300.0, window=256) == np.minimum(i, 256).sum()
    assert causal_pairs(1200.0, 300.0, chunk=256) == ((i - 1) % 256 + 1).sum()


def test_sparse_attention_caps_the_keys_read():
    """DeepSeek-V3.2 attends index_topk = 2,048 keys: past 2,048 the attention is flat in KV length and
    only the indexer grows; at 1,024 it equals R1's attention of 1,024 keys plus the indexer."""
    s = specs.load_system("cloudmatrix384")
    v32 = specs.load_model("deepseek-v3.2")
    kv = np.array([1024.0, 2048, 8192, 32768])
    ev = decode.evaluate(s, v32, Deployment(kv_len=kv, microbatches=2))
    i = {op.name: j for j, op in enumerate(ev.stages[1].stage.ops)}
    att = ev.stages[1].op_times[i["mla.attention"]].compute_s
    idx = ev.stages[1].op_times[i["dsa.index_scores"]].compute_s
    assert att[2] == att[3] == att[1] and att[0] == pytest.approx(att[1] / 2, rel=1e-12)
    assert idx[3] == pytest.approx(4 * idx[2], rel=1e-12)


def test_sliding_window_layers_are_cheaper_and_flat_in_kv():
    s = specs.load_system("hgx-h200")
    m = specs.load_model("gpt-oss-120b")
    ev = decode.evaluate(s, m, Deployment(kv_len=np.array([4096.0, 65536.0]), microbatches=1))
    names = [st.stage.name for st in ev.stages]
    sl, full = ev.stages[names.index("moe.sliding")], ev.stages[names.index("moe")]
    att = [op.name for op in sl.stage.ops].index("gqa.attention")
    assert sl.op_times[att].memory_s[0] == sl.op_times[att].memory_s[1]  # 128 keys either way
    assert full.op_times[att].memory_s[1] > 10 * full.op_times[att].memory_s[0]


def test_dense_model_has_no_moe_and_no_all_to_all():
    s = specs.load_system("hgx-h200")
    m = specs.load_model("llama-3.1-70b")
    p = decode.predict(s, m, Deployment(batch_per_device=16, kv_len=2048, microbatches=1))
    assert {r.stage for r in p.ops} == {"dense", "head"}
    assert not any(r.name.startswith("moe.") for r in p.ops) and p.comm_bound_tpot_s == 0
    assert p.feasible  # 70.6B in FP8 + 16 x 2,048 tokens of KV fit in 141 GB
    pf = prefill.predict(s, m, Deployment(phase="prefill", microbatches=1))
    assert pf.tokens_per_s_per_device > 0 and pf.kv_bytes_per_sequence == 4096 * 80 * 2 * 8 * 128 * 2


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            'attention = ["sliding", "full", "full", "full", "full"]',
            "5 entries neither equal nor divide num_layers 36",
        ),
        ('attention = ["windowed"]', "expected a list of full, sliding, chunked"),
        ('ffn = ["dense"]', "'dense' layers need architecture.intermediate_size > 0"),
    ],
)
def test_bad_layers_table_is_one_line(tmp_path, edit, needle):
    src = (ROOT / "models" / "gpt-oss-120b.toml").read_text()
    (tmp_path / "models").mkdir()
    bad = src.replace('attention = ["sliding", "full"]', edit)
    (tmp_path / "models" / "gpt-oss-120b.toml").write_text(bad)
    r = run("decode", "--spec-dir", tmp_path, "--model", "gpt-oss-120b", "--system", "hgx-h200")
    assert r.exit_code == 2 and needle in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_sliding_layers_need_a_window(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(ROOT / "models" / "gpt-oss-120b.toml", tmp_path / "models")
    p = tmp_path / "models" / "gpt-oss-120b.toml"
    p.write_text(p.read_text().replace("sliding_window = 128\n", ""))
    r = run("decode", "--spec-dir", tmp_path, "--model", "gpt-oss-120b", "--system", "hgx-h200")
    assert r.exit_code == 2 and "'sliding' layers need architecture.sliding_window > 0" in r.stderr


def test_linear_attention_state_is_flat_in_context():
    """Gated DeltaNet layers read a fixed state per sequence: their time does not grow with KV length,
    the full-attention layers' does; the cache per sequence grows only through the full layers."""
    s = specs.load_system("hgx-h200")
    m = specs.load_model("qwen3.5-397b-a17b")
    ev = decode.evaluate(s, m, Deployment(kv_len=np.array([1024.0, 32768.0]), microbatches=1))
    names = [st.stage.name for st in ev.stages]
    lin, full = ev.stages[names.index("moe.linear")], ev.stages[names.index("moe")]
    rec = [op.name for op in lin.stage.ops].index("gdn.recurrence")
    att = [op.name for op in full.stage.ops].index("gqa.attention")
    t = np.broadcast_to(lin.op_times[rec].memory_s, (2,))
    assert t[0] == t[1] > 0
    assert full.op_times[att].memory_s[1] > 20 * full.op_times[att].memory_s[0]
    grow = float(kv_bytes_per_seq(m, "bf16", 2048.0) - kv_bytes_per_seq(m, "bf16", 1024.0))
    assert grow == 1024 * 15 * 2 * 2 * 256 * 2


def test_acceptance_per_depth():
    from cmperf.decode import accepted_per_step

    assert accepted_per_step(3, 0.7) == pytest.approx(0.7 + 0.49 + 0.343, rel=1e-15)
    assert accepted_per_step(3, (0.9, 0.7, 0.5)) == pytest.approx(
        0.9 + 0.9 * 0.7 + 0.9 * 0.7 * 0.5, rel=1e-15
    )
    assert accepted_per_step(3, (0.8,)) == pytest.approx(0.8 + 0.64 + 0.512, rel=1e-15)  # the last repeats
    assert np.all(accepted_per_step(np.array([0, 1, 2]), 0.5) == [0.0, 0.5, 0.75])


def test_mtp_chain_reuses_the_one_module():
    """R1 has one MTP module; --mtp 3 runs it three times per step (SGLang / TensorRT-LLM chains): three
    MTP executions and three draft heads, the weights and the MTP KV cache of one module."""
    s, m = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    one = decode.predict(s, m, Deployment(mtp=1, microbatches=2))
    three = decode.predict(s, m, Deployment(mtp=3, microbatches=2))
    assert three.streams["mtp"]["count"] == 3 and one.streams["mtp"]["count"] == 1
    heads = {r.name: r for r in three.ops if r.stage == "head"}
    heads1 = {r.name: r for r in one.ops if r.stage == "head"}
    assert heads["mtp.lm_head"].flops == pytest.approx(3 * heads1["mtp.lm_head"].flops, rel=1e-12)
    w = {k: v for k, v in three.hbm_breakdown_bytes.items() if k.startswith("weights.")}
    w1 = {k: v for k, v in one.hbm_breakdown_bytes.items() if k.startswith("weights.")}
    assert w == w1
    assert three.tpot_s > one.tpot_s  # at 0.7 per depth the third draft is accepted 34% of the time


def test_mtp_needs_a_module_and_rates_per_depth_fit():
    r = run("decode", "--model", "qwen3-30b-a3b", "--mtp", "1")
    assert r.exit_code == 2 and "qwen3-30b-a3b has no MTP module; use --mtp 0" in r.stderr
    r = run("decode", "--mtp", "2", "--mtp-accept", "0.9,0.8,0.7")
    assert r.exit_code == 2 and "3 per-depth rates for --mtp 2; give at most 2" in r.stderr
    r = run("decode", "--mtp", "2", "--mtp-accept", "0.9,1.2")
    assert r.exit_code == 2 and "--mtp-accept" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("decode", "--mtp", "3", "--mtp-accept", "0.9,0.7,0.5")
    assert r.exit_code == 0 and "MTP 3 @ 0.9,0.7,0.5" in r.stdout


TINY_DRAFT = """name = "tiny-draft"
kind = "model"
description = "A synthetic 4-layer dense GQA draft for tests (not a real model)"

[architecture]
source = "synthetic test model (cmperf tests)"
attention = "gqa"
hidden_size = 2048
num_layers = 4
num_attention_heads = 16
num_key_value_heads = 4
head_dim = 128
intermediate_size = 8192
vocab_size = 129280
max_position_embeddings = 163840
"""


@pytest.fixture
def draft_dir(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-draft.toml").write_text(TINY_DRAFT)
    return tmp_path


def test_draft_model_runs_mtp_times_per_step(draft_dir):
    """A separate draft runs its 4 layers and head once per draft token (3 here) on every rank, holds its
    whole weights and its own KV, and replaces the target's MTP modules (no MTP stage, no MTP weights)."""
    s, m = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    draft = specs.load_model("tiny-draft", [str(draft_dir)])
    p = decode.predict(s, m, Deployment(mtp=3, draft_model=draft, microbatches=2))
    assert p.streams["draft.dense"]["count"] == 12 and p.streams["draft.head"]["count"] == 3
    assert "mtp" not in p.streams
    w = weight_params(draft)
    held = (w["attention"] + w["dense_ffn"]) * 1 + (
        w["embedding"] + w["lm_head"]
    ) * 2  # INT8 layers, BF16 head
    assert p.hbm_breakdown_bytes["weights.draft"] == pytest.approx(held, rel=1e-12)
    assert p.hbm_breakdown_bytes["weights.mtp_proj"] == 0
    kv = 96 / 2 * (4096 + 3) * 4 * 2 * 4 * 128 * 2  # 48 sequences per die, 4 layers of 4 KV heads, BF16
    assert p.hbm_breakdown_bytes["kv_cache.draft"] == pytest.approx(kv, rel=1e-12)
    # a target without MTP modules can speculate with a draft
    q = decode.predict(s, specs.load_model("qwen3-235b-a22b"), Deployment(mtp=2, draft_model=draft))
    assert q.step_s / q.tpot_s == pytest.approx(1 + 0.7 + 0.49, rel=1e-12)  # tokens accepted per step


def test_draft_model_bad_input(draft_dir):
    r = run("decode", "--draft-model", "qwen3-30b-a3b", "--mtp", "1")
    assert r.exit_code == 2 and "--draft-model: qwen3-30b-a3b is an MoE model" in r.stderr
    r = run("decode", "--spec-dir", draft_dir, "--draft-model", "tiny-draft", "--mtp", "0")
    assert r.exit_code == 2 and "drafts nothing at --mtp 0" in r.stderr
    r = run("decode", "--draft-model", "no-such-model")
    assert r.exit_code == 2 and r.stderr.startswith("cmperf: error: --draft-model:")
    r = run(
        "decode", "--spec-dir", draft_dir, "--draft-model", "tiny-draft", "--mtp", "2", "--format", "json"
    )
    assert r.exit_code == 0 and '"draft_model": "tiny-draft"' in r.stdout
    # serve's decode pool speculates with the draft too: a model without MTP modules gets MTP 1 by default
    r = run(
        "serve",
        "--rate",
        "40",
        "--model",
        "qwen3-30b-a3b",
        "--spec-dir",
        draft_dir,
        "--draft-model",
        "tiny-draft",
        "--format",
        "json",
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["inputs"]["mtp"] == 1
    r = run("serve", "--rate", "40", "--draft-model", "qwen3-30b-a3b")
    assert r.exit_code == 2 and "--draft-model: qwen3-30b-a3b is an MoE model" in r.stderr


def test_slots_per_rank_places_copies_on_every_rank():
    """--slots-per-rank N: N routed slots and a shared-expert copy on every rank (N x EP - 256 redundant
    copies), so more slots mean more expert weights per rank and a lower max/mean load."""
    from cmperf.deployment import place_experts

    s, m = specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")
    pl = place_experts(m, 320, slots_per_rank=2)
    assert (pl.dedicated, pl.routed_slots_per_rank, pl.num_redundant, pl.shared_ranks) == (False, 2, 384, 320)
    one, two = (decode.predict(s, m, Deployment(slots_per_rank=n, microbatches=2)) for n in (1, 2))
    expert = weight_params(m)["expert"] * (58 + 1)  # MoE layers + the MTP module, INT8
    assert two.hbm_breakdown_bytes["weights.experts"] == pytest.approx(3 * expert, rel=1e-12)
    assert one.hbm_breakdown_bytes["weights.experts"] == pytest.approx(2 * expert, rel=1e-12)
    assert two.imbalance < one.imbalance
    r = run("decode", "--devices", "32", "--ep", "64", "--slots-per-rank", "3")
    assert (
        r.exit_code == 2 and "3 slots on EP64 hold 192 of the 256 routed experts; give at least 4" in r.stderr
    )
    r = run("decode", "--slots-per-rank", "2", "--redundant", "4")
    assert r.exit_code == 2 and "--redundant: conflicts with --slots-per-rank" in r.stderr
