"""Hugging Face ``config.json`` -> a cmperf model spec (the TOML structure ``specs.load_model`` reads).

Read locally (no network). A multimodal wrapper's language model (``text_config``) is the model. Only
architectures the op graph models are imported; any other, or a field that changes the structure in a way
cmperf does not model, is refused by name (exit 2), never modelled as something else. Per ``model_type``:

* ``deepseek_v3``, ``kimi_k2`` (DeepSeek-V3/R1, Kimi-K2/K2.5): MLA, ``first_k_dense_replace`` dense
  layers, then MoE with ``n_shared_experts`` + ``n_routed_experts`` (top-``num_experts_per_tok``,
  ``n_group`` / ``topk_group``), ``num_nextn_predict_layers`` MTP modules.
* ``deepseek_v32``, ``glm_moe_dsa`` (DeepSeek-V3.2, GLM-5.1): the same plus DSA's indexer
  (``index_n_heads``, ``index_head_dim``, ``index_topk``).
* ``qwen3_moe``: GQA (``num_key_value_heads``, ``head_dim``), ``num_experts`` routed experts, no shared
  expert; a layer is dense when listed in ``mlp_only_layers`` or off the ``decoder_sparse_step`` period
  (Qwen3MoeDecoderLayer); ``use_sliding_window`` is refused.
* ``qwen3_5_moe_text`` (Qwen3.5 MoE): Gated DeltaNet linear-attention layers (``linear_*``) interleaved
  with gated GQA layers (``layer_types``, ``attn_output_gate``), a shared expert, MTP modules.
* ``gpt_oss``: GQA, ``num_local_experts`` experts of ``intermediate_size``, ``layer_types``
  (sliding_attention / full_attention) with ``sliding_window``.
* ``llama4_text``: GQA, MoE on layers ``moe_layers`` (default every ``interleave_moe_layer_step``-th:
  Llama4TextConfig) with one shared expert, dense layers of ``intermediate_size_mlp``; chunked attention
  (``attention_chunk_size``) on the RoPE layers, full attention on the NoPE ones (``no_rope_layers``,
  default every 4th layer NoPE).
* ``mixtral``: GQA, ``num_local_experts`` experts, sliding window on every layer when set.
* ``minimax_m2``: GQA, ``num_local_experts`` experts of ``intermediate_size``, ``num_mtp_modules``
  MTP modules when ``use_mtp``.
* ``step3p7``: GQA, ``layer_types`` with ``sliding_window``, dense-first layers, a shared expert of
  ``share_expert_dim``, ``num_nextn_predict_layers`` MTP modules.
* ``llama``: a dense GQA model.
* ``deepseek_v4`` (DeepSeek-V4-Pro / -Flash): compressed MQA (cmperf.attention_v4; SGLang
  models/deepseek_v4.py): ``head_dim`` (one KV head), ``q_lora_rank``, grouped low-rank output
  (``o_lora_rank``, ``o_groups``), ``compress_ratios`` (one per layer + one per MTP layer: 0 sliding
  window only, 4 the indexer's top-``index_topk`` of 4-token entries, 128 every 128-token entry; V4.1's 1
  and 2 are refused), ``sliding_window``, ``hc_mult`` hyper-connections, ``num_hash_layers``, MoE as
  DeepSeek-V3's (``n_group`` absent: no group limit).
* ``kimi_linear`` (Kimi-K3, the ``text_config`` of ``kimi_k3``; Kimi-Linear): Kimi Delta Attention layers
  (``linear_attn_config``: ``kda_layers`` / ``full_attn_layers``, 1-based, ``num_heads``, ``head_dim``,
  ``short_conv_kernel_size``, ``use_full_rank_gate``) beside MLA full-attention layers with an output gate
  (``mla_use_output_gate``), a latent MoE (``routed_expert_hidden_size``, ``latent_moe_use_norm``),
  attention residuals (``attn_res_block_size``), ``num_shared_experts`` + ``num_experts`` (top
  ``num_experts_per_token``, ``num_expert_group`` / ``topk_group``), ``first_k_dense_replace`` dense
  layers (cmperf.attention_kda; SGLang 0.5.23 models/kimi_k3.py, kimi_linear.py). Every field of this
  config is read, accepted as cost-neutral (``_KIMI_NEUTRAL``, ``_HF_GENERIC``) or refused by name.

Worked example: Kimi-K2-Instruct's config gives 61 layers (1 dense), 384 routed + 1 shared experts of
2,048, top-8, 64 MLA heads, no MTP: 1.03T parameters, 32.9B activated (model card: 1T / 32B).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CmperfError

#: model_type values seen in current configs that need an attention or layer kind cmperf does not build yet.
NOT_YET: dict[str, str] = {}

#: The expert-popularity skew of an imported model: the DeepSeek-R1 spec's stated assumption (no measured
#: per-expert routing of these models is in the references); `--eplb perfect` or `--imbalance` override it.
IMPORTED_ZIPF = 0.1

Fields = tuple[tuple[str, str, int | None], ...]  # (cmperf key, config.json key, default; None: required)
_COMMON: Fields = (
    ("hidden_size", "hidden_size", None),
    ("num_layers", "num_hidden_layers", None),
    ("num_attention_heads", "num_attention_heads", None),
    ("vocab_size", "vocab_size", None),
    ("max_position_embeddings", "max_position_embeddings", None),
)
_MLA: Fields = (
    ("q_lora_rank", "q_lora_rank", 0),
    ("kv_lora_rank", "kv_lora_rank", None),
    ("qk_nope_head_dim", "qk_nope_head_dim", None),
    ("qk_rope_head_dim", "qk_rope_head_dim", None),
    ("v_head_dim", "v_head_dim", None),
)
_DEEPSEEK_MOE: Fields = (
    ("first_k_dense", "first_k_dense_replace", 0),
    ("intermediate_size", "intermediate_size", None),
    ("moe_intermediate_size", "moe_intermediate_size", None),
    ("n_routed_experts", "n_routed_experts", None),
    ("n_shared_experts", "n_shared_experts", 0),
    ("num_experts_per_tok", "num_experts_per_tok", None),
    ("n_group", "n_group", 1),
    ("topk_group", "topk_group", 1),
    ("num_mtp_modules", "num_nextn_predict_layers", 0),
)
_DSA: Fields = (
    ("index_n_heads", "index_n_heads", None),
    ("index_head_dim", "index_head_dim", None),
    ("index_topk", "index_topk", None),
)


class _Config:
    """A config.json's fields, each read with its key named in errors."""

    def __init__(self, cfg: dict[str, Any], path: Path) -> None:
        self.cfg, self.path, self.kind = cfg, path, cfg.get("model_type")

    def whole(self, key: str, default: int | None = None) -> int:
        v = self.cfg.get(key)
        if v is None:
            v = default
        if v is None:
            raise CmperfError(f"{self.path}: key {key} is missing (architecture {self.kind} needs it)")
        if not isinstance(v, int) or isinstance(v, bool):
            raise CmperfError(f"{self.path}: key {key}: expected a whole number, got {v!r}")
        return v

    def fields(self, table: Fields) -> dict[str, int]:
        return {k: self.whole(src, default) for k, src, default in table}

    def refuse(self, key: str, why: str) -> CmperfError:
        return CmperfError(f"{self.path}: key {key}: {why}")

    def layer_list(self, key: str, mapping: dict[str, str], layers: int) -> list[str]:
        v = self.cfg.get(key)
        if not isinstance(v, list) or len(v) != layers or any(x not in mapping for x in v):
            raise self.refuse(key, f"expected {layers} entries of {', '.join(mapping)}, got {v!r}")
        return [mapping[x] for x in v]

    def gqa(self, arch: dict[str, int]) -> dict[str, int]:
        heads = arch["num_attention_heads"]
        kv = self.whole("num_key_value_heads", heads)
        if kv < 1 or heads % kv:
            raise self.refuse("num_key_value_heads", f"{kv!r} does not divide the {heads} heads")
        return {"num_key_value_heads": kv, "head_dim": self.whole("head_dim", arch["hidden_size"] // heads)}


def _deepseek(c: _Config) -> tuple[str, dict[str, int], dict[str, list[str]]]:
    arch = c.fields(_COMMON + _MLA + _DEEPSEEK_MOE)
    if c.cfg.get("moe_layer_freq", 1) != 1:
        raise c.refuse("moe_layer_freq", f"{c.cfg['moe_layer_freq']!r}; cmperf models MoE in every layer")
    heads, kv = arch["num_attention_heads"], c.cfg.get("num_key_value_heads", arch["num_attention_heads"])
    if not isinstance(kv, int) or kv < 1 or heads % kv:
        raise c.refuse("num_key_value_heads", f"{kv!r} does not divide the {heads} heads")
    if c.kind in ("deepseek_v32", "glm_moe_dsa"):
        arch.update(c.fields(_DSA))
    return "mla", arch, {}


#: DeepSeek-V4 compress_ratios entries -> cmperf layer variants (attention_v4.VARIANT_OF_RATIO).
_V4_RATIO = {0: "sliding", 4: "c4", 128: "c128"}


def _deepseek_v4(c: _Config):
    """DeepSeek-V4: the integers of MqaAttentionBase / C4Indexer / DeepseekV2MoE (SGLang
    models/deepseek_v4.py), per-layer variants from compress_ratios."""
    arch = c.fields(_COMMON)
    for key in ("head_dim", "qk_rope_head_dim", "q_lora_rank", "o_lora_rank", "o_groups", "sliding_window"):
        arch[key] = c.whole(key)
    if c.whole("num_key_value_heads", 1) != 1:
        raise c.refuse(
            "num_key_value_heads", f"{c.cfg['num_key_value_heads']!r}; DeepSeek-V4 has one KV head"
        )
    arch.update(c.fields(_DSA))
    arch.update(
        {
            "first_k_dense": c.whole("first_k_dense_replace", 0),
            "moe_intermediate_size": c.whole("moe_intermediate_size"),
            "n_routed_experts": c.whole("n_routed_experts"),
            "n_shared_experts": c.whole("n_shared_experts", 0),
            "num_experts_per_tok": c.whole("num_experts_per_tok"),
            "n_group": c.whole("n_group", 1),
            "topk_group": c.whole("topk_group", 1),
            "num_mtp_modules": c.whole("num_nextn_predict_layers", 0),
            "hc_mult": c.whole("hc_mult", 0),
            "num_hash_layers": c.whole("num_hash_layers", 0),
        }
    )
    if arch["first_k_dense"]:
        arch["intermediate_size"] = c.whole("intermediate_size")
    if c.cfg.get("moe_layer_freq", 1) != 1:
        raise c.refuse("moe_layer_freq", f"{c.cfg['moe_layer_freq']!r}; cmperf models MoE in every layer")
    for key in ("kv_source_layer_ids", "index_source_layer_ids", "engram_layer_ids"):
        if c.cfg.get(key):
            raise c.refuse(key, "DeepSeek-V4.1 shared-source / engram layers are not modelled")
    n, mtp = arch["num_layers"], arch["num_mtp_modules"]
    ratios = c.cfg.get("compress_ratios")
    if (
        not isinstance(ratios, list)
        or len(ratios) not in (n, n + mtp)
        or any(r not in _V4_RATIO for r in ratios)
    ):
        raise c.refuse(
            "compress_ratios",
            f"expected {n} or {n + mtp} entries of 0, 4, 128 (one per layer, then the MTP layers'), got "
            f"{ratios!r}",
        )
    tail = set(ratios[n:])
    if len(tail) > 1:
        raise c.refuse("compress_ratios", f"the MTP layers' ratios {ratios[n:]} differ; not modelled")
    arch["mtp_compress_ratio"] = tail.pop() if tail else 0
    return "dsv4", arch, {"attention": [_V4_RATIO[r] for r in ratios[:n]]}


def _gqa_moe(c: _Config, experts_key: str, expert_size_key: str) -> dict[str, int]:
    arch = c.fields(_COMMON)
    arch.update(c.gqa(arch))
    arch["n_routed_experts"] = c.whole(experts_key)
    arch["num_experts_per_tok"] = c.whole("num_experts_per_tok", c.cfg.get("experts_per_token"))
    arch["moe_intermediate_size"] = c.whole(expert_size_key)
    return arch


def _qwen3_moe(c: _Config):
    arch = _gqa_moe(c, "num_experts", "moe_intermediate_size")
    arch["intermediate_size"] = c.whole("intermediate_size")
    if c.cfg.get("use_sliding_window"):
        raise c.refuse(
            "use_sliding_window", "true: Qwen3's max_window_layers sliding pattern is not modelled"
        )
    step, dense = c.whole("decoder_sparse_step", 1), c.cfg.get("mlp_only_layers") or []
    n = arch["num_layers"]
    ffn = ["dense" if i in dense or (i + 1) % step else "moe" for i in range(n)]
    return "gqa", arch, {"ffn": ffn}


def _qwen3_5_moe(c: _Config):
    """Qwen3.5 MoE: Gated DeltaNet layers interleaved with gated GQA (``layer_types``), a shared expert
    of ``shared_expert_intermediate_size``, ``mtp_num_hidden_layers`` MTP modules."""
    arch = _gqa_moe(c, "num_experts", "moe_intermediate_size")
    arch["attn_output_gate"] = int(bool(c.cfg.get("attn_output_gate", False)))
    for key in (
        "linear_num_key_heads",
        "linear_num_value_heads",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_conv_kernel_dim",
    ):
        arch[key] = c.whole(key)
    shared = c.whole("shared_expert_intermediate_size", 0)
    if shared and shared != arch["moe_intermediate_size"]:
        raise c.refuse("shared_expert_intermediate_size", f"{shared} differs from moe_intermediate_size")
    arch["n_shared_experts"] = 1 if shared else 0
    arch["num_mtp_modules"] = c.whole("mtp_num_hidden_layers", 0)
    if c.cfg.get("mlp_only_layers"):
        raise c.refuse("mlp_only_layers", "dense layers in Qwen3.5 MoE are not modelled")
    attention = c.layer_list(
        "layer_types", {"linear_attention": "linear", "full_attention": "full"}, arch["num_layers"]
    )
    return "gqa", arch, {"attention": attention}


def _gpt_oss(c: _Config):
    arch = _gqa_moe(c, "num_local_experts", "intermediate_size")
    attention = c.layer_list(
        "layer_types", {"sliding_attention": "sliding", "full_attention": "full"}, arch["num_layers"]
    )
    if "sliding" in attention:
        arch["sliding_window"] = c.whole("sliding_window")
    return "gqa", arch, {"attention": attention}


def _llama4(c: _Config):
    arch = _gqa_moe(c, "num_local_experts", "intermediate_size")
    arch["intermediate_size"] = c.whole("intermediate_size_mlp")
    arch["n_shared_experts"] = 1  # Llama4TextMoe: one shared expert of intermediate_size beside the routed
    n, step = arch["num_layers"], c.whole("interleave_moe_layer_step", 1)
    moe = c.cfg.get("moe_layers") or list(range(step - 1, n, step))
    rope = c.cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(n)]
    if len(rope) != n:
        raise c.refuse("no_rope_layers", f"expected {n} entries, got {len(rope)}")
    chunk = c.cfg.get("attention_chunk_size")
    attention = ["chunked" if chunk and r else "full" for r in rope]
    if chunk:
        arch["attention_chunk_size"] = c.whole("attention_chunk_size")
    return "gqa", arch, {"attention": attention, "ffn": ["moe" if i in moe else "dense" for i in range(n)]}


def _mixtral(c: _Config):
    arch = _gqa_moe(c, "num_local_experts", "intermediate_size")
    if c.cfg.get("sliding_window"):
        arch["sliding_window"] = c.whole("sliding_window")
        return "gqa", arch, {"attention": ["sliding"]}
    return "gqa", arch, {}


def _minimax_m2(c: _Config):
    arch = _gqa_moe(c, "num_local_experts", "intermediate_size")
    if c.cfg.get("shared_intermediate_size"):
        raise c.refuse("shared_intermediate_size", "a shared expert in MiniMax-M2 is not modelled")
    arch["num_mtp_modules"] = c.whole("num_mtp_modules", 0) if c.cfg.get("use_mtp") else 0
    return "gqa", arch, {}


def _step3p7(c: _Config):
    arch = _gqa_moe(c, "num_experts", "moe_intermediate_size")
    arch["intermediate_size"] = c.whole("intermediate_size")
    arch["first_k_dense"] = c.whole("first_k_dense_replace", 0)
    arch["num_mtp_modules"] = c.whole("num_nextn_predict_layers", 0)
    shared, size = c.whole("n_shared_experts", 0), c.whole("share_expert_dim", arch["moe_intermediate_size"])
    if shared and size != arch["moe_intermediate_size"]:
        raise c.refuse("share_expert_dim", f"{size} differs from moe_intermediate_size; not modelled")
    arch["n_shared_experts"] = shared
    attention = c.layer_list(
        "layer_types", {"sliding_attention": "sliding", "full_attention": "full"}, arch["num_layers"]
    )
    arch["sliding_window"] = c.whole("sliding_window")
    return "gqa", arch, {"attention": attention}


def _llama(c: _Config):
    arch = c.fields(_COMMON)
    arch.update(c.gqa(arch))
    arch["intermediate_size"] = c.whole("intermediate_size")
    return "gqa", arch, {}


#: Hugging Face PretrainedConfig fields that carry no architecture (generation defaults, labels, token ids,
#: bookkeeping); a kimi_linear config may hold them. The first four change the structure when set and are
#: refused then (an encoder-decoder, cross-attention, pruned heads, tied encoder and decoder).
_HF_STRUCTURAL = ("is_encoder_decoder", "add_cross_attention", "pruned_heads", "tie_encoder_decoder")
_HF_GENERIC = frozenset(
    (
        *_HF_STRUCTURAL,
        *"""_name_or_path architectures auto_map bad_words_ids begin_suppress_tokens bos_token_id
        chunk_size_feed_forward cross_attention_hidden_size decoder_start_token_id diversity_penalty do_sample
        dtype torch_dtype early_stopping encoder_no_repeat_ngram_size eos_token_id
        exponential_decay_length_penalty finetuning_task forced_bos_token_id forced_eos_token_id id2label
        initializer_range is_decoder label2id length_penalty max_length min_length model_type
        no_repeat_ngram_size num_beam_groups num_beams num_return_sequences output_attentions
        output_hidden_states output_scores pad_token_id prefix problem_type remove_invalid_values
        repetition_penalty return_dict return_dict_in_generate sep_token_id suppress_tokens
        task_specific_params temperature tf_legacy_loss tie_word_embeddings tokenizer_class top_k top_p
        torchscript transformers_version typical_p use_bfloat16 use_cache rms_norm_eps""".split(),
    )
)
#: kimi_linear fields that change no cost cmperf counts (SGLang 0.5.23): SiTU's constants
#: (layers/activation.py SituAndMul: an elementwise GLU like SwiGLU), routing weights' renormalization and
#: scale, the router's sigmoid or softmax and top-k method (the same gate GEMM and top-k), RoPE's constants,
#: mla_use_nope (KimiK3MLAAttention skip_rope=True: the rope slice is still projected and cached, only its
#: rotation, inside the MLA prolog, is skipped), head_dim (KimiLinearConfig's default hidden/heads: no K3
#: module reads it), KDA's gate_lower_bound (the safe gate's clamp), quantization_config (the checkpoint's
#: storage: cmperf's datatypes are the deployment's --precision).
_KIMI_NEUTRAL = frozenset(
    """activation_situ_beta activation_situ_linear_beta moe_renormalize routed_scaling_factor
    moe_router_activation_func topk_method use_grouped_topk rope_theta rope_scaling mla_use_nope head_dim
    quantization_config""".split()
)
#: The kimi_linear fields _kimi_linear reads.
_KIMI_READ = frozenset(
    """hidden_size num_hidden_layers num_attention_heads vocab_size max_position_embeddings
    num_key_value_heads q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim
    first_k_dense_replace intermediate_size moe_intermediate_size num_experts num_experts_per_token
    num_experts_per_tok num_shared_experts num_expert_group topk_group moe_layer_freq num_nextn_predict_layers
    hidden_act mla_use_output_gate routed_expert_hidden_size latent_moe_use_norm attn_res_block_size
    linear_attn_config mamba_ssm_dtype""".split()
)
#: linear_attn_config's fields (KimiK3DeltaAttention.__init__; gate_lower_bound is cost-neutral).
_KDA_CONFIG = ("kda_layers", "full_attn_layers", "num_heads", "head_dim", "short_conv_kernel_size")
_KDA_OPTIONAL = ("use_full_rank_gate", "gate_lower_bound")


def _kimi_linear(c: _Config):
    """Kimi-K3 / Kimi-Linear (SGLang 0.5.23 models/kimi_k3.py, kimi_linear.py; configs/kimi_linear.py
    KimiLinearConfig): KDA layers where ``(layer + 1) in kda_layers`` (KimiLinearConfig.is_kda_layer), MLA
    elsewhere; MoE from ``first_k_dense_replace`` on (``_is_moe_layer``). Every field is read, accepted
    as cost-neutral or refused by name."""
    cfg = c.cfg
    for key in sorted(cfg):
        if key not in _KIMI_READ | _KIMI_NEUTRAL | _HF_GENERIC:
            raise c.refuse(key, "a kimi_linear field cmperf does not model (refused rather than ignored)")
    for key in _HF_STRUCTURAL:
        if cfg.get(key):
            raise c.refuse(key, f"{cfg[key]!r}: not a decoder-only model as cmperf models it")
    if cfg.get("cross_attention_hidden_size") is not None:
        raise c.refuse("cross_attention_hidden_size", "cross-attention is not modelled")
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "situ"):  # KimiK3MLP: "Unsupported activation" otherwise
        raise c.refuse("hidden_act", f"{act!r}; Kimi-K3's MLPs take silu or situ")
    if cfg.get("moe_router_activation_func", "sigmoid") not in ("sigmoid", "softmax"):
        raise c.refuse(
            "moe_router_activation_func", f"{cfg['moe_router_activation_func']!r}; sigmoid or softmax"
        )
    if cfg.get("topk_method", "noaux_tc") not in ("noaux_tc", "greedy", "group_limited_greedy"):
        raise c.refuse("topk_method", f"{cfg['topk_method']!r} is not a routing method cmperf knows")
    if cfg.get("mamba_ssm_dtype", "float32") != "float32":
        raise c.refuse(
            "mamba_ssm_dtype",
            f"{cfg['mamba_ssm_dtype']!r}; cmperf sizes the KDA state in FP32 (SGLang's default)",
        )
    if cfg.get("moe_layer_freq", 1) != 1:
        raise c.refuse("moe_layer_freq", f"{cfg['moe_layer_freq']!r}; cmperf models MoE in every layer")
    if c.whole("num_nextn_predict_layers", 0):
        raise c.refuse("num_nextn_predict_layers", "SGLang 0.5.23 has no Kimi-K3 MTP module; not modelled")
    arch = c.fields(_COMMON + _MLA)
    heads, kv = arch["num_attention_heads"], cfg.get("num_key_value_heads", arch["num_attention_heads"])
    if not isinstance(kv, int) or kv < 1 or heads % kv:
        raise c.refuse("num_key_value_heads", f"{kv!r} does not divide the {heads} heads")
    top_k = "num_experts_per_token" if "num_experts_per_token" in cfg else "num_experts_per_tok"
    arch.update(
        {
            "first_k_dense": c.whole("first_k_dense_replace", 0),
            "moe_intermediate_size": c.whole("moe_intermediate_size"),
            "n_routed_experts": c.whole("num_experts"),
            "n_shared_experts": c.whole("num_shared_experts", 0),
            "num_experts_per_tok": c.whole(top_k),
            "n_group": c.whole("num_expert_group", 1),
            "topk_group": c.whole("topk_group", 1),
            "attn_output_gate": int(bool(cfg.get("mla_use_output_gate", False))),
            "routed_expert_hidden_size": c.whole("routed_expert_hidden_size", 0),
            "latent_moe_norm": int(bool(cfg.get("latent_moe_use_norm", False))),
            "attn_res_block_size": c.whole("attn_res_block_size", 0),
        }
    )
    if arch["first_k_dense"]:
        arch["intermediate_size"] = c.whole("intermediate_size")
    n = arch["num_layers"]
    la = cfg.get("linear_attn_config")
    if la is None:  # KimiLinearConfig.is_linear_attn: no KDA layer
        return "kda", arch, {}
    if not isinstance(la, dict):
        raise c.refuse("linear_attn_config", f"expected a table of KDA fields, got {la!r}")
    for key in sorted(la):
        if key not in _KDA_CONFIG + _KDA_OPTIONAL:
            raise c.refuse(f"linear_attn_config.{key}", "a KDA field cmperf does not model")
    sub = _Config({f"linear_attn_config.{k}": v for k, v in la.items()}, c.path)
    sub.kind = c.kind

    def kda_int(key: str) -> int:
        return sub.whole(f"linear_attn_config.{key}")

    heads_kda, dim = kda_int("num_heads"), kda_int("head_dim")
    arch.update(
        {
            "linear_num_key_heads": heads_kda,
            "linear_num_value_heads": heads_kda,
            "linear_key_head_dim": dim,
            "linear_value_head_dim": dim,
            "linear_conv_kernel_dim": kda_int("short_conv_kernel_size"),
            "kda_full_rank_gate": int(bool(la.get("use_full_rank_gate", False))),
        }
    )
    kda, full = la.get("kda_layers"), la.get("full_attn_layers")
    for key, v in (("kda_layers", kda), ("full_attn_layers", full)):
        if not isinstance(v, list) or any(not isinstance(i, int) or not 1 <= i <= n for i in v):
            raise c.refuse(f"linear_attn_config.{key}", f"expected 1-based layer numbers 1..{n}, got {v!r}")
    assert isinstance(kda, list) and isinstance(full, list)
    if sorted(kda + full) != list(range(1, n + 1)):
        raise c.refuse(
            "linear_attn_config.kda_layers",
            f"with full_attn_layers it must list each of the {n} layers once (1-based)",
        )
    return "kda", arch, {"attention": ["kda" if i + 1 in kda else "full" for i in range(n)]}


#: model_type -> importer: (attention kind, architecture integers, [layers] patterns).
IMPORTERS: dict[str, Callable[[_Config], tuple[str, dict[str, int], dict[str, list[str]]]]] = {
    "deepseek_v3": _deepseek,
    "kimi_k2": _deepseek,
    "deepseek_v32": _deepseek,
    "glm_moe_dsa": _deepseek,
    "qwen3_moe": _qwen3_moe,
    "qwen3_5_moe_text": _qwen3_5_moe,
    "gpt_oss": _gpt_oss,
    "llama4_text": _llama4,
    "mixtral": _mixtral,
    "minimax_m2": _minimax_m2,
    "step3p7": _step3p7,
    "llama": _llama,
    "deepseek_v4": _deepseek_v4,
    "kimi_linear": _kimi_linear,
}
SUPPORTED = tuple(IMPORTERS)


def read_config(path: str | Path) -> dict[str, Any]:
    """The language model's config (``text_config`` of a multimodal wrapper); CmperfError names the file."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CmperfError(f"{p}: cannot read a config.json ({e})") from None
    except json.JSONDecodeError as e:
        raise CmperfError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise CmperfError(f"{p}: a config.json is an object of fields")
    text = raw.get("text_config")
    return text if isinstance(text, dict) else raw


def _compress(pattern: list[str]) -> list[str]:
    """The shortest period that repeats to ``pattern`` (gpt-oss: ["sliding", "full"])."""
    n = len(pattern)
    for k in range(1, n + 1):
        if n % k == 0 and pattern[:k] * (n // k) == pattern:
            return pattern[:k]
    return pattern


def spec_from_config(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """The model spec (the structure of models/*.toml) of the config.json at ``path``."""
    p = Path(path)
    cfg = read_config(p)
    kind = cfg.get("model_type")
    importer = IMPORTERS.get(str(kind))
    if importer is None:
        why = NOT_YET.get(str(kind))
        detail = f" (it needs {why}, which cmperf does not model yet)" if why else ""
        raise CmperfError(
            f"{p}: key model_type: architecture {kind!r} is not supported{detail}; cmperf imports "
            f"{', '.join(SUPPORTED)}"
        )
    if cfg.get("tie_word_embeddings", False):
        raise CmperfError(
            f"{p}: key tie_word_embeddings: tied embeddings are not modelled (the head is counted)"
        )
    attention, ints, layers = importer(_Config(cfg, p))
    src = f"{p.name} (Hugging Face config.json, model_type {kind}), Q"
    arch: dict[str, Any] = {"source": src}
    if attention != "mla":
        arch["attention"] = attention
    arch.update(ints)
    experts = ints.get("n_routed_experts", 0)
    what = f"{experts} experts" if experts else "dense"
    spec: dict[str, Any] = {
        "name": name or p.stem.split("--")[-1].lower() if p.stem != "config" else name or p.parent.name,
        "kind": "model",
        "description": f"Imported from {p.name} ({kind}): {attention.upper()} + {what}",
        "architecture": arch,
    }
    if layers:
        spec["layers"] = {"source": src, **{k: _compress(v) for k, v in layers.items()}}
    spec["routing"] = {
        "popularity_zipf": {
            "value": IMPORTED_ZIPF,
            "source": "assumption: the deepseek-r1 spec's stated skew (no measured routing here)",
            "mark": "I",
        }
    }
    return spec


def to_toml(spec: dict[str, Any]) -> str:
    """The spec as a models/*.toml file (deterministic: keys in the mapping's order)."""

    def val(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = [f"{k} = {val(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for table, body in spec.items():
        if isinstance(body, dict):
            lines += ["", f"[{table}]", *(f"{k} = {val(v)}" for k, v in body.items())]
    return "\n".join(lines) + "\n"
