"""Pretraining data on real English (the standard library's own documentation, offline): the held-out
split, document-aware packing, and every family's batches (each row's segments are whole documents)."""

from collections import Counter

import numpy as np
import pytest
import torch

from clozeformer.data.cache import load_corpus
from clozeformer.data.packing import EpochOrder, document_pieces, pack, sentence_chunks, split_documents
from clozeformer.data.pretrain import (BertPretrainData, DenoisePretrainData, MLMSpec, SpanPretrainData,
                                       full_stop_ids, noise_ids)
from clozeformer.demo import stdlib_documents
from clozeformer.objectives.rtd import rtd_mask
from clozeformer.objectives.span import noise_counts
from clozeformer.tokenizer import Tokenizer

MAX_LEN = 48


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Sentences of the stdlib docs regrouped into documents of 1..12 sentences, blank-line separated."""
    tmp = tmp_path_factory.mktemp("pretrain_data")
    # each sentence once: with repeats ("New in version 3.2." six times) a foreign B could spell a true A + B
    sentences = list(dict.fromkeys(s for d in stdlib_documents(400_000) for s in d))[:3000]
    rng = np.random.default_rng(0)
    docs, i = [], 0
    while i < len(sentences):
        k = int(rng.integers(1, 13))
        docs.append(sentences[i: i + k])
        i += k
    path = tmp / "docs.txt"
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return tmp, path, sentences, len(docs)


@pytest.fixture(scope="module")
def bert(corpus):
    tmp, path, sentences, n_docs = corpus
    tok = Tokenizer.train_wordpiece(sentences, vocab_size=1000)
    cache = load_corpus(path, tok, cache_dir=tmp / "cache", blank_line_docs=True)
    assert cache.n_documents == n_docs
    return tok, cache


def bounds(cache):
    """int64 [D + 1]: document d is tokens[b[d]:b[d+1]]."""
    return np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)]


def doc_of(cache, t):
    return int(np.searchsorted(bounds(cache), t, "right") - 1)


def original(batch):
    """The uncorrupted ids: labels where predicted, input ids elsewhere."""
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def segments(ids, seg, r):
    """The documents of row r: lists of ids, in order."""
    return [ids[r][seg[r] == k].tolist() for k in range(1, int(seg[r].max()) + 1)]


def test_document_pieces_cover_documents_exactly(bert):
    _, cache = bert
    b = bounds(cache)
    docs = np.arange(0, cache.n_documents, 3)
    pieces = document_pieces(cache, docs, 20)
    assert ((pieces[:, 1] - pieces[:, 0] >= 1) & (pieces[:, 1] - pieces[:, 0] <= 20)).all()
    covered = np.zeros(cache.n_tokens, dtype=int)
    for t0, t1 in pieces:
        assert doc_of(cache, t0) == doc_of(cache, t1 - 1)  # never across a document end
        covered[t0:t1] += 1
    wanted = np.zeros(cache.n_tokens, dtype=bool)
    for d in docs:
        wanted[b[d]: b[d + 1]] = True
    assert (covered[wanted] == 1).all() and (covered[~wanted] == 0).all()
    # only documents longer than the window are cut, and only the last piece of each is short
    lengths = np.diff(b)[docs]
    assert len(pieces) == int(np.ceil(lengths / 20).sum())


def test_pack_best_fit_fills_rows():
    rng = np.random.default_rng(0)
    costs = rng.integers(3, 40, 3000)
    pieces = np.stack([np.arange(3000), np.arange(3000) + 1], 1)
    packing = pack(pieces, costs, 128, seed=0)
    used = [costs[packing.pieces[a:b, 0]].sum() for a, b in zip(packing.offsets[:-1], packing.offsets[1:])]
    assert max(used) <= 128
    assert sorted(packing.pieces[:, 0].tolist()) == list(range(3000))  # every piece once
    assert packing.fill == pytest.approx(costs.sum() / (len(packing) * 128)) and packing.fill > 0.99
    again = pack(pieces, costs, 128, seed=0)
    assert np.array_equal(again.pieces, packing.pieces) and np.array_equal(again.offsets, packing.offsets)
    with pytest.raises(ValueError, match="costs"):
        pack(pieces[:1], np.array([129]), 128, seed=0)


@pytest.mark.parametrize("nsp", [True, False])
def test_held_out_documents_never_in_training(bert, nsp):
    tok, cache = bert
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=3,
                            eval_fraction=0.1)
    held = split_documents(cache.n_documents, 0.1, 3)
    assert 0 < held.sum() < cache.n_documents and abs(held.sum() - round(0.1 * cache.n_documents)) <= 1
    b = bounds(cache)
    covered = np.zeros(cache.n_tokens, dtype=int)
    for side, packing in ((False, data.train_examples), (True, data.eval_examples)):
        for t0, t1 in packing.pieces:
            assert held[doc_of(cache, t0)] == side
            covered[t0:t1] += 1
    assert (covered == 1).all()  # every token of every document in exactly one piece
    assert (split_documents(cache.n_documents, 0.1, 4) != held).any()


def test_copies_of_held_out_documents_never_train(corpus, bert, tmp_path):
    """The corpus twice in one file: every held-out document has a copy on the training side, and
    that copy is dropped; distinct training documents all stay."""
    _, path, _, n_docs = corpus
    tok = bert[0]
    twice = tmp_path / "twice.txt"
    twice.write_text("\n".join([path.read_text(encoding="utf-8")] * 2), encoding="utf-8")
    cache = load_corpus(twice, tok, cache_dir=tmp_path / "cache", blank_line_docs=True)
    assert cache.n_documents == 2 * n_docs
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=8, nsp=False, seed=3,
                            eval_fraction=0.1)
    tokens, b = np.asarray(cache.tokens), bounds(cache)
    text = [tokens[b[d]:b[d + 1]].tobytes() for d in range(cache.n_documents)]
    held = {text[d] for d in np.flatnonzero(split_documents(cache.n_documents, 0.1, 3))}
    trained = {text[doc_of(cache, t0)] for t0, _ in data.train_examples.pieces}
    assert held and not (held & trained)
    assert trained == set(text) - held


def piece_texts(cache, data) -> set[tuple[int, ...]]:
    """The token ids of every training piece the packing made."""
    tokens = np.asarray(cache.tokens)
    return {tuple(tokens[t0:t1].tolist()) for t0, t1 in data.train_examples.pieces}


def test_mlm_rows_hold_whole_documents(bert):
    tok, cache = bert
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=16, nsp=False, seed=0)
    assert data.train_examples.fill > 0.95
    pieces = piece_texts(cache, data)
    n_docs = 0
    for i in range(4):
        batch = data.train_batch(i)
        ids, seg = original(batch), batch["attention_mask"]
        assert set(batch) == {"input_ids", "attention_mask", "labels"} and ids.shape[1] <= MAX_LEN
        assert (batch["labels"][seg == 0] == -100).all() and (ids[seg == 0] == tok.pad_id).all()
        for r in range(ids.shape[0]):
            assert (seg[r][seg[r] > 0].diff() >= 0).all() and (seg[r][: int((seg[r] > 0).sum())] > 0).all()
            for doc in segments(ids, seg, r):  # [CLS] a whole piece [SEP]
                assert doc[0] == tok.cls_id and doc[-1] == tok.sep_id and tuple(doc[1:-1]) in pieces
                n_docs += 1
    assert n_docs > 4 * 16  # rows hold several documents


def test_nsp_pairs_packed(bert):
    tok, cache = bert
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=16, nsp=True, seed=0)
    chunks = piece_texts(cache, data)
    labels = []
    for i in range(6):
        batch = data.train_batch(i)
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "next_sentence_label", "labels"}
        ids, seg, types, nsp = original(batch), batch["attention_mask"], batch["token_type_ids"], \
            batch["next_sentence_label"]
        assert nsp.shape == (16, int(seg.max()))
        for r in range(ids.shape[0]):
            pairs = segments(ids, seg, r)
            assert (nsp[r, len(pairs):] == -100).all() and (nsp[r, : len(pairs)] >= 0).all()
            for k, pair in enumerate(pairs):
                t = types[r][seg[r] == k + 1].tolist()
                cut = pair.index(tok.sep_id)
                a, b = pair[1:cut], pair[cut + 1: -1]
                assert pair[0] == tok.cls_id and pair[-1] == tok.sep_id and len(a) >= 1
                assert t == [0] * (cut + 1) + [1] * (len(pair) - cut - 1)
                if int(nsp[r, k]) == 0:
                    assert tuple(a + b) in chunks  # A and its true continuation: one chunk, whole
                else:
                    assert tuple(a + b) not in chunks
                labels.append(int(nsp[r, k]))
    n = len(labels)
    assert abs(np.mean(labels) - 0.5) < 4 * (0.25 / n) ** 0.5


@pytest.mark.parametrize("nsp", [True, False])
def test_mask_counts_follow_the_mlm_rule(bert, nsp):
    tok, cache = bert
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=32, nsp=nsp, seed=0)
    specials = torch.tensor(tok.special_ids)
    for i in range(5):
        b = data.train_batch(i)
        eligible = (~torch.isin(original(b), specials)).sum(1).double()
        predicted = (b["labels"] != -100).sum(1)
        assert ((predicted - (0.15 * eligible).clamp(min=1)).abs() <= 0.5 + 1e-9).all()


def test_electra_batches_are_rtd_masked(bert):
    tok, cache = bert
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=MAX_LEN, batch_size=16, nsp=False, seed=0,
                            mask_fn=rtd_mask)
    b = data.train_batch(0)
    assert set(b) == {"input_ids", "attention_mask", "labels", "replace_u"}
    sel = b["labels"] != -100
    masked = (b["input_ids"] == tok.mask_id) & sel
    assert (b["input_ids"][sel & ~masked] == b["labels"][sel & ~masked]).all()  # no random replacements
    assert 0.75 < masked.sum() / sel.sum() < 0.95


@pytest.mark.parametrize("nsp", [True, False])
def test_train_batch_deterministic_and_epochs_visit_every_row_once(bert, nsp):
    tok, cache = bert
    spec = MLMSpec.from_tokenizer(tok)
    a = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=5)
    b = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=5)
    x3, x7 = a.train_batch(3), a.train_batch(7)
    b.train_batch(7)
    assert all(torch.equal(x3[k], v) for k, v in b.train_batch(3).items())
    assert not torch.equal(original(x3)[:, :8], original(x7)[:, :8])
    c = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=8, nsp=nsp, seed=6)
    assert not torch.equal(original(x3)[:, :8], original(c.train_batch(3))[:, :8])
    e1, e2 = a.eval_batches(3), b.eval_batches(3)
    assert len(e1) == len(e2) > 0 and all(torch.equal(p[k], q[k]) for p, q in zip(e1, e2) for k in p)
    # one epoch of batches holds every training piece once
    bs = 64
    data = BertPretrainData(cache, spec, max_len=MAX_LEN, batch_size=bs, nsp=False, seed=1)
    n = len(data.train_examples)
    seen = []
    for i in range(-(-n // bs)):
        batch = data.train_batch(i)
        ids, seg = original(batch), batch["attention_mask"]
        rows = [tuple(tuple(d) for d in segments(ids, seg, r)) for r in range(bs)]
        seen.extend(rows)
    tokens = np.asarray(cache.tokens)
    packed = [tuple(tuple([tok.cls_id] + tokens[t0:t1].tolist() + [tok.sep_id]) for t0, t1 in
                    data.train_examples.rows(np.array([r]))[0]) for r in range(n)]
    assert Counter(seen[:n]) == Counter(packed)


def test_sentence_chunks_keep_sentences_whole(bert):
    _, cache = bert
    so = np.asarray(cache.sent_offsets)
    chunks = sentence_chunks(cache, np.arange(cache.n_documents), 30)
    assert (np.diff(chunks, axis=1) <= 30).all() and (np.diff(chunks, axis=1) > 0).all()
    assert all(doc_of(cache, t0) == doc_of(cache, t1 - 1) for t0, t1 in chunks)
    sent_len = np.diff(so)
    for t in np.concatenate([chunks[:, 0], chunks[:, 1]]):
        if t not in so:  # a chunk cuts a sentence only if that sentence is longer than the budget
            assert sent_len[np.searchsorted(so, t, "right") - 1] > 30


@pytest.fixture(scope="module")
def bpe(corpus):
    tmp, path, sentences, _ = corpus
    tok = Tokenizer.train("bpe", sentences, vocab_size=1200)
    return tok, load_corpus(path, tok, cache_dir=tmp / "cache_bpe", blank_line_docs=True)


@pytest.mark.parametrize("noise", ["token-masking", "bart-base"])
def test_bart_rows_noise_each_document_alone(bpe, noise):
    tok, cache = bpe
    data = DenoisePretrainData(cache, noise_ids(tok), noise, full_stops=full_stop_ids(tok), max_len=MAX_LEN,
                               batch_size=8, seed=0)
    assert data.train_examples.fill > 0.95
    pieces = piece_texts(cache, data)
    checked = 0
    for i in range(3):
        b = data.train_batch(i)
        assert set(b) == {"input_ids", "attention_mask", "labels", "decoder_input_ids", "decoder_attention_mask"}
        assert b["decoder_input_ids"].shape[1] <= MAX_LEN
        for r in range(8):
            targets = segments(b["labels"], b["decoder_attention_mask"], r)
            starts = segments(b["decoder_input_ids"], b["decoder_attention_mask"], r)
            sources = segments(b["input_ids"], b["attention_mask"], r)
            assert len(targets) == len(sources) == len(starts)
            for t, d, s in zip(targets, starts, sources):
                assert t[0] == tok.bos_id and t[-1] == tok.eos_id and tuple(t[1:-1]) in pieces
                assert d == [tok.eos_id] + t[:-1]  # shifted right on its own, behind </s>
                assert s[0] == tok.bos_id and s[-1] == tok.eos_id
                if noise == "token-masking":  # the same document, 30% of its body masked
                    assert len(s) == len(t) and all(x == y or x == tok.mask_id for x, y in zip(s, t))
                else:
                    assert Counter(s) != Counter(t) or len(t) <= 3
                checked += 1
    assert checked > 3 * 8


def test_length_grouped_epochs_are_permutations_of_similar_length_batches():
    n, b = 1000, 8
    key = np.random.default_rng(0).integers(1, 100, n)
    plain, grouped = EpochOrder(n, 3), EpochOrder(n, 3, key, b)
    for epoch in range(2):
        rows = np.concatenate([grouped.indices(epoch * (n // b) + i, b) for i in range(n // b)])
        assert sorted(rows.tolist()) == list(range(n))  # every row once an epoch
    spread = lambda order: np.mean([np.ptp(key[order.indices(i, b)]) for i in range(n // b)])  # noqa: E731
    assert spread(grouped) < 0.2 * spread(plain)  # a batch's rows have similar lengths
    first = [key[grouped.indices(i, b)].mean() for i in range(n // b)]
    assert np.corrcoef(np.arange(len(first)), first)[0, 1] < 0.3  # but batches do not come short to long
    assert not np.array_equal(grouped.indices(0, b), EpochOrder(n, 4, key, b).indices(0, b))


def test_t5_batches_group_rows_by_decoder_length(unigram):
    tok, cache = unigram
    data = SpanPretrainData(cache, tok.sentinel_ids, tok.eos_id, max_len=MAX_LEN, batch_size=8, seed=0,
                            decoder_start_id=tok.pad_id, pad_id=tok.pad_id)
    steps = len(data.train_examples) // 8

    def decoder_fill():
        masks = [data.train_batch(i)["decoder_attention_mask"] for i in range(steps)]
        return sum(int((m > 0).sum()) for m in masks) / sum(m.numel() for m in masks)
    grouped = decoder_fill()
    data._order = EpochOrder(len(data.train_examples), 0)  # the same rows in plain random batches
    assert grouped > decoder_fill() + 0.02 and grouped > 0.97


@pytest.fixture(scope="module")
def unigram(corpus):
    tmp, path, sentences, _ = corpus
    tok = Tokenizer.train("unigram", sentences, vocab_size=1200)
    return tok, load_corpus(path, tok, cache_dir=tmp / "cache_t5", blank_line_docs=True)


def test_t5_rows_corrupt_each_document_alone(unigram):
    tok, cache = unigram
    data = SpanPretrainData(cache, tok.sentinel_ids, tok.eos_id, max_len=MAX_LEN, batch_size=8, seed=0,
                            decoder_start_id=tok.pad_id, pad_id=tok.pad_id)
    assert data.train_examples.fill > 0.95
    pieces = piece_texts(cache, data)
    sentinels = set(tok.sentinel_ids)
    checked = 0
    for i in range(6):
        b = data.train_batch(i)
        assert b["input_ids"].shape[1] <= MAX_LEN
        for r in range(8):
            sources = segments(b["input_ids"], b["attention_mask"], r)
            targets = segments(b["labels"], b["decoder_attention_mask"], r)
            starts = segments(b["decoder_input_ids"], b["decoder_attention_mask"], r)
            for s, t, d in zip(sources, targets, starts):
                assert s[-1] == t[-1] == tok.eos_id and d == [tok.pad_id] + t[:-1]
                # putting each span back at its sentinel rebuilds a whole training piece
                spans, current = {}, None
                for x in t[:-1]:
                    if x in sentinels:
                        current = x
                        spans[x] = []
                    else:
                        spans[current].append(x)
                rebuilt = [y for x in s[:-1] for y in (spans[x] if x in sentinels else [x])]
                assert tuple(rebuilt) in pieces
                n, k = noise_counts(len(rebuilt))
                assert (len(s), len(t)) == (len(rebuilt) - n + k + 1, n + k + 1)  # T5's exact lengths
                checked += 1
    assert checked > 6 * 8


def test_t5_noise_density_is_pretrains_mlm_rate(unigram):
    """`pretrain --model t5 --mlm-rate R` corrupts R of each piece's tokens (T5 §3.3.4's corruption rate)."""
    from clozeformer.train.pretrain import OBJECTIVES

    tok, cache = unigram
    sentinels = torch.tensor(tok.sentinel_ids)
    for rate in (0.15, 0.5):
        data = OBJECTIVES["span"].data(cache, tok, max_len=MAX_LEN, batch_size=8, seed=0, eval_fraction=0.02,
                                       mlm_rate=rate, nsp=False, whole_word=False, noise="bart-base")
        noise = text = 0
        for i in range(4):
            labels = data.train_batch(i)["labels"]
            noise += int(((labels >= 0) & ~torch.isin(labels, sentinels) & (labels != tok.eos_id)).sum())
            ids = data.train_batch(i)["input_ids"]
            text += int(((ids != tok.pad_id) & ~torch.isin(ids, sentinels) & (ids != tok.eos_id)).sum())
        assert abs(noise / (noise + text) - rate) < 0.03, (rate, noise / (noise + text))


def test_tiny_corpora(bert, tmp_path):
    tok, _ = bert
    path = tmp_path / "one.txt"
    path.write_text("just one short document here\n", encoding="utf-8")
    cache = load_corpus(path, tok, cache_dir=tmp_path / "cache")
    # one document: nothing can be held out, all of it trains
    data = BertPretrainData(cache, MLMSpec.from_tokenizer(tok), max_len=16, batch_size=2, nsp=False)
    assert len(data.eval_examples) == 0 and len(data.train_examples) == 1
    assert data.eval_batches() == [] and data.train_batch(0)["input_ids"].shape[0] == 2
