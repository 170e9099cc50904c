"""BertPretrainData on a small real corpus: held-out split, example ranges, batches, masks."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from clozeformer.data.cache import load_corpus
from clozeformer.data.pretrain import (BertPretrainData, MLMSpec, SpanPretrainData, TokenStream, sentence_chunks,
                                       split_documents)
from clozeformer.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPUS = DATA / "corpus" / "en_reviews.txt"
MAX_LEN = 48


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not CORPUS.is_file():
        pytest.skip(f"{CORPUS} not available")
    tmp = tmp_path_factory.mktemp("pretrain_data")
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[:2000]
    # documents of 1..12 consecutive sentences, blank-line separated (BERT's format)
    rng = np.random.default_rng(0)
    docs, i = [], 0
    while i < len(lines):
        k = int(rng.integers(1, 13))
        docs.append(lines[i : i + k])
        i += k
    path = tmp / "docs.txt"
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    tok = Tokenizer.train_wordpiece(lines, vocab_size=1000)
    cache = load_corpus(path, tok, cache_dir=tmp / "cache", blank_line_docs=True)
    assert cache.n_documents == len(docs)
    return tok, cache


def doc_token_bounds(cache):
    """int64 [D + 1]: document d is tokens[b[d]:b[d+1]]."""
    return np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)]


def stream_bounds(cache, marked):
    """int64 [D + 1]: document d (with its separator, if marked) is positions b[d]:b[d+1] of a TokenStream."""
    bounds = doc_token_bounds(cache)
    return bounds + np.arange(len(bounds)) if marked else bounds


def sequences(data, examples):
    return [tuple(r.tolist()) for r in data.stream.rows(examples)]


def docs_overlapping(bounds, t0, t1):
    first = np.searchsorted(bounds, t0, "right") - 1
    last = np.searchsorted(bounds, t1 - 1, "right") - 1
    return range(first, last + 1)


def original(batch):
    """The uncorrupted ids: labels where predicted, input ids elsewhere."""
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


@pytest.mark.parametrize("nsp", [True, False])
def test_held_out_documents_never_in_training(setup, nsp):
    tok, cache = setup
    spec = MLMSpec.from_tokenizer(tok)
    data = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=3, eval_fraction=0.1)
    held = split_documents(cache.n_documents, 0.1, 3)
    assert 0 < held.sum() < cache.n_documents
    assert abs(held.sum() - round(0.1 * cache.n_documents)) <= 1
    bounds = stream_bounds(cache, marked=not nsp)
    covered = np.zeros(bounds[-1], dtype=np.int64)
    for t0, t1 in data.train_examples:
        assert t0 < t1
        assert not any(held[d] for d in docs_overlapping(bounds, t0, t1))
        covered[t0:t1] += 1
    for t0, t1 in data.eval_examples:
        assert all(held[d] for d in docs_overlapping(bounds, t0, t1))
    # every token (and separator) of every training document is in exactly one example (no loss, no overlap)
    train_tok = np.zeros(bounds[-1], dtype=bool)
    for d in np.flatnonzero(~held):
        train_tok[bounds[d] : bounds[d + 1]] = True
    assert (covered[train_tok] == 1).all() and (covered[~train_tok] == 0).all()
    # a different seed holds out different documents
    assert (split_documents(cache.n_documents, 0.1, 4) != held).any()


@pytest.mark.parametrize("nsp", [True, False])
def test_batches_come_from_training_examples(setup, nsp):
    tok, cache = setup
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=16, nsp=nsp, seed=0,
                            eval_fraction=0.1)
    train_seqs = sequences(data, data.train_examples)
    train_set = set(train_seqs)
    n_random = 0
    for i in range(6):
        batch = data.train_batch(i)
        orig = original(batch)
        for r in range(orig.shape[0]):
            used = orig[r][batch["attention_mask"][r].bool()].tolist()
            assert used[0] == tok.cls_id and used[-1] == tok.sep_id
            if not nsp:
                assert tuple(used[1:-1]) in train_set
                continue
            cut = used.index(tok.sep_id)
            a, b = tuple(used[1:cut]), tuple(used[cut + 1 : -1])
            assert len(a) >= 1
            assert len(b) >= 1 or a in train_set  # B is empty only for a one-token example
            if int(batch["next_sentence_label"][r]) == 0:
                assert a + b in train_set  # A and its true continuation: one example, untruncated
            else:
                n_random += 1
                assert any(s[: len(a)] == a for s in train_seqs)  # A is (a prefix of) an example's start
                assert a + b not in train_set
    assert n_random > 0 or not nsp


def test_examples_respect_max_len(setup):
    tok, cache = setup
    spec = MLMSpec.from_tokenizer(tok)
    nsp = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=16, nsp=True, seed=0)
    mlm = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=16, nsp=False, seed=0)
    assert (np.diff(nsp.train_examples, axis=1) <= MAX_LEN - 3).all()
    assert (np.diff(mlm.train_examples, axis=1) <= MAX_LEN - 2).all()
    for i in range(4):
        b = nsp.train_batch(i)
        assert b["input_ids"].shape == (16, MAX_LEN)
        assert int(b["attention_mask"].sum(1).max()) <= MAX_LEN
        b = mlm.train_batch(i)
        assert b["input_ids"].shape[0] == 16 and b["input_ids"].shape[1] <= MAX_LEN
    for b in nsp.eval_batches(4) + mlm.eval_batches(4):
        assert b["input_ids"].shape[1] <= MAX_LEN


@pytest.mark.parametrize("budget", [20, 45])
def test_sentence_chunks_keep_sentences_whole(setup, budget):
    _, cache = setup
    so = np.asarray(cache.sent_offsets)
    bounds = doc_token_bounds(cache)
    chunks = sentence_chunks(cache, np.arange(cache.n_documents), budget)
    assert (np.diff(chunks, axis=1) <= budget).all() and (np.diff(chunks, axis=1) > 0).all()
    assert all(len(docs_overlapping(bounds, t0, t1)) == 1 for t0, t1 in chunks)  # one document each
    # a chunk cuts a sentence only if that sentence is longer than the budget
    sent_len = np.diff(so)
    for t in np.concatenate([chunks[:, 0], chunks[:, 1]]):
        if t not in so:
            assert sent_len[np.searchsorted(so, t, "right") - 1] > budget
    # consecutive sentences are packed: two neighbouring chunks of a document never fit together
    for (p0, p1), (q0, q1) in zip(chunks[:-1], chunks[1:]):
        if p1 == q0 and p1 in so and len(docs_overlapping(bounds, p0, q1)) == 1:
            assert q1 - p0 > budget
    multi = [np.searchsorted(so, t1, "left") - np.searchsorted(so, t0, "right") >= 1 for t0, t1 in chunks]
    assert any(multi)  # some chunks hold several sentences
    assert (chunks[1:, 0] == chunks[:-1, 1]).all() and chunks[0, 0] == 0 and chunks[-1, 1] == cache.n_tokens


def same(x, y):
    return x.keys() == y.keys() and all(x[k].shape == y[k].shape and torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("nsp", [True, False])
def test_train_batch_deterministic(setup, nsp):
    tok, cache = setup
    spec = MLMSpec.from_tokenizer(tok)
    a = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=5)
    b = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=5)
    x3, x7 = a.train_batch(3), a.train_batch(7)
    b.train_batch(7)  # another instance, visited in another order
    assert same(x3, b.train_batch(3))
    assert same(x7, b.train_batch(7))
    assert not same(x3, x7)
    assert not torch.equal(original(x3)[:, :8], original(x7)[:, :8])  # different examples, not just masks
    # a different seed: a different batch at the same index
    c = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=6)
    assert not same(x3, c.train_batch(3))
    # evaluation batches are fixed
    e1, e2 = a.eval_batches(3), b.eval_batches(3)
    assert len(e1) == len(e2) > 0
    assert all(same(p, q) for p, q in zip(e1, e2))
    assert all(same(p, q) for p, q in zip(e1, a.eval_batches(3)))


def test_an_epoch_visits_every_example_once(setup):
    tok, cache = setup
    bs = 64
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=bs, nsp=False, seed=1)
    n = len(data.train_examples)
    rows = []
    for i in range(-(-n // bs)):
        b = data.train_batch(i)
        orig = original(b)
        for r in range(bs):
            rows.append(tuple(orig[r][b["attention_mask"][r].bool()][1:-1].tolist()))
    assert Counter(rows[:n]) == Counter(sequences(data, data.train_examples))
    assert rows[:n] != sequences(data, data.train_examples)  # shuffled


def test_nsp_and_mlm_only_batch_keys_and_shapes(setup):
    tok, cache = setup
    spec = MLMSpec.from_tokenizer(tok)
    b = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=12, nsp=True, seed=0).train_batch(0)
    assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "next_sentence_label", "labels"}
    for k in ("input_ids", "token_type_ids", "attention_mask", "labels"):
        assert b[k].shape == (12, MAX_LEN) and b[k].dtype == torch.long
    assert b["next_sentence_label"].shape == (12,)
    assert (b["input_ids"][:, 0] == tok.cls_id).all()
    b = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=12, nsp=False, seed=0).train_batch(0)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    assert b["input_ids"].shape == b["attention_mask"].shape == b["labels"].shape
    assert (b["input_ids"][:, 0] == tok.cls_id).all()
    used = b["attention_mask"].sum(1)
    assert (original(b).gather(1, (used - 1)[:, None]).squeeze(1) == tok.sep_id).all()


def test_nsp_labels_balanced_on_real_data(setup):
    tok, cache = setup
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=64, nsp=True, seed=0)
    labels = torch.cat([data.train_batch(i)["next_sentence_label"] for i in range(20)])
    n = labels.numel()
    assert abs(labels.double().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5


def test_mlm_only_windows_full_except_last_per_run(setup):
    tok, cache = setup
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=32, nsp=False, seed=2,
                            eval_fraction=0.1)
    held = split_documents(cache.n_documents, 0.1, 2)
    bounds = stream_bounds(cache, marked=True)
    train_docs = np.flatnonzero(~held)
    run_ends = {int(bounds[r[-1] + 1]) for r in np.split(train_docs, np.flatnonzero(np.diff(train_docs) != 1) + 1)}
    assert len(run_ends) > 1
    sizes = np.diff(data.train_examples, axis=1).ravel()
    is_last = np.isin(data.train_examples[:, 1], list(run_ends))
    assert (sizes[~is_last] == MAX_LEN - 2).all()
    assert is_last.sum() == len(run_ends)
    # windows cross document ends within a run
    crossing = [len(docs_overlapping(bounds, t0, t1)) > 1 for t0, t1 in data.train_examples]
    assert np.mean(crossing) > 0.05
    # in batches, only those last windows are padded
    short_seqs = set(sequences(data, data.train_examples[is_last]))
    for i in range(8):
        b = data.train_batch(i)
        used = b["attention_mask"].sum(1)
        for r in torch.nonzero(used < MAX_LEN).flatten().tolist():
            body = original(b)[r][: used[r]][1:-1]
            assert tuple(body.tolist()) in short_seqs


@pytest.mark.parametrize("nsp", [True, False])
def test_mask_counts_follow_the_mlm_rule(setup, nsp):
    tok, cache = setup
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=32, nsp=nsp, seed=0)
    specials = torch.tensor(tok.special_ids)
    n_pred = n_mask = 0
    for i in range(10):
        b = data.train_batch(i)
        orig = original(b)
        eligible = (~torch.isin(orig, specials)).sum(1).double()
        predicted = (b["labels"] != -100).sum(1)
        assert ((predicted - (0.15 * eligible).clamp(min=1)).abs() <= 0.5 + 1e-9).all()
        assert (predicted >= 1).all()
        masks = (b["input_ids"] == tok.mask_id).sum(1)
        assert (masks <= predicted).all()
        assert ((b["input_ids"] == tok.mask_id) <= (b["labels"] != -100)).all()  # [MASK] only where predicted
        assert (b["labels"][b["attention_mask"] == 0] == -100).all()
        n_pred += int(predicted.sum())
        n_mask += int(masks.sum())
    assert abs(n_mask / n_pred - 0.8) < 4 * (0.16 / n_pred) ** 0.5


def test_whole_word_spec(setup):
    tok, cache = setup
    spec = MLMSpec.from_tokenizer(tok, whole_word=True)
    assert spec.continuation is not None and spec.continuation.any()
    data = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=32, nsp=False, seed=0)
    cont = spec.continuation
    specials = torch.tensor(tok.special_ids)
    n_cont = 0
    for i in range(4):
        b = data.train_batch(i)
        orig, sel = original(b), b["labels"] != -100
        prev_sel = torch.nn.functional.pad(sel[:, :-1], (1, 0), value=False)
        prev_special = torch.nn.functional.pad(torch.isin(orig[:, :-1], specials), (1, 0), value=True)
        is_cont = cont[orig] & ~prev_special & ~torch.isin(orig, specials)
        # a continuation piece shares its selection with the piece before it: whole words only
        assert torch.equal(sel[is_cont], prev_sel[is_cont])
        n_cont += int((sel & is_cont).sum())
    assert n_cont > 0  # some multi-piece words were masked, so the check above had something to check


def test_held_out_windows_fill_from_one_line_documents(setup, tmp_path):
    """One short review per line: held-out documents come in runs, so T5's exact-length windows fit in them."""
    tok, _ = setup
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(CORPUS.read_text(encoding="utf-8").splitlines()[:3000]) + "\n", encoding="utf-8")
    cache = load_corpus(path, tok, cache_dir=tmp_path / "cache")
    data = SpanPretrainData(cache, [tok.vocab_size - 1], tok.sep_id, max_len=MAX_LEN, seed=5, eval_fraction=0.05)
    held = split_documents(cache.n_documents, 0.05, 5)
    bounds = stream_bounds(cache, marked=True)  # each document ended by </s>
    assert np.median(np.diff(bounds)) < data.raw  # most documents are shorter than one window
    for examples, side in [(data.train_examples, False), (data.eval_examples, True)]:
        assert all(held[d] == side for t0, t1 in examples for d in docs_overlapping(bounds, t0, t1))
    # every held-out token is in a held-out window except the last, shorter window of each run
    held_tokens = int(np.diff(bounds)[held].sum())
    assert held_tokens - 8 * data.raw < len(data.eval_examples) * data.raw <= held_tokens


def test_single_document_corpus_trains_on_everything(setup, tmp_path):
    tok, _ = setup
    path = tmp_path / "one.txt"
    path.write_text("just one short document here\n", encoding="utf-8")
    cache = load_corpus(path, tok, cache_dir=tmp_path / "cache")
    # one document: nothing can be held out, all of it trains
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=16, batch_size=2, nsp=False)
    assert len(data.eval_examples) == 0 and len(data.train_examples) >= 1
    assert TokenStream(cache, tok.sep_id).windows(np.array([], dtype=np.int64), 8).shape == (0, 2)


@pytest.mark.parametrize("marked", [True, False])
def test_token_stream_ends_every_document_with_its_separator(setup, marked):
    tok, cache = setup
    stream = TokenStream(cache, tok.sep_id if marked else None)
    bounds, tokens = doc_token_bounds(cache), np.asarray(cache.tokens)
    for docs in (np.arange(5, 40), np.arange(0, 3), np.arange(cache.n_documents - 4, cache.n_documents)):
        windows = stream.windows(docs, 13)
        assert (np.diff(windows, axis=1)[:-1] == 13).all() and 0 < windows[-1, 1] - windows[-1, 0] <= 13
        mark = [tok.sep_id] if marked else []
        expected = np.concatenate([np.concatenate([tokens[bounds[d]:bounds[d + 1]], mark]) for d in docs])
        assert np.array_equal(np.concatenate(stream.rows(windows)), expected)
    # BERT without NSP: a window that crosses a document end has [SEP] exactly there
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=32, nsp=False, seed=0)
    body = original(data.train_batch(0))[:, 1:-1]
    assert (body == tok.sep_id).any()
