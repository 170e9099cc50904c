"""Bad input on the command line, by class, on fixtures made here (no ../shared): every case is one
line `clozeformer: error: …` naming the value and what is allowed, exit 1, before any work (no run
directory, no cache), no traceback and no hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from clozeformer.cli import main
from clozeformer.demo import stdlib_documents
from clozeformer.interop.model_dir import save_model
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.tokenizer import Tokenizer

TINY = ["--config", "tiny", "--set", "hidden_size=32", "num_layers=1", "num_heads=2", "intermediate_size=64"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_errors") / "c.txt"
    path.write_text("\n".join(" ".join(d) for d in stdlib_documents(40_000)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wordpiece(corpus) -> Path:
    out = corpus.parent / "wp"
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "300"]) == 0
    return out


def fails(argv, capsys, *expected: str) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [x for x in err.splitlines() if not x.startswith("clozeformer: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("clozeformer: error: ") and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("option, value, allowed", [
    ("--batch-size", "0", "≥ 1"), ("--steps", "-3", "≥ 1"), ("--max-len", "1", "≥ 8"), ("--max-len", "x", "integer"),
    ("--mlm-rate", "1.5", "(0, 1)"), ("--mlm-rate", "0", "(0, 1)"), ("--lr", "0", "> 0"), ("--lr", "nan", "> 0"),
    ("--lr", "inf", "> 0"), ("--minutes", "-1", "> 0"), ("--minutes", "inf", "> 0"), ("--weight-decay", "inf", "≥ 0"), ("--warmup", "-1", "≥ 0"), ("--warmup-fraction", "1", "[0, 1)"),
    ("--grad-accum", "0", "≥ 1"), ("--vocab-size", "0", "[1, 1048576]"), ("--keep-last", "0", "≥ 1"),
])
def test_pretrain_numbers_out_of_range(corpus, tmp_path, capsys, option, value, allowed):
    fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache",
           option, value], capsys, option, value, allowed)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv, expected", [
    (["noise", "--objective", "mlm", "--rate", "-1", "a b c"], ["--rate", "-1"]),
    (["fill-mask", "m", "a [MASK]", "--top-k", "0"], ["--top-k", "0"]),
    (["generate", "m", "--num-beams", "0"], ["--num-beams", "0"]),
    (["generate", "m", "--top-p", "1.5"], ["--top-p", "(0, 1]"]),
    (["generate", "m", "--temperature", "0"], ["--temperature", "> 0"]),
    (["generate", "m", "--temperature", "inf"], ["--temperature", "inf", "> 0"]),
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t", "--epochs", "0"], ["--epochs", "0"]),
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t", "--warmup-ratio", "2"], ["--warmup-ratio"]),
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t", "--layer-decay", "0"], ["--layer-decay", "(0, 1]"]),
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t", "--layer-decay", "1.2"], ["--layer-decay", "1.2"]),
    (["translate", "--bart", "b", "--train", "t", "--source", "en", "--target", "de", "--stage1-steps", "0"],
     ["--stage1-steps"]),
    (["pretrain", "--corpus", "c", "--model", "gpt"], ["--model", "gpt", "bert"]),
    # a size tokenizers cannot allocate aborted the process with a Rust backtrace
    (["train-tokenizer", "--corpus", "c", "--out", "o", "--vocab-size", "1000000000"], ["1000000000", "1048576"]),
    (["translate", "--bart", "b", "--train", "t", "--source", "en", "--target", "de", "--source-vocab-size",
      "1000000000"], ["--source-vocab-size", "1048576"]),
    (["translate", "--bart", "b", "--train", "t", "--source", "en", "--target", "de", "--source-layers", "100000"],
     ["source_layers 100000", "1 … 24"]),  # it ran until the kernel killed it
    (["generate", "m", "--num-beams", "2", "--length-penalty", "1e308"], ["--length-penalty", "[-50, 50]"]),
    (["pretrain", "--corpus", "c", "--model", "t5", "--mlm-rate", "0.999"], ["mlm_rate 0.999", "T5's is 0.15"]),
    (["translate", "--bart", "b", "--train", "t", "--source", "de", "--target", "de"], ["both 'de'"]),
    (["evaluate", "--model", "m", "--data", "d", "--batch-size", "0"], ["--batch-size"]),
    # an abbreviation is not an option: `--dev` was read as `--device`, `--step` as `--steps`
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t", "--dev", "d.tsv"], ["unrecognized", "--dev"]),
    (["pretrain", "--corpus", "c", "--step", "3"], ["unrecognized", "--step"]),
])
def test_every_command_checks_its_numbers(argv, expected, capsys):
    fails(argv, capsys, *expected)


@pytest.mark.parametrize("device, expected", [("tpu", "not a device name"), ("cuda:99", "cuda"),
                                              ("banana:0", "not a device name")])
def test_unknown_or_missing_device(corpus, tmp_path, capsys, device, expected):
    if device.startswith("cuda") and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "run", "--device", device], capsys, device,
          expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(corpus, tmp_path, capsys):
    fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "run", "--device", "cuda"], capsys,
          "'cuda'", "CUDA is not available", "cpu")


def test_wrong_family_tokenizer_or_init_is_refused_before_tokenising(corpus, wordpiece, tmp_path, capsys):
    fails(["pretrain", "--corpus", corpus, "--model", "bart", "--tokenizer", wordpiece, "--run-dir", tmp_path / "r",
           "--cache-dir", tmp_path / "cache"], capsys, "bos", "bpe")
    fails(["pretrain", "--corpus", corpus, "--model", "t5", "--tokenizer", wordpiece, "--run-dir", tmp_path / "r",
           "--cache-dir", tmp_path / "cache"], capsys, "sentinel", "unigram")
    tok = Tokenizer.load(wordpiece)
    cfg = BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                            intermediate_size=64)
    save_model(BertForPreTraining(cfg), tmp_path / "bert", tok)
    fails(["pretrain", "--corpus", corpus, "--model", "bart", "--init", tmp_path / "bert", "--run-dir", tmp_path / "r",
           "--cache-dir", tmp_path / "cache"], capsys, "is a bert model", "--model bert")
    # a fine-tuned head is not a pretraining model (it failed after tokenising, on next_sentence_label)
    from clozeformer.models.bert import BertForSequenceClassification

    save_model(BertForSequenceClassification(cfg, 2), tmp_path / "clf", tok)
    fails(["pretrain", "--corpus", corpus, "--init", tmp_path / "clf", "--run-dir", tmp_path / "r",
           "--cache-dir", tmp_path / "cache"], capsys, "is a fine-tuned BertForSequenceClassification, not a pretrained")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("model,setting,expected", [
    ("bert", "bogus=1", "unknown bert config key 'bogus'"),
    ("electra", "dropout=1.5", "dropout must be in [0, 1)"),
    ("bart", "num_heads=3", "hidden_size 256 is not divisible by num_heads 3"),
    ("t5", "d_model=0", "d_model must be positive"),
    ("roberta", "max_positions=64", "max_len 128 exceeds the model's max_positions 64"),
])
def test_bad_set_is_refused_before_tokenising(corpus, tmp_path, capsys, model, setting, expected):
    """A new model's config is checked before a tokenizer is trained or the corpus read (it took minutes on a
    large corpus to hear of a typo)."""
    fails(["pretrain", "--corpus", corpus, "--model", model, "--set", setting, "--run-dir", tmp_path / "r",
           "--cache-dir", tmp_path / "cache"], capsys, expected)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,expected", [
    (["--model", "bart", "--whole-word"], "whole_word masking applies to the MLM objectives (bert, roberta, electra)"),
    (["--model", "t5", "--whole-word"], "not to t5 pretraining"),
    (["--model", "electra", "--noise", "token-masking"], "noise 'token-masking' is a BART noise preset"),
    (["--model", "bart", "--mlm-rate", "0.3"], "mlm_rate 0.3: BART's masking is part of its noise preset"),
    (["--tokenizer", "WORDPIECE", "--vocab-size", "300"], "vocab_size shapes a tokenizer trained on the corpus"),
    (["--tokenizer", "WORDPIECE", "--cased"], "lowercase=False (--cased) shapes a tokenizer"),
], ids=["whole-word-bart", "whole-word-t5", "noise-electra", "mlm-rate-bart", "vocab-size-tokenizer",
        "cased-tokenizer"])
def test_an_option_the_run_would_not_use_is_refused(corpus, wordpiece, tmp_path, capsys, argv, expected):
    argv = [str(wordpiece) if a == "WORDPIECE" else a for a in argv]
    fails(["pretrain", "--corpus", corpus, *argv, "--run-dir", tmp_path / "r", "--cache-dir", tmp_path / "cache"],
          capsys, expected)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["pretrain", "train-tokenizer"])
def test_a_reading_option_no_corpus_file_uses_is_refused(corpus, tmp_path, capsys, command):
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"text": "a short review . it was fine ."}) + "\n", encoding="utf-8")
    out = ["--run-dir", tmp_path / "r"] if command == "pretrain" else ["--out", tmp_path / "r"]
    fails([command, "--corpus", corpus, "--text-field", "body", *out], capsys,
          "text_field 'body' names the field of JSONL records", "is plain text")
    fails([command, "--corpus", records, "--blank-line-docs", *out], capsys,
          "blank_line_docs reads plain text in BERT's format", "r.jsonl holds records")
    assert not (tmp_path / "r").exists()


def test_what_a_continued_model_would_not_use_is_refused(corpus, wordpiece, tmp_path, capsys):
    """A continued model keeps its own config, tokenizer and weights: an override it does not already have, a
    tokenizer option or an initialisation would be lost silently."""
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    fails(["pretrain", "--corpus", corpus, "--init", tmp_path / "bert", "--set", "num_layers=1", "dropout=0.2",
           "--run-dir", tmp_path / "r", "--cache-dir", tmp_path / "cache"], capsys,
          "--set) dropout=0.2: the model continued from --init", "has dropout=0.1 and keeps its own config")
    other = Tokenizer.train("wordpiece", corpus.read_text(encoding="utf-8").splitlines()[::-1], vocab_size=300)
    other.save(tmp_path / "other")  # as many ids, numbered otherwise: the embeddings would mean other tokens
    for extra, expected in ((["--weight-init", "mimetic"], "weight_init 'mimetic' initialises a new model"),
                            (["--lowercase"], "lowercase=True (--lowercase) shapes a tokenizer trained on the corpus; --init"),
                            (["--config", "base"], "config 'base' is not the size of the model continued from"),
                            (["--warmup-fraction", "0.2"], "warmup_fraction 0.2 is a share of a --minutes budget"),
                            (["--tokenizer", tmp_path / "other"], "numbers its tokens otherwise than --init")):
        fails(["pretrain", "--corpus", corpus, "--init", tmp_path / "bert", *extra, "--run-dir", tmp_path / "r",
               "--cache-dir", tmp_path / "cache"], capsys, expected)
    fails(["pretrain", "--corpus", corpus, "--minutes", "1", "--warmup", "10", "--run-dir", tmp_path / "r"], capsys,
          "warmup_steps 10 counts steps; under a time budget")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


def test_a_batch_larger_than_the_corpus_is_refused_before_training(corpus, tmp_path, capsys):
    """Each batch would repeat the corpus's rows many times (100,000 rows were killed for memory)."""
    fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache",
           "--config", "tiny", "--vocab-size", "300", "--batch-size", "100000", "--steps", "1", "--quiet"], capsys,
          "batch_size 100000 is more than the", "training rows",
          f"(--tokenizer {tmp_path / 'run' / 'tokenizer'} reuses the one just trained)")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_corpus_named_twice(corpus, tmp_path, capsys):
    fails(["pretrain", "--corpus", corpus, corpus, "--run-dir", tmp_path / "r"], capsys, "given twice")


def test_shortest_rows_train_every_family(corpus, tmp_path, capsys):
    """--max-len at its minimum packs and trains (NSP pairs, sentinels, whole words) without a hang."""
    for family, extra in [("bert", ["--whole-word"]), ("electra", []), ("bart", []), ("t5", [])]:
        sizes = TINY if family in ("bert", "electra") else ["--config", "tiny"]
        code = main(["pretrain", "--corpus", str(corpus), "--model", family, *sizes, "--steps", "2", "--max-len", "8",
                     "--batch-size", "4", "--vocab-size", "400", "--run-dir", str(tmp_path / family), "--cache-dir",
                     str(tmp_path / "cache"), "--quiet", *extra])
        assert code == 0, (family, capsys.readouterr().err)


def test_fill_mask_needs_a_trained_mlm_head(wordpiece, tmp_path, capsys):
    """A bare encoder (transformers' BertModel, MiniLM-like) has no MLM head: fill-mask refuses it, and
    convert exports it as what it is (a BertModel), never a random head labelled BertForMaskedLM."""
    transformers = pytest.importorskip("transformers")
    tok = Tokenizer.load(wordpiece)
    hf = transformers.BertModel(transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=64))
    hf.save_pretrained(tmp_path / "bare")
    tok.save(tmp_path / "bare")
    fails(["fill-mask", tmp_path / "bare", "the [MASK] is here"], capsys, "no trained MLM head")
    assert main(["convert", str(tmp_path / "bare"), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    from safetensors import safe_open

    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if k.startswith("cls.")]
    back = transformers.AutoModel.from_pretrained(tmp_path / "out")
    assert isinstance(back, transformers.BertModel)
    fails(["fill-mask", tmp_path / "out", "the [MASK] is here"], capsys, "no trained MLM head")


def test_fill_mask_on_other_families_and_top_k(corpus, wordpiece, tmp_path, capsys):
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    unigram = Tokenizer.train("unigram", corpus.read_text(encoding="utf-8").splitlines()[:200], vocab_size=300)
    save_model(T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=unigram.vocab_size, d_model=32, d_kv=16,
                                                          d_ff=64, num_layers=1, num_heads=2)), tmp_path / "t5", unigram)
    fails(["fill-mask", tmp_path / "t5", "a <extra_id_0> b"], capsys, "T5ForConditionalGeneration", "generate")
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    fails(["fill-mask", tmp_path / "bert", "a [MASK] b", "--top-k", "100000"], capsys, "100000", "1 to ")
    assert "a [MASK] b" not in capsys.readouterr().out  # the range is checked before the first answer
    fails(["fill-mask", tmp_path / "bert", "a [MASK] b", "no mask"], capsys, "no [MASK] in 'no mask'")
    assert "a [MASK] b" not in capsys.readouterr().out  # nothing answered before the bad text was found
    fails(["fill-mask", tmp_path / "bert", "a " * 600 + "[MASK]"], capsys,  # the mask is there, past 512 positions
          "every [MASK] in the text lies beyond the model's 512 positions")


def test_empty_stdin_to_predict(tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    fails(["predict", "--model", tmp_path], capsys, "stdin held no input")


def test_stdout_is_the_summary_alone_and_resume_says_where(corpus, wordpiece, tmp_path, capsys):
    argv = ["pretrain", "--corpus", corpus, *TINY, "--tokenizer", wordpiece, "--steps", "4", "--warmup", "1",
            "--max-len", "16", "--batch-size", "4", "--save-every", "2", "--eval-every", "2", "--run-dir", tmp_path / "r",
            "--cache-dir", tmp_path / "cache"]
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["steps"] == 4 and "packing:" in err  # progress on stderr: stdout pipes into jq
    argv[argv.index("--steps") + 1] = "6"
    assert main([str(a) for a in argv] + ["--resume"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["steps"] == 6 and "resumed from step 4" in err
    argv[argv.index("--steps") + 1] = "5"  # fewer steps than the run has taken: nothing to train
    fails(argv + ["--resume"], capsys, "is at step 6, past steps 5; give --steps above 6")
    (tmp_path / "r" / "checkpoints" / "step-0000099").mkdir()  # empty (a crash, a copy): not where the run is
    argv[argv.index("--steps") + 1] = "7"
    assert main([str(a) for a in argv] + ["--resume"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["steps"] == 7 and "skipping checkpoint step-0000099" in err and "resumed from step 6" in err
    # the tiny recipe's warmup is a share of the steps: extending the run may change it (it was refused)
    del argv[argv.index("--warmup"): argv.index("--warmup") + 2]
    argv[argv.index("--run-dir") + 1] = tmp_path / "r2"
    argv[argv.index("--steps") + 1] = "4"
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    argv[argv.index("--steps") + 1] = "8"
    del argv[argv.index("--tokenizer"): argv.index("--tokenizer") + 2]  # resumed with the checkpoint's tokenizer
    assert main([str(a) for a in argv] + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 8 and not (tmp_path / "r2" / "tokenizer").exists()


def test_warmup_not_shorter_than_the_run_is_named(corpus, wordpiece, tmp_path, capsys):
    capsys.readouterr()
    assert main(["pretrain", "--corpus", str(corpus), *TINY, "--tokenizer", str(wordpiece), "--steps", "3",
                 "--warmup", "5", "--max-len", "16", "--batch-size", "4", "--run-dir", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "clozeformer: warning: warmup_steps 5 ≥ steps 3" in capsys.readouterr().err


def test_small_vocabularies_and_input_files_are_named(corpus, tmp_path, capsys):
    fails(["train-tokenizer", "--corpus", corpus, "--out", tmp_path / "t", "--vocab-size", "5"], capsys,
          "vocab_size=5", "5 specials")
    capsys.readouterr()
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(tmp_path / "t"), "--vocab-size", "20"]) == 0
    assert "below the corpus' alphabet" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    fails(["generate", tmp_path, "--input", tmp_path / "latin1.txt"], capsys, "latin1.txt:1: not valid UTF-8")


def test_a_run_directory_another_run_is_training_in_is_refused(corpus, wordpiece, tmp_path, capsys):
    """Two runs into one --run-dir overwrote each other's tokenizer and checkpoints, and both exited 0: the
    second is refused before any work while the first holds the directory; after it, the directory is free."""
    fcntl = pytest.importorskip("fcntl")
    run = tmp_path / "run"
    run.mkdir()
    argv = ["pretrain", "--corpus", corpus, *TINY, "--tokenizer", wordpiece, "--steps", "2", "--max-len", "16",
            "--batch-size", "4", "--run-dir", run, "--cache-dir", tmp_path / "cache"]
    held = os.open(run, os.O_RDONLY)  # as a run in another process holds it
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        fails(argv, capsys, f"{run} is in use by another run", "give another --run-dir")
        fails(["finetune", "--model", wordpiece, "--task", "sst2", "--train", corpus, "--run-dir", run], capsys,
              f"{run} is in use by another run")
        assert list(run.iterdir()) == [] and not (tmp_path / "cache").exists()
    finally:
        os.close(held)
    assert main([str(a) for a in argv]) == 0
    assert (run / "model" / "config.json").is_file()


def test_an_output_directory_holding_something_else_is_never_overwritten(corpus, wordpiece, tmp_path, capsys):
    """convert, train-tokenizer and demo write only into a new or empty directory (demo: or its own earlier
    one); pretrain does not start a new run where a finished one saved its model. Each refuses before any
    work, and what was there stays as it was."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    src = tmp_path / "bert"
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=300)), src, Tokenizer.load(wordpiece))
    fails(["convert", src, other], capsys, f"DST {other} is not empty")
    fails(["train-tokenizer", "--corpus", corpus, "--out", other, "--vocab-size", "300"], capsys,
          f"--out {other} is not empty")
    fails(["train-tokenizer", "--corpus", corpus, "--out", other / "notes.txt" / "x", "--vocab-size", "300"],
          capsys, "is a file, not a directory")
    fails(["train-tokenizer", "--corpus", corpus, tmp_path / "nope.txt", "--out", tmp_path / "tok"], capsys,
          "nope.txt: no such file")  # a later file is checked before the first is read
    assert not (tmp_path / "tok").exists()
    fails(["demo", "--out", other, "--steps", "1", "--quiet"], capsys, f"--out {other} is not empty")
    fails(["demo", "--out", tmp_path / "demo", "--steps", "3", "--minutes", "1"], capsys,
          "minutes 1 and steps 3: the demo trains for a time or for a number of steps; give one")
    assert not (tmp_path / "demo").exists()
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    fails(["pretrain", "--corpus", corpus, "--tokenizer", wordpiece, "--run-dir", run, "--cache-dir",
           tmp_path / "cache", *TINY], capsys, f"{run} already holds a run (model/)", "--resume")
    assert [p.name for p in run.iterdir()] == ["model"] and not (tmp_path / "cache").exists()
    fails(["pretrain", "--corpus", corpus, "--tokenizer", wordpiece, "--run-dir", src, "--cache-dir",
           tmp_path / "cache", *TINY], capsys, f"--run-dir {src} is a model directory (config.json)")


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_stdin_that_is_not_utf8_or_closed(tmp_path, capsys, monkeypatch, command):
    """Standard input is held to the strict UTF-8 of input files (it reached the tokenizer as a TypeError),
    and a closed one is named (it was a TypeError on None)."""
    import io

    argv = ["predict", "--model", tmp_path] if command == "predict" else ["generate", tmp_path]
    if command == "generate":  # generate reads stdin after loading its model
        monkeypatch.setattr("clozeformer.infer.load_generator", lambda *a, **k: (None, None, None))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ok\ncaf\xe9\n"), encoding="utf-8",
                                                      errors="surrogateescape"))
    fails(argv, capsys, "stdin:2: not valid UTF-8 (byte 0xe9 at column 4)")
    monkeypatch.setattr("sys.stdin", None)
    fails(argv, capsys, "standard input is closed; give the input as a file (--input FILE)")


def test_a_vocab_txt_without_its_unknown_token_is_refused(tmp_path, capsys):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\nthe\nfilm\n")
    fails(["noise", "--objective", "mlm", "the film", "--tokenizer", tmp_path], capsys,
          "vocab.txt: not a WordPiece vocab.txt: it has no unknown token '[UNK]'")


def test_output_paths_are_checked_before_any_work(corpus, tmp_path, capsys):
    """Raw Errno lines came after every prediction (predict --output), after the view (noise --html) or
    after a tokenizer was trained (pretrain --cache-dir)."""
    (tmp_path / "afile").write_text("x")
    fails(["predict", "--model", tmp_path / "m", "--input", corpus, "--output", tmp_path / "nodir" / "o.jsonl"],
          capsys, "--output", "is not an existing directory")
    fails(["noise", "--objective", "mlm", "a b c", "--html", tmp_path], capsys, "--html", "is a directory")
    fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "r", "--cache-dir", tmp_path / "afile"], capsys,
          "--cache-dir", "is a file, not a directory")
    assert not (tmp_path / "r").exists()
    with pytest.MonkeyPatch.context() as env:  # the variable, named as such (a bare Errno 20 after the tokenizer)
        env.setenv("CLOZEFORMER_CACHE", str(tmp_path / "afile"))
        fails(["pretrain", "--corpus", corpus, "--run-dir", tmp_path / "r"], capsys,
              f"$CLOZEFORMER_CACHE {tmp_path / 'afile'} is a file, not a directory")
    assert not (tmp_path / "r").exists()
    # an existing file is overwritten only where it is one the command writes, and never the input (predict
    # wrote its predictions over its own input; --html over a model's config.json)
    (tmp_path / "in.tsv").write_text("sentence\tlabel\na\t1\n")
    fails(["predict", "--model", tmp_path / "m", "--input", tmp_path / "in.tsv", "--output", tmp_path / "in.tsv"],
          capsys, "--output", "is the input")
    (tmp_path / "config.json").write_text("{}")
    fails(["noise", "--objective", "mlm", "a b c", "--html", tmp_path / "config.json"], capsys,
          "exists and is not a .html/.htm file")
    assert (tmp_path / "in.tsv").read_text().startswith("sentence") and (tmp_path / "config.json").read_text() == "{}"


def test_a_repeated_option_is_never_dropped(corpus, tmp_path, capsys):
    """argparse keeps the last of a repeated option: a missing first corpus, a first --set and a first --train
    were dropped without a word. A list option now gathers every value; a one-value option refuses the repeat."""
    fails(["pretrain", "--corpus", tmp_path / "nope.txt", "--corpus", corpus, "--run-dir", tmp_path / "r"], capsys,
          "nope.txt: no such file")
    fails(["pretrain", "--corpus", corpus, "--set", "num_layers=1", "--set", "num_layers=2", "--run-dir",
           tmp_path / "r"], capsys, "--set num_layers is given twice")
    fails(["finetune", "--model", "m", "--task", "sst2", "--train", "a", "--train", "b"], capsys,
          "--train is given twice; give it once")
    fails(["finetune", "--model", "m", "--task", "sst2", "--train", "a", "--label-words", "0=bad", "0=awful"], capsys,
          "--label-words gives label '0' twice")
    assert not (tmp_path / "r").exists()


def test_generate_and_noise_options_that_would_change_nothing_or_contradict(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("clozeformer.infer.load_generator", lambda *a, **k: (None, None, None))
    (tmp_path / "in.txt").write_text("a line\n")
    gen = ["generate", tmp_path / "m", "--input", tmp_path / "in.txt"]
    fails(gen + ["--seed", "3"], capsys, "--seed 3 seeds sampling", "--sample")
    (tmp_path / "empty.txt").write_text("")
    fails(["generate", tmp_path / "m", "--input", tmp_path / "empty.txt"], capsys, "empty.txt holds no input lines")
    fails(gen + ["--min-new-tokens", "50", "--max-new-tokens", "5"], capsys, "--min-new-tokens 50 is above the 5")
    fails(gen + ["--sample", "--seed", str(2 ** 64)], capsys, "--seed", "out of range")
    fails(["noise", "--objective", "mlm", "a b", "--model", tmp_path, "--tokenizer", tmp_path], capsys,
          "brings its own tokenizer; leave out --tokenizer")
    fails(["noise", "--objective", "nsp", "a b. c d.", "--second", " "], capsys, "--second is empty")
    fails(["noise", "--objective", "mlm", "a b", "--allow-pickle"], capsys, "there is no --model")


@pytest.mark.parametrize("task, header, row, expected", [
    ("sst2", "sentence\tlabel", "a good film\t", "empty label"),  # it became a class ""
    ("regression", "sentence\tlabel", "a good film\tnan", "label 'nan' is out of range"),  # stopped at a nan loss
    ("regression", "sentence\tlabel", "a good film\t1e308", "label '1e308' is out of range"),
    ("extractive-qa", None, {"question": "q?", "context": "a good film", "answers": {"text": ["good"],
                                                                                   "answer_start": [500]}},
     "answer 'good' is not the context's text at answer_start 500"),
    ("extractive-qa", None, {"question": "q?", "context": "a good film", "answers": {"text": ["good"],
                                                                                   "answer_start": ["2"]}},
     "an integer answer_start"),
])
def test_finetune_labels_that_cannot_be_learnt(wordpiece, tmp_path, capsys, task, header, row, expected):
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    if header is None:
        data = tmp_path / "train.jsonl"
        data.write_text(json.dumps(row) + "\n")
    else:
        data = tmp_path / "train.tsv"
        data.write_text(f"{header}\na fine film\t1\n{row}\n")
    fails(["finetune", "--model", tmp_path / "bert", "--task", task, "--train", data, "--run-dir", tmp_path / "run"],
          capsys, f"{data.name}:", expected)


def test_a_labelled_file_that_is_a_directory_or_missing(wordpiece, tmp_path, capsys):
    """A directory without a suffix was "unknown format '(no extension)'"."""
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    (tmp_path / "dirx").mkdir()
    for train, expected in ((tmp_path / "dirx", "dirx: not a regular file"), (tmp_path / "nope", "nope: no such file")):
        fails(["finetune", "--model", tmp_path / "bert", "--task", "sst2", "--train", train, "--run-dir", tmp_path / "r"],
              capsys, expected)
    # a length beyond the positions, given: refused as pretrain and translate refuse it (it warned and used 512)
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na film\t1\n")
    fails(["finetune", "--model", tmp_path / "bert", "--task", "sst2", "--train", tmp_path / "t.tsv", "--run-dir",
           tmp_path / "r", "--max-len", "100000"], capsys, "max_len 100000 exceeds the model's 512 positions")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("header, options, expected", [
    ("sentence\tlabel", ["--text-column", "label"], "text_column 'label', label_column 'label': each must be its own"),
    ("sentence\tlabel", ["--text-pair-column", "sentence"], "text_pair_column 'sentence'"),
    ("label\tsentence\tlabel", [], "column 'label' named twice in the header"),  # the last was taken
])
def test_finetune_columns_read_twice(wordpiece, tmp_path, capsys, header, options, expected):
    """The label trained as the input text, one text read as both of a pair, a repeated header name: all ran."""
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    (tmp_path / "t.tsv").write_text(f"{header}\n" + "\t".join(["1", "a film", "0"][:header.count("\t") + 1]) + "\n")
    fails(["finetune", "--model", tmp_path / "bert", "--task", "classification", "--train", tmp_path / "t.tsv",
           "--run-dir", tmp_path / "run", *options], capsys, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("words, expected", [
    (["0=bad", "1=bad"], "each label needs its own non-empty word"),
    (["0=bad", "1=good", "2=meh"], "names labels ['2'] that"),
    (["0=bad", "1= "], "each label needs its own non-empty word"),
])
def test_t5_label_words_that_cannot_be_read_back(corpus, tmp_path, capsys, words, expected):
    """(A preset's words with the data's labels spelled as those words, GLUE's text labels, are fine: rte below.)"""
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    unigram = Tokenizer.train("unigram", corpus.read_text(encoding="utf-8").splitlines()[:200], vocab_size=300,
                              extra_ids=10)
    save_model(T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=unigram.vocab_size, d_model=32, d_kv=16,
                                                          d_ff=64, num_layers=1, num_heads=2)), tmp_path / "t5", unigram)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na good film\t1\na bad film\t0\n")
    fails(["finetune", "--model", tmp_path / "t5", "--task", "sst2", "--train", tmp_path / "train.tsv",
           "--run-dir", tmp_path / "run", "--label-words", *words], capsys, expected)
    if words[-1] == "1= ":  # once: rte's preset words, the data's labels spelled as them
        (tmp_path / "rte.tsv").write_text("sentence1\tsentence2\tlabel\na b\ta\tentailment\na b\tc\tnot_entailment\n")
        assert main([str(a) for a in ["finetune", "--model", tmp_path / "t5", "--task", "rte", "--train",
                                      tmp_path / "rte.tsv", "--run-dir", tmp_path / "rte", "--epochs", "1"]]) == 0


def test_a_corpus_whose_training_documents_all_repeat_held_out_ones_is_named(corpus, wordpiece, tmp_path, capsys):
    """It said "the corpus is too small" for 200 copies of one line."""
    first = corpus.read_text(encoding="utf-8").splitlines()[0]
    (tmp_path / "same.txt").write_text(f"{first}\n" * 200, encoding="utf-8")
    fails(["pretrain", "--corpus", tmp_path / "same.txt", *TINY, "--tokenizer", wordpiece, "--max-len", "16",
           "--batch-size", "4", "--run-dir", tmp_path / "r", "--cache-dir", tmp_path / "cache", "--quiet"], capsys,
          "training documents repeats a held-out one", "check --tokenizer")


def test_text_a_tokenizer_reads_as_unknown_tokens(corpus, wordpiece, tmp_path, capsys):
    """Korean read by a tokenizer trained on English is a run of [UNK]: pretraining on it ran (its loss fell to
    predicting [UNK]) and fine-tuning learnt from lengths alone. Mostly unknown is refused, a part warned."""
    korean = [f"영화 {i}번째 리뷰는 정말 재미있었다 배우들의 연기가 좋았다" for i in range(300)]
    (tmp_path / "ko.txt").write_text("\n".join(korean) + "\n", encoding="utf-8")
    pretrain = ["pretrain", *TINY, "--tokenizer", wordpiece, "--max-len", "16", "--batch-size", "4", "--steps", "1",
                "--quiet"]
    fails([*pretrain, "--corpus", tmp_path / "ko.txt", "--run-dir", tmp_path / "r"], capsys,
          "reads 100% of the corpus's tokens as [UNK]", "leave out --tokenizer")
    english = corpus.read_text(encoding="utf-8").splitlines()[:8]  # ~2,000 tokens each at this vocabulary
    (tmp_path / "mixed.txt").write_text("\n".join(english + korean) + "\n", encoding="utf-8")
    assert main([str(a) for a in [*pretrain, "--corpus", tmp_path / "mixed.txt", "--run-dir", tmp_path / "m"]]) == 0
    assert "% of the corpus's tokens as [UNK]: it was trained on other text" in capsys.readouterr().err
    tok = Tokenizer.load(wordpiece)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                                                    num_heads=2, intermediate_size=64)), tmp_path / "bert", tok)
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in
                                                                      enumerate(korean[:20])), encoding="utf-8")
    fails(["finetune", "--model", tmp_path / "bert", "--task", "sst2", "--train", tmp_path / "train.tsv",
           "--run-dir", tmp_path / "f"], capsys, "train.tsv's tokens as [UNK]", "use a model whose tokenizer")
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()
    (tmp_path / "en.tsv").write_text("sentence\tlabel\n" + "".join(f"{t[:200]}\t{i % 2}\n" for i, t in
                                                                   enumerate(english)), encoding="utf-8")
    assert main([str(a) for a in ["finetune", "--model", tmp_path / "bert", "--task", "sst2", "--train",
                                  tmp_path / "en.tsv", "--run-dir", tmp_path / "e", "--epochs", "1"]]) == 0
    for command in (["evaluate", "--data", tmp_path / "train.tsv"], ["predict", "--input", tmp_path / "train.tsv"]):
        fails([command[0], "--model", tmp_path / "e" / "best", *command[1:]], capsys, "train.tsv's tokens as [UNK]")


@pytest.mark.parametrize("setting", ["num_layers=100000", "hidden_size=1048576", "intermediate_size=1000000000"])
def test_a_model_larger_than_the_machine_is_refused_before_tokenising(corpus, tmp_path, capsys, setting):
    """It was built until a MemoryError (or the kernel's kill)."""
    fails(["pretrain", "--corpus", corpus, "--config", "tiny", "--set", setting, "--run-dir", tmp_path / "r"], capsys,
          "the model would have", "parameters, whose fp32 weights alone need", "allowed: a config of at most")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", ["roberta", "electra", "bart", "t5"])
def test_no_nsp_outside_bert_is_refused(corpus, tmp_path, capsys, model):
    """Only BERT pretrains with NSP; --no-nsp elsewhere changed nothing, silently."""
    fails(["pretrain", "--model", model, "--corpus", corpus, "--no-nsp", "--run-dir", tmp_path / "r"], capsys,
          f"--no-nsp: {model} pretraining has no NSP")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, option", [
    (["pretrain", "--corpus", "CORPUS", "--run-dir", ""], "--run-dir"),
    (["finetune", "--model", "m", "--task", "sst2", "--train", "t.tsv", "--run-dir", " "], "--run-dir"),
    (["convert", "m", ""], "dst"), (["predict", "--model", "m", "--output", ""], "--output"),
    (["noise", "a b c", "--html", ""], "--html"), (["pretrain", "--corpus", "CORPUS", ""], "--corpus"),
])
def test_an_empty_path_is_refused(corpus, tmp_path, capsys, monkeypatch, argv, option):
    """An empty value (an unset shell variable) was the current directory: runs and conversions were written
    among the files there, `--output ""` fell back to stdout, `--html ""` was ignored."""
    monkeypatch.chdir(tmp_path)
    fails([str(corpus) if a == "CORPUS" else a for a in argv], capsys, f"argument {option}:", "names nothing")
    assert list(tmp_path.iterdir()) == []


def test_generate_with_a_tokenizer_larger_than_the_model(corpus, tmp_path, capsys):
    """It was an IndexError inside BART's embeddings; fill-mask already named the mismatch."""
    from clozeformer.models.bart import BartConfig, BartForConditionalGeneration

    bpe = Tokenizer.train("bpe", corpus.read_text(encoding="utf-8").splitlines()[:200], vocab_size=400)
    save_model(BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=300, hidden_size=32, num_heads=2,
                                                              intermediate_size=64)), tmp_path / "bart")
    bpe.save(tmp_path / "bart")  # copied in beside it (save_model itself refuses the pair)
    (tmp_path / "in.txt").write_text("a line\n")
    fails(["generate", tmp_path / "bart", "--input", tmp_path / "in.txt"], capsys,
          f"the tokenizer has {bpe.vocab_size} ids but the model's vocabulary holds 300")


def test_another_familys_tokenizer_in_a_model_directory(corpus, wordpiece, tmp_path, capsys):
    """A BERT directory holding a BART tokenizer.json (pad <pad> = 1 against the config's 0, no [MASK]) loaded
    and fill-mask answered; fine-tuning trained on it."""
    bpe = Tokenizer.train("bpe", corpus.read_text(encoding="utf-8").splitlines()[:200], vocab_size=300)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                                                    intermediate_size=64)), tmp_path / "bert")
    bpe.save(tmp_path / "bert")  # copied in beside it (save_model itself refuses the pair)
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na film\t1\nthe film\t0\n")
    for argv in (["fill-mask", tmp_path / "bert", "a <mask> b"],
                 ["finetune", "--model", tmp_path / "bert", "--task", "sst2", "--train", tmp_path / "t.tsv",
                  "--run-dir", tmp_path / "r"]):
        fails(argv, capsys, "the tokenizer pads with id 1 (<pad>), the model's config.json with 0")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", ["bert", "t5"])
def test_resume_keeps_the_runs_preset(corpus, tmp_path, capsys, model):
    """Resumed without --config, a `tiny` run was compared with the default `mini` and refused as "model_config
    changed (hidden_size …)" though nothing had changed; the run's own preset is now read from its checkpoint."""
    run = ["pretrain", "--model", model, "--corpus", corpus, "--run-dir", tmp_path / "r", "--vocab-size", "300",
           "--max-len", "32", "--batch-size", "4", "--quiet"]
    assert main([str(a) for a in [*run, "--config", "tiny", "--steps", "2"]]) == 0
    assert main([str(a) for a in [*run, "--steps", "3", "--resume"]]) == 0
    assert (tmp_path / "r" / "checkpoints" / "step-0000003").is_dir()
