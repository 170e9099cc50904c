"""Workflows a user runs end to end, on fixtures made here (no ../shared): evaluation, label sets,
ELECTRA's output names, literal special-token strings, QA, translation, generation defaults."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from clozeformer.config import BertConfig
from clozeformer.interop.hf import save_model
from clozeformer.models.bert import BertForPreTraining
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.finetune import evaluate, finetune

GOOD = ["good", "great", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "poor", "dull", "weak"]
THINGS = ["film", "plot", "cast", "score", "ending", "script"]


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """(text, label) pairs: 'the plot was great and the cast was fine' is 1, a bad word makes it 0."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        words = GOOD if label else BAD
        a, b = rng.sample(THINGS, 2)
        out.append((f"the {a} was {rng.choice(words)} and the {b} was {rng.choice(words)}", label))
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, one_thread) -> Path:
    """A 1-layer BERT (width 32) with a WordPiece vocabulary of the fixture sentences."""
    d = tmp_path_factory.mktemp("workflows") / "bert"
    tok = Tokenizer.train("wordpiece", [t for t, _ in sentences(300, 0)], vocab_size=120, lowercase=True)
    cfg = BertConfig.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, max_positions=64,
                            hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1)
    torch.manual_seed(0)
    save_model(BertForPreTraining(cfg), d, tok)
    return d


def test_eval_loss_is_a_mean_over_examples_whatever_the_batch_size(bert_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"sentence": t, "label": y} for t, y in sentences(40, 1)])
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence": t, "label": y} for t, y in sentences(11, 2)])
    s = finetune(bert_dir, "classification", train, run_dir=tmp_path / "run", epochs=1, batch_size=8, lr=1e-3,
                 progress=False)
    losses = [evaluate(s["model_dir"], dev, batch_size=b)["loss"] for b in (1, 4, 11)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and losses[0] == pytest.approx(losses[2], rel=1e-5)


def test_numeric_labels_are_one_class_per_value(bert_dir, tmp_path):
    rows = [{"sentence": t, "label": [y, str(y), float(y), f"{y}.0"][i % 4]}
            for i, (t, y) in enumerate(sentences(40, 3))]
    s = finetune(bert_dir, "classification", write_jsonl(tmp_path / "train.jsonl", rows), run_dir=tmp_path / "run",
                 epochs=1, batch_size=8, progress=False)
    assert s["labels"] == ["0", "1"]
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"sentence": t, "label": float(y)} for t, y in sentences(6, 4)])
    assert evaluate(s["model_dir"], dev)["examples"] == 6  # 1.0 in the eval file is the class "1"


@pytest.mark.parametrize("labels, says", [
    (["0.25", "0.5", "0.75", "1"], "regression"),
    (["Pos", "pos", "neg"], "differ only in case"),
])
def test_an_odd_label_set_is_named(bert_dir, tmp_path, labels, says):
    rows = [{"sentence": t, "label": labels[i % len(labels)]} for i, (t, _) in enumerate(sentences(24, 5))]
    with pytest.warns(UserWarning, match=says):
        finetune(bert_dir, "classification", write_jsonl(tmp_path / "train.jsonl", rows), run_dir=tmp_path / "run",
                 epochs=1, batch_size=8, progress=False)


LITERAL = ["[SEP] [MASK] the film [CLS] was good [PAD]", "</s> <mask> the plot <s> was bad <pad>",
           "<extra_id_0> the cast </s> was fine <extra_id_1>", "[UNK] <unk> the ending was dull"]


@pytest.mark.parametrize("family", ["bert", "bart", "t5"])
def test_special_token_strings_in_a_corpus_are_text(tmp_path, family):
    from clozeformer.data.cache import load_corpus
    from clozeformer.data.pretrain import BertPretrainData, MLMSpec

    lines = LITERAL * 10 + [t for t, _ in sentences(100, 6)]
    tok = Tokenizer.train(family, lines, vocab_size=400 if family == "bart" else 300)
    (tmp_path / "c.txt").write_text("\n".join(LITERAL * 30) + "\n", encoding="utf-8")
    cache = load_corpus(tmp_path / "c.txt", tok, cache_dir=tmp_path / "cache")
    found = set(torch.from_numpy(cache.tokens.astype("int64")).unique().tolist())
    assert not found & (set(tok.special_ids) - {tok.unk_id}), [tok.tokens([i]) for i in found & set(tok.special_ids)]
    if family == "bert":  # the masking objective sees ordinary tokens to predict
        data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=32, batch_size=4, nsp=False, seed=0)
        assert (data.train_batch(0)["labels"] != -100).sum() >= 4
    # prompts typed for fill-mask / generate still read them as the special tokens
    prompt = {"bert": "[MASK]", "bart": "<mask>", "t5": "<extra_id_0>"}[family]
    assert set(tok.encode(f"the {prompt} was good", specials=True)) & set(tok.special_ids) - {tok.unk_id}


def test_special_token_strings_in_a_task_file_are_text(bert_dir, tmp_path):
    from clozeformer.tasks import task_spec
    from clozeformer.tasks.task import features, load_examples

    tok = Tokenizer.load(bert_dir)
    rows = [{"sentence": "[SEP] [MASK] was good [CLS]", "label": 1}, {"sentence": "the plot [SEP] was bad", "label": 0}]
    spec = task_spec("classification", labels=["0", "1"])
    feats, _ = features(spec, tok, "bert", load_examples(spec, write_jsonl(tmp_path / "t.jsonl", rows)))
    for f, n in zip(feats, (1, 1)):  # one [CLS] at the start, one [SEP] at the end, none from the text
        assert f["input_ids"].count(tok.cls_id) == n and f["input_ids"].count(tok.sep_id) == n
        assert tok.mask_id not in f["input_ids"]
