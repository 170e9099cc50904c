"""Hugging Face model directories: save and load every family (the parameter-name and config-key maps
themselves are in interop/encoders.py for BERT and ELECTRA, interop/seq2seq.py for T5 and BART).

A saved clozeformer model IS a Hugging Face model directory (config.json +
model.safetensors [+ tokenizer.json]): it loads in `transformers` unchanged, and
`load_model` reads directories written by either library the same way. Our own config
rides along under the "clozeformer" key, which transformers ignores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from torch import Tensor, nn

from clozeformer import __version__
from clozeformer.config import BartConfig, BertConfig, ConfigError, ElectraConfig, T5Config
from clozeformer.interop.encoders import (_electra_is_generator, bert_config_from_hf,  # noqa: F401 (re-exported)
                                          bert_config_to_hf, bert_state_from_hf, bert_state_to_hf,
                                          electra_config_from_hf, electra_config_to_hf, electra_pair,
                                          electra_state_from_hf, electra_state_to_hf)
from clozeformer.interop.seq2seq import (bart_config_from_hf, bart_config_to_hf, bart_state_from_hf,  # noqa: F401
                                         bart_state_to_hf, t5_config_from_hf, t5_config_to_hf, t5_state_from_hf,
                                         t5_state_to_hf)
from clozeformer.io import PICKLE_SUFFIXES, load_tensors, read_json, save_tensors, write_json
from clozeformer.models.bart import (BartForConditionalGeneration, BartForQuestionAnswering,
                                     BartForSequenceClassification, BartForTokenClassification, BartForTranslation)
from clozeformer.models.bert import (BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification,
                                     BertForTokenClassification)
from clozeformer.models.electra import (ElectraDiscriminator, ElectraForPreTraining, ElectraForQuestionAnswering,
                                        ElectraForSequenceClassification, ElectraForTokenClassification,
                                        ElectraGenerator)
from clozeformer.models.t5 import T5ForConditionalGeneration



# model_type -> (config class, model class, state to HF, state from HF, config to HF, config from HF)
FAMILIES = {
    "bert": (BertConfig, BertForPreTraining, bert_state_to_hf, bert_state_from_hf,
             bert_config_to_hf, bert_config_from_hf),
    "bart": (BartConfig, BartForConditionalGeneration, bart_state_to_hf, bart_state_from_hf,
             bart_config_to_hf, bart_config_from_hf),
    "electra": (ElectraConfig, ElectraDiscriminator, electra_state_to_hf, electra_state_from_hf,
                electra_config_to_hf, electra_config_from_hf),
    "t5": (T5Config, T5ForConditionalGeneration, t5_state_to_hf, t5_state_from_hf,
           t5_config_to_hf, t5_config_from_hf),
}


# Fine-tuning heads, by their HF architecture name (= our class name) -> (our class, our parameter
# prefixes HF's class has no counterpart for: HF builds token/QA BERTs without the pooler).
# BartForTokenClassification has no HF class; it is saved under its own name all the same.
HEADS: dict[str, tuple[type, tuple[str, ...]]] = {
    "BertForSequenceClassification": (BertForSequenceClassification, ()),
    "BertForTokenClassification": (BertForTokenClassification, ("bert.pooler.",)),
    "BertForQuestionAnswering": (BertForQuestionAnswering, ("bert.pooler.",)),
    "ElectraForSequenceClassification": (ElectraForSequenceClassification, ()),
    "ElectraForTokenClassification": (ElectraForTokenClassification, ()),
    "ElectraForQuestionAnswering": (ElectraForQuestionAnswering, ()),
    "BartForSequenceClassification": (BartForSequenceClassification, ()),
    "BartForTokenClassification": (BartForTokenClassification, ()),
    "BartForQuestionAnswering": (BartForQuestionAnswering, ()),
}


def _head_config(model: nn.Module) -> dict:
    """HF config keys of a head: architectures, id2label/label2id (names from model.task["labels"]), problem_type."""
    name = type(model).__name__
    out: dict = {"architectures": [name]}
    if name.endswith("QuestionAnswering"):
        return out
    names = list((getattr(model, "task", None) or {}).get("labels") or [])
    if len(names) != model.num_labels:
        names = [f"LABEL_{i}" for i in range(model.num_labels)]
    out["id2label"] = {str(i): n for i, n in enumerate(names)}
    out["label2id"] = {n: i for i, n in enumerate(names)}
    if name.endswith("SequenceClassification"):
        out["problem_type"] = "regression" if model.num_labels == 1 else "single_label_classification"
    return out


def _skipped(model: nn.Module) -> tuple[str, ...]:
    return HEADS.get(type(model).__name__, (None, ()))[1]


def save_model(model: nn.Module, directory: str | Path, tokenizer=None, *, source_tokenizer=None) -> Path:
    """Write `model` (and its tokenizer) as a HF-layout directory.

    Every file is first written into a staging directory inside `directory` and only then
    renamed into place, so a failure (a full disk) leaves the previous files as they were.
    A BART translator is BART's directory plus `source/` (the new encoder, in our names,
    with `source_tokenizer`): transformers loads the BART part and ignores source/.
    """
    directory = Path(directory)
    if isinstance(model, BartForTranslation):
        src = model.source
        _write_dir(directory / "source", {"source." + k: v for k, v in src.state_dict().items()},
                   {"clozeformer": {"version": __version__, "source_encoder": {
                       "vocab_size": src.config.vocab_size, "num_layers": src.config.encoder_layers,
                       "pad_token_id": src.config.pad_token_id}}}, source_tokenizer)
    if isinstance(model, ElectraForPreTraining):  # the discriminator here, the generator in generator/
        save_model(model.generator, directory / "generator", tokenizer)
        return save_model(model.discriminator, directory, tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    _, _, to_hf, _, cfg_to_hf, _ = FAMILIES[cfg.model_type]
    hf_cfg = cfg_to_hf(cfg, generator=True) if isinstance(model, ElectraGenerator) else cfg_to_hf(cfg)
    ours = {"version": __version__, "config": cfg.to_dict()}
    if type(model).__name__ in HEADS:  # a fine-tuning head: its HF architecture and our class to rebuild
        hf_cfg.update(_head_config(model))
        ours.update(head=type(model).__name__, num_labels=model.num_labels)
    if getattr(model, "task", None) is not None:  # what the model was fine-tuned for (tasks/spec.py)
        ours["task"] = model.task
    skip = ("source.",) + _skipped(model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    return _write_dir(directory, to_hf(state), {**hf_cfg, "clozeformer": ours}, tokenizer)


def _write_dir(directory: Path, tensors: dict[str, Tensor], config: dict, tokenizer) -> Path:
    """model.safetensors + config.json (+ tokenizer files) into `directory`, staged then renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=directory, prefix=".saving."))
    try:
        save_tensors(stage / "model.safetensors", tensors, metadata={"format": "pt"})
        write_json(stage / "config.json", config)
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
    head = ours.get("head") if ours is not None else next(iter(hf_cfg.get("architectures") or []), None)
    if head in HEADS:
        labels = hf_cfg.get("id2label") or {}
        num_labels = ours.get("num_labels") if ours is not None and "num_labels" in ours else len(labels) or 2
        model = HEADS[head][0](cfg, num_labels)
        if ours is None and labels and not head.endswith("QuestionAnswering"):  # an HF-written classifier
            model.task = {"labels": [labels[str(i)] if str(i) in labels else labels[i] for i in range(num_labels)]}
    elif ours is not None and ours.get("head") is not None:
        raise ConfigError(f"{config_file}: unknown head {ours['head']!r}; known: {sorted(HEADS)}")
    else:
        if kind == "electra" and _electra_is_generator(hf_cfg, state):
            model_cls = ElectraGenerator
        model = model_cls(cfg)
    if ours is not None and ours.get("task") is not None:
        model.task = ours["task"]
    missing = [k for k in load_state(model, state, str(weights)) if not k.startswith(_skipped(model))]
    if missing or ignored:
        warnings.warn(f"{directory}: {len(missing)} parameters not in the checkpoint were freshly initialised "
                      f"({', '.join(missing[:4])}{'…' if len(missing) > 4 else ''}); "
                      f"{len(ignored)} checkpoint tensors ignored ({', '.join(ignored[:4])})", stacklevel=2)
    if isinstance(model, ElectraDiscriminator) and (directory / "generator" / "config.json").is_file():
        model = electra_pair(model, load_model(directory / "generator", allow_pickle=allow_pickle))
    if type(model) is BartForConditionalGeneration and (directory / "source" / "config.json").is_file():
        model = _translator(model, directory / "source")
    return model.eval()


def _translator(bart: BartForConditionalGeneration, source: Path) -> BartForTranslation:
    """BART + the new source encoder saved in source/ (see save_model)."""
    spec = read_json(source / "config.json", kind=dict).get("clozeformer", {}).get("source_encoder")
    if not isinstance(spec, dict) or not {"vocab_size", "num_layers", "pad_token_id"} <= set(spec):
        raise ConfigError(f"{source / 'config.json'}: no clozeformer.source_encoder description")
    model = BartForTranslation(bart.config, spec["vocab_size"], source_layers=spec["num_layers"],
                               source_pad_id=spec["pad_token_id"])
    model.load_state_dict(bart.state_dict(), strict=False)
    missing = load_state(model.source, {k.removeprefix("source."): v for k, v in
                                        load_tensors(source / "model.safetensors").items()}, str(source))
    if missing:
        raise ValueError(f"{source}: the source encoder lacks {missing[:4]}")
    return model


def load_weights(model: nn.Module, directory: Path) -> list[str]:
    """Load a saved directory's weights into `model` (both halves of an ELECTRA pair); returns missing names."""
    directory = Path(directory)
    if isinstance(model, ElectraForPreTraining):
        return load_weights(model.discriminator, directory) + load_weights(model.generator, directory / "generator")
    weights = directory / "model.safetensors"
    state, _ = FAMILIES[model.config.model_type][3](load_tensors(weights))
    if isinstance(model, BartForTranslation):  # BART here, the new encoder in source/
        source = load_tensors(directory / "source" / "model.safetensors")
        state.update({k: v for k, v in source.items() if k.startswith("source.")})
    return [k for k in load_state(model, state, str(weights)) if not k.startswith(_skipped(model))]


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
