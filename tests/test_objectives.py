"""Property tests for the MLM and NSP objectives (BERT §3.1, google-research/bert).

MLM statistics run over 512 × 2048 ≈ 1M tokens, so the 4σ binomial bounds are tight
(about ±0.5 percentage point on the 80/10/10 split).
"""

import math

import pytest
import torch

from clozeformer.objectives.mlm import IGNORE, mlm_mask
from clozeformer.objectives.nsp import nsp_pairs

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = [PAD, UNK, CLS, SEP, MASK]
V = 30000
FIRST_WORD_ID = 5  # ids 5..V-1 are ordinary tokens


def make_rows(b=512, t=2048, seed=0, vocab=V):
    """[CLS] A [SEP] B [SEP] [PAD]…: random ordinary ids, random lengths, padded tails."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_WORD_ID, vocab, (b, t), generator=g)
    used = torch.randint(t // 2, t + 1, (b,), generator=g)  # used positions per row, specials included
    mid = torch.randint(2, t // 2 - 1, (b,), generator=g)  # position of the middle [SEP]
    p = torch.arange(t)[None, :]
    ids = torch.where(p == 0, CLS, ids)
    ids = torch.where(p == mid[:, None], SEP, ids)
    ids = torch.where(p == used[:, None] - 1, SEP, ids)
    ids = torch.where(p >= used[:, None], PAD, ids)
    return ids


def sigma(p, n):
    return math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def masked(rows):
    return mlm_mask(rows, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, generator=torch.Generator().manual_seed(1))


# ---- MLM, token level ---------------------------------------------------------------------


def test_mlm_predicted_count_per_row(rows, masked):
    eligible = (~torch.isin(rows, torch.tensor(SPECIALS))).sum(1)
    count = (masked["labels"] != IGNORE).sum(1)
    exact = eligible.double() * 0.15
    # round(0.15 × eligible), at least 1; at exact .5 ties either neighbour is accepted here
    # (see test_mlm_budget_ties_match_python_round for the tie rule)
    assert ((count.double() - exact).abs() <= 0.5 + 1e-9).all()
    assert (count >= 1).all()
    away_from_tie = (exact - exact.floor() - 0.5).abs() > 1e-6
    expected = torch.tensor([max(1, round(float(x))) for x in exact])
    assert torch.equal(count[away_from_tie], expected[away_from_tie])
    assert away_from_tie.float().mean() > 0.9  # the check above covered most rows


def test_mlm_budget_small_rows():
    # e eligible tokens per row, one row per e; rows of only specials predict nothing
    t = 24
    rows = torch.full((t, t), PAD)
    for e in range(t - 2):
        rows[e, 0] = CLS
        rows[e, 1 : 1 + e] = torch.arange(100, 100 + e)
        rows[e, 1 + e] = SEP
    out = mlm_mask(rows, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, generator=torch.Generator().manual_seed(0))
    count = (out["labels"] != IGNORE).sum(1)
    assert count[0] == 0  # [CLS] [SEP]: nothing eligible
    for e in range(1, t - 2):
        assert abs(count[e].item() - max(1, 0.15 * e)) <= 0.5 + 1e-9, e
    for e in range(1, 4):  # 0.15, 0.3, 0.45 round to 0: at least one prediction
        assert count[e] == 1


def test_mlm_budget_ties_match_python_round():
    e = torch.arange(1, 2100)
    t = int(e.max()) + 2
    p = torch.arange(t)[None, :]
    rows = torch.where(p <= e[:, None], 7, PAD)
    rows[:, 0] = CLS
    out = mlm_mask(rows, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, generator=torch.Generator().manual_seed(0))
    count = (out["labels"] != IGNORE).sum(1)
    expected = torch.tensor([max(1, round(int(x) * 0.15)) for x in e])  # google-research create_pretraining_data
    assert torch.equal(count, expected), e[count != expected].tolist()[:10]


def test_mlm_80_10_10(rows, masked):
    labels, out = masked["labels"], masked["input_ids"]
    sel = labels != IGNORE
    n = int(sel.sum())
    assert n > 100_000
    is_mask = (out == MASK) & sel
    kept = (out == rows) & sel
    rand = sel & ~is_mask & ~kept
    for part, p in ((is_mask, 0.8), (rand, 0.1 * (1 - 1 / (V - 5))), (kept, 0.1 + 0.1 / (V - 5))):
        frac = int(part.sum()) / n
        assert abs(frac - p) < 4 * sigma(p, n), (frac, p)


def test_mlm_random_replacements_uniform_non_special(rows, masked):
    labels, out = masked["labels"], masked["input_ids"]
    sel = labels != IGNORE
    rand = out[sel & (out != MASK) & (out != rows)].double()
    assert not torch.isin(rand.long(), torch.tensor(SPECIALS)).any()
    assert rand.min() >= FIRST_WORD_ID and rand.max() < V
    n = rand.numel()
    lo, hi = FIRST_WORD_ID, V - 1  # uniform over the ordinary ids
    mean, sd = (lo + hi) / 2, (hi - lo + 1) / math.sqrt(12)
    assert abs(rand.mean().item() - mean) < 4 * sd / math.sqrt(n)
    low = (rand < mean).double().mean().item()  # half the draws in the lower half of the id range
    assert abs(low - 0.5) < 4 * sigma(0.5, n)
    # the replacement is independent of the original token
    corr = torch.corrcoef(torch.stack([rand, rows[sel & (out != MASK) & (out != rows)].double()]))[0, 1]
    assert abs(corr.item()) < 4 / math.sqrt(n)


def test_mlm_specials_padding_and_unselected_untouched(rows, masked):
    labels, out = masked["labels"], masked["input_ids"]
    special = torch.isin(rows, torch.tensor(SPECIALS))
    assert (labels[special] == IGNORE).all()
    assert torch.equal(out[special], rows[special])
    assert torch.equal(out[labels == IGNORE], rows[labels == IGNORE])
    assert torch.equal(labels[labels != IGNORE], rows[labels != IGNORE])
    assert labels.dtype == rows.dtype and out.shape == rows.shape
    # positions never selected stay unchanged: [MASK] and replacements occur only at labelled positions
    assert not ((out != rows) & (labels == IGNORE)).any()


def test_mlm_positions_spread_uniformly(rows, masked):
    # selection is uniform over eligible positions: first and second half of eligible tokens equally hit
    sel = (masked["labels"] != IGNORE)
    eligible = ~torch.isin(rows, torch.tensor(SPECIALS))
    rank = eligible.long().cumsum(1)
    first_half = (rank <= eligible.sum(1, keepdim=True) // 2) & eligible
    n = int(sel.sum())
    frac = int((sel & first_half).sum()) / n
    expected = int(first_half.sum()) / int(eligible.sum())
    assert abs(frac - expected) < 4 * sigma(expected, n)


def test_mlm_generator_determinism():
    rows = make_rows(64, 256, seed=3)
    kw = dict(mask_id=MASK, vocab_size=V, special_ids=SPECIALS)
    a = mlm_mask(rows, generator=torch.Generator().manual_seed(5), **kw)
    b = mlm_mask(rows, generator=torch.Generator().manual_seed(5), **kw)
    c = mlm_mask(rows, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_mlm_special_ids_as_tensor_and_max_predictions():
    rows = make_rows(16, 256, seed=4)
    out = mlm_mask(rows, mask_id=MASK, vocab_size=V, special_ids=torch.tensor(SPECIALS),
                   generator=torch.Generator().manual_seed(0), max_predictions=7)
    assert ((out["labels"] != IGNORE).sum(1) == 7).all()


# ---- MLM, whole word ----------------------------------------------------------------------

CONT_FROM = 10_000  # ids ≥ this are continuation pieces ("##…"): 2/3 of random tokens, mean word ≈ 3 pieces


def continuation_mask(vocab=V):
    cont = torch.zeros(vocab, dtype=torch.bool)
    cont[CONT_FROM:] = True
    return cont


def words_of(rows, cont):
    """word id per position (-1 for specials), and whether the position starts a word."""
    eligible = ~torch.isin(rows, torch.tensor(SPECIALS))
    prev = torch.nn.functional.pad(eligible[:, :-1], (1, 0), value=False)
    start = eligible & ~(cont[rows] & prev)
    wid = start.long().flatten().cumsum(0).view_as(rows) - 1  # global word index
    wid = torch.where(eligible, wid, -1)
    return wid, start, eligible


@pytest.fixture(scope="module")
def ww(rows):
    cont = continuation_mask()
    out = mlm_mask(rows, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, continuation=cont,
                   generator=torch.Generator().manual_seed(2))
    return cont, out


def test_whole_word_all_or_nothing(rows, ww):
    cont, out = ww
    wid, start, eligible = words_of(rows, cont)
    w = wid[eligible]
    n_words = int(start.sum())
    pieces = torch.bincount(w, minlength=n_words)
    sel = (out["labels"] != IGNORE)[eligible].long()
    sel_per_word = torch.bincount(w, weights=sel.double(), minlength=n_words).long()
    assert ((sel_per_word == 0) | (sel_per_word == pieces)).all()
    # one 80/10/10 draw per word: a selected word is all [MASK] or has no [MASK] at all
    is_mask = (out["input_ids"] == MASK)[eligible].double()
    mask_per_word = torch.bincount(w, weights=is_mask, minlength=n_words).long()
    chosen = sel_per_word > 0
    assert ((mask_per_word[chosen] == 0) | (mask_per_word[chosen] == pieces[chosen])).all()
    # …and a non-[MASK] word is either entirely replaced or entirely kept (a random piece equals the
    # original with probability 1/V, so allow a handful of such coincidences)
    changed = (out["input_ids"] != rows)[eligible].double()
    changed_per_word = torch.bincount(w, weights=changed, minlength=n_words).long()
    other = chosen & (mask_per_word == 0)
    mixed = other & (changed_per_word != 0) & (changed_per_word != pieces)
    assert int(mixed.sum()) <= 10
    # word-level split is 80/10/10
    m = int(chosen.sum())
    frac_mask = int((chosen & (mask_per_word == pieces)).sum()) / m
    frac_kept = int((other & (changed_per_word == 0)).sum()) / m
    assert abs(frac_mask - 0.8) < 4 * sigma(0.8, m)
    assert abs(frac_kept - 0.1) < 4 * sigma(0.1, m) + 10 / m


def test_whole_word_budget(rows, ww):
    cont, out = ww
    wid, start, eligible = words_of(rows, cont)
    e = eligible.sum(1)
    budget = (e.double() * 0.15 + 0.5 + 1e-9).floor().clamp(min=1)  # round(0.15 e), ties either way
    count = (out["labels"] != IGNORE).sum(1)
    assert (count <= budget).all()
    mean_word = eligible.sum().item() / start.sum().item()
    assert 2.5 < mean_word < 3.5  # the continuation design above
    # Google's rule: a word that overflows is skipped and later words still fill the gap, so a
    # row stops short only when no unchosen word fits what is left
    n_words = int(start.sum())
    pieces = torch.bincount(wid[eligible], minlength=n_words)
    chosen = torch.bincount(wid[eligible], weights=(out["labels"] != IGNORE)[eligible].double(),
                            minlength=n_words) > 0
    row_of = torch.arange(rows.shape[0])[:, None].expand_as(rows)[start]
    exact = (e.double() * 0.15).round().clamp(min=1)  # the code's rule: round half to even
    for r in range(rows.shape[0]):
        left = int(exact[r] - count[r])
        unchosen = pieces[(row_of == r) & ~chosen]
        assert left == 0 or (unchosen > left).all(), (r, left, unchosen.min())
    assert count.sum() / budget.sum() > 0.99
    assert (count >= 1).all()
    # a short text of one long word still gets a target: that word, over the budget of 1
    word = torch.tensor([[CLS, 50, CONT_FROM + 1, CONT_FROM + 2, SEP]])
    one = mlm_mask(word, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, continuation=cont,
                   generator=torch.Generator().manual_seed(0))
    assert (one["labels"][0] != IGNORE).tolist() == [False, True, True, True, False]
    assert torch.equal(out["input_ids"][~eligible], rows[~eligible])
    assert torch.equal(out["labels"][out["labels"] != IGNORE], rows[out["labels"] != IGNORE])


def test_whole_word_continuation_after_special_starts_a_word():
    # [CLS] ##a ##b [SEP] ##c w [SEP] [PAD]
    a, b, c, w = CONT_FROM + 1, CONT_FROM + 2, CONT_FROM + 3, 50
    row = torch.tensor([[CLS, a, b, SEP, c, w, SEP, PAD]])
    cont = continuation_mask()
    seen = set()
    for seed in range(200):
        out = mlm_mask(row, mask_id=MASK, vocab_size=V, special_ids=SPECIALS, continuation=cont, rate=0.4,
                       generator=torch.Generator().manual_seed(seed))
        picked = tuple((out["labels"][0] != IGNORE).nonzero().flatten().tolist())
        seen.add(picked)
    # 4 eligible tokens, budget round(1.6) = 2; words are {1, 2}, {4}, {5}: "##a" after [CLS] and
    # "##c" after [SEP] start words, "##b" continues "##a"
    # a word that overflows is skipped, the next one-piece word still fills the budget
    assert seen == {(1, 2), (4, 5)}


def test_whole_word_generator_determinism():
    rows = make_rows(32, 256, seed=9)
    kw = dict(mask_id=MASK, vocab_size=V, special_ids=SPECIALS, continuation=continuation_mask())
    a = mlm_mask(rows, generator=torch.Generator().manual_seed(1), **kw)
    b = mlm_mask(rows, generator=torch.Generator().manual_seed(1), **kw)
    c = mlm_mask(rows, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])


# ---- NSP ----------------------------------------------------------------------------------

NCLS, NSEP, NPAD = 101, 102, 0
B_MARK = 100_000  # first token of row i's B is B_MARK + i, so a B can be traced to its row


def pair_inputs(n, seed, *, a_max=20, b_max=20, docs_per=2):
    g = torch.Generator().manual_seed(seed)
    a_len = torch.randint(1, a_max + 1, (n,), generator=g)
    b_len = torch.randint(1, b_max + 1, (n,), generator=g)
    a = torch.randint(200, 1000, (n, a_max), generator=g)
    b = torch.randint(1000, 2000, (n, b_max), generator=g)
    b[:, 0] = B_MARK + torch.arange(n)
    p = torch.arange(max(a_max, b_max))[None, :]
    a = torch.where(p[:, :a_max] < a_len[:, None], a, NPAD)
    b = torch.where(p[:, :b_max] < b_len[:, None], b, NPAD)
    doc = torch.arange(n) // docs_per
    return a, a_len, b, b_len, doc


def split_pair(ids, mask):
    """(A, B) token lists of one row, checking the [CLS] A [SEP] B [SEP] frame."""
    used = int(mask.sum())
    toks = ids[:used].tolist()
    assert toks[0] == NCLS and toks[-1] == NSEP
    first = toks.index(NSEP)
    assert toks.count(NSEP) == 2
    assert (ids[used:] == NPAD).all()
    return toks[1:first], toks[first + 1 : -1]


def test_nsp_labels_balance_and_donors():
    n, max_len = 4000, 48
    a, a_len, b, b_len, doc = pair_inputs(n, 0)
    out = nsp_pairs(a, a_len, b, b_len, doc, max_len=max_len, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD,
                    generator=torch.Generator().manual_seed(0))
    label = out["next_sentence_label"]
    assert label.shape == (n,) and set(label.unique().tolist()) <= {0, 1}
    frac = label.double().mean().item()
    assert abs(frac - 0.5) < 4 * sigma(0.5, n)
    donors = set()
    for i in range(n):
        A, B = split_pair(out["input_ids"][i], out["attention_mask"][i])
        assert A == a[i, : a_len[i]].tolist()  # no truncation needed: 20 + 20 + 3 ≤ 48
        j = B[0] - B_MARK
        assert 0 <= j < n
        assert B == b[j, : b_len[j]].tolist()
        if label[i] == 0:
            assert j == i
        else:
            assert doc[j] != doc[i]
            donors.add(j)
    assert len(donors) > n // 4  # donors are spread over many rows, not one


def test_nsp_keeps_half_random_when_one_document_dominates_the_batch():
    """Batches of 64 rows, 90% from one document: the length-neighbour and shift tries left a third of the rows
    that wanted a random B with their true one (NotNext 36%); any row of another document now serves."""
    g = torch.Generator().manual_seed(0)
    labels, n = [], 64
    for _ in range(200):
        doc = (torch.rand(n, generator=g) < 0.1).long()
        a_len, b_len = torch.randint(1, 20, (n,), generator=g), torch.randint(1, 20, (n,), generator=g)
        a, b = torch.full((n, 20), 7), torch.arange(n)[:, None].expand(n, 20) + B_MARK
        out = nsp_pairs(a, a_len, b, b_len, doc, max_len=48, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD, generator=g)
        for i in out["next_sentence_label"].nonzero().squeeze(1).tolist():
            _, B = split_pair(out["input_ids"][i], out["attention_mask"][i])
            assert doc[B[0] - B_MARK] != doc[i]  # a random B is always from another document
        labels.append(out["next_sentence_label"])
    assert abs(torch.cat(labels).double().mean().item() - 0.5) < 4 * sigma(0.5, 200 * n)


def test_nsp_frame_token_types_and_attention():
    n, max_len = 500, 40
    a, a_len, b, b_len, doc = pair_inputs(n, 1, a_max=30, b_max=30)
    out = nsp_pairs(a, a_len, b, b_len, doc, max_len=max_len, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD,
                    generator=torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == out["token_type_ids"].shape == out["attention_mask"].shape == (n, max_len)
    for i in range(n):
        ids, tt, am = out["input_ids"][i], out["token_type_ids"][i], out["attention_mask"][i]
        A, B = split_pair(ids, am)
        used = int(am.sum())
        assert used == len(A) + len(B) + 3 <= max_len
        assert am[:used].eq(1).all() and am[used:].eq(0).all()
        # [CLS] A [SEP] -> 0, B [SEP] -> 1, padding -> 0
        assert tt[: len(A) + 2].eq(0).all()
        assert tt[len(A) + 2 : used].eq(1).all()
        assert tt[used:].eq(0).all()
        assert len(A) >= 1 and len(B) >= 1


def truncate_seq_pair(a: list, b: list, budget: int) -> None:
    """google-research/bert create_pretraining_data.truncate_seq_pair, trimming from the end."""
    while len(a) + len(b) > budget:
        longer = a if len(a) > len(b) else b
        longer.pop()


@pytest.mark.parametrize("max_len", [4, 5, 12, 33, 64])
def test_nsp_truncation_matches_truncate_seq_pair(max_len):
    n, width = 3000, 70
    g = torch.Generator().manual_seed(max_len)
    a_len = torch.randint(0, width + 1, (n,), generator=g)
    b_len = torch.randint(0, width + 1, (n,), generator=g)
    # a share of pairs near the budget, where the closed form is easiest to get wrong
    near = torch.rand(n, generator=g) < 0.5
    a_len = torch.where(near, torch.randint(0, max_len + 2, (n,), generator=g), a_len)
    b_len = torch.where(near, torch.randint(0, max_len + 2, (n,), generator=g), b_len)
    a = torch.randint(200, 1000, (n, width), generator=g)
    b = torch.randint(1000, 2000, (n, width), generator=g)
    out = nsp_pairs(a, a_len, b, b_len, torch.arange(n), max_len=max_len, cls_id=NCLS, sep_id=NSEP,
                    pad_id=NPAD, generator=g, next_prob=1.0)  # every row keeps its own B
    assert (out["next_sentence_label"] == 0).all()
    assert out["input_ids"].shape == (n, max_len)
    for i in range(n):
        A, B = split_pair(out["input_ids"][i], out["attention_mask"][i])
        ra, rb = a[i, : a_len[i]].tolist(), b[i, : b_len[i]].tolist()
        truncate_seq_pair(ra, rb, max_len - 3)
        assert (A, B) == (ra, rb), (i, int(a_len[i]), int(b_len[i]))


def test_nsp_per_pair_limits():
    """Packed pretraining gives each pair the room its true A + B took: a foreign B is cut to fit it."""
    n = 2000
    a, a_len, b, b_len, doc = pair_inputs(n, 7, a_max=30, b_max=30)
    limit = a_len + b_len + 3
    out = nsp_pairs(a, a_len, b, b_len, doc, max_len=limit, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD,
                    generator=torch.Generator().manual_seed(7))
    assert out["input_ids"].shape == (n, int(limit.max()))
    used = out["attention_mask"].sum(1)
    assert (used <= limit).all()
    true = out["next_sentence_label"] == 0
    assert torch.equal(used[true], limit[true]) and (~true).sum() > n // 3  # a true pair is whole
    # a random B comes from a row whose B is as long or a little longer: its slot stays full
    assert used[~true].sum() >= 0.99 * limit[~true].sum()
    for i in torch.nonzero(~true).flatten().tolist():  # a random pair is cut as truncate_seq_pair would
        A, B = split_pair(out["input_ids"][i], out["attention_mask"][i])
        j = B[0] - B_MARK
        ra, rb = a[i, : a_len[i]].tolist(), b[j, : b_len[j]].tolist()
        truncate_seq_pair(ra, rb, int(limit[i]) - 3)
        assert (A, B) == (ra, rb)


def test_nsp_generator_determinism_and_single_document():
    a, a_len, b, b_len, doc = pair_inputs(64, 2)
    kw = dict(max_len=48, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD)
    x = nsp_pairs(a, a_len, b, b_len, doc, generator=torch.Generator().manual_seed(3), **kw)
    y = nsp_pairs(a, a_len, b, b_len, doc, generator=torch.Generator().manual_seed(3), **kw)
    z = nsp_pairs(a, a_len, b, b_len, doc, generator=torch.Generator().manual_seed(4), **kw)
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["next_sentence_label"], z["next_sentence_label"])
    # one document only: no foreign B exists, so every row keeps its own (label 0)
    s = nsp_pairs(a, a_len, b, b_len, torch.zeros(64, dtype=torch.long), generator=torch.Generator().manual_seed(3),
                  **kw)
    assert (s["next_sentence_label"] == 0).all()
    for i in range(64):
        A, B = split_pair(s["input_ids"][i], s["attention_mask"][i])
        assert B == b[i, : b_len[i]].tolist()


def test_nsp_when_no_row_has_a_second_segment():
    """Documents of one token give every pair an empty B (b is [N, 0]): the pairs are [CLS] A [SEP] [SEP]."""
    a = torch.tensor([[7], [8], [9]])
    out = nsp_pairs(a, torch.ones(3, dtype=torch.long), a[:, :0], torch.zeros(3, dtype=torch.long),
                    torch.arange(3), max_len=8, cls_id=NCLS, sep_id=NSEP, pad_id=NPAD,
                    generator=torch.Generator().manual_seed(0))
    assert out["input_ids"][:, :4].tolist() == [[NCLS, t, NSEP, NSEP] for t in (7, 8, 9)]
    assert out["attention_mask"].sum(1).tolist() == [4, 4, 4]


def test_objective_rates_out_of_range_are_named():
    """rate 0 or nan still masked a token a row, rate 2 every token, a mask id outside the vocabulary was written
    into the input, next_prob 2 made every pair IsNext."""
    from clozeformer.objectives.mlm import mlm_mask
    from clozeformer.objectives.nsp import nsp_pairs

    ids, g = torch.arange(5, 25).reshape(2, 10), torch.Generator().manual_seed(0)
    for kw in (dict(rate=0.0), dict(rate=float("nan")), dict(rate=2.0), dict(mask_frac=0.8, random_frac=0.5),
               dict(mask_frac=-1.0)):
        with pytest.raises(ValueError, match="allowed: 0 < rate < 1, mask_frac and random_frac ≥ 0 with a sum ≤ 1"):
            mlm_mask(ids, mask_id=4, vocab_size=30, special_ids=[0, 1, 2, 3, 4], generator=g, **kw)
    with pytest.raises(ValueError, match="mask_id 500 is not an id of the 30-id vocabulary"):
        mlm_mask(ids, mask_id=500, vocab_size=30, special_ids=[0], generator=g)
    one = torch.tensor([3])
    with pytest.raises(ValueError, match="next_prob 2.0 is out of range"):
        nsp_pairs(ids, one.repeat(2), ids, one.repeat(2), torch.tensor([0, 1]), max_len=16, cls_id=2, sep_id=3,
                  pad_id=0, generator=g, next_prob=2.0)
