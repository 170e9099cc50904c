"""The command line, in-process through `clozeformer.cli.main`, plus one real subprocess."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clozeformer
from clozeformer.cli import main
from clozeformer.data.corpus import read_documents
from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.tokenizer import Tokenizer
import textgen

TINY_SET = ["--config", "tiny", "--set", "hidden_size=32", "num_layers=1", "num_heads=2", "intermediate_size=64"]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_corpus(path: Path, n: int = 600) -> Path:
    return textgen.write_lines(path, textgen.english(n))


def pretrain_args(corpus, run_dir, cache_dir, *extra):
    return ["pretrain", "--corpus", str(corpus), *TINY_SET, "--steps", "6", "--warmup", "1", "--max-len", "32",
            "--batch-size", "8", "--vocab-size", "400", "--eval-every", "3", "--save-every", "3", "--eval-batches", "2",
            "--run-dir", str(run_dir), "--cache-dir", str(cache_dir), "--quiet", *extra]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A run made by `clozeformer pretrain`; returns (run_dir, summary printed on stdout)."""
    tmp = tmp_path_factory.mktemp("cli")
    corpus = small_corpus(tmp / "corpus.txt")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(pretrain_args(corpus, tmp / "run", tmp / "cache"))
    assert code == 0, err.getvalue()
    text = out.getvalue()
    summary = json.loads(text[text.index("{") :])
    return tmp / "run", summary


def test_version_subprocess():
    res = subprocess.run([sys.executable, "-m", "clozeformer", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"clozeformer {clozeformer.__version__}"


def test_pretrain_summary_and_files(pretrained):
    run_dir, summary = pretrained
    assert summary["steps"] == 6 and summary["model_dir"] == str(run_dir / "model")
    assert summary["eval"]["loss"] > 0 and "eval_before" in summary
    assert summary["train_examples"] > 0 and summary["eval_examples"] > 0
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "loss.png").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()


def test_pretrained_model_loads_here_and_in_transformers(pretrained):
    transformers = pytest.importorskip("transformers")
    run_dir, _ = pretrained
    model_dir = run_dir / "model"
    ours = clozeformer.load_model(model_dir)
    tok = clozeformer.load_tokenizer(model_dir)
    cfg = ours.config
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == (32, 1, 2, 64)
    assert cfg.vocab_size == tok.vocab_size <= 400
    rows = [tok.encode("the film is a great [MASK] of acting ."), tok.encode("boring .")]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([[len(r)] for r in rows])).long()
    assert mask[1].sum() < width  # the second row is padded
    hf = transformers.BertForMaskedLM.from_pretrained(model_dir).eval()
    hf_pt = transformers.BertForPreTraining.from_pretrained(model_dir).eval()
    with torch.no_grad():
        mine = ours(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask).logits
        theirs_pt = hf_pt(ids, attention_mask=mask)
    assert torch.allclose(mine.logits, theirs, atol=1e-4, rtol=1e-4)
    assert torch.allclose(mine.nsp_logits, theirs_pt.seq_relationship_logits, atol=1e-4, rtol=1e-4)
    assert mine.logits.std() > 0.01  # real weights, not a degenerate model
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "The acting was surprisingly good."
    assert hf_tok(text)["input_ids"] == tok.encode(text)


def test_fill_mask_prints_predictions(pretrained, capsys):
    run_dir, _ = pretrained
    text = "the movie was [MASK] ."
    assert main(["fill-mask", str(run_dir / "model"), text, "a [MASK] film", "--top-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == text and out[2] == "a [MASK] film"
    for line in (out[1], out[3]):
        assert line.startswith("  [MASK] #1: ")
        preds = re.findall(r"(\S+) \(([\d.]+)\)", line.removeprefix("  [MASK] #1: "))  # a token may be ","
        assert len(preds) == 3
        scores = [float(score) for _, score in preds]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert not any(token in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]") for token, _ in preds)


def hf_tiny_pretraining(directory: Path, vocab_size: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(cfg).eval()
    model.save_pretrained(directory)
    return model


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_convert_transformers_model(tmp_path, capsys, with_tokenizer):
    src, dst = tmp_path / "hf", tmp_path / "ours"
    tok = None
    if with_tokenizer:
        tok = Tokenizer.train_wordpiece(["the cat sat on the mat", "a dog ran in the park"] * 5, vocab_size=60,
                                        min_frequency=1)
    hf = hf_tiny_pretraining(src, tok.vocab_size if tok else 120)
    if tok:
        tok.save(src)
    assert main(["convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"wrote {dst} (bert, {'with' if tok else 'without'} tokenizer)"
    assert (dst / "config.json").is_file() and (dst / "model.safetensors").is_file()
    assert (dst / "tokenizer.json").is_file() == with_tokenizer
    ours = clozeformer.load_model(dst)
    ids = torch.randint(5, hf.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        a, b = hf(ids, attention_mask=mask), ours(ids, attention_mask=mask)
    assert torch.allclose(a.prediction_logits, b.logits, atol=1e-4, rtol=1e-4)
    assert torch.allclose(a.seq_relationship_logits, b.nsp_logits, atol=1e-4, rtol=1e-4)


def test_convert_keeps_a_tokenizer_in_vocab_json_and_merges_txt(tmp_path, capsys):
    """BART/RoBERTa's vocab.json + merges.txt (a tokenizer load_tokenizer reads) is converted with the model."""
    transformers = pytest.importorskip("transformers")
    src = tmp_path / "hf"
    bpe = Tokenizer.train("bpe", ["the cat sat on the mat", "a dog ran in the park"] * 5, vocab_size=300)
    cfg = transformers.RobertaConfig(vocab_size=bpe.vocab_size, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=40)
    transformers.RobertaForMaskedLM(cfg).save_pretrained(src)
    src.joinpath("vocab.json").write_text(json.dumps(bpe.backend.get_vocab()), encoding="utf-8")
    bpe.backend.model.save(str(tmp_path))  # merges.txt (and a vocab.json without the specials)
    (tmp_path / "merges.txt").rename(src / "merges.txt")
    src.joinpath("tokenizer_config.json").write_text('{"tokenizer_class": "RobertaTokenizer"}', encoding="utf-8")
    assert main(["convert", str(src), str(tmp_path / "ours")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'ours'} (roberta, with tokenizer)"
    text = "the dog sat on a mat"
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")(text)["input_ids"] == \
        transformers.AutoTokenizer.from_pretrained(src)(text)["input_ids"] == bpe.encode(text, specials=True)


def test_train_tokenizer(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt")
    out_dir = tmp_path / "tok"
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(out_dir), "--vocab-size", "300"]) == 0
    tok = Tokenizer.load(out_dir)
    assert capsys.readouterr().out.strip() == f"wrote {out_dir}/tokenizer.json ({tok.vocab_size} tokens)"
    assert 100 < tok.vocab_size <= 300
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    line = corpus.read_text(encoding="utf-8").splitlines()[3]
    ids = tok.encode(line)
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and tok.unk_id not in ids
    assert tok.decode(ids).replace(" ", "") == line.lower().replace(" ", "")
    assert tok.lowercase
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(tmp_path / "cased"), "--vocab-size", "300",
                 "--cased"]) == 0
    assert not Tokenizer.load(tmp_path / "cased").lowercase


# ---- errors: exit code 1 and one line on stderr naming the problem ------------------------


def run_error(argv, capsys):
    capsys.readouterr()  # drop what the setup printed
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("clozeformer: error: ")
    return lines[0]


def test_error_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    msg = run_error(pretrain_args(tmp_path / "empty.txt", tmp_path / "run", tmp_path / "cache"), capsys)
    assert "empty.txt: empty corpus" in msg


def test_error_non_utf8_corpus(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes("fine line\nstill fine\ncaf\xe9 in latin-1\n".encode("latin-1"))
    msg = run_error(pretrain_args(tmp_path / "bad.txt", tmp_path / "run", tmp_path / "cache"), capsys)
    assert "bad.txt:3: not valid UTF-8" in msg


def test_error_missing_jsonl_field(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"text": "a fine line"}\n{"body": "no text here"}\n', encoding="utf-8")
    msg = run_error(pretrain_args(tmp_path / "c.jsonl", tmp_path / "run", tmp_path / "cache"), capsys)
    assert "c.jsonl:2: no field 'text'" in msg and "'body'" in msg
    # a file whose records all have the field named by --text-field works
    (tmp_path / "b.jsonl").write_text('{"body": "a fine line"}\n{"body": "more text here", "id": 2}\n', encoding="utf-8")
    assert main(["train-tokenizer", "--corpus", str(tmp_path / "b.jsonl"), "--text-field", "body",
                 "--out", str(tmp_path / "tok"), "--vocab-size", "50"]) == 0


def test_error_unknown_preset(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt", 50)
    args = pretrain_args(corpus, tmp_path / "run", tmp_path / "cache")
    args[args.index("tiny")] = "huge"
    msg = run_error(args, capsys)
    assert "preset 'huge'" in msg and "tiny" in msg


def test_error_unknown_set_key(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt", 50)
    msg = run_error(pretrain_args(corpus, tmp_path / "run", tmp_path / "cache", "--set", "hidden_sise=32"), capsys)
    assert "hidden_sise" in msg


def test_error_max_len_over_max_positions(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt", 50)
    args = pretrain_args(corpus, tmp_path / "run", tmp_path / "cache")
    args[args.index("--max-len") + 1] = "128"
    msg = run_error(args + ["--set", "max_positions=64"], capsys)  # beside the --set already in args
    assert "max_len 128 exceeds the model's max_positions 64" in msg


def test_error_fill_mask_without_mask(pretrained, capsys):
    run_dir, _ = pretrained
    msg = run_error(["fill-mask", str(run_dir / "model"), "no mask in this text"], capsys)
    assert "no [MASK] in 'no mask in this text'" in msg


def test_error_fill_mask_missing_model(tmp_path, capsys):
    msg = run_error(["fill-mask", str(tmp_path / "nowhere"), "a [MASK]"], capsys)
    assert "nowhere" in msg


def test_error_resume_without_checkpoint(tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt", 50)
    msg = run_error(pretrain_args(corpus, tmp_path / "run", tmp_path / "cache", "--resume"), capsys)
    assert f"--resume: {tmp_path / 'run'} holds no checkpoint to continue" in msg
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # refused before any work


def test_error_convert_refuses_pickle(tmp_path, capsys):
    src = tmp_path / "hf"
    hf = hf_tiny_pretraining(src, 50)
    (src / "model.safetensors").unlink()
    torch.save(hf.state_dict(), src / "pytorch_model.bin")
    msg = run_error(["convert", str(src), str(tmp_path / "out")], capsys)
    assert "refusing to unpickle" in msg and "--allow-pickle" in msg
    assert main(["convert", str(src), str(tmp_path / "out"), "--allow-pickle"]) == 0


def test_resume_through_cli(pretrained, tmp_path, capsys):
    corpus = small_corpus(tmp_path / "c.txt")
    args = pretrain_args(corpus, tmp_path / "run", tmp_path / "cache")
    assert main(args) == 0
    args[args.index("--steps") + 1] = "8"
    assert main(args + ["--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 8


# ---- demo corpus (the demo itself takes minutes and is not run here) ---------------------


def test_stdlib_documents_are_english_sentences(tmp_path):
    docs = stdlib_documents(max_chars=200_000)
    assert len(docs) >= 20
    assert all(isinstance(d, list) and d and all(isinstance(s, str) and s.strip() == s and s for s in d) for d in docs)
    text = " ".join(s for d in docs for s in d)
    assert len(text) >= 150_000
    letters = sum(c.isalpha() for c in text)
    assert letters / len(text.replace(" ", "")) > 0.75
    words = text.lower().split()
    for common in ("the", "is", "a", "of", "to"):
        assert words.count(common) > 200, common
    assert all(len(s.split()) >= 4 for d in docs for s in d)
    assert stdlib_documents(max_chars=200_000) == docs  # a fixed order
    # written in BERT's format, it reads back as the same documents
    path = write_corpus(tmp_path / "docs.txt", docs)
    assert [sents for _, sents in read_documents(path, blank_line_docs=True)] == docs


def test_pretrain_electra_end_to_end_bf16_and_resume(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    corpus = small_corpus(tmp_path / "corpus.txt")
    args = pretrain_args(corpus, tmp_path / "run", tmp_path / "cache", "--model", "electra", "--precision", "bf16")
    args[args.index("--set") + 1:args.index("--set") + 1] = ["embedding_size=32"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and "disc_auc" in summary["eval"]
    model_dir = Path(summary["model_dir"])
    assert (tmp_path / "run" / "loss.png").is_file()
    hf = transformers.ElectraForPreTraining.from_pretrained(model_dir)
    gen = transformers.ElectraForMaskedLM.from_pretrained(model_dir / "generator")
    assert hf.config.hidden_size == 32 and gen.config.hidden_size == 8
    args[args.index("--steps") + 1] = "9"
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 9


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


SEQ2SEQ_SETS = {
    "bart": ["--set", "hidden_size=32", "encoder_layers=1", "decoder_layers=1", "num_heads=2", "intermediate_size=64"],
    "t5": ["--set", "d_model=32", "d_kv=16", "d_ff=64", "num_layers=1", "num_decoder_layers=1", "num_heads=2"],
}


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_pretrain_encoder_decoder_families_end_to_end(tmp_path, family):
    """`pretrain --model bart|t5`: its own tokenizer kind, held-out reconstruction loss falls, resume, HF export."""
    transformers = pytest.importorskip("transformers")
    corpus = small_corpus(tmp_path / "corpus.txt", 1500)
    args = ["pretrain", "--model", family, "--corpus", str(corpus), "--config", "tiny", *SEQ2SEQ_SETS[family],
            "--max-len", "48", "--batch-size", "16", "--vocab-size", "600", "--lr", "3e-3", "--warmup", "5",
            "--eval-every", "40", "--save-every", "20", "--eval-batches", "2", "--run-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    code, out, err = run_cli(*args, "--steps", "20")
    assert code == 0, err
    code, out, err = run_cli(*args, "--steps", "40", "--resume")
    assert code == 0, err
    summary = json.loads(out[out.index("{"):])
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["token_loss"] for r in rows if r["split"] == "eval"]
    assert evals[-1] < evals[0] - 0.5  # reconstruction of held-out text improves
    state = json.loads(next((tmp_path / "run" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["train_config"]["relative_lr"] == (family == "t5")  # the small-budget recipe's (Adafactor-like)
    tok = Tokenizer.load(summary["model_dir"])
    assert (tok.sentinel_ids != []) == (family == "t5") and ("bos" in tok.specials) == (family == "bart")
    cls = {"bart": transformers.BartForConditionalGeneration, "t5": transformers.T5ForConditionalGeneration}[family]
    hf = cls.from_pretrained(summary["model_dir"])
    ours = clozeformer.load_model(summary["model_dir"])
    ids = torch.tensor([tok.encode("a fine film .")])
    dec = torch.tensor([[ours.config.decoder_start_token_id, 5, 6]])
    with torch.no_grad():
        assert (hf(input_ids=ids, decoder_input_ids=dec).logits - ours(ids, decoder_input_ids=dec).logits).abs().max() < 1e-4


def test_help_names_every_default():
    """Each subcommand's --help shows every option's default, zeros included (0 == False in Python)."""
    import argparse

    from clozeformer.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.default is not None and action.default is not False \
                    and action.default is not argparse.SUPPRESS:
                assert "default" in formatter._get_help_string(action), (name, action.option_strings[0])
