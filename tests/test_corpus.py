"""Corpus reading (txt, blank-line docs, JSONL, TSV/CSV, gzip), its errors, and the token cache."""

import gzip
import json

import numpy as np
import pytest

from clozeformer.data import cache
from clozeformer.data.cache import load_corpus
from clozeformer.data.corpus import CorpusError, iter_texts, read_documents
from clozeformer.tokenizer import Tokenizer
import textgen


LINES_TEXT = "One sentence. Two! Three?\n\n  \nFour… five\n第一。第二。\n"
LINES_DOCS = [(1, ["One sentence.", "Two!", "Three?"]), (4, ["Four…", "five"]), (5, ["第一。", "第二。"])]
BLANK_TEXT = "\nFirst sentence. Still first.\nSecond line\n\n\nOther doc\n"
BLANK_DOCS = [(2, ["First sentence. Still first.", "Second line"]), (6, ["Other doc"])]
JSONL_TEXT = '{"text": "A b. C d.", "id": 1}\n\n{"id": 2, "text": "E f"}\n{"text": "   "}\n'
JSONL_DOCS = [(1, ["A b.", "C d."]), (3, ["E f"])]
TSV_TEXT = 'label\ttext\n1\t"A b.\tC d."\n\n0\tE f\n1\t   \n'  # quoting keeps a tab; a blank row is skipped
TSV_DOCS = [(2, ["A b.", "C d."]), (4, ["E f"])]


@pytest.fixture(scope="module")
def tok():
    texts = ["the quick brown fox jumps over the lazy dog", "walking talking singing people", "a b c d e f"] * 10
    return Tokenizer.train_wordpiece(texts, vocab_size=150, min_frequency=1)


def write(path, text, *, gz=False):
    data = text.encode("utf-8") if isinstance(text, str) else text
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "name,text,kw,expected",
    [
        ("c.txt", LINES_TEXT, {}, LINES_DOCS),
        ("c.txt", BLANK_TEXT, {"blank_line_docs": True}, BLANK_DOCS),
        ("c.jsonl", JSONL_TEXT, {}, JSONL_DOCS),
        ("c.json", JSONL_TEXT.replace('"text"', '"body"'), {"text_field": "body"}, JSONL_DOCS),
        ("c.tsv", TSV_TEXT, {}, TSV_DOCS),
        ("c.csv", 'id,body\n1,"A b. C d."\n2,E f\n', {"text_field": "body"}, [(2, ["A b.", "C d."]), (3, ["E f"])]),
    ],
)
def test_read_documents_formats(tmp_path, gz, name, text, kw, expected):
    path = write(tmp_path / name, text, gz=gz)
    assert list(read_documents(path, **kw)) == expected


def test_crlf_and_bom(tmp_path):
    path = write(tmp_path / "c.txt", "\ufeffHello there. Bye\r\n\r\nNext\r\n")
    assert list(read_documents(path)) == [(1, ["Hello there.", "Bye"]), (3, ["Next"])]
    # old Mac line ends (a lone CR) end lines too, as Python reads text; a pair of escapes is one character
    assert list(read_documents(write(tmp_path / "cr.txt", "One. Two\rThree\r\rFour\r"))) == \
        [(1, ["One.", "Two"]), (2, ["Three"]), (4, ["Four"])]
    assert list(read_documents(write(tmp_path / "cr.tsv", "label\ttext\r1\tgood\r0\tbad\r"))) == \
        [(2, ["good"]), (3, ["bad"])]
    assert list(read_documents(write(tmp_path / "pair.jsonl", '{"text": "a \\ud83d\\ude00 b"}\n'))) == [(1, ["a 😀 b"])]


def test_iter_texts_spans_files(tmp_path):
    a = write(tmp_path / "a.txt", LINES_TEXT)
    b = write(tmp_path / "b.jsonl", JSONL_TEXT)
    assert list(iter_texts(a)) == [s for _, doc in LINES_DOCS for s in doc]
    assert list(iter_texts([a, b])) == [s for _, doc in LINES_DOCS + JSONL_DOCS for s in doc]


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("bad.txt", b"fine line\nbad \xff byte\n", r"bad.txt:2: not valid UTF-8 \(byte 0xff at column 5\)"),
        ("empty.txt", b"", r"empty.txt: empty corpus \(no text\)"),
        ("blank.txt", b"\n  \n\t\n", r"blank.txt: empty corpus \(no text\)"),
        ("blank.jsonl", b'\n{"text": ""}\n', r"blank.jsonl: empty corpus"),
        ("nul.txt", b"text\nab\x00cd\n", r"nul.txt:2: NUL byte .*binary"),
        ("field.jsonl", b'{"text": "ok"}\n{"body": "x", "id": 3}\n', r"field.jsonl:2: no field 'text' \(keys present: 'body', 'id'\)"),
        ("type.jsonl", b'{"text": 5, "id": 3}\n', r"type.jsonl:1: field 'text' is int, not a string"),
        ("json.jsonl", b'{"text": "ok"}\n\n{"text": "no end\n', r"json.jsonl:3: malformed JSON"),
        ("list.jsonl", b'["text"]\n', r"list.jsonl:1: expected a JSON object, got list"),
        ("col.tsv", b"sentence\tlabel\nok\t1\n", r"col.tsv:1: no column 'text' \(columns present: sentence, "
                                                 r"label\); name the text's column with --text-field"),
        ("ragged.csv", b"text,label\nok,1\nb,1,extra\n", r"ragged.csv:3: 3 fields where the header has 2"),
        ("head.csv", b"\n\n", r"head.csv:1: empty file \(no header row\)"),
        ("quote.tsv", b"text\tlabel\nok\t1\n\"open\t1\nb\t1\nc\t1\n", r"quote.tsv:3: 1 fields where the header has "
         r"2 \(text, label\); the row runs on to line 5: a quote opened there and never closed\?"),
        ("deep.jsonl", b'{"text": "ok", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}\n",
         r"deep.jsonl:1: JSON nested too deeply to read"),
        ("digits.jsonl", b'{"text": "ok"}\n{"text": "ok", "n": ' + b"9" * 5000 + b"}\n",
         r"digits.jsonl:2: a JSON number that cannot be read \(Exceeds the limit \(4300 digits\)"),
        ("half.jsonl", b'{"text": "a\\ud800b"}\n', r"half.jsonl:1: the escape \\ud800 is half of a surrogate pair"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=message):
        list(read_documents(path))


def test_errors_in_gzip_name_line(tmp_path):
    path = write(tmp_path / "c.txt", b"ok\nok\n\xc3\x28\n", gz=True)
    with pytest.raises(CorpusError, match=r"c.txt.gz:3: not valid UTF-8 \(byte 0xc3 at column 1\)"):
        list(read_documents(path))
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="broken.txt.gz: corrupt gzip"):
        list(read_documents(tmp_path / "broken.txt.gz"))


def test_missing_file(tmp_path, tok):
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        list(read_documents(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        load_corpus(tmp_path / "nope.txt", tok, cache_dir=tmp_path / "cache")


def test_a_file_given_twice_is_refused(tmp_path, tok, monkeypatch):
    (tmp_path / "a.txt").write_text("one line\n", encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("one line\n", encoding="utf-8")  # equal text, another file: allowed
    monkeypatch.chdir(tmp_path)
    for twice in (["a.txt", "a.txt"], ["a.txt", str(tmp_path / "a.txt")], ["a.txt", "link.txt"],
                  ["a.txt", "./b.txt", "./a.txt"]):
        with pytest.raises(CorpusError, match="given twice"):
            load_corpus(twice, tok, cache_dir=tmp_path / "cache")
    assert load_corpus(["a.txt", "b.txt"], tok, cache_dir=tmp_path / "cache").n_documents == 2


def _direct(tok, path, **kw):
    """What the cache should hold: per document, the non-empty token lists of its sentences."""
    docs = [[ids for ids in tok.encode_batch(s) if ids] for _, s in read_documents(path, **kw)]
    return [d for d in docs if d]


def _cached(cache):
    return [[s.tolist() for s in cache.document(d)] for d in range(cache.n_documents)]


@pytest.mark.parametrize("batch_docs", [1, 2, 2048])
def test_cache_equals_direct_tokenisation(tmp_path, tok, batch_docs):
    # "\x07" normalises to nothing: that sentence, and the document made only of it, are dropped.
    text = "The quick fox. Walking people\n\x07\nthe lazy dog! \x07\nsinging\n" * 3
    path = write(tmp_path / "c.txt", text)
    cache = load_corpus(path, tok, cache_dir=tmp_path / "cache", batch_docs=batch_docs)
    expected = _direct(tok, path)
    assert len(expected) == 9 and [len(d) for d in expected[:3]] == [2, 1, 1]
    assert _cached(cache) == expected
    assert cache.tokens.dtype == np.uint16 and isinstance(cache.tokens, np.memmap)
    assert (cache.n_documents, cache.n_sentences) == (9, 12)
    assert cache.n_tokens == sum(len(s) for d in expected for s in d)
    assert cache.sent_offsets[0] == 0 and cache.sent_offsets[-1] == cache.n_tokens
    assert cache.doc_offsets[-1] == cache.n_sentences
    assert cache.meta["n_tokens"] == cache.n_tokens and cache.meta["tokenizer"] == tok.fingerprint
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_cache_spans_files_and_formats(tmp_path, tok):
    a = write(tmp_path / "a.txt", BLANK_TEXT, gz=True)
    b = write(tmp_path / "b.txt", "a b c\n\nd e f\n")
    cache = load_corpus([a, b], tok, cache_dir=tmp_path, blank_line_docs=True)
    assert _cached(cache) == _direct(tok, a, blank_line_docs=True) + _direct(tok, b, blank_line_docs=True)
    assert cache.meta["files"] == [str(a), str(b)] and cache.meta["options"]["blank_line_docs"] is True


def test_one_content_as_text_and_as_a_table_is_two_caches(tmp_path, tok):
    """The key holds each file's format: a TSV's bytes renamed .txt are read as lines, header and labels too."""
    table = load_corpus(write(tmp_path / "c.tsv", TSV_TEXT), tok, cache_dir=tmp_path / "cache")
    lines = load_corpus(write(tmp_path / "c.txt", TSV_TEXT), tok, cache_dir=tmp_path / "cache")
    assert table.meta["key"] != lines.meta["key"]
    assert _cached(table) == _direct(tok, tmp_path / "c.tsv") and table.n_documents == 2 and lines.n_documents == 4


def test_second_load_hits_cache(tmp_path, tok, monkeypatch):
    path = write(tmp_path / "c.txt", "the lazy dog\nsinging people\n")
    first = load_corpus(path, tok, cache_dir=tmp_path / "cache")

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a complete cache")

    monkeypatch.setattr(cache, "_build", no_build)
    second = load_corpus(path, tok, cache_dir=tmp_path / "cache")
    assert second.meta == first.meta and _cached(second) == _cached(first)
    # A different option is a different cache.
    with pytest.raises(AssertionError, match="rebuilt"):
        load_corpus(path, tok, cache_dir=tmp_path / "cache", blank_line_docs=True)


def test_changed_file_gets_new_key(tmp_path, tok):
    path = write(tmp_path / "c.txt", "the lazy dog\n")
    first = load_corpus(path, tok, cache_dir=tmp_path)
    write(path, "the lazy dog\nthe quick fox\n")
    second = load_corpus(path, tok, cache_dir=tmp_path)
    assert second.meta["key"] != first.meta["key"]
    assert _cached(second) == _direct(tok, path) and second.n_documents == 2


@pytest.mark.parametrize("damage", ["shorten", "delete", "meta"])
def test_damaged_cache_is_rebuilt(tmp_path, tok, damage):
    path = write(tmp_path / "c.txt", "the quick brown fox\nwalking people\n")
    key_dir = tmp_path / load_corpus(path, tok, cache_dir=tmp_path).meta["key"]
    tokens = key_dir / "tokens.bin"
    if damage == "shorten":
        tokens.write_bytes(tokens.read_bytes()[:-2])
    elif damage == "delete":
        tokens.unlink()
    else:
        (key_dir / "meta.json").write_text("{torn", encoding="utf-8")
    cache = load_corpus(path, tok, cache_dir=tmp_path)
    assert _cached(cache) == _direct(tok, path)


def test_interrupted_build_leaves_no_cache(tmp_path, tok, monkeypatch):
    path = write(tmp_path / "c.txt", "the lazy dog\n" * 10)

    def boom(texts, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(tok, "encode_batch", boom)
        with pytest.raises(KeyboardInterrupt):
            load_corpus(path, tok, cache_dir=tmp_path / "cache", batch_docs=3)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert _cached(load_corpus(path, tok, cache_dir=tmp_path / "cache")) == _direct(tok, path)


def test_default_cache_dir_from_env(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("CLOZEFORMER_CACHE", str(tmp_path / "env"))
    path = write(tmp_path / "c.txt", "the lazy dog\n")
    cache = load_corpus(path, tok)
    assert (tmp_path / "env" / cache.meta["key"] / "meta.json").is_file()


def test_no_tokens_is_an_error(tmp_path, tok):
    path = write(tmp_path / "c.txt", "\x07\n\x08\n")
    with pytest.raises(CorpusError, match="no tokens"):
        load_corpus(path, tok, cache_dir=tmp_path)


def test_token_dtype_fits_ids():
    assert cache._token_dtype(30522) == "<u2"
    assert cache._token_dtype(65536) == "<u2"  # ids 0..65535
    assert cache._token_dtype(65537) == "<u4"


def test_real_text_cache(tmp_path, tok):
    head = textgen.write_lines(tmp_path / "head.txt", textgen.prose(500))  # the standard library's docs
    cache = load_corpus(head, tok, cache_dir=tmp_path, batch_docs=64)
    assert _cached(cache) == _direct(tok, head)
    assert cache.n_documents == 500
    assert json.loads((tmp_path / cache.meta["key"] / "meta.json").read_text())["n_tokens"] == cache.n_tokens


def test_hub_corpus_through_datasets_local_loader(tmp_path):
    """`hf:` names stream through `datasets` (here its own offline json loader) into the same cache."""
    pytest.importorskip("datasets")
    from clozeformer.data.cache import load_corpus
    from clozeformer.data.corpus import HubCorpus, iter_texts
    from clozeformer.tokenizer import Tokenizer

    rows = [{"text": f"Review {i} was fine. The plot was thin."} for i in range(30)]
    data = tmp_path / "part.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = f"hf:json?data_files={data}"
    assert HubCorpus.parse("hf:allenai/c4:en") == HubCorpus("hf:allenai/c4:en", "allenai/c4", "en")
    texts = list(iter_texts([spec]))
    assert texts == [s for i in range(30) for s in (f"Review {i} was fine.", "The plot was thin.")]
    tok = Tokenizer.train("wordpiece", texts, vocab_size=100)
    hub = load_corpus([spec], tok, cache_dir=tmp_path / "cache")
    local = load_corpus([data], tok, cache_dir=tmp_path / "cache")
    assert hub.n_documents == local.n_documents == 30 and np.array_equal(hub.tokens, local.tokens)
    with pytest.raises(CorpusError, match="no field 'body'"):
        list(iter_texts([spec + "&field=body"]))
    with pytest.raises(CorpusError, match="cannot load"):
        list(iter_texts([f"hf:json?data_files={tmp_path / 'missing.jsonl'}"]))
    with pytest.raises(CorpusError, match="unknown option 'splitt'"):
        HubCorpus.parse("hf:c4?splitt=train")
