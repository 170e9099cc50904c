"""Workflows a user runs end to end, on fixtures made here (no ../shared): evaluation, label sets,
ELECTRA's output names, literal special-token strings, QA, translation, generation defaults."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from clozeformer.families import FAMILIES
from clozeformer.interop.model_dir import save_model
from clozeformer.models.bert import BertConfig, BertForPreTraining
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
    # integers are one class each, however long (through float two 18-digit ones were one class)
    rows = [{"sentence": t, "label": [10 ** 17 + 1, "100000000000000000"][i % 2]} for i, (t, _) in
            enumerate(sentences(8, 5))]
    s = finetune(bert_dir, "classification", write_jsonl(tmp_path / "big.jsonl", rows), run_dir=tmp_path / "big",
                 epochs=1, batch_size=8, progress=False)
    assert s["labels"] == ["100000000000000000", "100000000000000001"]


@pytest.mark.parametrize("labels, says", [
    (["0.25", "0.5", "0.75", "1"], "regression"),
    (["Pos", "pos", "neg"], "differ only in case"),
    (["0", "1", "positive"], r"labels \['0', '1'\] are numbers beside words \('positive'\)"),
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
    tok = Tokenizer.train(FAMILIES[family].tokenizer_kind, lines, vocab_size=400 if family == "bart" else 300)
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


# ---- generation: a translator, a fine-tuned T5's prefix ------------------------------------

def run_cli(argv, capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    from clozeformer.cli import main

    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_with_a_translator_reads_sources_with_the_source_tokenizer(tmp_path, capsys, monkeypatch):
    from clozeformer.infer import generate_texts
    from clozeformer.interop.model_dir import load_model
    from clozeformer.models.bart import BartConfig, BartForTranslation

    english = [t for t, _ in sentences(200, 7)]
    target = Tokenizer.train("bpe", [t.upper() for t in english], vocab_size=300)
    source = Tokenizer.train("bpe", english, vocab_size=400)  # larger: target ids would overflow the source side
    torch.manual_seed(0)
    cfg = BartConfig.preset("tiny", vocab_size=target.vocab_size, hidden_size=32, num_heads=2, intermediate_size=64,
                            max_positions=64)
    model = BartForTranslation(cfg, source.vocab_size, source_layers=1, source_pad_id=source.pad_id)
    save_model(model, tmp_path / "mt", target, source_tokenizer=source)
    code, out, err = run_cli(["generate", tmp_path / "mt", "--max-new-tokens", "6"], capsys, "the film was good\n"
                             "the plot was dull\n", monkeypatch)
    assert code == 0, err
    want = generate_texts(load_model(tmp_path / "mt"), source, ["the film was good", "the plot was dull"],
                          target_tokenizer=target, max_new_tokens=6)
    assert out.splitlines() == want
    code, _, err = run_cli(["generate", tmp_path / "mt" / "source"], capsys, "x\n", monkeypatch)
    assert code == 1 and f"load that directory (clozeformer generate {tmp_path / 'mt'}" in err


def test_generate_applies_a_fine_tuned_t5s_prefix(tmp_path, capsys, monkeypatch):
    from clozeformer.infer import generate_texts
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    tok = Tokenizer.train("unigram", [t for t, _ in sentences(200, 8)] + ["sst2 sentence:"] * 5, vocab_size=300)
    torch.manual_seed(0)
    net = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=tok.vocab_size, d_model=32, d_kv=16,
                                                     d_ff=64, num_layers=1, num_heads=2))
    net.task = {"kind": "classification", "prefix": "sst2 sentence: ", "labels": ["0", "1"]}
    save_model(net, tmp_path / "t5", tok)
    import clozeformer.infer

    prefixes = []

    def spy(*args, prefix="", **kw):
        prefixes.append(prefix)
        return generate_texts(*args, prefix=prefix, **kw)

    monkeypatch.setattr(clozeformer.infer, "generate_texts", spy)
    code, out, err = run_cli(["generate", tmp_path / "t5", "--max-new-tokens", "4"], capsys, "the film was good\n",
                             monkeypatch)
    assert code == 0, err
    assert out.splitlines() == generate_texts(net, tok, ["the film was good"], prefix="sst2 sentence: ",
                                              max_new_tokens=4)
    code, out2, _ = run_cli(["generate", tmp_path / "t5", "--max-new-tokens", "4", "--prefix", ""], capsys,
                            "sst2 sentence: the film was good\n", monkeypatch)
    assert out2 == out and prefixes == ["sst2 sentence: ", ""]  # the saved prefix; an explicit one wins


# ---- extractive QA: defaults that work, records in and out -----------------------------------

def test_extractive_qa_defaults_and_question_context_records(bert_dir, tmp_path, capsys, monkeypatch):
    from clozeformer.train.finetune import predict

    rng = random.Random(9)
    rows = []
    for i in range(24):
        thing, word = rng.choice(THINGS), rng.choice(GOOD + BAD)
        filler = " ".join(t for t, _ in sentences(6, i))  # a context longer than one window at max_len 64
        context = f"{filler} the {thing} was {word} . {filler}"
        rows.append({"id": f"q{i}", "question": f"how was the {thing} ?", "context": context,
                     "answers": {"text": [word], "answer_start": [context.index(f"was {word} .") + 4]}})
    train = write_jsonl(tmp_path / "qa.jsonl", rows)
    s = finetune(bert_dir, "extractive-qa", train, train, run_dir=tmp_path / "run", epochs=1, batch_size=8,
                 progress=False)  # default max_len and stride (clamped to the model's 64 positions)
    assert 0 <= s["best"]["exact_match"] <= 100
    records = [{"question": r["question"], "context": r["context"]} for r in rows[:3]]
    got = predict(s["model_dir"], records)
    assert [g["question"] for g in got] == [r["question"] for r in records]
    assert all(isinstance(g["answer"], str) and g["answer"] in r["context"] for g, r in zip(got, records))
    code, out, err = run_cli(["predict", "--model", s["model_dir"]], capsys,
                             "".join(json.dumps(r) + "\n" for r in records), monkeypatch)
    assert code == 0, err
    assert [json.loads(x)["answer"] for x in out.splitlines()] == [g["answer"] for g in got]


# ---- generation settings saved with a checkpoint ------------------------------------------

@pytest.mark.parametrize("settings", [
    {},  # transformers' BartConfig default alone: forced_eos_token_id 2
    {"num_beams": 3, "length_penalty": 2.0, "min_length": 4, "max_length": 9, "no_repeat_ngram_size": 2,
     "forced_bos_token_id": 0, "early_stopping": True},
    {"max_length": 12, "max_new_tokens": 5, "min_length": 9, "min_new_tokens": 2, "repetition_penalty": 2.0},
])
def test_generation_follows_the_saved_generation_config_as_transformers(tmp_path, settings):
    """…and saving the loaded model (clozeformer convert) keeps those settings in its generation_config.json."""
    transformers = pytest.importorskip("transformers")
    from clozeformer.interop.model_dir import load_model

    torch.manual_seed(0)
    cfg = transformers.BartConfig(vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, max_position_embeddings=64)
    hf = transformers.BartForConditionalGeneration(cfg).eval()
    for k, v in settings.items():
        setattr(hf.generation_config, k, v)
    hf.save_pretrained(tmp_path / "bart")
    ours = load_model(tmp_path / "bart")
    ids = torch.randint(4, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    save_model(ours, tmp_path / "again")
    again = load_model(tmp_path / "again")
    hf_again = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "again").eval()
    for explicit in ({}, {"num_beams": 2, "max_new_tokens": 6}, {"max_length": 6}):
        with torch.no_grad():
            want = hf.generate(ids, **explicit)
            assert torch.equal(hf_again.generate(ids, **explicit), want), explicit
        got = ours.generate(ids, **explicit)
        assert torch.equal(got, want), (explicit, got, want)
        assert torch.equal(again.generate(ids, **explicit), want), explicit


def test_saved_generation_settings_not_implemented_are_refused_and_kept(tmp_path):
    """A setting transformers would apply and generate does not implement is not ignored:
    generating refuses it by name, and saving the model keeps it for transformers."""
    transformers = pytest.importorskip("transformers")
    from clozeformer.interop.model_dir import load_model

    cfg = transformers.BartConfig(vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, max_position_embeddings=64)
    hf = transformers.BartForConditionalGeneration(cfg).eval()
    hf.generation_config.encoder_no_repeat_ngram_size = 2
    hf.save_pretrained(tmp_path / "bart")
    ours = load_model(tmp_path / "bart")
    with pytest.raises(ValueError, match=r"settings \{'encoder_no_repeat_ngram_size': 2\} change what transformers"):
        ours.generate(torch.tensor([[5, 6, 2]]))
    save_model(ours, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "generation_config.json").read_text())["encoder_no_repeat_ngram_size"] == 2


def test_a_trained_tokenizer_is_named_for_repeating_the_run(tmp_path, capsys):
    from clozeformer.train.pretrain import pretrain

    (tmp_path / "c.txt").write_text("\n".join(t for t, _ in sentences(200, 10)) + "\n", encoding="utf-8")
    kw = dict(model="bert", config="tiny", max_len=16, batch_size=4, cache_dir=tmp_path / "cache",
              model_overrides={"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
              train={"steps": 1, "eval_every": 1, "save_every": 1})
    pretrain([tmp_path / "c.txt"], run_dir=tmp_path / "a", vocab_size=150, **kw)
    out, err = capsys.readouterr()
    assert (f"pass --tokenizer {tmp_path / 'a' / 'tokenizer'} (in place of --vocab-size) to repeat this run exactly"
            in err and not out)
    with pytest.raises(ValueError, match="vocab_size shapes a tokenizer trained on the corpus; --tokenizer"):
        pretrain([tmp_path / "c.txt"], run_dir=tmp_path / "b", tokenizer=tmp_path / "a" / "tokenizer", vocab_size=150,
                 **kw)
    pretrain([tmp_path / "c.txt"], run_dir=tmp_path / "b", tokenizer=tmp_path / "a" / "tokenizer", **kw)
    assert "to repeat this run exactly" not in capsys.readouterr().err
    def numbers(run: str) -> list[dict]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rows]

    assert len(numbers("a")) >= 3 and numbers("a") == numbers("b")  # one tokenizer: the same numbers throughout


def test_precision_auto_is_bf16_only_where_the_device_runs_it_natively():
    from clozeformer.train.config import TrainConfig, fast_bf16
    from clozeformer.train.loop import _autocast

    cpu = torch.device("cpu")
    with _autocast(cpu, TrainConfig(precision="auto").precision):
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert (y.dtype == torch.bfloat16) == fast_bf16(cpu)
    with _autocast(cpu, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_the_demo_runs_twice_into_its_directory(tmp_path, capsys):
    """A new run never overwrites another's checkpoints, but a demo replaces the demo before it."""
    from clozeformer.cli import main
    from clozeformer.demo import run_demo

    for _ in range(2):
        capsys.readouterr()
        assert main(["demo", "--steps", "1", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
        assert "probe hits:" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "demo" / "checkpoints").iterdir()] == ["step-0000001"]
    # a rerun interrupted before it has a model of its own leaves the earlier one as it was (it was deleted first)
    before = (tmp_path / "demo" / "model" / "model.safetensors").read_bytes()

    def interrupted(*args, **kwargs):
        (tmp_path / "demo" / "metrics.jsonl").write_text("{}\n")  # a partial output of the new run
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr("clozeformer.demo.pretrain", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_demo(tmp_path / "demo", steps=1, progress=False)
    assert (tmp_path / "demo" / "model" / "model.safetensors").read_bytes() == before
    assert (tmp_path / "demo" / "metrics.jsonl").read_text() != "{}\n"
    assert not (tmp_path / "demo" / ".earlier-run").exists()


def test_outputs_answer_to_transformers_names(bert_dir):
    transformers = pytest.importorskip("transformers")
    from clozeformer.interop.model_dir import load_model

    ours = load_model(bert_dir).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3, 13, 14, 3]])
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]])
    with torch.no_grad():
        mine = ours(ids, token_type_ids=types)
        theirs = transformers.BertForPreTraining.from_pretrained(bert_dir).eval()(input_ids=ids, token_type_ids=types)
        bare = transformers.BertModel.from_pretrained(bert_dir).eval()(input_ids=ids, token_type_ids=types)
    for name in ("prediction_logits", "seq_relationship_logits"):
        torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mine.pooler_output, bare.pooler_output, atol=1e-5, rtol=1e-4)


def test_exports_carry_each_familys_generation_defaults(tmp_path):
    """BART forces </s> at the maximum length (transformers' BartConfig), T5 does not: our exports say so,
    and what loads back generates with the same settings as before saving."""
    from clozeformer.generate import generation_defaults
    from clozeformer.interop.model_dir import load_model
    from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    for name, net in (("bart", BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=60, hidden_size=16,
                                                                               num_heads=2, intermediate_size=32))),
                      ("t5", T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=60, d_model=16, d_kv=8,
                                                                        d_ff=32, num_layers=1, num_heads=2)))):
        save_model(net, tmp_path / name)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert ("forced_eos_token_id" in config) == (name == "bart")
        assert generation_defaults(load_model(tmp_path / name)) == generation_defaults(net)
