"""Hugging Face config.json import (cmperf.hf): --model takes a config.json; `specs import` writes a spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cmperf import specs
from cmperf.cli import main
from cmperf.graph import param_totals

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "data" / "hf-configs"  # the reference set's config.json files (README there)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _config(tmp_path, **fields) -> Path:
    """A DeepSeek-R1-shaped config.json (fields from the bundled spec) with ``fields`` changed."""
    m = specs.load_model("deepseek-r1")
    cfg = {
        "model_type": "deepseek_v3",
        "num_hidden_layers": m.num_layers,
        "first_k_dense_replace": m.first_k_dense,
        "num_nextn_predict_layers": m.num_mtp_modules,
        **{k: getattr(m, k) for k in ("hidden_size", "intermediate_size", "moe_intermediate_size")},
        **{k: getattr(m, k) for k in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok")},
        **{k: getattr(m, k) for k in ("n_group", "topk_group", "num_attention_heads", "q_lora_rank")},
        **{k: getattr(m, k) for k in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")},
        **{k: getattr(m, k) for k in ("vocab_size", "max_position_embeddings")},
    }
    cfg.update(fields)
    p = tmp_path / "r1-config.json"
    p.write_text(json.dumps({k: v for k, v in cfg.items() if v is not ...}))
    return p


def test_config_json_gives_the_bundled_spec_numbers(tmp_path):
    """DeepSeek-R1 from its config.json predicts exactly what models/deepseek-r1.toml predicts."""
    a = json.loads(run("decode", "--format", "json").stdout)
    b = json.loads(run("decode", "--model", _config(tmp_path), "--format", "json").stdout)
    assert b["tpot_s"] == a["tpot_s"] and b["hbm_bytes_per_rank"] == a["hbm_bytes_per_rank"]


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"model_type": "deepseek_v4"}, "key head_dim is missing (architecture deepseek_v4 needs it)"),
        ({"model_type": "qwen3_moe"}, "key num_experts is missing (architecture qwen3_moe needs it)"),
        ({"model_type": "something_new"}, "architecture 'something_new' is not supported"),
        ({"kv_lora_rank": ...}, "key kv_lora_rank is missing"),
        ({"hidden_size": "7168"}, "key hidden_size: expected a whole number"),
        ({"num_key_value_heads": 3}, "key num_key_value_heads: 3 does not divide the 128 heads"),
        ({"num_experts_per_tok": 300}, "top-300 exceeds the 256 routed experts"),
        ({"model_type": "deepseek_v32"}, "key index_n_heads is missing"),
        (
            {"model_type": "deepseek_v32", "index_n_heads": 64, "index_head_dim": 128, "index_topk": 0},
            "index_topk: the sparse-attention indexer needs index_n_heads, index_head_dim and index_topk",
        ),
        ({"moe_layer_freq": 2}, "key moe_layer_freq"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, fields, needle):
    r = run("decode", "--model", _config(tmp_path, **fields))
    assert r.exit_code == 2 and needle in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_text_config_and_not_json(tmp_path):
    inner = json.loads(_config(tmp_path).read_text())
    (tmp_path / "wrapped.json").write_text(json.dumps({"model_type": "kimi_vl", "text_config": inner}))
    assert run("decode", "--model", tmp_path / "wrapped.json").exit_code == 0
    (tmp_path / "broken.json").write_text("{not json")
    r = run("decode", "--model", tmp_path / "broken.json")
    assert r.exit_code == 2 and "not valid JSON" in r.stderr


def test_bundled_kimi_specs_are_the_import_of_their_configs(tmp_path):
    """models/kimi-k2.toml and kimi-k2.5.toml are exactly `cmperf specs import` of the shared configs."""
    for name, cfg in (("kimi-k2", "moonshotai--Kimi-K2-Instruct"), ("kimi-k2.5", "moonshotai--Kimi-K2.5")):
        out = tmp_path / f"{name}.toml"
        r = run("specs", "import", CONFIGS / f"{cfg}.json", "--name", name, "-o", out)
        assert r.exit_code == 0, r.output
        assert out.read_text() == (ROOT / "models" / f"{name}.toml").read_text()
    r = run("specs", "import", CONFIGS / "moonshotai--Kimi-K2-Instruct.json", "-o", tmp_path / "other.toml")
    assert r.exit_code == 2 and "named like its model" in r.stderr


@pytest.mark.parametrize("cfg", sorted(p.stem for p in CONFIGS.glob("*.json")))
def test_every_shared_config_imports_or_is_refused_by_name(cfg):
    r = run("decode", "--model", CONFIGS / f"{cfg}.json", "--format", "json")
    assert r.exit_code in (0, 2, 3), r.output
    if r.exit_code == 2:
        assert "is not supported" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name, total, active",
    [
        # model cards: DeepSeek-V3 671B total / 37B activated; Kimi-K2 1.04T total / 32B activated
        ("deepseek-r1", 671e9, 37e9),
        ("kimi-k2", 1.04e12, 32e9),
    ],
)
def test_parameter_totals_match_the_cards(name, total, active):
    """Totals within 2% of the cards. Activated within 3%: the cards give whole billions, and cmperf counts
    the input embedding and LM head in the activated set (Kimi-K2 32.9B; 31.7B without the embedding)."""
    t, a = param_totals(specs.load_model(name))
    assert t == pytest.approx(total, rel=0.02)
    assert a == pytest.approx(active, rel=0.03)
