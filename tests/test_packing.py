"""Document-aware packing in the models: a packed row reads each of its documents as if alone.

A packed batch's attention_mask holds segment ids (0 pad, 1, 2, … per document of a row);
positions restart at each document and attention never crosses one. Every test runs the
same documents one by one and packed, and compares per-token outputs and losses.
"""

import pytest
import torch

from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.models.electra import ElectraConfig, ElectraForPreTraining
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration
from clozeformer.nn import attention, segment_ids, segment_mask, segment_positions, segment_starts

V = 60


def pack(rows: list[list[torch.Tensor]], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """rows of documents -> (ids [B, T] padded with `fill`, segment ids [B, T])."""
    width = max(sum(len(d) for d in docs) for docs in rows)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    seg = torch.zeros(len(rows), width, dtype=torch.long)
    for r, docs in enumerate(rows):
        at = 0
        for k, d in enumerate(docs):
            ids[r, at: at + len(d)] = d
            seg[r, at: at + len(d)] = k + 1
            at += len(d)
    return ids, seg


def places(rows):
    """(row, start, stop) of every document, in row-major order."""
    out = []
    for r, docs in enumerate(rows):
        at = 0
        for d in docs:
            out.append((r, at, at + len(d)))
            at += len(d)
    return out


def docs_of(lengths, seed, first=None, last=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        d = torch.randint(5, V, (n,), generator=g)
        if first is not None:
            d[0] = first
        if last is not None:
            d[-1] = last
        out.append(d)
    return out


LAYOUT = [[0, 1, 2], [3], [4, 5]]  # documents per row: three, one (with padding after it), two


@pytest.fixture(params=["dense", "varlen"])
def attention_path(request, monkeypatch):
    """Training encoders attend densely with a block-diagonal mask (CPU), or per document on nested
    tensors (CUDA's path, forced onto the CPU here)."""
    if request.param == "varlen":
        monkeypatch.setattr(attention, "VARLEN_DEVICES", ("cuda", "cpu"))


def test_segment_helpers():
    seg = torch.tensor([[1, 1, 2, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert segment_ids(seg) is seg and segment_ids(torch.tensor([[1, 1, 0]])) is None and segment_ids(None) is None
    assert segment_positions(seg).tolist() == [[0, 1, 0, 1, 2, 0, 0, 1], list(range(8))]
    assert segment_starts(seg).tolist() == [[1, 0, 1, 0, 0, 1, 0, 0], [1] + [0] * 7]
    m = segment_mask(seg, seg)[0, 0]
    assert m[2].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]  # a token sees its own document only
    assert m[6].all()  # padding queries see everything (no empty row), their outputs unused


@pytest.mark.parametrize("train", [False, True])
def test_bert_packed_row_equals_documents_alone(train, attention_path):
    torch.manual_seed(0)
    cfg = BertConfig.preset("tiny", vocab_size=V, dropout=0.0, attention_dropout=0.0)
    model = BertForPreTraining(cfg).train(train)
    docs = docs_of([6, 9, 4, 12, 5, 7], seed=1, first=2, last=3)  # [CLS] … [SEP]
    types = [torch.cat([torch.zeros(len(d) // 2), torch.ones(len(d) - len(d) // 2)]).long() for d in docs]
    labels = [torch.where(torch.rand(len(d), generator=torch.Generator().manual_seed(i)) < 0.3, d, -100)
              for i, d in enumerate(docs)]
    for lab in labels:
        lab[1] = 7  # at least one target per document
    nsp = torch.tensor([0, 1, 1, 0, 1, 0])
    rows = [[docs[i] for i in row] for row in LAYOUT]
    ids, seg = pack(rows)
    tt, _ = pack([[types[i] for i in row] for row in LAYOUT])
    lab, _ = pack([[labels[i] for i in row] for row in LAYOUT], fill=-100)
    nsp_packed = torch.full((3, 3), -100)
    for r, row in enumerate(LAYOUT):
        nsp_packed[r, : len(row)] = nsp[row]
    packed = model(ids, attention_mask=seg, token_type_ids=tt, labels=lab, next_sentence_label=nsp_packed)

    losses, counts = [], []
    for (r, a, b), d, t, y, n in zip(places(rows), docs, types, labels, nsp):
        alone = model(d[None], attention_mask=torch.ones(1, len(d), dtype=torch.long), token_type_ids=t[None],
                      labels=y[None], next_sentence_label=n[None])
        torch.testing.assert_close(packed.last_hidden_state[r, a:b], alone.last_hidden_state[0], atol=1e-5, rtol=1e-5)
        losses.append(alone.losses["mlm"])
        counts.append(int((y != -100).sum()))
        if not train:
            torch.testing.assert_close(packed.nsp_logits[len(losses) - 1], alone.nsp_logits[0], atol=1e-5, rtol=1e-5)
    # the MLM loss is the mean over every target token: the documents' losses weighted by their target counts
    expected = sum(loss * c for loss, c in zip(losses, counts)) / sum(counts)
    torch.testing.assert_close(packed.losses["mlm"], expected, atol=1e-5, rtol=1e-5)
    assert packed.nsp_logits.shape == (6, 2)


def test_electra_packed_row_equals_documents_alone():
    torch.manual_seed(0)
    cfg = ElectraConfig.preset("tiny", vocab_size=V, dropout=0.0, attention_dropout=0.0)
    model = ElectraForPreTraining(cfg).eval()
    docs = docs_of([6, 9, 4, 12, 5, 7], seed=2, first=2, last=3)
    rows = [[docs[i] for i in row] for row in LAYOUT]
    ids, seg = pack(rows)
    gen_packed = model.generator(ids, seg).last_hidden_state
    disc_packed = model.discriminator(ids, seg).logits
    for (r, a, b), d in zip(places(rows), docs):
        one = torch.ones(1, len(d), dtype=torch.long)
        torch.testing.assert_close(gen_packed[r, a:b], model.generator(d[None], one).last_hidden_state[0],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(disc_packed[r, a:b], model.discriminator(d[None], one).logits[0],
                                   atol=1e-5, rtol=1e-5)


def seq2seq_docs(seed, bos=None):
    sources = docs_of([6, 9, 4, 12, 5, 7], seed=seed, first=bos, last=2)
    targets = docs_of([5, 10, 4, 9, 6, 3], seed=seed + 1, first=bos, last=2)
    return sources, targets


@pytest.mark.parametrize("family", ["bart", "t5"])
@pytest.mark.parametrize("train", [False, True])
def test_seq2seq_packed_row_equals_documents_alone(family, train, attention_path):
    torch.manual_seed(0)
    if family == "bart":
        cfg = BartConfig.preset("tiny", vocab_size=V, dropout=0.0, attention_dropout=0.0)
        model, start, pad = BartForConditionalGeneration(cfg), cfg.decoder_start_token_id, cfg.pad_token_id
    else:
        cfg = T5Config.preset("tiny", vocab_size=V, dropout=0.0)
        model, start, pad = T5ForConditionalGeneration(cfg), cfg.decoder_start_token_id, cfg.pad_token_id
    model.train(train)
    sources, targets = seq2seq_docs(3, bos=0 if family == "bart" else None)
    dec_inputs = [torch.cat([torch.tensor([start]), t[:-1]]) for t in targets]  # shifted right per document
    src, src_seg = pack([[sources[i] for i in row] for row in LAYOUT], fill=pad)
    dec, dec_seg = pack([[dec_inputs[i] for i in row] for row in LAYOUT], fill=pad)
    lab, _ = pack([[targets[i] for i in row] for row in LAYOUT], fill=-100)
    packed = model(src, attention_mask=src_seg, decoder_input_ids=dec, decoder_attention_mask=dec_seg, labels=lab)
    rows = [[targets[i] for i in row] for row in LAYOUT]
    total = 0.0
    for (r, a, b), s, d, t in zip(places(rows), sources, dec_inputs, targets):
        alone = model(s[None], attention_mask=torch.ones(1, len(s), dtype=torch.long), decoder_input_ids=d[None],
                      labels=t[None])
        torch.testing.assert_close(packed.last_hidden_state[r, a:b], alone.last_hidden_state[0], atol=1e-5, rtol=1e-5)
        total = total + alone.loss * len(t)
    torch.testing.assert_close(packed.loss, total / sum(len(t) for t in targets), atol=1e-5, rtol=1e-5)


def test_plain_masks_are_unchanged():
    """A 0/1 mask (one document per row, padded at the end) is not a packed batch: same outputs as before."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=V)).eval()
    ids, seg = pack([[d] for d in docs_of([7, 4, 9], seed=4)])
    plain = (seg > 0).long()
    assert segment_ids(plain) is None
    # a packed mask of one document per row is the same batch
    torch.testing.assert_close(model(ids, attention_mask=plain).logits, model(ids, attention_mask=seg).logits)
