"""DeepSeek-V4's compressed attention (cmperf.attention_v4, attention = "dsv4"): the spec from its
config.json, parameter totals, cache bytes per token, decode / prefill on GPUs and CloudMatrix384, TPOT
non-decreasing in batch and KV length, and bad config fields refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import attention_v4, decode, hf, prefill, specs
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.graph import kv_bytes_per_seq, layer_groups, param_totals

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT.parent / "shared" / "reference" / "model-configs"
V4 = {
    "deepseek-v4-pro": "deepseek-ai--DeepSeek-V4-Pro.json",
    "deepseek-v4-flash": "deepseek-ai--DeepSeek-V4-Flash.json",
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", V4)
def test_bundled_spec_is_the_config_import(name):
    """models/NAME.toml is `cmperf specs import` of the config.json (no hand edits)."""
    cfg = CONFIGS / V4[name]
    if not cfg.is_file():
        pytest.skip("reference configs not on disk")
    assert hf.to_toml(hf.spec_from_config(cfg, name)) == (ROOT / "models" / f"{name}.toml").read_text()


def test_layer_groups_follow_compress_ratios():
    pro, flash = specs.load_model("deepseek-v4-pro"), specs.load_model("deepseek-v4-flash")
    assert layer_groups(pro) == [("moe.c128", "c128", "moe", 31), ("moe.c4", "c4", "moe", 30)]
    assert [g[1:] for g in layer_groups(flash)] == [
        ("sliding", "moe", 2),
        ("c4", "moe", 21),
        ("c128", "moe", 20),
    ]
    assert pro.mtp_compress_ratio == 0 and pro.hc_mult == 4 and pro.num_hash_layers == 3


def test_parameter_totals():
    """No model card figure for V4 is in the references (../shared/reference/model-configs/README.md
    lists none): the totals are pinned to the hand count of the layer formulas (attention_v4.layer_params)
    so a change is seen. Pro: 1,573B total, 49.8B activated; Flash: 284.3B / 13.8B."""
    got = {n: param_totals(specs.load_model(n)) for n in V4}
    assert got["deepseek-v4-pro"][0] == pytest.approx(1573.0e9, rel=1e-3)
    assert got["deepseek-v4-pro"][1] == pytest.approx(49.78e9, rel=1e-3)
    assert got["deepseek-v4-flash"][0] == pytest.approx(284.3e9, rel=1e-3)
    assert got["deepseek-v4-flash"][1] == pytest.approx(13.80e9, rel=1e-3)
    m = specs.load_model("deepseek-v4-pro")
    h, H, d, q, R, G = 7168, 128, 512, 1536, 1024, 16
    base = h * (q + d) + q + d + q * H * d + H * d * R + G * R * h + H + 2 * h + 2 * (24 * 4 * h + 24 + 3)
    c128 = 128 * d + h * 2 * d + d
    c4 = 4 * 2 * d + h * 4 * d + d + q * 64 * 128 + h * 64 + (4 * 2 * 128 + h * 4 * 128 + 128)
    assert attention_v4.layer_params(m, "c128") == base + c128
    assert attention_v4.layer_params(m, "c4") == base + c4


@pytest.mark.parametrize("kv", ["fp8", "bf16"])
@pytest.mark.parametrize("L", [4096.0, 1048576.0])
def test_kv_bytes_per_token(kv, L):
    """Pro: 61 SWA rings of 128 entries + 30 c4 layers (L/4 entries + L/4 indexer keys of 132 B) + 31 c128
    layers (L/128 entries) + the compressor states; an entry is 584 B in FP8 (448 + 64*2 + 7 + 1), 1,024
    in BF16. FP8: 11,193 B per token at 4K, 5,534 at 1M (DeepSeek-R1: 70,272 in BF16)."""
    m = specs.load_model("deepseek-v4-pro")
    e = 584.0 if kv == "fp8" else 1024.0
    state = 30 * (8 * 4 * 512 * 4 + 8 * 4 * 128 * 4) + 31 * 128 * 2 * 512 * 4
    want = 61 * 128 * e + 30 * L / 4 * (e + 132) + 31 * L / 128 * e + state
    assert float(kv_bytes_per_seq(m, kv, L)) == pytest.approx(want, rel=1e-12)
    per_token = want / L
    assert per_token == pytest.approx(
        {("fp8", 4096.0): 11193, ("fp8", 1048576.0): 5534}.get((kv, L), per_token), abs=1
    )


def test_c4_attention_caps_at_index_topk_and_c128_grows():
    """c4 layers attend 128 + min(L/4, 1,024) keys (flat past 4,096 tokens), c128 layers 128 + L/128."""
    m = specs.load_model("deepseek-v4-pro")
    L = np.array([1024.0, 4096.0, 65536.0])
    assert list(attention_v4.attended_keys(m, "c4", L)) == [384.0, 1152.0, 1152.0]
    assert list(attention_v4.attended_keys(m, "c128", L)) == [136.0, 160.0, 640.0]
    assert list(attention_v4.attended_keys(m, "sliding", L)) == [128.0, 128.0, 128.0]


@pytest.mark.parametrize("system", ["hgx-h200", "cloudmatrix384"])
@pytest.mark.parametrize("name", V4)
def test_tpot_non_decreasing_in_batch_and_kv_length(system, name):
    s, m = specs.load_system(system), specs.load_model(name)
    for knob, values in (
        ("batch_per_device", [8.0, 32.0, 96.0, 256.0]),
        ("kv_len", [512.0, 4096.0, 65536.0, 1e6]),
    ):
        ev = decode.evaluate(s, m, Deployment(**{knob: np.array(values)}, microbatches=2))
        t = np.asarray(ev.tpot_s)
        assert np.all(np.isfinite(t)) and np.all(np.diff(t) >= -1e-15), (knob, t)


@pytest.mark.parametrize("system", ["hgx-h200", "cloudmatrix384"])
def test_decode_and_prefill_run(system):
    s, m = specs.load_system(system), specs.load_model("deepseek-v4-pro")
    p = decode.predict(s, m, Deployment(microbatches=2))
    assert p.tpot_s > 0 and any(r.name == "v4.attention" for r in p.ops)
    assert any(r.name == "v4.index_scores" for r in p.ops) and any(r.name == "mhc.attn_pre" for r in p.ops)
    pf = prefill.predict(s, m, Deployment(phase="prefill", devices=64, microbatches=2))
    assert pf.tokens_per_s_per_device > 0
    assert run("decode", "--model", "deepseek-v4-pro", "--system", system).exit_code == 0
    # 1.57T parameters do not fit the default 16-NPU (32-die) prefill unit of CM384 in INT8: 64 devices do
    r = run("prefill", "--model", "deepseek-v4-pro", "--system", system, "--devices", 64)
    assert r.exit_code == 0, r.output


def _config(tmp_path, **edits):
    cfg = json.loads((CONFIGS / V4["deepseek-v4-flash"]).read_text())
    for k, v in edits.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / "v4-config.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize(
    "edits, needle",
    [
        ({"compress_ratios": [0, 2] * 22}, "key compress_ratios: expected 43 or 44 entries of 0, 4, 128"),
        ({"compress_ratios": [4] * 40}, "key compress_ratios: expected 43 or 44 entries"),
        ({"num_key_value_heads": 2}, "key num_key_value_heads: 2; DeepSeek-V4 has one KV head"),
        ({"o_groups": 7}, "o_groups: 7 groups do not divide the 64 attention heads"),
        ({"o_lora_rank": ...}, "key o_lora_rank is missing (architecture deepseek_v4 needs it)"),
        ({"sliding_window": ...}, "key sliding_window is missing"),
        ({"index_topk": 0}, "index_topk"),
        ({"kv_source_layer_ids": [3]}, "key kv_source_layer_ids: DeepSeek-V4.1"),
        ({"num_experts_per_tok": 300}, "top-300 exceeds the 256 routed experts"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, edits, needle):
    if not (CONFIGS / V4["deepseek-v4-flash"]).is_file():
        pytest.skip("reference configs not on disk")
    r = run("decode", "--model", _config(tmp_path, **edits))
    assert r.exit_code == 2 and needle in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_dsv4_variants_and_fields_only_with_dsv4(tmp_path):
    """c4 / c128 layers on an MLA model, a full layer on a dsv4 model, hc_mult on an MLA model: refused."""
    r1 = (ROOT / "models" / "deepseek-r1.toml").read_text()
    bad = r1.replace("[routing]", '[layers]\nsource = "x"\nattention = ["c4"]\n\n[routing]', 1)
    (tmp_path / "a.toml").write_text(bad.replace('name = "deepseek-r1"', 'name = "a"'))
    r = run("decode", "--model", tmp_path / "a.toml")
    assert r.exit_code == 2 and "'c4' layers are not mla layers" in r.stderr
    flash = (ROOT / "models" / "deepseek-v4-flash.toml").read_text()
    bad = flash.replace('attention = ["sliding", "sliding",', 'attention = ["full", "sliding",', 1)
    (tmp_path / "b.toml").write_text(bad.replace('name = "deepseek-v4-flash"', 'name = "b"'))
    r = run("decode", "--model", tmp_path / "b.toml")
    assert r.exit_code == 2 and "'full' layers are not dsv4 layers" in r.stderr
    r1x = r1.replace("[architecture]\n", "[architecture]\nhc_mult = 4\n", 1)
    (tmp_path / "c.toml").write_text(r1x.replace('name = "deepseek-r1"', 'name = "c"'))
    r = run("decode", "--model", tmp_path / "c.toml")
    assert r.exit_code == 2 and "hc_mult: a DeepSeek-V4 field" in r.stderr
