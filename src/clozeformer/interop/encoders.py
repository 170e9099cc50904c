"""BERT and ELECTRA: our parameter names and config keys <-> transformers'."""

from __future__ import annotations

import re
import warnings

import torch
from torch import Tensor

from clozeformer.config import BertConfig, ConfigError, ElectraConfig
from clozeformer.interop.names import _rename
from clozeformer.models.electra import ElectraDiscriminator, ElectraForPreTraining, ElectraGenerator

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
    for layer, kind in sorted({(i, k) for i, k, _ in qkv}):
        absent = [n for n in _QKV if (layer, kind, n) not in qkv]
        if absent:
            raise ValueError(f"layer {layer}: attention {kind} has no {'/'.join(absent)} tensor")
        ours[f"bert.layers.{layer}.attn.qkv.{kind}"] = torch.cat([qkv[(layer, kind, n)] for n in _QKV])
    return ours, ignored


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
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ConfigError("BERT decoders (is_decoder / add_cross_attention) are not supported")
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


def electra_state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our discriminator or generator state -> HF ElectraForPreTraining / ElectraForMaskedLM state."""
    out, layers = {}, {}
    for key, t in state.items():
        if key == "mlm.embedding.weight":  # tied to the word embeddings
            continue
        if key.startswith("electra.layers."):  # BERT's layer names, under "electra."
            layers["bert" + key[len("electra"):]] = t
            continue
        new = _rename(key, _ELECTRA_TOP)
        if new is None:
            raise KeyError(f"no HF name for parameter {key!r}")
        out[new] = t
    out.update({"electra" + k[len("bert"):]: t for k, t in bert_state_to_hf(layers).items()})
    return out


def electra_state_from_hf(hf: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """HF state (ElectraModel / …ForPreTraining / …ForMaskedLM) -> (ours, ignored HF keys)."""
    inverse_top = {v: k for k, v in _ELECTRA_TOP.items()}
    ours, ignored, layers = {}, [], {}
    for key, t in hf.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith(("embeddings.", "embeddings_project.", "encoder.")):  # a bare ElectraModel
            key = "electra." + key
        if key.startswith("electra.encoder.layer."):
            layers["bert" + key[len("electra"):]] = t
        elif (new := _rename(key, inverse_top)) is not None:
            ours[new] = t
        elif not _ELECTRA_REDUNDANT.search(key):
            ignored.append(key)
    mapped, unknown = bert_state_from_hf(layers)
    ours.update({"electra" + k[len("bert"):]: t for k, t in mapped.items()})
    return ours, ignored + ["electra" + k[len("bert"):] for k in unknown]


def electra_config_to_hf(cfg: ElectraConfig, *, generator: bool = False) -> dict:
    """The discriminator's HF config, or (generator=True) the generator's: its own width/heads/FFN."""
    if generator:
        sizes = (cfg.generator_hidden, cfg.generator_heads, cfg.generator_intermediate)
    else:
        sizes = (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size)
    return {
        "architectures": ["ElectraForMaskedLM" if generator else "ElectraForPreTraining"],
        "model_type": "electra",
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.embedding_size,
        "hidden_size": sizes[0],
        "num_hidden_layers": cfg.num_layers,
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
        if _electra_is_generator(hf) else {}
    return ElectraConfig.from_dict(dict(
        vocab_size=hf["vocab_size"], embedding_size=hf.get("embedding_size", 128), hidden_size=h,
        num_layers=hf["num_hidden_layers"], num_heads=a, intermediate_size=f,
        activation=hf.get("hidden_act", "gelu"), dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        max_positions=hf.get("max_position_embeddings", 512), type_vocab_size=hf.get("type_vocab_size", 2),
        initializer_range=hf.get("initializer_range", 0.02), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id") or 0, **gen))


def _electra_is_generator(hf: dict, state: dict | None = None) -> bool:
    if any("MaskedLM" in a for a in hf.get("architectures") or []):
        return True
    return state is not None and any(k.startswith("mlm.") for k in state)


def electra_pair(disc: ElectraDiscriminator, gen: ElectraGenerator) -> ElectraForPreTraining:
    """Join a loaded discriminator and generator into the pretraining pair (shared token/position embeddings)."""
    d, g = disc.config, gen.config
    if d.embedding_size != g.embedding_size or d.vocab_size != g.vocab_size:
        raise ValueError(f"generator (E={g.embedding_size}, V={g.vocab_size}) and discriminator "
                         f"(E={d.embedding_size}, V={d.vocab_size}) cannot share embeddings")
    cfg = d.replace(generator_hidden_size=g.generator_hidden, generator_num_heads=g.generator_heads,
                    generator_intermediate_size=g.generator_intermediate)
    if cfg.generator_hidden == d.generator_hidden and cfg.generator_heads == d.generator_heads \
            and cfg.generator_intermediate == d.generator_intermediate:
        cfg = d  # the derived sizes fit: keep the config as saved
    pair = ElectraForPreTraining(cfg)
    pair.discriminator.load_state_dict(disc.state_dict())
    g_state = gen.state_dict()
    shared = ("electra.embeddings.tok.weight", "electra.embeddings.pos.weight", "mlm.embedding.weight")
    for name in shared[:2]:
        if not torch.equal(g_state[name], disc.state_dict()[name]):
            warnings.warn(f"generator {name} differs from the discriminator's; the pair shares the "
                          "discriminator's", stacklevel=3)
    pair.generator.load_state_dict({k: v for k, v in g_state.items() if k not in shared}, strict=False)
    return pair
