"""The one place that knows Hugging Face parameter names and config keys.

A saved clozeformer model IS a Hugging Face model directory (config.json +
model.safetensors [+ tokenizer.json]): it loads in `transformers` unchanged, and
`load_model` reads directories written by either library the same way. Our own config
rides along under the "clozeformer" key, which transformers ignores.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from clozeformer import __version__
from clozeformer.config import BartConfig, BertConfig, ConfigError
from clozeformer.io import PICKLE_SUFFIXES, load_tensors, read_json, save_tensors, write_json
from clozeformer.models.bart import BartForConditionalGeneration
from clozeformer.models.bert import BertForPreTraining

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
}
_QKV = ("query", "key", "value")
# HF keys that carry no information of their own (buffers, tied copies).
_HF_REDUNDANT = re.compile(r"(position_ids|cls\.predictions\.decoder\.(weight|bias))$")


def _rename(key: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return None


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


def bert_config_to_hf(cfg: BertConfig) -> dict:
    return {
        "architectures": ["BertForPreTraining" if cfg.nsp else "BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.activation,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
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
    inverse_top = {v: k for k, v in _BART_TOP.items()}
    inverse_layer = {name: (module, j, len(names)) for module, names in _BART_LAYER.items()
                     for j, name in enumerate(names)}
    ours, ignored, parts = {}, [], {}
    for key, t in hf.items():
        m = _BART_LAYER_KEY.match(key)
        if key == "final_logits_bias":
            ours[key] = t.reshape(-1)
        elif key in inverse_top:
            ours[inverse_top[key]] = t
        elif m is not None and m[4] in inverse_layer:
            module, j, n = inverse_layer[m[4]]
            parts.setdefault(f"bart.{m[2]}.layers.{m[3]}.{module}.{m[5]}", [None] * n)[j] = t
        elif not _BART_REDUNDANT.search(key):
            ignored.append(key)
    for key, pieces in parts.items():
        if any(p is None for p in pieces):
            raise ValueError(f"{key}: the checkpoint lacks part of this projection")
        ours[key] = torch.cat(pieces)
    return ours, ignored


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


# model_type -> (config class, model class, state to HF, state from HF, config to HF, config from HF)
FAMILIES = {
    "bert": (BertConfig, BertForPreTraining, bert_state_to_hf, bert_state_from_hf,
             bert_config_to_hf, bert_config_from_hf),
    "bart": (BartConfig, BartForConditionalGeneration, bart_state_to_hf, bart_state_from_hf,
             bart_config_to_hf, bart_config_from_hf),
}


def save_model(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Write `model` (and its tokenizer) as a HF-layout directory.

    Every file is first written into a staging directory inside `directory` and only then
    renamed into place, so a failure (a full disk) leaves the previous files as they were.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    _, _, to_hf, _, cfg_to_hf, _ = FAMILIES[cfg.model_type]
    stage = Path(tempfile.mkdtemp(dir=directory, prefix=".saving."))
    try:
        save_tensors(stage / "model.safetensors", to_hf(model.state_dict()), metadata={"format": "pt"})
        write_json(stage / "config.json",
                   {**cfg_to_hf(cfg), "clozeformer": {"version": __version__, "config": cfg.to_dict()}})
        if tokenizer is not None:
            tokenizer.save(stage)
        for f in sorted(stage.iterdir()):
            os.replace(f, directory / f.name)
    except OSError as e:
        if e.errno is None or e.filename is None:
            raise
        raise OSError(e.errno, e.strerror, str(directory / Path(e.filename).name)) from e  # not the staging name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return directory


def _weights_file(directory: Path) -> Path:
    """model.safetensors, else the one pickle of weights (pytorch_model.bin preferred)."""
    weights = directory / "model.safetensors"
    if weights.is_file():
        return weights
    index = [p.name for p in directory.glob("*.index.json")]
    if index:
        raise ValueError(f"{directory}: sharded weights ({index[0]}) are not supported; "
                         "save the model unsharded (save_pretrained(..., max_shard_size='100GB'))")
    pickles = sorted(p for p in directory.iterdir()
                     if p.suffix in PICKLE_SUFFIXES and p.is_file() and p.name != "training_args.bin")
    if not pickles:
        raise FileNotFoundError(f"{directory}: no model.safetensors")
    preferred = [p for p in pickles if p.name == "pytorch_model.bin"]
    if preferred or len(pickles) == 1:
        return (preferred or pickles)[0]
    raise ValueError(f"{directory}: no model.safetensors and several pickled weight files "
                     f"({', '.join(p.name for p in pickles)}); keep one")


def load_model(path: str | Path, *, allow_pickle: bool = False) -> nn.Module:
    """A model from a clozeformer- or transformers-written directory (detected by its config)."""
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a model directory (expected config.json + model.safetensors)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
    hf_cfg = read_json(config_file, kind=dict)
    kind = hf_cfg.get("model_type")
    if kind not in FAMILIES:
        raise ConfigError(f"{config_file}: model_type {kind!r} is not supported; known: {sorted(FAMILIES)}")
    cfg_cls, model_cls, _, from_hf, _, cfg_from_hf = FAMILIES[kind]
    ours = hf_cfg.get("clozeformer")
    try:
        if ours is not None and not (isinstance(ours, dict) and isinstance(ours.get("config"), dict)):
            raise ConfigError('"clozeformer" must be an object with a "config" object')
        cfg = cfg_cls.from_dict(ours["config"]) if ours is not None else None
        weights = _weights_file(directory)
        tensors = load_tensors(weights, allow_pickle=allow_pickle)
        try:
            state, ignored = from_hf(tensors)
        except (ValueError, KeyError) as e:
            raise ValueError(f"{weights}: {e.args[0] if e.args else e}") from None
        if cfg is None:
            cfg = cfg_from_hf(hf_cfg, nsp="nsp.weight" in state)
    except ConfigError as e:
        raise ConfigError(f"{config_file}: {e}") from None
    model = model_cls(cfg)
    missing = load_state(model, state, str(weights))
    if missing or ignored:
        warnings.warn(f"{directory}: {len(missing)} parameters not in the checkpoint were freshly initialised "
                      f"({', '.join(missing[:4])}{'…' if len(missing) > 4 else ''}); "
                      f"{len(ignored)} checkpoint tensors ignored ({', '.join(ignored[:4])})", stacklevel=2)
    return model.eval()


def load_state(model: nn.Module, state: dict[str, Tensor], source: str) -> list[str]:
    """Load our-named `state` into `model`; returns the missing names, raises on misfits."""
    model_state = model.state_dict()
    unexpected = [k for k in state if k not in model_state]
    wrong = [f"{k} {tuple(t.shape)} vs {tuple(model_state[k].shape)}" for k, t in state.items()
             if k in model_state and t.shape != model_state[k].shape]
    if unexpected or wrong:
        raise ValueError(f"{source}: parameters that do not fit this {model.config.model_type} model: "
                         f"{(unexpected + wrong)[:6]}")
    model.load_state_dict(state, strict=False)
    tied = {"mlm.embedding.weight"}
    return [k for k in model_state if k not in state and k not in tied]
