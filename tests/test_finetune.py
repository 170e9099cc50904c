"""Fine-tuning on real data: learning, label sets, file errors, best/early stopping, resume, T5 parsing,
QA windows and span decoding, SQuAD EM/F1, the CLI. Tiny models throughout."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from clozeformer.cli import main
from clozeformer.interop.model_dir import save_model
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration
from clozeformer.tasks import TaskError, task_spec
from clozeformer.tasks import metrics as M
from clozeformer.tasks.qa import answer_texts, best_span, windows
from clozeformer.tasks.readers import read_records
from clozeformer.tasks.spec import TaskSpec, parse_label, parse_regression, regression_text
from clozeformer.tasks.task import kind_of, load_examples, score
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.finetune import _BestKeeper, evaluate, finetune, predict
from clozeformer.train.loop import TrainingError
import textgen
from batches import TIMINGS

FAST = dict(epochs=4, batch_size=16, lr=2e-3, max_len=48, warmup_ratio=0.0, progress=False)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sst2(tmp_path_factory, one_thread):
    """A tiny BERT (1 layer, width 64, no dropout) with a WordPiece vocab from generated reviews; 400 train /
    200 held-out labelled rows."""
    d = tmp_path_factory.mktemp("sst2")
    rows = [{"sentence": t, "label": str(y)} for t, y in textgen.labelled(3000)]
    tok = Tokenizer.train("wordpiece", [r["sentence"] for r in rows], vocab_size=1000, lowercase=True)
    cfg = BertConfig.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, max_positions=64,
                            hidden_size=64, num_heads=2, intermediate_size=128, num_layers=1, dropout=0.0,
                            attention_dropout=0.0)
    torch.manual_seed(0)
    save_model(BertForPreTraining(cfg), d / "bert", tok)
    train = write_tsv(d / "train.tsv", ["sentence", "label"], [[r["sentence"], r["label"]] for r in rows[:400]])
    dev = write_tsv(d / "dev.tsv", ["sentence", "label"], [[r["sentence"], r["label"]] for r in rows[400:600]])
    return d, train, dev


@pytest.fixture(scope="module")
def trained(sst2):
    d, train, dev = sst2
    return finetune(d / "bert", "sst2", train, dev, run_dir=d / "run", keep_last=2, **FAST)


def test_tiny_bert_beats_majority_on_held_out_sst2(sst2, trained):
    d, _, dev = sst2
    golds = [r[1]["label"] for r in read_records(dev)]
    majority = max(golds.count("0"), golds.count("1")) / len(golds)
    result = evaluate(trained["model_dir"], dev)
    assert result["accuracy"] > majority + 0.04, (result, majority)
    assert result["accuracy"] == pytest.approx(trained["best"]["accuracy"])
    cfg = json.loads((Path(trained["model_dir"]) / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert cfg["id2label"] == {"0": "0", "1": "1"} and cfg["clozeformer"]["task"]["preset"] == "sst2"


def test_best_model_is_the_best_evaluation(sst2, trained):
    d = sst2[0]
    evals = [json.loads(x) for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["split"] == "eval" and r["step"] > 0]
    assert len(evals) == 4  # once per epoch
    best = max(evals, key=lambda r: r["accuracy"])
    assert trained["best"]["step"] == best["step"]
    assert evaluate(d / "run" / "best", sst2[2])["accuracy"] == pytest.approx(best["accuracy"])
    assert evaluate(d / "run" / "last", sst2[2])["accuracy"] == pytest.approx(evals[-1]["accuracy"])


def test_resume_is_exact(sst2, trained, tmp_path):
    d, train, dev = sst2
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    shutil.rmtree(run / "checkpoints" / "step-0000100")  # as if killed after epoch 3's checkpoint
    with pytest.raises(ValueError, match=r"at step 75 \(3 epochs of 25 steps\), past epochs 2; give --epochs 4 or"):
        finetune(d / "bert", "sst2", train, dev, run_dir=run, keep_last=2, resume=True, **{**FAST, "epochs": 2})
    # without epochs the run keeps its own 4 (the default 3 stopped it short, or refused it); the data is known
    # by its content, not by the path typed
    elsewhere = tmp_path / "copy" / "train.tsv"
    elsewhere.parent.mkdir()
    shutil.copy(train, elsewhere)
    again = finetune(d / "bert", "sst2", elsewhere, dev, run_dir=run, keep_last=2, resume=True,
                     **{k: v for k, v in FAST.items() if k != "epochs"})
    assert again["epochs"] == 4
    flipped = elsewhere.read_text().replace("\t1\n", "\t2\n").replace("\t0\n", "\t1\n").replace("\t2\n", "\t0\n")
    elsewhere.write_text(flipped)  # every label flipped, as many rows
    with pytest.raises(TrainingError, match=r"data changed \(train: "):
        finetune(d / "bert", "sst2", elsewhere, dev, run_dir=run, keep_last=2, resume=True, **{**FAST, "epochs": 5})
    rows = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    want = [(r["step"], r.get("loss")) for r in rows(d / "run")]
    assert [(r["step"], r.get("loss")) for r in rows(run)] == want
    untimed = lambda row: {k: v for k, v in row.items() if k not in TIMINGS}  # noqa: E731
    assert untimed(again["best"]) == untimed(trained["best"])


def test_layer_decay_scales_each_layers_lr_from_the_head_down(sst2, tmp_path):
    """ELECTRA's fine-tuning recipe: the head at lr, the top layer at lr·d, … the embeddings at lr·d^(L+1);
    encoder-decoders count the decoder's layers above the encoder's. d = 1 keeps BERT's two groups."""
    from clozeformer.models.bart import BartConfig, BartForSequenceClassification
    from clozeformer.models.bert import BertForSequenceClassification
    from clozeformer.train.loop import param_groups

    def scales(model, decay):
        named = {id(p): n for n, p in model.named_parameters()}
        return {named[id(p)]: g["lr_scale"] for g in param_groups(model, 0.01, decay) for p in g["params"]}

    bert = BertForSequenceClassification(BertConfig.preset("tiny", vocab_size=50, pad_token_id=0, num_layers=2), 2)
    got = scales(bert, 0.5)
    assert got["bert.embeddings.tok.weight"] == got["bert.embeddings.norm.bias"] == 0.125
    assert got["bert.layers.0.attn.qkv.weight"] == got["bert.layers.0.ffn_norm.bias"] == 0.25
    assert got["bert.layers.1.ffn.down.weight"] == 0.5
    assert got["bert.pooler.dense.weight"] == got["classifier.weight"] == 1.0
    assert len(param_groups(bert, 0.01, 1.0)) == 2 and set(scales(bert, 1.0).values()) == {1.0}
    bart = BartForSequenceClassification(BartConfig.preset("tiny", vocab_size=50, pad_token_id=1, encoder_layers=2,
                                                                  decoder_layers=2), 2)
    got = scales(bart, 0.5)
    order = ["bart.shared.weight", "bart.encoder.layers.0.ffn.up.weight", "bart.encoder.layers.1.ffn.up.weight",
             "bart.decoder.layers.0.cross.q.weight", "bart.decoder.layers.1.ffn.up.weight", "out.weight"]
    assert [got[n] for n in order] == [0.5 ** k for k in (5, 4, 3, 2, 1, 0)]
    assert got["bart.decoder.pos.weight"] == got["bart.decoder.layers.0.attn.qkv.weight"]  # the decoder's inputs

    d, train, dev = sst2
    finetune(d / "bert", "sst2", train, dev, run_dir=tmp_path / "run", **{**FAST, "epochs": 1}, layer_decay=0.5)
    state = json.loads(next((tmp_path / "run" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["train_config"]["layer_decay"] == 0.5
    groups = state["param_groups"]
    assert sorted({g["lr_scale"] for g in groups}) == [0.25, 0.5, 1.0]  # embeddings, the one layer, the head
    assert len({round(g["lr"] / g["lr_scale"], 12) for g in groups}) == 1 and groups[0]["lr"] > 0  # fit applied them
    # --relative-lr on top: one group per parameter, each matrix's scale times its size over the median's
    assert main(["finetune", "--model", str(d / "bert"), "--task", "sst2", "--train", str(train), "--epochs", "1",
                 "--batch-size", "16", "--max-len", "48", "--layer-decay", "0.5", "--relative-lr",
                 "--run-dir", str(tmp_path / "rel"), "--quiet"]) == 0
    state = json.loads(next((tmp_path / "rel" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["train_config"]["relative_lr"] and all(len(g["params"]) == 1 for g in state["param_groups"])
    assert len({g["lr_scale"] for g in state["param_groups"]}) > 3  # not only the three depths


def test_best_keeper_and_early_stopping(tmp_path):
    class Keeper(_BestKeeper):  # fit writes the eval row, then calls the hook
        def __call__(self, step, metrics, progress=0.5):
            with open(tmp_path / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "split": "eval", **metrics}) + "\n")
            return super().__call__(step, metrics, progress)

    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=50, hidden_size=16, num_heads=2,
                                                 intermediate_size=32, num_layers=1))
    keeper = Keeper(model, None, tmp_path, "mcc", patience=2)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "split": "eval", "mcc": 0.9}) + "\n")
    assert [keeper(s, {"mcc": v}) for s, v in [(10, 0.1), (20, 0.3), (30, 0.2)]] == [False, False, False]
    saved = (tmp_path / "best" / "model.safetensors").stat().st_mtime_ns
    assert keeper(40, {"mcc": 0.3})  # a tie is no new best: 2 evaluations since step 20
    assert keeper.best()["step"] == 20  # step 0 (before training) does not count
    assert (tmp_path / "best" / "model.safetensors").stat().st_mtime_ns == saved


def test_early_stopping_stops_fit(sst2, tmp_path):
    d, train, dev = sst2
    s = finetune(d / "bert", "sst2", train, dev, run_dir=tmp_path / "run", early_stopping=1,
                 **{**FAST, "epochs": 6, "lr": 1e-6})  # too small to improve: stops one epoch after the first
    assert s.get("stopped_early") and s["steps"] < 6 * s["steps_per_epoch"]
    assert (tmp_path / "run" / "best" / "config.json").is_file()


def test_label_set_and_file_errors(sst2, trained, tmp_path):
    d, train, _ = sst2
    bad = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [["fine", "1"], ["odd", "7"]])
    with pytest.raises(TaskError, match=r"dev\.tsv:3: label '7' never seen in training \(training labels: 0, 1\)"):
        finetune(d / "bert", "sst2", train, bad, run_dir=tmp_path / "r", **FAST)
    with pytest.raises(TaskError, match=r"train\.tsv:2: no column 'sentence1' \(columns present: sentence, label\)"):
        finetune(d / "bert", "stsb", train, run_dir=tmp_path / "r", **FAST)
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(TaskError, match=r"empty\.tsv:1: empty file"):
        read_records(tmp_path / "empty.tsv")
    (tmp_path / "latin.tsv").write_bytes(b"sentence\tlabel\nok\t1\ncaf\xe9\t0\n")
    with pytest.raises(TaskError, match=r"latin\.tsv:3: not valid UTF-8"):
        read_records(tmp_path / "latin.tsv")
    (tmp_path / "ragged.csv").write_text('sentence,label\n"a, quoted, text",1\nb,1,extra\n')
    with pytest.raises(TaskError, match=r"ragged\.csv:3: 3 fields where the header has 2"):
        read_records(tmp_path / "ragged.csv")
    one = write_tsv(tmp_path / "one.tsv", ["sentence", "label"], [["a", "1"], ["b", "1"]])
    with pytest.raises(TaskError, match="at least two labels"):
        finetune(d / "bert", "sst2", one, run_dir=tmp_path / "r", **FAST)
    under = write_tsv(tmp_path / "under.tsv", ["sentence", "label"], [["a", "1_000"], ["b", "2"]])
    with pytest.raises(TaskError, match=r"under\.tsv:2: label '1_000' is not a number \(regression\)"):
        finetune(d / "bert", "regression", under, run_dir=tmp_path / "r", **FAST)
    (tmp_path / "tags.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", None]}) + "\n")
    with pytest.raises(TaskError, match=r"tags\.jsonl:1: tags\[1\] is null, not a string or a number"):
        finetune(d / "bert", "token-classification", tmp_path / "tags.jsonl", run_dir=tmp_path / "r", **FAST)
    flat = write_tsv(tmp_path / "flat.tsv", ["sentence", "label"], [["a", "2.5"], ["b", "2.50"]])
    with pytest.raises(TaskError, match=r"flat\.tsv: regression needs at least two distinct values to learn from; "
                                        r"every label is 2\.5"):
        finetune(d / "bert", "regression", flat, run_dir=tmp_path / "r", **FAST)
    with pytest.warns(UserWarning) as said:
        assert evaluate(trained["model_dir"], one)["mcc"] == 0.0
    assert [str(w.message) for w in said] == ["every gold label of the 2 rows is '1': MCC and correlations are "
                                              "undefined on them and read 0.0"]  # ours alone, not sklearn's too
    # the Python API checks what the CLI's types check, before the run directory is made
    for bad, match in (({"warmup_ratio": 2.0}, r"warmup_ratio 2.0 is out of range"),
                       ({"epochs": 0}, "epochs 0 is out of range; allowed: an integer ≥ 1"),
                       ({"max_train_rows": -1}, "max_train_rows -1 is out of range"),  # dropped the last row
                       ({"lr": float("inf")}, "lr=inf: must be a finite number"),
                       ({"max_eval_rows": 10}, "max_eval_rows 10 limits the eval file; there is none")):
        with pytest.raises(ValueError, match=match):
            finetune(d / "bert", "sst2", train, run_dir=tmp_path / "refused", **{**FAST, **bad})
        assert not (tmp_path / "refused").exists()
    for bad, match in (({"epochs": 1.5}, "epochs must be int or None, got float 1.5"),  # trained 1.5, said 1
                       ({"batch_size": True}, "batch_size must be int, got bool True"),
                       ({"seed": "x"}, "seed must be int, got str 'x'")):
        with pytest.raises(TypeError, match=match):
            finetune(d / "bert", "sst2", train, run_dir=tmp_path / "refused", **{**FAST, **bad})
        assert not (tmp_path / "refused").exists()
    with pytest.raises(TypeError, match="model must be str or Path, got Tokenizer"):
        evaluate(Tokenizer.load(d / "bert"), train)
    with pytest.raises(ValueError, match="max_rows 0 is out of range"):
        predict(d / "bert", ["a film"], max_rows=0)
    with pytest.raises(TaskError, match="input 2: empty text"):
        predict(trained["model_dir"], ["a film", "   "])


@pytest.mark.parametrize("options, unread", [
    ({"label_words": {"0": "bad", "1": "good"}}, "label_words does"),  # T5's: a BERT classifier has a head
    ({"prefix": "sst2 sentence: ", "num_beams": 4}, "prefix, num_beams do"),
    ({"stride": 32, "source_column": "text"}, "stride, source_column do"),
])
def test_options_the_task_does_not_read_are_refused(sst2, tmp_path, options, unread):
    """An option the kind ignores with this model would be lost silently; refused before the run directory."""
    d, train, _ = sst2
    with pytest.raises(TaskError, match=rf"{unread} not apply to classification with a bert model; its options: "
                                        r"metric, max_len, text_column, text_pair_column, label_column"):
        finetune(d / "bert", "sst2", train, run_dir=tmp_path / "refused", **FAST, **options)
    assert not (tmp_path / "refused").exists()
    for kind in ("classification", "regression", "token-classification", "extractive-qa", "seq2seq"):
        for family in ("bert", "t5"):  # every option a kind reads is a TaskSpec field
            assert set(kind_of(task_spec(kind), family).reads) <= set(TaskSpec.__dataclass_fields__)


def test_csv_quoting_and_hf_local_loader(tmp_path):
    (tmp_path / "q.tsv").write_text('sentence\tlabel\n"a ""quoted""\ttab"\t1\n')
    assert read_records(tmp_path / "q.tsv")[0][1] == {"sentence": 'a "quoted"\ttab', "label": "1"}
    pytest.importorskip("datasets")
    (tmp_path / "d.jsonl").write_text('{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0}\n')
    ex = load_examples(task_spec("sst2"), f"hf:json?data_files={tmp_path / 'd.jsonl'}")
    assert [(e["text"], e["label"]) for e in ex] == [("good", "1"), ("bad", "0")]
    with pytest.raises(TaskError, match="cannot load this dataset"):
        read_records(f"hf:json?data_files={tmp_path / 'no-such-file.jsonl'}")


def test_t5_text_to_text_parsing():
    assert regression_text(3.77) == "3.8" and regression_text(0.1) == "0.0" and regression_text(5) == "5.0"
    assert parse_regression(" 3.8 ") == 3.8 and parse_regression("three") == -1.0 and parse_regression("nan") == -1.0
    words = ["unacceptable", "acceptable"]
    assert parse_label("acceptable", words) == 1 and parse_label("acceptable!", words) == -1
    spec = task_spec("cola").replace(labels=["0", "1"])
    examples = [{"label": "1"}, {"label": "0"}, {"label": "1"}]
    got = score(spec, "t5", ["acceptable", "garbage output", ""], examples, None)
    assert got["accuracy"] == pytest.approx(1 / 3)  # unparseable outputs count as wrong, never crash
    reg = score(task_spec("stsb"), "t5", ["3.8", "x", "1.0"], [{"label": 3.8}, {"label": 2.0}, {"label": 1.2}], None)
    assert -1 <= reg["pearson"] <= 1


def test_t5_cola_as_text_to_text(tmp_path, one_thread):
    words = "acceptable unacceptable cola sentence : the dog barks cat sleeps loudly".split()
    tok = Tokenizer.train("unigram", [" ".join(words)] * 20 + words, vocab_size=120)
    cfg = T5Config.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id,
                          decoder_start_token_id=tok.pad_id)
    torch.manual_seed(0)
    save_model(T5ForConditionalGeneration(cfg), tmp_path / "t5", tok)
    rows = [["the dog barks", "1"], ["dog the barks loudly the", "0"], ["the cat sleeps", "1"], ["cat cat the", "0"]]
    data = write_tsv(tmp_path / "cola.tsv", ["sentence", "label"], rows * 4)
    s = finetune(tmp_path / "t5", "cola", data, data, run_dir=tmp_path / "run", epochs=1, batch_size=8, lr=1e-3,
                 max_new_tokens=4, progress=False)
    assert set(s["best"]) >= {"accuracy", "mcc", "loss"}
    cfg = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert cfg["architectures"] == ["T5ForConditionalGeneration"]
    out = predict(s["model_dir"], ["the dog barks"])
    assert set(out[0]) >= {"text", "output", "label"}  # label None when the output is no label word

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"en": a, "de": b}) + "\n" for a, b in [("the dog", "dog the"),
                                                                                ("cat sleeps", "sleeps cat")] * 4))
    s = finetune(tmp_path / "t5", "seq2seq", pairs, pairs, run_dir=tmp_path / "s2s", source_column="en",
                 target_column="de", metric="bleu", prefix="translate: ", epochs=1, batch_size=4, lr=1e-3,
                 max_new_tokens=4, progress=False)
    assert "bleu" in s["best"] and "rougeL" not in s["best"]
    assert predict(s["model_dir"], ["the dog"])[0].keys() >= {"source", "output"}


def qa_tokenizer():
    text = "the cat sat on the mat . where did the cat sit ? a dog ran in the park today"
    return Tokenizer.train("wordpiece", [text] * 10, vocab_size=60, lowercase=True)


def test_qa_windows_cover_the_answer_and_map_back():
    tok = qa_tokenizer()
    context = "a dog ran in the park today . " * 3 + "the cat sat on the mat . " + "a dog ran in the park today ."
    start = context.index("the mat")
    wins = windows(tok, "where did the cat sit ?", context, 0, max_len=24, stride=4, max_query_len=64,
                   answer=("the mat", start))
    assert len(wins) > 2 and all(len(w.ids) <= 24 for w in wins)
    holding = [w for w in wins if w.start > 0]
    assert holding, "some window holds the answer"
    for w in holding:
        assert context[w.offsets[w.start][0]: w.offsets[w.end][1]] == "the mat"
    for a, b in zip(wins, wins[1:]):  # neighbours share `stride` context tokens
        ctx = lambda w: [o for o, c in zip(w.offsets, w.in_context) if c]  # noqa: E731
        assert ctx(a)[-4:] == ctx(b)[:4]


def test_best_span_decoding_and_stitching():
    in_ctx = torch.tensor([False, False, True, True, True, True, False])
    start = torch.tensor([9.0, 0, 0, 5, 0, 0, 9])
    end = torch.tensor([9.0, 0, 5.5, 0, 1, 2, 9])  # (3, 2) would score 10.5 but ends before it starts
    score, a, b = best_span(start, end, in_ctx, max_answer_len=3)
    assert (a, b) == (3, 5) and score == 7.0  # never the question/specials; start ≤ end; length ≤ 3
    assert best_span(start, end, in_ctx, max_answer_len=2)[1:] == (3, 4)

    tok = qa_tokenizer()
    context = "a dog ran in the park today . " * 3 + "the cat sat on the mat ."
    wins = windows(tok, "where ?", context, 0, max_len=16, stride=3, max_query_len=64)
    n = max(len(w.ids) for w in wins)
    starts = torch.full((len(wins), n), -5.0)
    ends = torch.full((len(wins), n), -5.0)
    last = wins[-1]
    mat = [i for i, (o, c) in enumerate(zip(last.offsets, last.in_context)) if c and context[o[0]:o[1]] == "mat"][0]
    starts[-1, mat - 1], ends[-1, mat] = 4.0, 4.0  # "the mat" in the last window
    starts[0, 1], ends[0, 1] = 50.0, 50.0  # a high score on a question token: never chosen
    assert answer_texts([context], wins, starts, ends, max_answer_len=30) == ["the mat"]


def test_squad_metrics_known_cases():
    assert M.normalize_answer("The  Cat, an  animal!") == "cat animal"
    assert M.exact_match("the Mat.", "mat") == 1.0
    assert M.f1("cat sat on", "the cat sat") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert M.f1("", "cat") == 0.0
    got = M.squad(["the mat", "a dog"], [["mat", "on the mat"], ["the cat"]])
    assert got == {"exact_match": 50.0, "f1": 50.0}


def test_cli_finetune_evaluate_predict(sst2, trained, tmp_path, capsys):
    d, train, dev = sst2
    assert main(["evaluate", "--model", trained["model_dir"], "--data", str(dev)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(trained["best"]["accuracy"])
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", trained["model_dir"], "--input", str(dev), "--output", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 200 and rows[0]["label"] in ("0", "1") and 0.5 <= rows[0]["score"] <= 1
    # a .txt file of text lines reads as stdin does (it said "unknown format '.txt'")
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(r[1]["sentence"] + "\n" for r in read_records(dev)[:3]))
    assert main(["predict", "--model", trained["model_dir"], "--input", str(lines),
                 "--output", str(tmp_path / "t.jsonl")]) == 0
    assert [json.loads(x)["label"] for x in (tmp_path / "t.jsonl").read_text().splitlines()] == \
        [r["label"] for r in rows[:3]]
    assert main(["finetune", "--model", str(d / "bert"), "--task", "sst2", "--train", str(train),
                 "--text-column", "nope", "--run-dir", str(tmp_path / "r"), "--quiet"]) == 1
    assert "no column 'nope' (columns present: sentence, label)" in capsys.readouterr().err


def test_token_classification_qa_and_seq2seq_run_end_to_end(sst2, tmp_path):
    d = sst2[0]
    tags = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["the", "cat", "sat", "in", "paris"], "tags": ["O", "B-ANI", "O", "O", "B-LOC"]},
            {"tokens": ["a", "dog", "ran"], "tags": ["O", "B-ANI", "O"]}] * 8
    tags.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = finetune(d / "bert", "token-classification", tags, tags, run_dir=tmp_path / "ner", **{**FAST, "epochs": 2})
    assert s["labels"] == ["B-ANI", "B-LOC", "O"] and 0 <= s["best"]["f1"] <= 1
    out = predict(s["model_dir"], [{"tokens": ["the", "dog"]}])
    assert len(out[0]["tags"]) == 2

    context = "the film was good . " * 6 + "the actor was great ."
    squad = {"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "who was great ?", "answers": [{"text": "the actor",
                                                                  "answer_start": context.index("the actor")}]}]}]}]}
    (tmp_path / "qa.json").write_text(json.dumps(squad))
    s = finetune(d / "bert", "extractive-qa", tmp_path / "qa.json", tmp_path / "qa.json", run_dir=tmp_path / "qa",
                 **{**FAST, "epochs": 1, "max_len": 24, "stride": 4})
    assert {"exact_match", "f1"} <= set(s["best"])
    assert predict(s["model_dir"], tmp_path / "qa.json")[0]["id"] == "q1"


def test_finetune_trains_exactly_as_transformers(sst2, trained):
    """The oracle for the whole training step: transformers' BertForSequenceClassification from the same
    directory and initial head, fed the same batches, with Trainer's optimizer (AdamW, no decay on biases and
    LayerNorm), its linear schedule (no warmup here, where the two schedules coincide) and its clipping, ends
    where our `finetune` ends after 100 steps (the sst2 model has no dropout)."""
    transformers = pytest.importorskip("transformers")
    from transformers.trainer_pt_utils import get_parameter_names

    from clozeformer.interop.model_dir import load_model
    from clozeformer.tasks.task import TaskData, features, label_set
    from clozeformer.train.finetune import _head_model

    d, train, _ = sst2
    spec = task_spec("sst2", max_len=FAST["max_len"])
    examples = load_examples(spec, train, "train")
    spec = spec.replace(labels=label_set(spec, examples))
    tok = Tokenizer.load(d / "bert")
    start = _head_model(load_model(d / "bert"), spec, seed=0)  # finetune's initial model (seed 0)
    hf = transformers.BertForSequenceClassification.from_pretrained(d / "bert", num_labels=2)
    hf.classifier.load_state_dict({"weight": start.classifier.weight, "bias": start.classifier.bias})
    decay = set(get_parameter_names(hf, [torch.nn.LayerNorm], ["bias", "layernorm", "rmsnorm"]))
    opt = torch.optim.AdamW([{"params": [p for n, p in hf.named_parameters() if n in decay], "weight_decay": 0.01},
                             {"params": [p for n, p in hf.named_parameters() if n not in decay], "weight_decay": 0.0}],
                            lr=FAST["lr"], eps=1e-6)
    data = TaskData(features(spec, tok, "bert", examples)[0], [], pad_id=tok.pad_id, batch_size=16, seed=0)
    steps = trained["steps"]
    sched = transformers.get_linear_schedule_with_warmup(opt, 0, steps)
    hf.train()
    for i in range(steps):
        b = data.train_batch(i)
        hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"],
           labels=b["labels"]).loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
    ours = transformers.BertForSequenceClassification.from_pretrained(trained["last_dir"])
    theirs = hf.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[name], atol=2e-5, rtol=1e-4, msg=name)


def test_a_one_token_type_bert_reads_a_pair_as_one_segment(sst2, tmp_path):
    """`--set type_vocab_size=1` (as RoBERTa has): pair tasks send no token types rather than index past the table."""
    d, train, dev = sst2
    tok = Tokenizer.load(d / "bert")
    cfg = BertConfig.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, max_positions=64,
                            hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1, type_vocab_size=1)
    save_model(BertForPreTraining(cfg), tmp_path / "one", tok)
    rows = [[t, t[::-1], y] for t, y in textgen.labelled(48)]
    pairs = write_tsv(tmp_path / "pairs.tsv", ["a", "b", "label"], rows)
    s = finetune(tmp_path / "one", "classification", pairs, pairs, run_dir=tmp_path / "run", text_column="a",
                 text_pair_column="b", **{**FAST, "epochs": 1})
    assert 0 <= s["best"]["accuracy"] <= 1
    assert set(evaluate(s["model_dir"], pairs)) >= {"accuracy", "loss"}
    one, two = predict(s["model_dir"], [{"a": "good film", "b": "x"}, {"a": "good film", "b": "awful plot"}])
    assert one["score"] != two["score"]  # the second segment is read, without token types


def test_a_bart_token_classifier_is_said_to_load_in_clozeformer_only(tmp_path):
    """transformers has no BartForTokenClassification: the run says so before it trains, and the model serves."""
    tok = Tokenizer.train("bpe", [t for t, _ in textgen.labelled(200)], vocab_size=400)
    cfg = BartConfig.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, bos_token_id=tok.bos_id,
                            eos_token_id=tok.eos_id, decoder_start_token_id=tok.eos_id, hidden_size=32, num_heads=2,
                            intermediate_size=64, encoder_layers=1, decoder_layers=1)
    save_model(BartForConditionalGeneration(cfg), tmp_path / "bart", tok)
    tags = tmp_path / "ner.jsonl"
    tags.write_text(json.dumps({"tokens": ["the", "film", "was", "good"], "tags": ["O", "B-X", "O", "O"]}) + "\n" +
                    json.dumps({"tokens": ["a", "plot"], "tags": ["O", "B-X"]}) + "\n")
    with pytest.warns(UserWarning, match="transformers has no BartForTokenClassification: this model will load in "
                                         "clozeformer"):
        s = finetune(tmp_path / "bart", "token-classification", tags, run_dir=tmp_path / "run", **{**FAST, "epochs": 1})
    assert len(predict(s["model_dir"], [{"tokens": ["the", "plot", "was"]}])[0]["tags"]) == 3


@pytest.mark.parametrize("given, error, says", [
    (dict(num_beams=0), TaskError, "num_beams 0 is out of range; allowed: 1 ≤ num_beams ≤ 256"),  # at step 0's eval
    (dict(num_beams=2.5), TypeError, "num_beams must be int, got float 2.5"),
    (dict(max_query_len=0), TaskError, "max_query_len 0 is out of range"),  # kept the whole question
    (dict(prefix=5), TypeError, "prefix must be str, got int 5"),
    (dict(label_words=["a", "b"]), TypeError, "label_words must be a dict of label -> word, got list"),
])
def test_task_options_are_of_their_type_and_range(given, error, says):
    with pytest.raises(error, match=says):
        task_spec("sst2", **given)
