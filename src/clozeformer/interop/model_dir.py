"""Model directories: a saved clozeformer model IS a Hugging Face model directory (config.json +
model.safetensors [+ tokenizer.json]): it loads in `transformers` unchanged, and `load_model`
reads directories written by either library the same way. Our own config rides along under the
"clozeformer" key, which transformers ignores. The names on either side are interop/hf.py's.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from clozeformer.config import VERSION, ConfigError
from clozeformer.families import FAMILIES
from clozeformer.interop.hf import electra_is_generator
from clozeformer.io import PICKLE_SUFFIXES, load_tensors, read_json, save_tensors, write_json
from clozeformer.models.bart import BartForConditionalGeneration, BartForTranslation
from clozeformer.models.bert import BertForPreTraining
from clozeformer.models.electra import ElectraDiscriminator, ElectraForPreTraining, ElectraGenerator


def electra_pair(disc: ElectraDiscriminator, gen: ElectraGenerator) -> ElectraForPreTraining:
    """Join a loaded discriminator and generator into the pretraining pair (shared token/position embeddings)."""
    d, g = disc.config, gen.config
    if d.embedding_size != g.embedding_size or d.vocab_size != g.vocab_size:
        raise ValueError(f"generator (E={g.embedding_size}, V={g.vocab_size}) and discriminator "
                         f"(E={d.embedding_size}, V={d.vocab_size}) cannot share embeddings")
    sizes = ("generator_hidden", "generator_heads", "generator_intermediate", "generator_layers")
    cfg = d.replace(generator_hidden_size=g.generator_hidden, generator_num_heads=g.generator_heads,
                    generator_intermediate_size=g.generator_intermediate, generator_num_layers=g.generator_layers)
    if all(getattr(cfg, k) == getattr(d, k) for k in sizes):
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


# Fine-tuning heads (families.FAMILIES), by their HF architecture name (= our class name) -> (our class,
# our parameter prefixes HF's class has no counterpart for: HF builds token/QA BERTs without the pooler).
# BartForTokenClassification has no HF class; it is saved under its own name all the same (finetune says so).
NOT_IN_TRANSFORMERS = frozenset({"BartForTokenClassification"})
_NO_POOLER = ("BertForTokenClassification", "BertForQuestionAnswering")
HEADS: dict[str, tuple[type, tuple[str, ...]]] = {
    head.__name__: (head, ("bert.pooler.",) if head.__name__ in _NO_POOLER else ())
    for family in FAMILIES.values() for head in family.heads.values()}


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
    if getattr(model, "classifier_dropout", None) is not None:
        out["classifier_dropout"] = model.classifier_dropout
    return out


TRANSLATOR = "a translator (BART with the new source encoder in source/)"


def trained_for(model: nn.Module) -> str | None:
    """What a loaded model was trained into beyond pretraining, for refusals that name it: TRANSLATOR (its
    inputs are another vocabulary's) or a fine-tuning head; None for a pretrained model."""
    if isinstance(model, BartForTranslation):
        return TRANSLATOR
    return f"a fine-tuned {type(model).__name__}" if type(model).__name__ in HEADS else None


def _skipped(model: nn.Module) -> tuple[str, ...]:
    return HEADS.get(type(model).__name__, (None, ()))[1]


def _optional(model: nn.Module) -> tuple[str, ...]:
    """Our parameter prefixes the model's HF class may lack: a BERT without NSP is HF's BertForMaskedLM, which
    has no pooler. Missing from a checkpoint they are untrained (not exported) without a warning, and their
    absence does not make an export the bare encoder."""
    return ("bert.pooler.",) if isinstance(model, BertForPreTraining) and model.nsp is None else ()


def check_fits(tok, model: nn.Module, path):
    """A tokenizer that belongs to the model: no more ids than its vocabulary holds (a larger one would index
    past it) and the padding id its config names (another family's tokenizer.json loaded and answered)."""
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {tok.vocab_size} ids but the model's vocabulary holds "
                         f"{model.config.vocab_size}; they do not belong together")
    pad = getattr(model.config, "pad_token_id", None)
    if pad is not None and "pad" in tok.specials and tok.pad_id != pad:
        raise ValueError(f"{path}: the tokenizer pads with id {tok.pad_id} ({tok.specials['pad']}), the model's "
                         f"config.json with {pad}; they do not belong together")
    return tok


def save_model(model: nn.Module, directory: str | Path, tokenizer=None, *, source_tokenizer=None) -> Path:
    """Write `model` (and its tokenizer) as a HF-layout directory.

    Every file is first written into a staging directory inside `directory` and only then
    renamed into place, so a failure (a full disk) leaves the previous files as they were.
    A BART translator is BART's directory plus `source/` (the new encoder, in our names,
    with `source_tokenizer`): transformers loads the BART part and ignores source/.
    """
    if not str(directory).strip():  # "" is the current directory: the files would land among others
        raise ValueError(f"directory {str(directory)!r} names nothing; give a directory for the model")
    if tokenizer is not None and not isinstance(model, ElectraForPreTraining):
        check_fits(tokenizer, model, "the tokenizer given")  # saved beside a model it would index past
    directory = Path(directory)
    if isinstance(model, BartForTranslation):
        src = model.source
        _write_dir(directory / "source", {"source." + k: v for k, v in src.state_dict().items()},
                   {"clozeformer": {"version": VERSION, "source_encoder": {
                       "vocab_size": src.config.vocab_size, "num_layers": src.config.encoder_layers,
                       "pad_token_id": src.config.pad_token_id}}}, source_tokenizer)
    if isinstance(model, ElectraForPreTraining):  # the discriminator here, the generator in generator/
        save_model(model.generator, directory / "generator", tokenizer)
        return save_model(model.discriminator, directory, tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    to_hf, cfg_to_hf = FAMILIES[cfg.model_type].hf.state_to_hf, FAMILIES[cfg.model_type].hf.config_to_hf
    hf_cfg = cfg_to_hf(cfg, generator=True) if isinstance(model, ElectraGenerator) else cfg_to_hf(cfg)
    ours = {"version": VERSION, "config": cfg.to_dict()}
    if type(model).__name__ in HEADS:  # a fine-tuning head: its HF architecture and our class to rebuild
        hf_cfg.update(_head_config(model))
        ours.update(head=type(model).__name__, num_labels=model.num_labels)
    if getattr(model, "task", None) is not None:  # what the model was fine-tuned for (tasks/spec.py)
        ours["task"] = model.task
    skip = ("source.",) + _skipped(model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    untrained = [k for k in getattr(model, "untrained", ()) if k in state]
    if untrained:  # never export random weights as trained: without them, as transformers' bare model if a head
        state = {k: v for k, v in state.items() if k not in untrained}
        if any(not k.startswith(_optional(model)) for k in untrained):
            hf_cfg["architectures"] = [FAMILIES[cfg.model_type].hf.bare]
        ours["untrained"] = untrained
    return _write_dir(directory, to_hf(state), {**hf_cfg, "clozeformer": ours}, tokenizer, _generation_file(model),
                      model_max_length=cfg.max_length)


def _write_dir(directory: Path, tensors: dict[str, Tensor], config: dict, tokenizer,
               generation: dict | None = None, *, model_max_length: int | None = None) -> Path:
    """model.safetensors + config.json (+ tokenizer files, generation_config.json) into `directory`,
    staged then renamed; the tokenizer's model_max_length defaults to the model's positions."""
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=directory, prefix=".saving."))
    try:
        save_tensors(stage / "model.safetensors", tensors, metadata={"format": "pt"})
        write_json(stage / "config.json", config)
        if generation is not None:
            write_json(stage / "generation_config.json", generation)
        if tokenizer is not None:
            tokenizer.save(stage, model_max_length=model_max_length)
        for f in sorted(stage.iterdir()):
            os.replace(f, directory / f.name)
        if generation is None:  # a stale one would be read as this model's settings
            (directory / "generation_config.json").unlink(missing_ok=True)
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
    if not directory.exists():  # a hub name ("t5-small") too: offline, nothing is downloaded
        raise FileNotFoundError(f"{directory}: no such model directory; models are read from local directories "
                                "(nothing is downloaded: save one there with transformers' save_pretrained)")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a model directory (expected config.json + model.safetensors)")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
    hf_cfg = read_json(config_file, kind=dict)
    if isinstance(hf_cfg.get("clozeformer"), dict) and "source_encoder" in hf_cfg["clozeformer"]:
        raise ConfigError(f"{directory} is the source encoder of the translator in {directory.parent}; load that "
                          f"directory (clozeformer generate {directory.parent} --input FILE)")
    arches = hf_cfg.get("architectures")
    if arches is not None and not (isinstance(arches, list) and all(isinstance(a, str) for a in arches)):
        raise ConfigError(f"{config_file}: architectures must be a list of class names, got "
                          f"{type(arches).__name__} {arches!r}")
    kind = hf_cfg.get("model_type")
    if kind not in FAMILIES:
        raise ConfigError(f"{config_file}: model_type {kind!r} is not supported; known: {sorted(FAMILIES)}")
    cfg_cls, mapping = FAMILIES[kind].config_cls, FAMILIES[kind].hf
    _check_architecture(hf_cfg, kind, mapping, config_file)
    model_cls, from_hf, cfg_from_hf = mapping.loads_as, mapping.state_from_hf, mapping.config_from_hf
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
        else:
            cfg = _agreed(cfg, hf_cfg, mapping, kind == "electra" and electra_is_generator(hf_cfg, state), config_file)
    except ConfigError as e:
        raise ConfigError(f"{config_file}: {e}") from None
    # our head, else transformers' architecture (a head transformers added to one of our exports keeps our key)
    head = (ours or {}).get("head") or next(iter(hf_cfg.get("architectures") or []), None)
    if head in HEADS:
        if hf_cfg.get("problem_type") == "multi_label_classification":  # our heads give one label per example
            raise ConfigError(f"{config_file}: problem_type multi_label_classification is not supported; "
                              "allowed: single_label_classification, regression")
        labels = hf_cfg.get("id2label") or {}
        num_labels = ours.get("num_labels") if ours is not None and "num_labels" in ours else len(labels) or 2
        cls = HEADS[head][0]
        given = {"classifier_dropout": hf_cfg["classifier_dropout"]} if hf_cfg.get("classifier_dropout") is not None \
            and "classifier_dropout" in inspect.signature(cls).parameters else {}
        model = cls(cfg, num_labels, **given)
        if "head" not in (ours or {}) and labels and not head.endswith("QuestionAnswering"):  # HF-written
            model.task = {"labels": [labels[str(i)] if str(i) in labels else labels[i] for i in range(num_labels)]}
    elif ours is not None and ours.get("head") is not None:
        raise ConfigError(f"{config_file}: unknown head {ours['head']!r}; known: {sorted(HEADS)}")
    else:
        if kind == "electra" and electra_is_generator(hf_cfg, state):
            model_cls = ElectraGenerator
        model = model_cls(cfg)
    if ours is not None and ours.get("task") is not None:
        model.task = ours["task"]
    missing = [k for k in load_state(model, state, str(weights)) if not k.startswith(_skipped(model))]
    if absent := [k for k in missing if k.startswith(mapping.body)]:  # a head may start fresh, the model not
        arch = next(iter(hf_cfg.get("architectures") or []), "?")
        heads = {h.__name__ for h in FAMILIES[kind].heads.values()}
        why = "the file is incomplete" if arch in (*mapping.reads, *heads) else \
            f"its architecture {arch} is not one clozeformer reads"
        raise ValueError(f"{weights}: {len(absent)} of the {kind} model's own parameters are not in the checkpoint "
                         f"({', '.join(absent[:3])}{'…' if len(absent) > 3 else ''}); {why}")
    if FAMILIES[kind].generates:
        model.generation_defaults, model.generation_unsupported = _generation_defaults(directory, hf_cfg, kind, cfg)
    model.untrained = tuple(missing)  # random weights: fill-mask refuses an untrained head, save_model drops it
    if [k for k in missing if not k.startswith(_optional(model))] or ignored:
        warnings.warn(f"{directory}: {len(missing)} parameters not in the checkpoint were freshly initialised "
                      f"({', '.join(missing[:4])}{'…' if len(missing) > 4 else ''}); "
                      f"{len(ignored)} checkpoint tensors ignored ({', '.join(ignored[:4])})", stacklevel=2)
    if isinstance(model, ElectraDiscriminator) and (directory / "generator" / "config.json").is_file():
        model = electra_pair(model, load_model(directory / "generator", allow_pickle=allow_pickle))
    if type(model) is BartForConditionalGeneration and (directory / "source" / "config.json").is_file():
        model = _translator(model, directory / "source")
    return model.eval()


def _check_architecture(hf_cfg: dict, kind: str, mapping, config_file: Path) -> None:
    """A transformers model we would read as another is refused by name, before its weights: a decoder
    (causal attention, which ours do not have) or an architecture that is neither the family's own nor one
    of our task heads (T5ForQuestionAnswering loaded as T5ForConditionalGeneration, its head dropped)."""
    ours = hf_cfg.get("clozeformer")
    arch = next(iter(hf_cfg.get("architectures") or []), None)
    heads = sorted({head.__name__ for head in FAMILIES[kind].heads.values()})
    if arch is not None and not (isinstance(ours, dict) and ours.get("head")) and arch not in (*mapping.reads, *heads):
        raise ConfigError(f"{config_file}: its architecture {arch} is not one clozeformer reads; for {kind} "
                          f"it reads {', '.join((*mapping.reads, *heads))}")
    if hf_cfg.get("is_decoder") or hf_cfg.get("add_cross_attention"):
        raise ConfigError(f"{config_file}: is_decoder / add_cross_attention make this {kind} model a decoder with "
                          "causal attention, which clozeformer does not read")


def _agreed(cfg, hf_cfg: dict, mapping, generator: bool, config_file: Path):
    """Our config, agreeing with config.json's transformers keys: transformers reads those (and keeps our
    "clozeformer" key as it was when it saves an edited config), so where the two disagree its values are
    taken, field by field, with a warning; a disagreement no field explains is refused."""
    def ours_as_hf(c) -> dict:
        return mapping.config_to_hf(c, generator=True) if generator else mapping.config_to_hf(c)

    def differing(c) -> list[str]:
        return [k for k, v in ours_as_hf(c).items()
                if k != "architectures" and k in hf_cfg and json.loads(json.dumps(v)) != hf_cfg[k]]

    differ = differing(cfg)
    if not differ:
        return cfg
    taken = []
    if not generator:  # a generator's transformers keys are its own sizes, not the pair config's fields
        view = mapping.config_from_hf(hf_cfg, nsp=getattr(cfg, "nsp", False))
        for f in dataclasses.fields(cfg):
            value = getattr(view, f.name)
            if value == getattr(cfg, f.name):
                continue
            try:
                trial = cfg.replace(**{f.name: value})
            except ConfigError:
                continue
            if len(now := differing(trial)) < len(differ):
                cfg, differ, taken = trial, now, taken + [f"{f.name}={value!r}"]
    if differ:
        mine = ours_as_hf(cfg)
        raise ConfigError(f"{', '.join(f'{k} {hf_cfg[k]!r}' for k in differ)} disagree"
                          f"{'s' if len(differ) == 1 else ''} with the model's own config under \"clozeformer\" "
                          f"({', '.join(repr(mine[k]) for k in differ)}); edit both, or remove the \"clozeformer\" "
                          "key to load by transformers' keys alone")
    warnings.warn(f"{config_file}: its transformers keys differ from the config under \"clozeformer\"; using "
                  f"theirs, as transformers does ({', '.join(taken)})", stacklevel=3)
    return cfg


def _generation_defaults(directory: Path, hf_cfg: dict, kind: str, cfg) -> tuple[dict, dict]:
    """Generation settings saved with a checkpoint, read as transformers does: generation_config.json
    when there is one, else config.json's generation keys over the HF config class's defaults
    (HFMapping.generation: BartConfig forces </s>, id 2, at the maximum length). Returns (the settings
    generate implements, those it does not that would change the output: generate refuses them)."""
    from clozeformer.generate import GENERATION_KEYS, GenerationConfig, unsupported_settings

    path = directory / "generation_config.json"
    if path.is_file():
        saved = read_json(path, kind=dict)
    else:
        saved = {**FAMILIES[kind].hf.generation, **hf_cfg}
    out = {k: saved[k] for k in GENERATION_KEYS if k in saved}
    unsupported = unsupported_settings(saved)
    unsupported.update({k: saved[k] for k in _TOKEN_IDS if saved.get(k) not in (None, getattr(cfg, k, None))})
    try:
        GenerationConfig(**out)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path if path.is_file() else directory / 'config.json'}: generation settings: {e}") from None
    return out, unsupported


_TOKEN_IDS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id")


def _generation_file(model: nn.Module) -> dict | None:
    """generation_config.json for a model loaded with generation settings beyond its family's defaults
    (they would be lost otherwise: our config.json holds none), with the token ids as transformers writes them."""
    cfg = model.config
    family = FAMILIES[cfg.model_type].hf.generation
    own = {k: v for k, v in (getattr(model, "generation_defaults", None) or {}).items()
           if k not in family or family[k] != v}
    unsupported = getattr(model, "generation_unsupported", None) or {}
    if not own and not unsupported:
        return None
    ids = {k: getattr(cfg, k) for k in _TOKEN_IDS if getattr(cfg, k, None) is not None}
    return {**ids, **family, **own, **unsupported}


def _translator(bart: BartForConditionalGeneration, source: Path) -> BartForTranslation:
    """BART + the new source encoder saved in source/ (see save_model)."""
    spec = read_json(source / "config.json", kind=dict).get("clozeformer", {}).get("source_encoder")
    if not isinstance(spec, dict) or not {"vocab_size", "num_layers", "pad_token_id"} <= set(spec):
        raise ConfigError(f"{source / 'config.json'}: no clozeformer.source_encoder description")
    model = BartForTranslation(bart.config, spec["vocab_size"], source_layers=spec["num_layers"],
                               source_pad_id=spec["pad_token_id"])
    model.load_state_dict(bart.state_dict(), strict=False)
    model.generation_defaults = getattr(bart, "generation_defaults", None)
    model.generation_unsupported = getattr(bart, "generation_unsupported", None)
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
    state, _ = FAMILIES[model.config.model_type].hf.state_from_hf(load_tensors(weights))
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
    for k, t in state.items():  # damaged weights answered NaN scores, integer ones were cast without a word
        if not t.is_floating_point():
            raise ValueError(f"{source}: {k} holds {str(t.dtype).removeprefix('torch.')} values, not floating point")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{source}: {k} holds NaN or infinite values; the weights are damaged")
    missing = model.load_state_dict(state, strict=False).missing_keys  # after load hooks (T5's head from shared)
    return [k for k in missing if k != "mlm.embedding.weight"]  # tied to the word embeddings
