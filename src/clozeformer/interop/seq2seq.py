"""T5 and BART: our parameter names and config keys <-> transformers'."""

from __future__ import annotations

import re

import torch
from torch import Tensor

from clozeformer.config import BartConfig, ConfigError, T5Config
from clozeformer.interop.names import _from_hf, _pieces_of

# --- T5 ----------------------------------------------------------------------------------
# ours (under "encoder.layers.{i}." / "decoder.layers.{i}.") -> HF (under "{stack}.block.{i}.layer.");
# a fused projection of ours maps to several HF projections, split along the output rows.
# HF's sub-layer index: 0 self-attention, 1 cross-attention (decoder), then the feed-forward.
_T5_ATTN = {
    "attn.qkv": ("0.SelfAttention.q", "0.SelfAttention.k", "0.SelfAttention.v"),
    "attn.out": ("0.SelfAttention.o",),
    "attn_norm": ("0.layer_norm",),
    "cross.q": ("1.EncDecAttention.q",),
    "cross.kv": ("1.EncDecAttention.k", "1.EncDecAttention.v"),
    "cross.out": ("1.EncDecAttention.o",),
    "cross_norm": ("1.layer_norm",),
}
_T5_FFN = {"ffn.gate": "DenseReluDense.wi_0", "ffn.down": "DenseReluDense.wo", "ffn_norm": "layer_norm"}
# the first layer of each HF stack owns the relative position table; ours keeps it on the stack
_T5_TOP = {
    "shared.weight": "shared.weight",
    "lm_head.weight": "lm_head.weight",
    "encoder.bias.embedding.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "decoder.bias.embedding.weight": "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "encoder.norm.weight": "encoder.final_layer_norm.weight",
    "decoder.norm.weight": "decoder.final_layer_norm.weight",
}
_T5_OURS_LAYER = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.weight$")
_T5_HF_LAYER = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight$")
# HF keys that are copies of `shared.weight` (tied) or never used (cross-attention has no position table)
_T5_REDUNDANT = re.compile(r"(embed_tokens\.weight|EncDecAttention\.relative_attention_bias\.weight)$")


def _t5_layer_table(stack: str, gated: bool) -> dict[str, tuple[str, ...]]:
    """Our module names in one layer -> HF names relative to "{stack}.block.{i}.layer."."""
    ff = "2" if stack == "decoder" else "1"
    table = {k: v for k, v in _T5_ATTN.items() if stack == "decoder" or not k.startswith("cross")}
    table.update({k: (f"{ff}.{v}",) for k, v in _T5_FFN.items()})
    table["ffn.up"] = (f"{ff}.DenseReluDense.{'wi_1' if gated else 'wi'}",)
    return table


def t5_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    gated = any(".ffn.gate." in k for k in state)
    out = {}
    for key, t in state.items():
        m = _T5_OURS_LAYER.match(key)
        if m is None:
            if key not in _T5_TOP:
                raise KeyError(f"no HF name for parameter {key!r}")
            out[_T5_TOP[key]] = t
            continue
        stack, i, module = m.groups()
        hf_modules = _t5_layer_table(stack, gated)[module]
        for name, part in zip(hf_modules, t.chunk(len(hf_modules), dim=0)):
            out[f"{stack}.block.{i}.layer.{name}.weight"] = part
    return out  # without the embed_tokens copies of shared.weight: HF ties them, safetensors refuses shared memory


def t5_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (T5Model / T5ForConditionalGeneration) -> (ours, ignored HF keys).

    `lm_head.weight` is kept only where it differs from `shared.weight` (an untied v1.1 head).
    """
    if "shared.weight" not in hf and "encoder.embed_tokens.weight" in hf:
        hf = {**hf, "shared.weight": hf["encoder.embed_tokens.weight"]}
    if "lm_head.weight" in hf and "shared.weight" in hf and torch.equal(hf["lm_head.weight"], hf["shared.weight"]):
        hf = {k: t for k, t in hf.items() if k != "lm_head.weight"}  # tied
    gated = any(k.endswith("DenseReluDense.wi_0.weight") for k in hf)
    inverse = {stack: _pieces_of(_t5_layer_table(stack, gated)) for stack in ("encoder", "decoder")}

    def piece(key: str):
        m = _T5_HF_LAYER.match(key)
        if m is None or f"{m[3]}.{m[4]}" not in inverse[m[1]]:
            return None
        module, j, n = inverse[m[1]][f"{m[3]}.{m[4]}"]
        return f"{m[1]}.layers.{m[2]}.{module}.weight", j, n

    return _from_hf(hf, _T5_TOP, piece, _T5_REDUNDANT)


def t5_config_to_hf(cfg: T5Config) -> dict:
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_factor": cfg.initializer_factor,
        "feed_forward_proj": cfg.feed_forward,
        # transformers < 5 reads this as "tie and scale"; ≥ 5 as "scale", tying unless the file holds lm_head
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "is_encoder_decoder": True,
    }


def t5_config_from_hf(hf: dict, **_) -> T5Config:
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in hf]
    if missing:
        raise ConfigError(f"T5 config lacks {', '.join(missing)}")
    ff = hf.get("feed_forward_proj", "relu")
    if ff not in ("relu", "gated-gelu"):
        raise ConfigError(f"feed_forward_proj {ff!r} is not supported (relu or gated-gelu)")
    # transformers ≥ 5 writes scale_decoder_outputs (and always tie_word_embeddings=true); older ones only the latter
    tied = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    eos = hf.get("eos_token_id", 1)
    return T5Config.from_dict(dict(
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
        num_layers=hf["num_layers"], num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        num_heads=hf["num_heads"], relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout=hf.get("dropout_rate", 0.1), layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        initializer_factor=hf.get("initializer_factor", 1.0), feed_forward=ff, tie_word_embeddings=tied,
        pad_token_id=hf.get("pad_token_id", 0), eos_token_id=eos[0] if isinstance(eos, list) else eos,
        decoder_start_token_id=hf.get("decoder_start_token_id", 0)))


# --- BART --------------------------------------------------------------------------------
# ours (under "bart.encoder." / "bart.decoder.") -> HF (under "model.encoder." / "model.decoder.");
# a fused projection of ours maps to several HF projections, split along the output rows.
_BART_LAYER = {
    "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.out": ("self_attn.out_proj",),
    "attn_norm": ("self_attn_layer_norm",),
    "cross.q": ("encoder_attn.q_proj",),
    "cross.kv": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
    "cross.out": ("encoder_attn.out_proj",),
    "cross_norm": ("encoder_attn_layer_norm",),
    "ffn.up": ("fc1",),
    "ffn.down": ("fc2",),
    "ffn_norm": ("final_layer_norm",),
}
_BART_TOP = {
    "bart.shared.weight": "model.shared.weight",
    "bart.encoder.pos.weight": "model.encoder.embed_positions.weight",
    "bart.encoder.norm.weight": "model.encoder.layernorm_embedding.weight",
    "bart.encoder.norm.bias": "model.encoder.layernorm_embedding.bias",
    "bart.decoder.pos.weight": "model.decoder.embed_positions.weight",
    "bart.decoder.norm.weight": "model.decoder.layernorm_embedding.weight",
    "bart.decoder.norm.bias": "model.decoder.layernorm_embedding.bias",
    "dense.weight": "classification_head.dense.weight",
    "dense.bias": "classification_head.dense.bias",
    "out.weight": "classification_head.out_proj.weight",
    "out.bias": "classification_head.out_proj.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
    "span.proj.weight": "qa_outputs.weight",
    "span.proj.bias": "qa_outputs.bias",
}
_BART_LAYER_KEY = re.compile(r"(bart|model)\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# HF keys that are copies of `model.shared.weight` (tied) or buffers
_BART_REDUNDANT = re.compile(r"(embed_tokens\.weight|lm_head\.weight|\.version)$")


def bart_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, t in state.items():
        if key == "final_logits_bias":
            out[key] = t[None]  # HF keeps [1, V]
            continue
        m = _BART_LAYER_KEY.match(key)
        if m is None:
            if key not in _BART_TOP:
                raise KeyError(f"no HF name for parameter {key!r}")
            out[_BART_TOP[key]] = t
            continue
        _, stack, i, module, kind = m.groups()
        hf_modules = _BART_LAYER[module]
        for name, part in zip(hf_modules, t.chunk(len(hf_modules), dim=0)):
            out[f"model.{stack}.layers.{i}.{name}.{kind}"] = part
    return out  # the embed_tokens and lm_head copies are tied to model.shared.weight: transformers restores them


def bart_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (BartModel / …ForConditionalGeneration / …ForSequenceClassification) -> (ours, ignored)."""
    hf = {("model." + k if k.startswith(("encoder.", "decoder.", "shared.")) else k): t for k, t in hf.items()}
    if "model.shared.weight" not in hf and "model.encoder.embed_tokens.weight" in hf:
        hf["model.shared.weight"] = hf["model.encoder.embed_tokens.weight"]
    if "final_logits_bias" in hf:
        hf = {**hf, "final_logits_bias": hf["final_logits_bias"].reshape(-1)}  # HF keeps [1, V]
    inverse_layer = _pieces_of(_BART_LAYER)

    def piece(key: str):
        m = _BART_LAYER_KEY.match(key)
        if m is None or m[4] not in inverse_layer:
            return None
        module, j, n = inverse_layer[m[4]]
        return f"bart.{m[2]}.layers.{m[3]}.{module}.{m[5]}", j, n

    return _from_hf(hf, {**_BART_TOP, "final_logits_bias": "final_logits_bias"}, piece, _BART_REDUNDANT)


def bart_config_to_hf(cfg: BartConfig) -> dict:
    return {
        "architectures": ["BartForConditionalGeneration"],
        "model_type": "bart",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.hidden_size,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": cfg.num_heads,
        "decoder_attention_heads": cfg.num_heads,
        "encoder_ffn_dim": cfg.intermediate_size,
        "decoder_ffn_dim": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_positions,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout,
        "activation_function": cfg.activation,
        "init_std": cfg.initializer_range,
        "scale_embedding": cfg.scale_embedding,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
    }


def bart_config_from_hf(hf: dict, **_) -> BartConfig:
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(a) != hf.get(b):
            raise ConfigError(f"{a} ({hf.get(a)}) differs from {b} ({hf.get(b)}); not supported")
    if hf.get("add_final_layer_norm") or hf.get("normalize_before"):
        raise ConfigError("pre-norm BART variants (mBART: normalize_before/add_final_layer_norm) are not supported")
    missing = [k for k in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                           "encoder_ffn_dim") if k not in hf]
    if missing:
        raise ConfigError(f"BART config lacks {', '.join(missing)}")
    return BartConfig.from_dict(dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["d_model"], encoder_layers=hf["encoder_layers"],
        decoder_layers=hf["decoder_layers"], num_heads=hf["encoder_attention_heads"],
        intermediate_size=hf["encoder_ffn_dim"], max_positions=hf.get("max_position_embeddings", 1024),
        dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
        activation_dropout=hf.get("activation_dropout", 0.0), activation=hf.get("activation_function", "gelu"),
        initializer_range=hf.get("init_std", 0.02), scale_embedding=hf.get("scale_embedding", False),
        pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id", 0),
        eos_token_id=hf.get("eos_token_id", 2), decoder_start_token_id=hf.get("decoder_start_token_id", 2)))
