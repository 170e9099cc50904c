"""The one place that knows Hugging Face parameter names and config keys: per family, our state and
config to transformers' and back. Each family's module points to its functions here in an
`HFMapping` (families/); saving and loading model directories through them is interop/model_dir.py.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from clozeformer.config import ConfigError
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.models.electra import ElectraConfig, ElectraDiscriminator
from clozeformer.models.roberta import RobertaConfig, RobertaForMaskedLM
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

# ours -> HF, for one BERT layer ("bert.layers.{i}." <-> "bert.encoder.layer.{i}.")
_BERT_LAYER = {
    "attn.out.": "attention.output.dense.",
    "attn_norm.": "attention.output.LayerNorm.",
    "ffn.up.": "intermediate.dense.",
    "ffn.down.": "output.dense.",
    "ffn_norm.": "output.LayerNorm.",
}
_BERT_TOP = {
    "bert.embeddings.tok.": "bert.embeddings.word_embeddings.",
    "bert.embeddings.pos.": "bert.embeddings.position_embeddings.",
    "bert.embeddings.token_type.": "bert.embeddings.token_type_embeddings.",
    "bert.embeddings.norm.": "bert.embeddings.LayerNorm.",
    "bert.pooler.dense.": "bert.pooler.dense.",
    "mlm.dense.": "cls.predictions.transform.dense.",
    "mlm.norm.": "cls.predictions.transform.LayerNorm.",
    "mlm.bias": "cls.predictions.bias",
    "nsp.": "cls.seq_relationship.",
    "classifier.": "classifier.",  # sequence / token classification heads
    "span.proj.": "qa_outputs.",  # question answering head
}
_QKV = ("query", "key", "value")
# HF keys that carry no information of their own (buffers, tied copies).
_HF_REDUNDANT = re.compile(r"(position_ids|cls\.predictions\.decoder\.(weight|bias))$")


def _check_tied(hf: dict[str, Tensor], family: str, pairs: tuple[tuple[str, str], ...]) -> None:
    """Each (copy, what our model ties it to) present in `hf` must hold the same values: our models tie
    them, so an untied output layer or embedding (tie_word_embeddings: false) is refused, never
    silently replaced by the other."""
    for copy, tied in pairs:
        if copy in hf and tied in hf and not torch.equal(hf[copy], hf[tied]):
            raise ValueError(f"{copy} differs from {tied}: weights not tied to the input embeddings "
                             f"(tie_word_embeddings: false) are not supported for {family}, which ties them")


def _rename(key: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def _pieces_of(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, int, int]]:
    """HF module -> (our fused module, its index among the pieces, number of pieces)."""
    return {name: (module, j, len(names)) for module, names in table.items() for j, name in enumerate(names)}


def _join(parts: dict[str, list]) -> dict[str, Tensor]:
    """Our fused tensors from their HF pieces, in order (q, k, v -> qkv); every piece must be there, and of
    one shape (a flattened or transposed one is refused by name, not left to torch.cat)."""
    for key, pieces in parts.items():
        if any(p is None for p in pieces):
            raise ValueError(f"{key}: the checkpoint lacks part of this projection")
        if len({tuple(p.shape) for p in pieces}) > 1:
            raise ValueError(f"{key}: its pieces in the checkpoint differ in shape "
                             f"({', '.join(str(tuple(p.shape)) for p in pieces)})")
    return {key: torch.cat(pieces) for key, pieces in parts.items()}


def _from_hf(hf: dict[str, Tensor], top: dict[str, str], piece, redundant: re.Pattern
             ) -> tuple[dict[str, Tensor], list[str]]:
    """HF state -> (ours, ignored HF keys) for the encoder-decoders: `top` maps our names to HF's
    one to one; `piece(key)` gives (our fused name, index, count) for an HF layer key, or None;
    keys `redundant` matches (tied copies, buffers) are dropped without a word."""
    inverse_top = {v: k for k, v in top.items()}
    ours, ignored, parts = {}, [], {}
    for key, t in hf.items():
        target = None if key in inverse_top else piece(key)
        if key in inverse_top:
            ours[inverse_top[key]] = t
        elif target is not None:
            name, j, n = target
            parts.setdefault(name, [None] * n)[j] = t
        elif not redundant.search(key):
            ignored.append(key)
    return {**ours, **_join(parts)}, ignored


def bert_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, t in state.items():
        if key == "mlm.embedding.weight":  # tied to the word embeddings
            continue
        m = re.match(r"bert\.layers\.(\d+)\.(.*)", key)
        if m is None:
            new = _rename(key, _BERT_TOP)
            if new is None:
                raise KeyError(f"no HF name for parameter {key!r}")
            out[new] = t
            continue
        prefix, rest = f"bert.encoder.layer.{m[1]}.", m[2]
        if rest.startswith("attn.qkv."):  # fused [3D, D] -> query/key/value [D, D]
            for name, part in zip(_QKV, t.chunk(3, dim=0)):
                out[f"{prefix}attention.self.{name}.{rest.split('.')[-1]}"] = part
        else:
            out[prefix + _rename(rest, _BERT_LAYER)] = t
    return out


def bert_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (BertModel / BertForMaskedLM / BertForPreTraining) -> (ours, ignored HF keys)."""
    norm = {}
    for key, t in hf.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(("embeddings.", "encoder.", "pooler.")):  # a bare BertModel
            key = "bert." + key
        norm[key] = t
    _check_tied(norm, "BERT", (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
                               ("cls.predictions.decoder.bias", "cls.predictions.bias")))
    inverse_top = {v: k for k, v in _BERT_TOP.items()}
    inverse_layer = {v: k for k, v in _BERT_LAYER.items()}
    ours, ignored, qkv = {}, [], {}
    for key, t in norm.items():
        m = re.match(r"bert\.encoder\.layer\.(\d+)\.(.*)", key)
        if m is None:
            new = _rename(key, inverse_top)
        elif (q := re.match(r"attention\.self\.(query|key|value)\.(weight|bias)$", m[2])) is not None:
            qkv[(m[1], q[2], q[1])] = t
            continue
        else:
            new = _rename(m[2], inverse_layer)
            new = new and f"bert.layers.{m[1]}.{new}"
        if new is None:
            if not _HF_REDUNDANT.search(key):
                ignored.append(key)
            continue
        ours[new] = t
    parts = {f"bert.layers.{layer}.attn.qkv.{kind}": [qkv.get((layer, kind, n)) for n in _QKV]
             for layer, kind in sorted({(i, k) for i, k, _ in qkv})}
    return {**ours, **_join(parts)}, ignored


def _encoder_keys(cfg) -> dict:
    """The config keys BERT and ELECTRA share in transformers."""
    return {"hidden_act": cfg.activation, "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attention_dropout, "max_position_embeddings": cfg.max_positions,
            "type_vocab_size": cfg.type_vocab_size, "initializer_range": cfg.initializer_range,
            "layer_norm_eps": cfg.layer_norm_eps, "pad_token_id": cfg.pad_token_id,
            "position_embedding_type": "absolute", "tie_word_embeddings": True}


def bert_config_to_hf(cfg: BertConfig) -> dict:
    return {
        "architectures": ["BertForPreTraining" if cfg.nsp else "BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        **_encoder_keys(cfg),
    }


def bert_config_from_hf(hf: dict, *, nsp: bool) -> BertConfig:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in hf]
    if missing:
        raise ConfigError(f"BERT config lacks {', '.join(missing)}")
    return BertConfig.from_dict(dict(  # from_dict checks the value types
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        activation=hf.get("hidden_act", "gelu"), dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        max_positions=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        initializer_range=hf.get("initializer_range", 0.02), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id") or 0, nsp=nsp))


# --- ELECTRA -----------------------------------------------------------------------------
# A saved ELECTRA model is the discriminator as HF ElectraForPreTraining, with the generator
# as HF ElectraForMaskedLM in generator/ inside it. Both use "electra." for the encoder.
_ELECTRA_TOP = {
    "electra.embeddings.tok.": "electra.embeddings.word_embeddings.",
    "electra.embeddings.pos.": "electra.embeddings.position_embeddings.",
    "electra.embeddings.token_type.": "electra.embeddings.token_type_embeddings.",
    "electra.embeddings.norm.": "electra.embeddings.LayerNorm.",
    "electra.project.": "electra.embeddings_project.",
    "head.dense.": "discriminator_predictions.dense.",
    "head.out.": "discriminator_predictions.dense_prediction.",
    "mlm.dense.": "generator_predictions.dense.",
    "mlm.norm.": "generator_predictions.LayerNorm.",
    "mlm.bias": "generator_lm_head.bias",
    "classifier.dense.": "classifier.dense.",  # ElectraClassificationHead (before the bare "classifier.")
    "classifier.out.": "classifier.out_proj.",
    "classifier.": "classifier.",  # token classification
    "span.proj.": "qa_outputs.",
}
_ELECTRA_REDUNDANT = re.compile(r"(position_ids|generator_lm_head\.weight)$")  # buffer; tied copy


def _encoder_to_hf(state: dict[str, Tensor], prefix: str, top: dict[str, str], via_bert: str) -> dict[str, Tensor]:
    """A BERT-encoder family's state -> HF's: keys under `via_bert` take BERT's names (under `prefix`
    instead of "bert"), the rest are renamed by `top`; the tied decoder weight is left out."""
    out, bert = {}, {}
    for key, t in state.items():
        if key == "mlm.embedding.weight":  # tied to the word embeddings
            continue
        if key.startswith(via_bert):
            bert["bert" + key[len(prefix):]] = t
            continue
        new = _rename(key, top)
        if new is None:
            raise KeyError(f"no HF name for parameter {key!r}")
        out[new] = t
    out.update({prefix + k[len("bert"):]: t for k, t in bert_state_to_hf(bert).items()})
    return out


def _encoder_from_hf(hf: dict[str, Tensor], prefix: str, top: dict[str, str], via_bert: str, bare: tuple[str, ...],
                     redundant: re.Pattern) -> tuple[dict[str, Tensor], list[str]]:
    """The inverse of _encoder_to_hf; a bare HF encoder's keys (starting with `bare`) get `prefix` first.
    Returns (ours, ignored HF keys); keys matching `redundant` carry nothing of their own."""
    inverse_top = {v: k for k, v in top.items()}
    ours, ignored, bert = {}, [], {}
    for key, t in hf.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(bare):
            key = f"{prefix}.{key}"
        if redundant.search(key):
            continue
        if key.startswith(via_bert):
            bert["bert" + key[len(prefix):]] = t
        elif (new := _rename(key, inverse_top)) is not None:
            ours[new] = t
        else:
            ignored.append(key)
    mapped, unknown = bert_state_from_hf(bert)
    ours.update({prefix + k[len("bert"):]: t for k, t in mapped.items()})
    return ours, ignored + [prefix + k[len("bert"):] for k in unknown]


def electra_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our discriminator or generator state -> HF ElectraForPreTraining / ElectraForMaskedLM state."""
    return _encoder_to_hf(state, "electra", _ELECTRA_TOP, "electra.layers.")


def electra_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (ElectraModel / …ForPreTraining / …ForMaskedLM) -> (ours, ignored HF keys)."""
    _check_tied(hf, "ELECTRA", (("generator_lm_head.weight", "electra.embeddings.word_embeddings.weight"),))
    return _encoder_from_hf(hf, "electra", _ELECTRA_TOP, "electra.encoder.layer.",
                            ("embeddings.", "embeddings_project.", "encoder."), _ELECTRA_REDUNDANT)


def electra_config_to_hf(cfg: ElectraConfig, *, generator: bool = False) -> dict:
    """The discriminator's HF config, or (generator=True) the generator's: its own width/heads/FFN."""
    if generator:
        sizes = (cfg.generator_hidden, cfg.generator_heads, cfg.generator_intermediate, cfg.generator_layers)
    else:
        sizes = (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.num_layers)
    return {
        "architectures": ["ElectraForMaskedLM" if generator else "ElectraForPreTraining"],
        "model_type": "electra",
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.embedding_size,
        "hidden_size": sizes[0],
        "num_hidden_layers": sizes[3],
        "num_attention_heads": sizes[1],
        "intermediate_size": sizes[2],
        **_encoder_keys(cfg),
    }


def electra_config_from_hf(hf: dict, **_) -> ElectraConfig:
    """An HF ElectraConfig; a generator's (ElectraForMaskedLM) sizes become explicit generator sizes."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in hf]
    if missing:
        raise ConfigError(f"ELECTRA config lacks {', '.join(missing)}")
    h, a, f = hf["hidden_size"], hf["num_attention_heads"], hf["intermediate_size"]
    gen = dict(generator_hidden_size=h, generator_num_heads=a, generator_intermediate_size=f) \
        if electra_is_generator(hf) else {}
    return ElectraConfig.from_dict(dict(
        vocab_size=hf["vocab_size"], embedding_size=hf.get("embedding_size", 128), hidden_size=h,
        num_layers=hf["num_hidden_layers"], num_heads=a, intermediate_size=f,
        activation=hf.get("hidden_act", "gelu"), dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        max_positions=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        initializer_range=hf.get("initializer_range", 0.02), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id") or 0, **gen))


def electra_is_generator(hf: dict, state: dict | None = None) -> bool:
    if any("MaskedLM" in a for a in hf.get("architectures") or []):
        return True
    return state is not None and any(k.startswith("mlm.") for k in state)


# --- RoBERTa -----------------------------------------------------------------------------
# BERT's encoder under "roberta." (HF names it alike); the LM head is HF's `lm_head`, the sequence
# classifier HF's RobertaClassificationHead. HF's bare RobertaModel keeps BERT's pooler, which no
# RoBERTa head uses: it is ignored on import.
_ROBERTA_TOP = {
    "mlm.dense.": "lm_head.dense.",
    "mlm.norm.": "lm_head.layer_norm.",
    "mlm.bias": "lm_head.bias",
    "classifier.dense.": "classifier.dense.",
    "classifier.out.": "classifier.out_proj.",
    "classifier.": "classifier.",  # token classification
    "span.proj.": "qa_outputs.",
}
_ROBERTA_REDUNDANT = re.compile(r"(position_ids|lm_head\.decoder\.(weight|bias)|pooler\.dense\.(weight|bias))$")


def roberta_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return _encoder_to_hf(state, "roberta", _ROBERTA_TOP, "roberta.")


def roberta_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (RobertaModel / …ForMaskedLM / …ForSequenceClassification / …) -> (ours, ignored HF keys)."""
    _check_tied(hf, "RoBERTa", (("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
                                ("lm_head.decoder.bias", "lm_head.bias")))
    return _encoder_from_hf(hf, "roberta", _ROBERTA_TOP, "roberta.", ("embeddings.", "encoder.", "pooler."),
                            _ROBERTA_REDUNDANT)


def roberta_config_to_hf(cfg: RobertaConfig) -> dict:
    return {**bert_config_to_hf(cfg), "architectures": ["RobertaForMaskedLM"], "model_type": "roberta"}


def roberta_config_from_hf(hf: dict, **_) -> RobertaConfig:
    bert = bert_config_from_hf({"layer_norm_eps": 1e-5, "type_vocab_size": 1, "max_position_embeddings": 514,
                                "pad_token_id": 1, **hf}, nsp=False)
    return RobertaConfig.from_dict({**bert.to_dict(), "model_type": "roberta"})


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
    _check_tied(hf, "T5", tuple((f"{stack}.embed_tokens.weight", "shared.weight") for stack in ("encoder", "decoder")))
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
    _check_tied(hf, "BART", tuple((k, "model.shared.weight") for k in
                              ("lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")))
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
        "forced_eos_token_id": cfg.eos_token_id,  # what our generate does (transformers' BART default, explicit)
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


class HFMapping(NamedTuple):
    """How one family's weights and config map to transformers', the class a saved directory loads
    as (ELECTRA's: the discriminator, its generator in generator/ beside it), the architectures
    besides the task heads that load as it (`reads`; first transformers' bare model, what an export
    with untrained heads is saved as; a checkpoint naming another is refused) and our names of that
    bare model's parameters (`body`: prefixes), which a checkpoint must hold (heads may start fresh,
    the body not)."""

    loads_as: type
    reads: tuple[str, ...]
    body: tuple[str, ...]
    state_to_hf: Callable[[dict[str, Tensor]], dict[str, Tensor]]
    state_from_hf: Callable[[dict[str, Tensor]], tuple[dict[str, Tensor], list[str]]]
    config_to_hf: Callable[..., dict]
    config_from_hf: Callable[..., Any]
    generation: dict = {}  # transformers' config-class generation defaults, under a saved config.json's keys

    @property
    def bare(self) -> str:
        return self.reads[0]
