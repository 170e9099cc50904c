"""Bad input, catalogued: each case stops with one clear line (or works, where it should) and loses nothing.

Errors go through `clozeformer.cli.main`: exit status 1 and exactly one stderr line
`clozeformer: error: …` naming the problem (warnings, one line each, may come before it).
Every case that has something saved before it (a run with checkpoints, a model directory)
checks that it is byte-identical afterwards. Tiny models, corpora and caches in tmp_path.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clozeformer.cli import main
from clozeformer.data import cache as cache_mod
from clozeformer.data import corpus as corpus_mod
from clozeformer.data.cache import load_corpus
from clozeformer.data.corpus import CorpusError
from clozeformer.data.packing import sentence_chunks
from clozeformer.interop.model_dir import save_model
from clozeformer.io import UnsafeFileError, member
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.checkpoint import latest_checkpoint, list_checkpoints, verify
import textgen

TINY_SET = ["--config", "tiny", "--set", "hidden_size=32", "num_layers=1", "num_heads=2", "intermediate_size=64"]
STEP = "step-{:07d}".format


pytestmark = pytest.mark.usefixtures("one_thread")


def lines(n: int = 400) -> list[str]:
    return textgen.english(n)


def pretrain_args(corpus, run_dir, cache_dir, *extra, steps=6, tokenizer=None):
    tok = ["--tokenizer", str(tokenizer)] if tokenizer else [] if "--init" in extra else ["--vocab-size", "400"]
    # a continued model keeps its own size; a key the case sets itself is not set twice
    given = {str(kv).split("=")[0] for kv in extra}
    size = [] if "--init" in extra else [*TINY_SET[:3], *(kv for kv in TINY_SET[3:] if kv.split("=")[0] not in given)]
    return ["pretrain", "--corpus", *map(str, corpus if isinstance(corpus, list) else [corpus]), *size,
            "--steps", str(steps), "--warmup", "1", "--max-len", "32", "--batch-size", "8", "--eval-every", "3",
            "--save-every", "3", "--eval-batches", "2", "--run-dir", str(run_dir), "--cache-dir", str(cache_dir),
            "--quiet", *tok, *extra]


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under roots, path -> bytes (hidden temporaries included: none may be left)."""
    return {str(p): p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def fails(argv, capsys, *expected: str) -> str:
    """Run the CLI; it must exit 1 with one error line containing every expected string."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if not line.startswith("clozeformer: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("clozeformer: error: "), err
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def works(argv, capsys) -> tuple[str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def summary_of(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run (checkpoints at steps 3 and 6, model/), its corpus, tokenizer and cache."""
    tmp = tmp_path_factory.mktemp("base")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(lines()) + "\n", encoding="utf-8")
    tok_dir = tmp / "tok"
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(tok_dir), "--vocab-size", "400"]) == 0
    assert main(pretrain_args(corpus, tmp / "run", tmp / "cache", tokenizer=tok_dir)) == 0
    assert [p.name for p in list_checkpoints(tmp / "run")] == [STEP(3), STEP(6)]
    return {"corpus": corpus, "tok": tok_dir, "run": tmp / "run", "cache": tmp / "cache", "model": tmp / "run" / "model"}


@pytest.fixture
def run_copy(base, tmp_path):
    """A private copy of the base run (to resume, damage or fail in)."""
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    return run


# ---- corpus contents ------------------------------------------------------------------------


def test_a_new_run_never_overwrites_another(base, run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    fails(pretrain_args(base["corpus"], run_copy, base["cache"], tokenizer=base["tok"]), capsys,
          "already holds a run (checkpoints up to step-0000006)", "--resume")
    assert snapshot(run_copy) == before


# "--resume" below: each bad input is found before the run (kept intact) would be continued
def test_empty_corpus(base, run_copy, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\t\n", encoding="utf-8")
    before = snapshot(run_copy)
    fails(pretrain_args(empty, run_copy, tmp_path / "cache", "--resume"), capsys, "empty.txt: empty corpus (no text)")
    fails(pretrain_args(empty, run_copy, tmp_path / "cache", "--resume", tokenizer=base["tok"]), capsys, "empty corpus")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("name,data,expected", [
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.txt:3: NUL byte at column 1; this looks like a binary file"),
    ("latin1.txt", "fine line\nstill fine\ncaf\xe9 au lait\n".encode("latin-1"),
     "latin1.txt:3: not valid UTF-8 (byte 0xe9 at column 4)"),
], ids=["binary", "latin-1"])
def test_binary_or_non_utf8_corpus_names_file_and_line(base, run_copy, tmp_path, capsys, name, data, expected):
    (tmp_path / name).write_bytes(data)
    before = snapshot(run_copy)
    fails(pretrain_args(tmp_path / name, run_copy, tmp_path / "cache", "--resume", tokenizer=base["tok"]), capsys, expected)
    fails(["train-tokenizer", "--corpus", str(tmp_path / name), "--out", str(tmp_path / "t")], capsys, expected)
    assert snapshot(run_copy) == before and not (tmp_path / "t").exists()


@pytest.mark.parametrize("text,expected", [
    ('{"text": "a fine line"}\n{"body": "no text", "id": 2}\n', "c.jsonl:2: no field 'text' (keys present: 'body', 'id')"),
    ('{"text": "a fine line"}\n\n{"text": "unterminated\n', "c.jsonl:3: malformed JSON: Unterminated string"),
    ('{"text": ["a", "list"]}\n', "c.jsonl:1: field 'text' is list, not a string"),
], ids=["missing-field", "malformed-json", "not-a-string"])
def test_jsonl_missing_field_or_malformed_line(base, run_copy, tmp_path, capsys, text, expected):
    (tmp_path / "c.jsonl").write_text(text, encoding="utf-8")
    before = snapshot(run_copy)
    fails(pretrain_args(tmp_path / "c.jsonl", run_copy, tmp_path / "cache", "--resume", tokenizer=base["tok"]), capsys, expected)
    assert snapshot(run_copy) == before


def test_missing_or_directory_corpus(base, tmp_path, capsys):
    fails(pretrain_args(tmp_path / "nope.txt", tmp_path / "run", tmp_path / "cache", tokenizer=base["tok"]), capsys,
          "nope.txt: no such file")
    fails(pretrain_args(tmp_path, tmp_path / "run", tmp_path / "cache", tokenizer=base["tok"]), capsys,
          f"{tmp_path}: not a regular file")


def test_blank_lines_are_skipped(base, tmp_path, capsys):
    """Documented skip: blank and whitespace-only lines add nothing (one-document-per-line and blank-line formats)."""
    text = lines(200)
    compact, airy = tmp_path / "compact.txt", tmp_path / "airy.txt"
    compact.write_text("\n".join(text) + "\n", encoding="utf-8")
    airy.write_text("\n\n".join(line + "\n  \t" for line in text) + "\n\n\n", encoding="utf-8")
    a, _ = works(pretrain_args(compact, tmp_path / "a", tmp_path / "cache", tokenizer=base["tok"]), capsys)
    b, _ = works(pretrain_args(airy, tmp_path / "b", tmp_path / "cache", tokenizer=base["tok"]), capsys)
    a, b = summary_of(a), summary_of(b)
    assert (a["n_tokens"], a["train_examples"]) == (b["n_tokens"], b["train_examples"])
    assert a["eval"] == b["eval"]  # the same examples, hence the same run
    tok = Tokenizer.load(base["tok"])
    docs = load_corpus(airy, tok, cache_dir=tmp_path / "cache", blank_line_docs=True)
    assert docs.n_documents == docs.n_sentences == 200  # blank-line format: each line its own document here


def test_100k_character_line_is_split_into_windows(base, tmp_path, capsys):
    from clozeformer.data.corpus import _bounded

    long_line = " ".join(lines(2000))[:100_000]
    assert len(long_line) == 100_000
    path = tmp_path / "long.txt"
    path.write_text(long_line + "\n" + "\n".join(lines(40)) + "\n", encoding="utf-8")
    tok = Tokenizer.load(base["tok"])
    cache = load_corpus(path, tok, cache_dir=tmp_path / "cache", blank_line_docs=True)
    # the line is cut at spaces into sentences of at most 10,000 characters (tokenising one 50 MB line took 6 GB)
    cut = _bounded(long_line)
    assert len(cut) >= 10 and max(map(len, cut)) <= 10_000 and " ".join(cut) == long_line.strip()
    assert cache.n_sentences == 40 + len(cut) and len(cache.sentence(0)) > 1_500
    chunks = sentence_chunks(cache, np.arange(cache.n_documents), 29)
    assert (chunks[:, 1] - chunks[:, 0]).max() <= 29 and len(chunks) >= len(cache.sentence(0)) // 29
    for i, extra in enumerate([[], ["--no-nsp"], ["--blank-line-docs"]]):
        out, _ = works(pretrain_args(path, tmp_path / f"run{i}", tmp_path / "cache", *extra,
                                     tokenizer=base["tok"]), capsys)
        s = summary_of(out)
        assert s["n_tokens"] > 15_000 and s["train_examples"] + s["eval_examples"] >= s["n_tokens"] // 30
        assert s["steps"] == 6


def test_huge_document_is_tokenised_in_pieces(base, tmp_path, monkeypatch):
    """A blank-line corpus without blank lines is one document: tokenised piecewise, the same cache."""
    path = tmp_path / "one_doc.txt"
    path.write_text("\n".join(lines(300)) + "\n\n" + "\n".join(lines(30)) + "\n", encoding="utf-8")
    tok = Tokenizer.load(base["tok"])
    whole = load_corpus(path, tok, cache_dir=tmp_path / "a", blank_line_docs=True)
    lines_doc = tmp_path / "one_line.txt"  # one document per line: a 40,000-character line, then short ones
    lines_doc.write_text(" ".join(lines(800))[:40_000] + "\n" + "\n".join(lines(30)) + "\n", encoding="utf-8")
    whole_line = load_corpus(lines_doc, tok, cache_dir=tmp_path / "a")
    monkeypatch.setattr(cache_mod, "_PIECE_SENTENCES", 7)
    pieces = load_corpus(path, tok, cache_dir=tmp_path / "b", blank_line_docs=True, batch_docs=3, batch_chars=500)
    monkeypatch.setattr(cache_mod, "_PIECE_CHARS", 300)  # and by characters: a long document in many pieces
    by_chars = load_corpus(path, tok, cache_dir=tmp_path / "c", blank_line_docs=True, batch_docs=3, batch_chars=500)
    line_pieces = load_corpus(lines_doc, tok, cache_dir=tmp_path / "d", batch_docs=3, batch_chars=500)
    assert pieces.n_documents == by_chars.n_documents == whole.n_documents == 2
    assert line_pieces.n_documents == whole_line.n_documents == 31
    for name in ("tokens", "sent_offsets", "doc_offsets"):
        assert (getattr(pieces, name) == getattr(whole, name)).all()
        assert (getattr(by_chars, name) == getattr(whole, name)).all()
        assert (getattr(line_pieces, name) == getattr(whole_line, name)).all()


# ---- lengths, vocabularies, configs -------------------------------------------------------


def small_model_dir(directory: Path, tok: Tokenizer, **overrides) -> Path:
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                     pad_token_id=tok.pad_id, **overrides)
    torch.manual_seed(0)
    return save_model(BertForPreTraining(cfg), directory, tok)


def test_max_len_over_max_positions(base, tmp_path, capsys):
    init = small_model_dir(tmp_path / "short", Tokenizer.load(base["tok"]), max_positions=64)
    before = snapshot(init)
    args = pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(init))
    args[args.index("--max-len") + 1] = "128"
    fails(args, capsys, "max_len 128 exceeds the model's max_positions 64")
    assert snapshot(init) == before


def test_fill_mask_on_a_10k_word_text_is_truncated(base, capsys):
    text = "the movie was [MASK] . " + "and it went on " * 2500
    out, err = works(["fill-mask", str(base["model"]), text, "--top-k", "2"], capsys)
    assert "clozeformer: warning: text of" in err and "truncated to the model's 512 positions" in err
    assert out.splitlines()[1].startswith("  [MASK] #1: ")
    # a [MASK] only past the cut is an error, in one shortened line
    line = fails(["fill-mask", str(base["model"]), "and it went on " * 2500 + "[MASK]"], capsys,
                 "every [MASK] in the text lies beyond the model's 512 positions")
    assert len(line) < 800


def test_tokenizer_larger_than_init_model_vocab(base, tmp_path, capsys):
    big = tmp_path / "big_tok"
    works(["train-tokenizer", "--corpus", str(base["corpus"]), "--out", str(big), "--vocab-size", "800"], capsys)
    n_big, n_model = Tokenizer.load(big).vocab_size, json.loads((base["model"] / "config.json").read_text())["vocab_size"]
    assert n_big > n_model
    before = snapshot(base["model"])
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(base["model"]), tokenizer=big),
          capsys, "numbers its tokens otherwise than --init")  # any tokenizer but the model's own is refused
    # a model directory whose tokenizer does not fit its model
    mixed = tmp_path / "mixed"
    shutil.copytree(base["model"], mixed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(big / name, mixed / name)
    fails(["fill-mask", str(mixed), "a [MASK]"], capsys, f"the tokenizer has {n_big} ids", f"holds {n_model}")
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(mixed)), capsys,
          f"tokenizer has {n_big} ids but the model's vocabulary holds {n_model}")
    assert snapshot(base["model"]) == before


def test_model_config_with_unknown_key(base, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(base["model"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["clozeformer"]["config"]["hidden_sise"] = 32
    (bad / "config.json").write_text(json.dumps(cfg))
    expected = [f"{bad / 'config.json'}: unknown bert config key 'hidden_sise' (did you mean 'hidden_size'?)"]
    fails(["fill-mask", str(bad), "a [MASK]"], capsys, *expected)
    fails(["convert", str(bad), str(tmp_path / "out")], capsys, *expected)
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(bad)), capsys, *expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting,expected", [
    ("bogus=1", "unknown bert config key 'bogus'"),
    ("hidden_size=abc", "hidden_size must be int, got str 'abc'"),
    ("num_layers=true", "num_layers must be int, got bool True"),
    ("hidden_size", "--set expects KEY=VALUE, got 'hidden_size'"),
], ids=["unknown-key", "wrong-type", "bool-for-int", "no-value"])
def test_bad_set_overrides(base, run_copy, capsys, setting, expected):
    before = snapshot(run_copy)
    fails(pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", "--set", setting, tokenizer=base["tok"]), capsys,
          expected)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("content,expected", [
    ("[1, 2]", "config.json: expected a JSON object, got list"),
    ("{not json", "config.json: not valid JSON"),
    ('{"model_type": "gpt2"}', "config.json: model_type 'gpt2' is not supported"),
    ('{"model_type": "bert", "hidden_size": 32}', "BERT config lacks vocab_size"),
], ids=["array", "not-json", "other-family", "incomplete-hf"])
def test_broken_config_json(base, tmp_path, capsys, content, expected):
    bad = tmp_path / "bad"
    shutil.copytree(base["model"], bad)
    (bad / "config.json").write_text(content)
    fails(["fill-mask", str(bad), "a [MASK]"], capsys, expected)


def test_model_dir_without_config_json(base, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(base["model"], bare)
    (bare / "config.json").unlink()
    expected = f"{bare}: not a model directory (no config.json)"
    fails(["fill-mask", str(bare), "a [MASK]"], capsys, expected)
    fails(["convert", str(bare), str(tmp_path / "out")], capsys, expected)
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(bare)), capsys, expected)
    fails(["fill-mask", str(tmp_path / "nowhere"), "a [MASK]"], capsys, "nowhere: no such model directory")
    fails(["generate", "t5-small"], capsys, "t5-small: no such model directory", "nothing is downloaded")  # offline


def test_tokenizer_json_that_is_not_json(base, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(base["model"], bad)
    (bad / "tokenizer.json").write_text("this is { not json")
    expected = f"{bad / 'tokenizer.json'}: not a valid tokenizer.json"
    fails(["fill-mask", str(bad), "a [MASK]"], capsys, expected)
    fails(["convert", str(bad), str(tmp_path / "out")], capsys, expected)  # not silently dropped
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], tokenizer=bad), capsys, expected)


@pytest.mark.parametrize("damage, expected", [
    ("unknown", "the WordPiece model's unknown token '[UNK]' is not in its vocabulary (the first unknown word would "
                "fail)"),
    ("empty", "the vocabulary is empty"),
    ("mask", "special token '[MASK]' for role 'mask' is not in the vocabulary")])
def test_tokenizer_json_that_cannot_tokenise(base, tmp_path, capsys, damage, expected):
    """A tokenizer.json that parses but could not tokenise (the unknown token missing from the WordPiece vocab, no
    vocab, a special token gone) is refused by name on loading (tokenizers raised on the first unknown word)."""
    bad = tmp_path / "bad"
    shutil.copytree(base["model"], bad)
    spec = json.loads((bad / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    gone = {"unknown": ["[UNK]"], "empty": list(vocab), "mask": ["[MASK]"]}[damage]
    for token in gone:
        vocab.pop(token)
    if damage != "unknown":
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in gone]
    (bad / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    fails(["fill-mask", str(bad), "a zebra [MASK]"], capsys, f"{bad / 'tokenizer.json'}: {expected}")
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], tokenizer=bad), capsys, expected)


def test_tokenizer_config_is_data_not_paths(base, tmp_path):
    """tokenizer_config.json is read as JSON data; path-like keys in it are never followed."""
    d = tmp_path / "tok"
    shutil.copytree(base["tok"], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_file="/etc/passwd", vocab_file="../../../etc/shadow", auto_map={"x": "evil.Module"})
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert Tokenizer.load(d).fingerprint == Tokenizer.load(base["tok"]).fingerprint


# ---- weights: safetensors only, pickles on request and then weights_only ------------------


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_refused_without_allow_pickle(base, tmp_path, capsys):
    d = tmp_path / "pickled"
    shutil.copytree(base["model"], d)
    from safetensors.torch import load_file

    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    fails(["fill-mask", str(d), "a [MASK]"], capsys, "pytorch_model.bin: refusing to unpickle", "--allow-pickle")
    fails(["convert", str(d), str(tmp_path / "out")], capsys, "refusing to unpickle")
    fails(pretrain_args(base["corpus"], tmp_path / "run", base["cache"], "--init", str(d)), capsys,
          "refusing to unpickle")
    works(["fill-mask", str(d), "a [MASK]", "--allow-pickle"], capsys)
    good = (d / "pytorch_model.bin").read_bytes()
    # with --allow-pickle, weights_only still refuses a pickle that would run code
    marker = tmp_path / "pwned"
    torch.save({"weight": RunsCode(marker)}, d / "pytorch_model.bin")
    fails(["fill-mask", str(d), "a [MASK]", "--allow-pickle"], capsys,
          "pytorch_model.bin: refused by weights_only: Trying to load unsupported GLOBAL posix.system")
    assert not marker.exists()
    # and a torn pickle is named as such
    (d / "pytorch_model.bin").write_bytes(good[: len(good) // 2])
    fails(["fill-mask", str(d), "a [MASK]", "--allow-pickle"], capsys, "pytorch_model.bin: not a readable torch file")


@pytest.mark.parametrize("damage, expected", [
    ("nan", "holds NaN or infinite values; the weights are damaged"),  # fill-mask answered NaN scores, exit 0
    ("int", "holds int32 values, not floating point"),  # cast without a word
    ("gone", "not in the checkpoint (bert.embeddings.tok.weight); the file is incomplete"),  # "not one … reads"
    ("architectures", "architectures must be a list of class names, got str 'BertForPreTraining'"),  # read 'B'
    ("flat", "bert.layers.0.attn.qkv.weight: its pieces in the checkpoint differ in shape"),  # torch.cat's traceback
])
def test_damaged_weights_and_config_are_named(base, tmp_path, capsys, damage, expected):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "m"
    shutil.copytree(base["model"], d)
    tensors = load_file(str(d / "model.safetensors"))
    name = "bert.embeddings.word_embeddings.weight"
    if damage == "nan":
        tensors[name][3, 5] = float("nan")
    elif damage == "int":
        tensors[name] = tensors[name].to(torch.int32)
    elif damage == "gone":
        del tensors[name]
    elif damage == "flat":
        query = "bert.encoder.layer.0.attention.self.query.weight"
        tensors[query] = tensors[query].flatten()
    else:
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "architectures": "BertForPreTraining"}))
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    fails(["fill-mask", str(d), "a [MASK]"], capsys, expected)
    fails(["convert", str(d), str(tmp_path / "out")], capsys, expected)


def test_safetensors_preferred_and_never_unpickled(base, tmp_path, capsys):
    """Beside model.safetensors a pickle is never opened; a pickle named .safetensors is not unpickled either."""
    d = tmp_path / "both"
    shutil.copytree(base["model"], d)
    marker = tmp_path / "pwned"
    torch.save({"weight": RunsCode(marker)}, d / "pytorch_model.bin")
    works(["fill-mask", str(d), "a [MASK]", "--allow-pickle"], capsys)
    (d / "pytorch_model.bin").rename(d / "model.safetensors")
    fails(["fill-mask", str(d), "a [MASK]", "--allow-pickle"], capsys, "model.safetensors: not a valid safetensors file")
    assert not marker.exists()


def test_config_json_is_data(base, tmp_path, capsys):
    """transformers' remote-code keys in config.json are just data: nothing is imported or run."""
    d = tmp_path / "remote"
    shutil.copytree(base["model"], d)
    marker = tmp_path / "pwned"
    (d / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(auto_map={"AutoModel": "modeling_evil.Evil"}, trust_remote_code=True, _name_or_path="/etc")
    (d / "config.json").write_text(json.dumps(cfg))
    works(["fill-mask", str(d), "a [MASK]"], capsys)
    assert not marker.exists()


# ---- where things are written -------------------------------------------------------------


def test_unwritable_output_directory(base, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    fails(pretrain_args(base["corpus"], blocker / "run", base["cache"]), capsys, "Not a directory", str(blocker))
    fails(pretrain_args(base["corpus"], blocker / "run", base["cache"], tokenizer=base["tok"]), capsys,
          "Not a directory", str(blocker))
    fails(["convert", str(base["model"]), str(blocker / "out")], capsys, f"{blocker} is a file, not a directory")
    fails(["train-tokenizer", "--corpus", str(base["corpus"]), "--out", str(blocker / "tok")], capsys,
          f"{blocker} is a file, not a directory")
    fails(pretrain_args(base["corpus"], tmp_path / "run", blocker / "cache", tokenizer=base["tok"]), capsys,
          "Not a directory")
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_directory(base, run_copy, capsys):
    before = snapshot(run_copy)
    modes = {p: p.stat().st_mode for p in [run_copy, *run_copy.rglob("*")] if p.is_dir()}
    for p in modes:
        p.chmod(0o555)
    try:
        fails(pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", steps=9, tokenizer=base["tok"]),
              capsys, "Permission denied")
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert snapshot(run_copy) == before


def disk_full_at(monkeypatch, fragment: str, name: str) -> None:
    """os.write to a temporary of `name` whose path contains fragment writes half, then fails with ENOSPC."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    real = os.write

    def write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if fragment in target and Path(target).name.startswith(f".{name}."):
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_disk_full_during_checkpoint(base, run_copy, capsys, monkeypatch, name):
    before = snapshot(run_copy / "checkpoints", run_copy / "model")
    args = pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", steps=9, tokenizer=base["tok"])
    with monkeypatch.context() as m:
        disk_full_at(m, f"/checkpoints/.{STEP(9)}.", name)
        fails(args, capsys, f"checkpoint {STEP(9)} not saved: {name}: No space left on device",
              f"earlier checkpoints intact in {run_copy / 'checkpoints'}: {STEP(3)}, {STEP(6)}")
    assert snapshot(run_copy / "checkpoints", run_copy / "model") == before  # no temporaries, nothing touched
    assert verify(run_copy / "checkpoints" / STEP(6))["step"] == 6
    out, _ = works(args, capsys)  # space again: the run goes on from step 6
    assert summary_of(out)["steps"] == 9 and [p.name for p in list_checkpoints(run_copy)] == [STEP(6), STEP(9)]


def test_disk_full_while_saving_the_final_model(base, run_copy, capsys, monkeypatch):
    before = snapshot(run_copy / "model", run_copy / "checkpoints" / STEP(6))
    args = pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", steps=9, tokenizer=base["tok"])
    with monkeypatch.context() as m:
        disk_full_at(m, f"{run_copy / 'model'}/.saving.", "model.safetensors")
        fails(args, capsys, "No space left on device", str(run_copy / "model" / "model.safetensors"))
    assert snapshot(run_copy / "model", run_copy / "checkpoints" / STEP(6)) == before
    verify(run_copy / "checkpoints" / STEP(9))  # the run itself got to its end


def test_disk_full_while_caching_tokens(base, tmp_path, capsys, monkeypatch):
    real = os.fdopen

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(cache_mod.os, "fdopen", lambda fd, *a, **k: FullFile(real(fd, *a, **k)))
    fails(pretrain_args(base["corpus"], tmp_path / "run", tmp_path / "cache", tokenizer=base["tok"]), capsys,
          "cannot write the token cache (No space left on device)", str(tmp_path / "cache"))
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# ---- resuming -------------------------------------------------------------------------------


def test_resume_with_changed_config(base, run_copy, capsys):
    before = snapshot(run_copy / "checkpoints", run_copy / "model")
    args = pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", "--lr", "0.001", steps=9,
                         tokenizer=base["tok"])
    fails(args, capsys, f"cannot resume from {run_copy / 'checkpoints' / STEP(6)}: train_config changed (lr")
    assert snapshot(run_copy / "checkpoints", run_copy / "model") == before


def test_corpus_changed_since_cached(base, run_copy, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    shutil.copy(base["corpus"], corpus)
    a, _ = works(pretrain_args(corpus, tmp_path / "a", base["cache"], tokenizer=base["tok"]), capsys)
    keys = {p.name for p in base["cache"].iterdir()}
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("\n".join(lines(600)[400:]) + "\n")
    b, _ = works(pretrain_args(corpus, tmp_path / "b", base["cache"], tokenizer=base["tok"]), capsys)
    new_keys = {p.name for p in base["cache"].iterdir()} - keys
    assert len(new_keys) == 1  # tokenised again, into a new cache
    tok = Tokenizer.load(base["tok"])
    expected = sum(len(ids) for ids in tok.encode_batch(list(corpus_mod.iter_texts(corpus))))
    assert summary_of(b)["n_tokens"] == expected > summary_of(a)["n_tokens"]
    # resuming a run over a corpus that changed since its checkpoint is refused
    before = snapshot(run_copy / "checkpoints")
    fails(pretrain_args(corpus, run_copy, base["cache"], "--resume", steps=9, tokenizer=base["tok"]), capsys,
          "data changed (corpus_key")
    assert snapshot(run_copy / "checkpoints") == before


def test_two_processes_building_one_cache(base, tmp_path, monkeypatch):
    """Ranks that need the same cache at once: one builds it, the others wait and map it."""
    import threading

    tok = Tokenizer.load(base["tok"])
    builds, real = [], cache_mod._build
    monkeypatch.setattr(cache_mod, "_build", lambda *a, **k: (builds.append(1), real(*a, **k)))
    results = [None, None]

    def load(i):
        results[i] = load_corpus(base["corpus"], tok, cache_dir=tmp_path / "cache")

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and results[0].meta == results[1].meta
    assert (results[0].tokens == results[1].tokens).all()


def test_corpus_changing_while_tokenised(base, tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    shutil.copy(base["corpus"], corpus)
    tok = Tokenizer.load(base["tok"])
    real = tok.encode_batch

    def encode_and_edit(texts, **kw):
        with open(corpus, "a", encoding="utf-8") as f:
            f.write("one more line\n")
        return real(texts, **kw)

    monkeypatch.setattr(tok, "encode_batch", encode_and_edit)
    with pytest.raises(CorpusError, match=r"c.txt: changed \(or removed\) while being tokenised"):
        load_corpus(corpus, tok, cache_dir=tmp_path / "cache")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("damage", ["truncate weights", "torn state"])
def test_damaged_checkpoint_falls_back_with_a_warning(base, run_copy, capsys, damage):
    newest = run_copy / "checkpoints" / STEP(6)
    if damage == "truncate weights":
        w = newest / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        s = newest / "trainer_state.json"
        s.write_bytes(s.read_bytes()[:100])
    out, err = works(pretrain_args(base["corpus"], run_copy, base["cache"], "--resume", steps=9,
                                   tokenizer=base["tok"]), capsys)
    warning = [line for line in err.splitlines() if "skipping checkpoint" in line]
    assert warning == [warning[0]] and warning[0].startswith(f"clozeformer: warning: skipping checkpoint {STEP(6)}: ")
    assert summary_of(out)["steps"] == 9
    assert [p.name for p in list_checkpoints(run_copy)] == [STEP(6), STEP(9)]  # step 6 rewritten, sound
    for ckpt in list_checkpoints(run_copy):
        verify(ckpt)


# ---- paths named inside files stay inside their directory ---------------------------------


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "sub/model.safetensors", "..", ""],
                         ids=["dotdot", "absolute", "subdir", "parent", "empty"])
def test_trainer_state_file_names_are_confined(run_copy, name):
    ckpt = run_copy / "checkpoints" / STEP(6)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["files"][name] = "0" * 64
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(UnsafeFileError, match="refusing file name"):
        verify(ckpt)
    with pytest.warns(UserWarning, match=f"skipping checkpoint {STEP(6)}: .*refusing file name"):
        found = latest_checkpoint(run_copy)
    assert found[0].name == STEP(3)


def test_trainer_state_symlink_out_and_missing_files(run_copy, tmp_path):
    ckpt = run_copy / "checkpoints" / STEP(6)
    outside = tmp_path / "outside.safetensors"
    shutil.move(ckpt / "model.safetensors", outside)
    (ckpt / "model.safetensors").symlink_to(outside)
    with pytest.raises(UnsafeFileError, match="symlink that points outside"):
        verify(ckpt)
    state = json.loads((run_copy / "checkpoints" / STEP(3) / "trainer_state.json").read_text())
    state["files"] = {}  # a state that vouches for nothing is not a checkpoint
    (run_copy / "checkpoints" / STEP(3) / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="no checksum for config.json, model.safetensors, optimizer.safetensors"):
        verify(run_copy / "checkpoints" / STEP(3))
    with pytest.warns(UserWarning):
        assert latest_checkpoint(run_copy) is None
    # a stray name that is not step-NNNNNNN (or a symlink to a checkpoint elsewhere) is no checkpoint
    (run_copy / "checkpoints" / "step-0000009.bak").mkdir()
    (run_copy / "checkpoints" / STEP(12)).symlink_to(tmp_path)
    assert [p.name for p in list_checkpoints(run_copy)] == [STEP(3), STEP(6)]


def test_saved_files_follow_the_umask(base):
    """Atomic writes go through mkstemp (mode 0600); the files they leave are as readable as the umask says."""
    from clozeformer.io import _FILE_MODE

    for name in ("model.safetensors", "config.json"):
        assert (base["model"] / name).stat().st_mode & 0o777 == _FILE_MODE
    assert _FILE_MODE & 0o600 == 0o600


def test_member_helper():
    base = Path("/srv/run")
    assert member(base, "model.safetensors") == base / "model.safetensors"
    for bad in ("../x", "a/b", "a\\b", "/abs", ".", "..", "", "nul\0", None):
        with pytest.raises(UnsafeFileError):
            member(base, bad)


def test_python_api_arguments_are_named_before_any_work(base, tmp_path):
    """The API's hostile arguments, each named before any work (a str read letter by letter, another model's
    tokenizer indexed past the vocabulary, "" saved into the current directory, a Tokenizer for a path)."""
    import clozeformer
    from clozeformer.infer import fill_mask, generate_texts
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    model, tok = clozeformer.load_model(base["model"]), clozeformer.load_tokenizer(base["model"])
    big = Tokenizer.train("wordpiece", lines() * 3, vocab_size=2000)
    assert big.vocab_size > model.config.vocab_size
    with pytest.raises(ValueError, match="the tokenizer given: the tokenizer has .* ids but the model's vocabulary"):
        fill_mask(model, big, "a [MASK] b")
    with pytest.raises(TypeError, match="top_k must be int, got float 2.5"):
        fill_mask(model, tok, "a [MASK] b", top_k=2.5)
    with pytest.raises(ValueError, match="directory '' names nothing"):
        clozeformer.save_model(model, "")
    with pytest.raises(ValueError, match="the tokenizer given: the tokenizer has"):
        clozeformer.save_model(model, tmp_path / "out", big)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match="model must be str or Path, got Tokenizer"):
        clozeformer.evaluate(tok, base["corpus"])
    t5 = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id))
    with pytest.raises(TypeError, match="texts must be a list of strings, got str"):
        generate_texts(t5, tok, "the cat")
    with pytest.raises(ValueError, match="batch_size 0 is out of range"):
        generate_texts(t5, tok, ["the cat"], batch_size=0)
