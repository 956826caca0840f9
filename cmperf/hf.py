"""Hugging Face ``config.json`` -> a cmperf model spec (the TOML structure ``specs.load_model`` reads).

Read locally (no network). A multimodal wrapper's language model (``text_config``) is the model. Only
architectures the op graph models are imported; any other is refused by name (exit 2), never modelled as
something else:

* ``deepseek_v3`` and ``kimi_k2`` (``DeepseekV3ForCausalLM``: DeepSeek-V3/R1, Kimi-K2, Kimi-K2.5): MLA
  (weight-absorbed in decode), ``first_k_dense_replace`` dense SwiGLU layers, then MoE layers with
  ``n_shared_experts`` shared and ``n_routed_experts`` routed experts, top-``num_experts_per_tok`` with
  group-limited routing (``n_group`` / ``topk_group``, 1 / 1 when absent), ``num_nextn_predict_layers``
  MTP modules. Field mapping: ``num_hidden_layers`` -> ``num_layers``, ``first_k_dense_replace`` ->
  ``first_k_dense``, ``num_nextn_predict_layers`` -> ``num_mtp_modules``, ``q_lora_rank`` null -> 0.

Worked example: Kimi-K2-Instruct's config gives 61 layers (1 dense), 384 routed + 1 shared experts of
2,048, top-8, 64 MLA heads, no MTP: 1.03T parameters, 32.9B activated (model card: 1T / 32B).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CmperfError

#: model_type values whose layers the op graph builds exactly.
SUPPORTED = ("deepseek_v3", "kimi_k2")

#: model_type values seen in current configs that need an attention or layer kind cmperf does not build yet.
NOT_YET = {
    "deepseek_v32": "top-k sparse attention (the lightning indexer)",
    "deepseek_v4": "compressed attention (compress_ratios, hash-routed layers)",
    "glm_moe_dsa": "DeepSeek sparse attention",
    "qwen3_5_moe_text": "linear-attention layers",
    "kimi_linear": "linear-attention layers",
    "qwen3_moe": "grouped-query attention",
    "minimax_m2": "grouped-query attention",
    "gpt_oss": "grouped-query and sliding-window attention",
    "llama4_text": "grouped-query and chunked attention with interleaved MoE layers",
    "mixtral": "grouped-query attention",
    "llama": "grouped-query attention (a dense model)",
    "step3p7": "grouped-query and sliding-window attention",
}

# (cmperf key, config.json key, default when absent (None: required))
_DEEPSEEK_V3: tuple[tuple[str, str, int | None], ...] = (
    ("hidden_size", "hidden_size", None),
    ("num_layers", "num_hidden_layers", None),
    ("first_k_dense", "first_k_dense_replace", 0),
    ("intermediate_size", "intermediate_size", None),
    ("moe_intermediate_size", "moe_intermediate_size", None),
    ("n_routed_experts", "n_routed_experts", None),
    ("n_shared_experts", "n_shared_experts", 0),
    ("num_experts_per_tok", "num_experts_per_tok", None),
    ("n_group", "n_group", 1),
    ("topk_group", "topk_group", 1),
    ("num_attention_heads", "num_attention_heads", None),
    ("q_lora_rank", "q_lora_rank", 0),
    ("kv_lora_rank", "kv_lora_rank", None),
    ("qk_nope_head_dim", "qk_nope_head_dim", None),
    ("qk_rope_head_dim", "qk_rope_head_dim", None),
    ("v_head_dim", "v_head_dim", None),
    ("vocab_size", "vocab_size", None),
    ("num_mtp_modules", "num_nextn_predict_layers", 0),
    ("max_position_embeddings", "max_position_embeddings", None),
)

#: The expert-popularity skew of an imported model: the DeepSeek-R1 spec's stated assumption (no measured
#: per-expert routing of these models is in the references); `--eplb perfect` or `--imbalance` override it.
IMPORTED_ZIPF = 0.1


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


def spec_from_config(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """The model spec (the structure of models/*.toml) of the config.json at ``path``."""
    p = Path(path)
    cfg = read_config(p)
    kind = cfg.get("model_type")
    if kind not in SUPPORTED:
        why = NOT_YET.get(str(kind))
        detail = f" (it needs {why}, which cmperf does not model yet)" if why else ""
        raise CmperfError(
            f"{p}: key model_type: architecture {kind!r} is not supported{detail}; cmperf imports "
            f"{', '.join(SUPPORTED)}"
        )
    if cfg.get("moe_layer_freq", 1) != 1:
        raise CmperfError(
            f"{p}: key moe_layer_freq: {cfg['moe_layer_freq']!r}; cmperf models MoE in every layer"
        )
    if cfg.get("tie_word_embeddings", False):
        raise CmperfError(
            f"{p}: key tie_word_embeddings: tied embeddings are not modelled (the head is counted)"
        )
    arch: dict[str, Any] = {"source": f"{p.name} (Hugging Face config.json, model_type {kind}), Q"}
    for key, src, default in _DEEPSEEK_V3:
        v = cfg.get(src, default)
        if v is None:
            v = default
        if v is None:
            raise CmperfError(f"{p}: key {src} is missing (architecture {kind} needs it)")
        if not isinstance(v, int) or isinstance(v, bool):
            raise CmperfError(f"{p}: key {src}: expected a whole number, got {v!r}")
        arch[key] = v
    heads, kv_heads = arch["num_attention_heads"], cfg.get("num_key_value_heads", arch["num_attention_heads"])
    if not isinstance(kv_heads, int) or kv_heads < 1 or heads % kv_heads:
        raise CmperfError(f"{p}: key num_key_value_heads: {kv_heads!r} does not divide the {heads} heads")
    stem = p.stem if p.stem != "config" else p.parent.name
    return {
        "name": name or stem.split("--")[-1].lower(),
        "kind": "model",
        "description": f"Imported from {p.name} ({kind}): MLA + MoE, {arch['n_routed_experts']} experts",
        "architecture": arch,
        "routing": {
            "popularity_zipf": {
                "value": IMPORTED_ZIPF,
                "source": "assumption: the deepseek-r1 spec's stated skew (no measured routing here)",
                "mark": "I",
            }
        },
    }


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
