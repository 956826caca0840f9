"""Kimi-K3 (cmperf.attention_kda, attention = "kda"): the spec from its config.json, parameter totals, KDA
state and MLA cache bytes, the latent MoE and the attention residuals in the op graph, decode / prefill /
serve / optimize / compare on CloudMatrix384 and HGX-H200, TPOT non-decreasing in batch and KV length, and
config fields cmperf does not model refused by name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cmperf import attention_kda, decode, hf, prefill, specs
from cmperf.cli import main
from cmperf.deployment import Deployment
from cmperf.graph import kv_bytes_per_seq, layer_groups, param_totals, weight_params

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "data" / "hf-configs" / "moonshotai--Kimi-K3.json"  # = the shared reference copy
SYSTEMS = ("cloudmatrix384", "hgx-h200")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def k3():
    return specs.load_model("kimi-k3")


def test_bundled_spec_is_the_config_import():
    """models/kimi-k3.toml is `cmperf specs import` of the config.json (no hand edits)."""
    assert hf.to_toml(hf.spec_from_config(CONFIG)) == (ROOT / "models" / "kimi-k3.toml").read_text()


def test_layers_follow_linear_attn_config(k3):
    """kda_layers / full_attn_layers are 1-based (KimiLinearConfig.is_kda_layer: layer_idx + 1): layer 0
    (the dense one) is KDA; layers 3, 7, ..., 91 and 92 are MLA; MoE from layer 1 on."""
    assert layer_groups(k3) == [
        ("dense.kda", "kda", "dense", 1),
        ("moe.kda", "kda", "moe", 68),
        ("moe", "full", "moe", 24),
    ]
    assert [i for i, a in enumerate(k3.layer_attention) if a == "full"] == [*range(3, 92, 4), 92]


def _sglang_tally(k3) -> tuple[float, float]:
    """Total and activated parameters counted from the weight shapes SGLang 0.5.23 builds
    (models/kimi_k3.py), written out module by module, independently of cmperf.attention_kda: the
    e_score_correction_bias (896 per MoE layer), the final norm and the vision tower are left out."""
    h, V = 7168, 163840
    proj = 96 * 128  # KDA heads x head_dim
    kda = {  # KimiK3DeltaAttention.__init__ (use_full_rank_gate)
        "fused_qkvg_proj": h * 4 * proj,
        "b_proj": h * 96,
        "f_a_proj": h * 128,
        "f_b_proj": 128 * proj,
        "dt_bias": proj,
        "qkv_conv1d": 3 * proj * 4,
        "A_log": 96,
        "o_norm": 128,
        "o_proj": proj * h,
    }
    mla = {  # DeepseekV2AttentionMLA (q_lora_rank 1536, kv_lora_rank 512, 96 heads) + KimiK3MLAAttention
        "q_a_proj": h * 1536,
        "q_a_layernorm": 1536,
        "q_b_proj": 1536 * 96 * (128 + 64),
        "kv_a_proj_with_mqa": h * (512 + 64),
        "kv_a_layernorm": 512,
        "kv_b_proj": 512 * 96 * (128 + 128),
        "o_proj": 96 * 128 * h,
        "g_proj": h * 96 * 128,
    }
    layer = {  # KimiK3DecoderLayer: input / post-attention norms, attention-residual norms and projections
        "input_layernorm": h,
        "post_attention_layernorm": h,
        "self_attention_res_norm": h,
        "mlp_res_norm": h,
        "self_attention_res_proj": h,
        "mlp_res_proj": h,
    }
    expert = 3 * 3584 * 3072  # FusedMoE(hidden_size=moe_hidden_size 3584, intermediate 3072): w13 + w2
    moe = {  # KimiK3MoE
        "gate": 896 * h,
        "shared_experts": 3 * h * (2 * 3072),  # KimiK3MLP(intermediate = 3072 x 2 shared)
        "routed_expert_down_proj": h * 3584,
        "routed_expert_norm": 3584,
        "routed_expert_up_proj": 3584 * h,
    }
    dense = 3 * h * 33792  # layer 0's KimiK3MLP
    model = 2 * V * h + 2 * h  # embed_tokens, lm_head; output_attn_res_norm and _proj
    n_kda, n_mla, n_moe = 69, 24, 92
    base = (
        n_kda * sum(kda.values())
        + n_mla * sum(mla.values())
        + 93 * sum(layer.values())
        + n_moe * sum(moe.values())
        + dense
        + model
    )
    assert (k3.layer_attention.count("kda"), k3.layer_ffn.count("moe")) == (n_kda, n_moe)
    return base + n_moe * 896 * expert, base + n_moe * 16 * expert


def test_parameter_totals_match_the_sglang_weight_shapes(k3):
    """The model-configs README gives no Kimi-K3 card figure (it lists Kimi-K2's only), so cmperf is held
    to the weight shapes SGLang loads: 2,779.5B total, 105.4B activated (the embedding included; 104.2B
    without), within 2% (in fact equal to 1e-6)."""
    total, active = param_totals(k3)
    want_total, want_active = _sglang_tally(k3)
    assert total == pytest.approx(want_total, rel=0.02) and active == pytest.approx(want_active, rel=0.02)
    assert total == pytest.approx(want_total, rel=1e-6) and active == pytest.approx(want_active, rel=1e-6)
    assert total == pytest.approx(2779.48e9, rel=1e-5) and active == pytest.approx(105.364e9, rel=1e-5)
    w = weight_params(k3)
    assert w["expert"] == 3 * 3584 * 3072 and w["experts_shared"] == 92 * 2 * 3 * 7168 * 3072


@pytest.mark.parametrize("kv", ["bf16", "fp8"])
@pytest.mark.parametrize("L", [4096.0, 1048576.0])
def test_cache_and_state_bytes(k3, kv, L):
    """24 MLA layers cache 512 + 64 latent values per token; 69 KDA layers hold a fixed state per sequence:
    96 x 128 x 128 FP32 + 3 conv inputs of 3 x 12,288 channels in BF16 (KimiLinearStateShape,
    mamba2_state_dtype) = 6,512,640 B. BF16 at 4K: 562.6 MB per sequence, 137,358 B per token."""
    b = {"bf16": 2.0, "fp8": 1.0}[kv]
    state = 96 * 128 * 128 * 4 + 3 * 3 * 12288 * 2
    assert state == 6_512_640
    want = 24 * L * 576 * b + 69 * state
    assert float(kv_bytes_per_seq(k3, kv, L)) == pytest.approx(want, rel=1e-12)
    if (kv, L) == ("bf16", 4096.0):
        assert want / L == pytest.approx(137_358, abs=1)


def test_kda_state_is_flat_in_context_and_mla_grows(k3):
    s = specs.load_system("hgx-h200")
    ev = decode.evaluate(s, k3, Deployment(kv_len=np.array([1024.0, 32768.0]), microbatches=1))
    names = [st.stage.name for st in ev.stages]
    kda, mla = ev.stages[names.index("moe.kda")], ev.stages[names.index("moe")]
    rec = [op.name for op in kda.stage.ops].index("kda.recurrence")
    att = [op.name for op in mla.stage.ops].index("mla.attention")
    t = np.broadcast_to(kda.op_times[rec].memory_s, (2,))
    assert t[0] == t[1] > 0
    assert mla.op_times[att].memory_s[1] > 20 * mla.op_times[att].memory_s[0]


def _moe_ops(k3, system="cloudmatrix384", **knobs):
    p = decode.predict(specs.load_system(system), k3, Deployment(microbatches=2, **knobs))
    return p, {r.name: r for r in p.ops if r.stage == "moe.kda"}


def test_latent_moe_ops(k3):
    """Routed experts in 3,584 (up 3,584 -> 2 x 3,072, down 3,072 -> 3,584), their dispatch and combine
    rows 3,584 wide (CM384 INT8 message 3,584 + 4 B scale, 512-B aligned: 4,096 B, not R1's 7,680),
    the gate and the latent down projection in front, the two shared experts in 7,168 on the rank's own
    tokens, the latent norm and up projection behind."""
    p, _ = _moe_ops(k3, batch_per_device=32)
    names = [r.name for r in p.ops if r.stage == "moe.kda"]
    i = names.index
    assert i("attnres.ffn_read") < i("moe.gate") < i("latent.down") < i("moe.dispatch") < i("moe.experts.up")
    assert i("moe.experts.down") < i("moe.shared.up") < i("moe.combine") < i("latent.norm") < i("latent.up")
    assert "ffn.norm" not in names and "attn.residual" not in names
    ev = decode.evaluate(
        specs.load_system("cloudmatrix384"), k3, Deployment(batch_per_device=32, microbatches=2)
    )
    st = next(s for s in ev.stages if s.stage.name == "moe.kda").stage
    op = {o.name: o for o in st.ops}
    t = 32 / 2 / 2  # sequences per die and microbatch (MTP off)
    assert float(op["moe.dispatch"].comm_bytes) == pytest.approx(t * 16 * 4096, rel=1e-12)
    assert float(op["moe.combine"].comm_bytes) == pytest.approx(t * 16 * 3584 * 2, rel=1e-12)
    assert float(op["latent.down"].flops) == 2 * t * 7168 * 3584
    assert float(op["latent.up"].flops) == 2 * t * 3584 * 7168
    up = op["moe.experts.up"]
    assert float(up.flops) / float(up.act_in_bytes) == pytest.approx(2 * 2 * 3072 / 1.0, rel=1e-12)  # INT8 in
    assert float(op["moe.shared.up"].flops) == 2 * t * 2 * 7168 * 2 * 3072


def test_dedicated_expert_ranks_send_shared_copies_wide(k3):
    """EP1,024 on an Atlas 950 SuperPoD exceeds the 896 routed experts: one expert per rank, the shared
    experts on ranks of their own, their copies dispatched 7,168 wide; no shared-expert GEMMs on the
    routed ranks."""
    s = specs.load_system("atlas-950-superpod")
    ev = decode.evaluate(s, k3, Deployment(devices=1024, batch_per_device=16, microbatches=2))
    op = {o.name: o for o in next(st for st in ev.stages if st.stage.name == "moe.kda").stage.ops}
    assert "moe.shared.up" not in op
    c = s.collective("dispatch")
    wide = math.ceil((7168 + c.scale_bytes) / c.message_align_bytes) * c.message_align_bytes
    narrow = wide - 3584
    assert float(op["moe.dispatch"].comm_bytes) == pytest.approx(8 * (16 * narrow + 2 * wide), rel=1e-12)
    assert np.isfinite(ev.tpot_s).all()


def test_attention_residual_reads(k3):
    """Block attention residuals (B = 12): mean rows a read streams (the bank, the prefix, a pending add)
    and the bank writes per layer; they replace the input norm and the residual add."""
    a, f, w = attention_kda.bank_reads(k3)
    assert (round(a, 4), round(f, 4), w) == (5.4086, 6.3011, 8 / 93)
    p, ops = _moe_ops(k3)
    assert {"attnres.attn_read", "attnres.ffn_read"} <= set(ops) and "attn.norm" not in ops
    mla = {r.name for r in p.ops if r.stage == "moe"}
    assert {"attnres.attn_read", "mla.g_proj", "mla.output_gate"} <= mla and "attn.residual" not in mla


@pytest.mark.parametrize("system", SYSTEMS)
def test_tpot_non_decreasing_in_batch_and_kv_length(k3, system):
    s = specs.load_system(system)
    for knob, values in (
        ("batch_per_device", [2.0, 8.0, 32.0, 96.0, 256.0]),
        ("kv_len", [512.0, 4096.0, 65536.0, 1e6]),
    ):
        for n in (1, 2):
            ev = decode.evaluate(s, k3, Deployment(**{knob: np.array(values)}, microbatches=n))
            t = np.asarray(ev.tpot_s)
            assert np.all(np.isfinite(t)) and np.all(np.diff(t) >= -1e-15), (knob, n, t)


@pytest.mark.parametrize("system", SYSTEMS)
def test_commands_run(k3, system):
    """decode, prefill, serve, optimize and compare: exit 0, or 3 (infeasible: 2.78T parameters and
    449 MB of KDA state per sequence with data-parallel attention), never a crash."""
    # hgx-h200 fits 4 sequences per GPU at 4K. A CloudMatrix384 die does not (67.0 GB of 58): 41 GB of
    # replicated attention-side weights, and a shared-expert die of EP768 holds both 7168-wide shared
    # experts, 4 routed-expert units (memory.expert_units)
    p = decode.predict(specs.load_system(system), k3, Deployment(batch_per_device=4, microbatches=2))
    assert p.tpot_s > 0 and p.feasible == (system == "hgx-h200"), p.reasons
    pf = prefill.predict(
        specs.load_system(system), k3, Deployment(phase="prefill", devices=128, microbatches=2)
    )
    assert pf.tokens_per_s_per_device > 0 and any(r.name == "kda.chunk_recurrence" for r in pf.ops)
    for args in (
        ("decode", "--batch", 4),
        ("decode",),
        ("prefill",),
        ("prefill", "--devices", 128),
        ("optimize",),
    ):
        r = run(*args, "--model", "kimi-k3", "--system", system, "--format", "json")
        assert r.exit_code in (0, 1, 3) and "Traceback" not in r.output, (args, r.output)
    # serve's default prefill instances are too small for 2.78T parameters: refused by name
    r = run("serve", "--rate", 1, "--model", "kimi-k3", "--system", system)
    assert r.exit_code in (0, 3) or (r.exit_code == 2 and "does not fit" in r.stderr), r.output
    if system == "hgx-h200":
        sizes = ("--prefill-devices", 64, "--prefill-instance-devices", 64, "--decode-devices", 64)
        r = run("serve", "--rate", 1, "--model", "kimi-k3", "--system", system, *sizes, "--format", "json")
        assert r.exit_code in (0, 3) and json.loads(r.stdout)["tpot_s"]["mean"] > 0, r.output
    r = run("compare", "--systems", ",".join(SYSTEMS), "--model", "kimi-k3", "--format", "json")
    assert r.exit_code in (0, 3) and len(json.loads(r.stdout)["rows"]) == 2, r.output


def test_config_json_runs_like_the_bundled_spec():
    a = json.loads(run("decode", "--model", "kimi-k3", "--batch", 8, "--format", "json").stdout)
    b = json.loads(run("decode", "--model", CONFIG, "--batch", 8, "--format", "json").stdout)
    assert a["tpot_s"] == b["tpot_s"] and a["hbm_bytes_per_rank"] == b["hbm_bytes_per_rank"]


def _config(tmp_path, edit) -> Path:
    cfg = json.loads(CONFIG.read_text())
    edit(cfg["text_config"])
    p = tmp_path / "k3-config.json"
    p.write_text(json.dumps(cfg))
    return p


def _set(**kv):
    def edit(t):
        for k, v in kv.items():
            if v is ...:
                t.pop(k, None)
            else:
                t[k] = v

    return edit


def _kda(**kv):
    def edit(t):
        la = t["linear_attn_config"]
        la.update({k: v for k, v in kv.items() if v is not ...})
        for k in (k for k, v in kv.items() if v is ...):
            la.pop(k)

    return edit


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            _set(new_attention_trick=True),
            "key new_attention_trick: a kimi_linear field cmperf does not model",
        ),
        (
            _set(mamba_ssm_dtype="bfloat16"),
            "key mamba_ssm_dtype: 'bfloat16'; cmperf sizes the KDA state in FP32",
        ),
        (_set(hidden_act="gelu"), "key hidden_act: 'gelu'"),
        (_set(num_nextn_predict_layers=1), "key num_nextn_predict_layers: SGLang 0.5.23 has no Kimi-K3 MTP"),
        (_set(moe_layer_freq=2), "key moe_layer_freq"),
        (_set(is_encoder_decoder=True), "key is_encoder_decoder"),
        (_set(num_experts=...), "key num_experts is missing"),
        (_set(num_experts_per_token=1000), "top-1000 exceeds the 896 routed experts"),
        (_set(num_key_value_heads=7), "key num_key_value_heads: 7 does not divide the 96 heads"),
        (_set(routed_expert_hidden_size=8192), "routed_expert_hidden_size: 8192 must be below hidden_size"),
        (_kda(new_gate=1), "key linear_attn_config.new_gate: a KDA field cmperf does not model"),
        (_kda(kda_layers=[1, 2]), "key linear_attn_config.kda_layers: with full_attn_layers it must list"),
        (_kda(full_attn_layers=[0, 4]), "key linear_attn_config.full_attn_layers: expected 1-based layer"),
        (_kda(num_heads=...), "key linear_attn_config.num_heads is missing"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, edit, needle):
    r = run("decode", "--model", _config(tmp_path, edit))
    assert r.exit_code == 2 and needle in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_kimi_linear_without_k3_features(tmp_path):
    """A kimi_linear config without K3's additions (Kimi-Linear's shape: low-rank KDA output gate, no MLA
    output gate, experts in the hidden size, a plain residual) imports and runs; its KDA layer holds
    q, k, v h -> 3 x 12,288 and g_a h -> 128, g_b 128 -> 12,288 instead of the full-rank g."""
    edit = _set(
        routed_expert_hidden_size=...,
        latent_moe_use_norm=...,
        attn_res_block_size=...,
        mla_use_output_gate=...,
    )

    def both(t):
        edit(t)
        t["linear_attn_config"]["use_full_rank_gate"] = False

    path = _config(tmp_path, both)
    r = run("decode", "--model", path, "--batch", 8, "--format", "json")
    assert r.exit_code in (0, 3), r.output
    m = specs.load_model(str(path))
    full = specs.load_model("kimi-k3")
    h, p = 7168, 12288
    assert (
        attention_kda.kda_layer_params(full) - attention_kda.kda_layer_params(m) == h * p - h * 128 - 128 * p
    )
    assert attention_kda.mla_layer_params(full) - attention_kda.mla_layer_params(m) == h * 96 * 128
    ops = {
        r.name for r in decode.predict(specs.load_system("hgx-h200"), m, Deployment(batch_per_device=8)).ops
    }
    assert {"kda.g_a_proj", "kda.g_b_proj", "attn.norm", "attn.residual", "ffn.norm", "moe.shared.up"} <= ops
    assert not ops & {"latent.down", "attnres.attn_read", "mla.g_proj", "kda.qkvg_proj"}
    assert weight_params(m)["expert"] == 3 * h * 3072


def test_kda_fields_and_layers_only_with_the_kda_kind(tmp_path):
    r1 = (ROOT / "models" / "deepseek-r1.toml").read_text().replace('name = "deepseek-r1"', 'name = "x"')
    (tmp_path / "x.toml").write_text(
        r1.replace("[architecture]\n", "[architecture]\nattn_res_block_size = 12\n", 1)
    )
    r = run("decode", "--model", tmp_path / "x.toml")
    assert r.exit_code == 2 and "attn_res_block_size: a Kimi-K3 / Kimi-Linear field" in r.stderr
    bad = r1.replace("[routing]", '[layers]\nsource = "x"\nattention = ["kda"]\n\n[routing]', 1)
    (tmp_path / "x2.toml").write_text(bad.replace('name = "x"', 'name = "x2"'))
    r = run("decode", "--model", tmp_path / "x2.toml")
    assert r.exit_code == 2 and "'kda' layers are not mla layers" in r.stderr
    k3 = (ROOT / "models" / "kimi-k3.toml").read_text().replace('name = "kimi-k3"', 'name = "y"')
    (tmp_path / "y.toml").write_text(k3.replace("linear_conv_kernel_dim = 4\n", ""))
    r = run("decode", "--model", tmp_path / "y.toml")
    assert r.exit_code == 2 and "'kda' layers need architecture.linear_conv_kernel_dim > 0" in r.stderr
    (tmp_path / "y2.toml").write_text(
        k3.replace("latent_moe_norm = 1", "latent_moe_norm = 2").replace('"y"', '"y2"')
    )
    r = run("decode", "--model", tmp_path / "y2.toml")
    assert r.exit_code == 2 and "latent_moe_norm: expected 0 or 1" in r.stderr
    r = run("decode", "--model", "kimi-k3", "--attn-tp", 5)  # 5 divides neither the 768 ranks nor 96 heads
    assert r.exit_code == 2 and "--attn-tp" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_kimi_k3_cache_under_attention_tp():
    """Under decode attention TP8 a rank holds 8x the sequences: its share of each KDA state (heads split)
    keeps the state bytes per rank, while the 24 MLA layers' latent is whole on every TP rank (8x):
    per sequence at 4K in BF16, DP 113.2 MB (MLA) + 449.4 MB (KDA) against TP8 905.8 + 449.4 MB."""
    import json

    base = ("decode", "--model", "kimi-k3", "--system", "hgx-h200", "--batch", 32, "--format", "json")
    dp, tp = run(*base), run(*base, "--attn-tp", 8)
    assert dp.exit_code == 0 and tp.exit_code == 0
    kv = [json.loads(r.stdout)["hbm_breakdown_bytes"]["kv_cache"] for r in (dp, tp)]
    mla, kda = 24 * 4096 * 1152.0, 69 * 6512640.0
    assert kv[1] / kv[0] == pytest.approx((8 * mla + kda) / (mla + kda), rel=0.01)


def test_decode_attention_tp_ops_split_the_heads(k3):
    """Attention TP is refused for kda models by cmperf.deployment (above), but the optimizer's TP axis
    builds the grid before masking it: the ops split KDA's and MLA's heads and states over the group and
    end in its all-reduce, and `optimize --attn-tp 1,8` runs (the TP8 rows placement invalid)."""
    from cmperf.deployment import Precision

    prec = Precision()
    one = {o.name: o for o in attention_kda.decode_ops(k3, prec, 64.0, 64.0, 4096.0, "kda")}
    eight = {o.name: o for o in attention_kda.decode_ops(k3, prec, 64.0, 64.0, 4096.0, "kda", 8)}
    assert float(eight["kda.qkvg_proj"].weight_bytes) == float(one["kda.qkvg_proj"].weight_bytes) / 8
    assert float(eight["kda.recurrence"].kv_read_bytes) == float(one["kda.recurrence"].kv_read_bytes) / 8
    assert "attn.tp_allreduce" in eight and "attn.tp_allreduce" not in one
    mla = {o.name: o for o in attention_kda.decode_ops(k3, prec, 64.0, 64.0, 4096.0, "full", 8)}
    assert float(mla["mla.g_proj"].flops) == 2 * 64 * 7168 * 96 * 128 / 8 and "attn.tp_allreduce" in mla
    r = run("optimize", "--model", "kimi-k3", "--system", "hgx-h200", "--attn-tp", "1,8", "--format", "json")
    assert r.exit_code in (0, 1, 3) and "Traceback" not in r.output, r.output


def test_shared_experts_count_at_their_size(k3):
    """Kimi-K3's two shared experts run in the full hidden 7168, its routed experts in the latent 3584: a
    rank's shared set is 2 x 7168 / 3584 = 4 routed-expert units (DeepSeek-R1's one same-size shared
    expert: 1, the units unchanged)."""
    from cmperf import memory

    sets = np.array([10.0, 1.0])  # 9 routed slots + the shared set; a dedicated rank's one set
    assert memory.expert_units(k3, sets).tolist() == [13.0, 4.0]
    assert memory.expert_units(specs.load_model("deepseek-r1"), sets).tolist() == [10.0, 1.0]
