"""Property tests for BART's noising functions (objectives/denoise.py; BART §2.2).

Rows are `<s> body… </s> <pad>…` with random lengths, always including a row with an empty
body and one with a one-token body. Reference checks run in plain Python on small
batches; the statistical ones (Poisson span lengths, uniform permutations and rotations,
random-replacement ratio) use large batches and fail at p < 1e-4.
"""

import itertools
from collections import Counter

import pytest
import torch
from scipy import stats

from clozeformer.objectives.denoise import (
    IGNORE,
    NOISES,
    PRESETS,
    NoiseIds,
    NoiseStep,
    _infill,
    apply_noises,
    delete_tokens,
    denoise,
    infill_text,
    insert_tokens,
    mask_tokens,
    permute_sentences,
    rotate_document,
)

BOS, PAD, EOS, MASK, UNK, STOP = 0, 1, 2, 3, 4, 5
SPEC = NoiseIds(bos=BOS, eos=EOS, pad=PAD, mask=MASK, vocab_size=1000, special_ids=(UNK,))
SPECIALS = {BOS, PAD, EOS, MASK, UNK}
FIRST_WORD = 6  # ids 6..V-1 are words, 5 is the full stop
ALPHA = 1e-4  # significance of the statistical tests


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make_batch(b=48, t=40, seed=0, stop_rate=0.12, vocab=SPEC.vocab_size):
    """Rows of random lengths (row 0 empty body, row 1 one token, row 2 full width) with full stops."""
    g = gen(seed)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    lengths[:3] = torch.tensor([2, 3, t])
    ids = torch.randint(FIRST_WORD, vocab, (b, t), generator=g)
    ids = torch.where(torch.rand(b, t, generator=g) < stop_rate, STOP, ids)
    pos = torch.arange(t)
    ids = torch.where(pos == 0, BOS, ids)
    ids = torch.where(pos == lengths[:, None] - 1, EOS, ids)
    ids = torch.where(pos >= lengths[:, None], PAD, ids)
    return ids, lengths


def bodies(ids, lengths):
    return [ids[i, 1 : int(lengths[i]) - 1].tolist() for i in range(len(lengths))]


def budget(n, rate):
    return round(rate * n)  # Python's round: ties to even, as the module's float64 rounding


def assert_well_formed(ids, lengths, vocab=SPEC.vocab_size):
    b, w = ids.shape
    assert lengths.dtype == torch.long and ids.dtype == torch.long
    assert w == int(lengths.max())  # re-padded to the longest row
    assert (ids[:, 0] == BOS).all()
    assert (ids.gather(1, (lengths - 1)[:, None]).squeeze(1) == EOS).all()
    pos = torch.arange(w)
    assert (ids[pos >= lengths[:, None]] == PAD).all()  # padding only after </s>
    body = (pos >= 1) & (pos < lengths[:, None] - 1)
    inside = ids[body]
    assert not torch.isin(inside, torch.tensor([BOS, EOS, PAD])).any()
    assert ((inside >= 0) & (inside < vocab)).all()


def is_subsequence(small, big):
    it = iter(big)
    return all(x in it for x in small)


def glob_align(noised, original, mask=MASK):
    """True if each <mask> in `noised` can stand for a contiguous, possibly empty run of
    `original` and the other tokens match `original` in order (the reference aligner)."""
    n, m = len(noised), len(original)
    can = [[False] * (m + 1) for _ in range(n + 1)]  # can[i][j]: noised[i:] explains original[j:]
    can[n][m] = True
    for i in range(n - 1, -1, -1):
        for j in range(m, -1, -1):
            if noised[i] == mask:
                can[i][j] = can[i + 1][j] or (j < m and can[i][j + 1])
            else:
                can[i][j] = j < m and noised[i] == original[j] and can[i + 1][j + 1]
    return can[0][0]


def expand(noised, original, spans, mask=MASK):
    """Rebuild `original` by giving the k-th <mask> the next spans[k] original tokens."""
    out, k = [], 0
    for tok in noised:
        if tok == mask:
            out.extend(original[len(out) : len(out) + spans[k]])
            k += 1
        else:
            out.append(tok)
    return out, k


def sentences(body):
    out, cur = [], []
    for tok in body:
        cur.append(tok)
        if tok == STOP:
            out.append(tuple(cur))
            cur = []
    if cur:
        out.append(tuple(cur))
    return out


def call(name, ids, lengths, seed, **kw):
    if name == "sentence_permutation":
        kw.setdefault("full_stop_ids", [STOP])
    if name in ("token_masking", "token_deletion", "token_insertion", "text_infilling"):
        kw.setdefault("rate", 0.3)
    return NOISES[name](ids, lengths, spec=SPEC, generator=gen(seed), **kw)


# ---- special tokens and padding --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NOISES))
def test_each_noise_keeps_the_batch_convention(name):
    ids, lengths = make_batch()
    before = ids.clone()
    out, out_len = call(name, ids, lengths, seed=1)
    assert torch.equal(ids, before)  # pure: the input is untouched
    assert_well_formed(out, out_len)
    assert out_len[0] == 2 and torch.equal(out[0, :2], torch.tensor([BOS, EOS]))  # empty body stays empty
    assert out_len[1] <= 4  # a one-token body: at most one token changed, removed or added


@pytest.mark.parametrize("name", sorted(NOISES))
def test_extra_padding_columns_are_cropped(name):
    ids, lengths = make_batch(t=30)
    wide = torch.cat([ids, torch.full((len(ids), 7), PAD)], dim=1)
    a, a_len = call(name, ids, lengths, seed=3)
    b, b_len = call(name, wide, lengths, seed=3)
    assert torch.equal(a, b) and torch.equal(a_len, b_len)


@pytest.mark.parametrize("order_seed", range(4))
def test_compositions_keep_the_batch_convention(order_seed):
    names = sorted(NOISES)
    order = [names[i] for i in torch.randperm(len(names), generator=gen(order_seed))]
    ids, lengths = make_batch(seed=order_seed)
    for k, name in enumerate(order):
        ids, lengths = call(name, ids, lengths, seed=100 * order_seed + k)
        assert_well_formed(ids, lengths)
    assert lengths[0] == 2


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_run_and_keep_the_convention(preset):
    ids, lengths = make_batch()
    out, out_len = apply_noises(ids, lengths, preset, spec=SPEC, generator=gen(0), full_stop_ids=[STOP])
    assert_well_formed(out, out_len)


def test_bart_base_permutes_then_infills():
    assert [s.name for s in PRESETS["bart-base"]] == ["sentence_permutation", "text_infilling"]
    infill = PRESETS["bart-base"][1]
    assert (infill.rate, infill.poisson_lambda) == (0.3, 3.0)


# ---- token masking -----------------------------------------------------------------------------


def test_mask_count_is_the_budget_and_nothing_else_changes():
    ids, lengths = make_batch(b=64, t=60)
    for rate in (0.0, 0.15, 0.3, 1.0):
        out, out_len = mask_tokens(ids, lengths, rate=rate, random_ratio=0.0, spec=SPEC, generator=gen(2))
        assert torch.equal(out_len, lengths)
        for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
            assert sum(t == MASK for t in o) == budget(len(x), rate)
            assert all(a == b for a, b in zip(o, x) if a != MASK)


def test_mask_random_ratio_and_regular_replacements():
    v = 30000  # large vocabulary: a random replacement equal to the original is negligible (1/30k)
    spec = NoiseIds(bos=BOS, eos=EOS, pad=PAD, mask=MASK, vocab_size=v, special_ids=(UNK,))
    ids, lengths = make_batch(b=256, t=256, vocab=v)
    out, _ = mask_tokens(ids, lengths, rate=0.3, random_ratio=0.1, spec=spec, generator=gen(4))
    changed = out != ids
    n_sel = sum(budget(int(n) - 2, 0.3) for n in lengths)
    random = changed & (out != MASK)
    assert abs(int(changed.sum()) - n_sel) <= 5
    frac = random.sum().item() / n_sel
    assert abs(frac - 0.1) < 4 * (0.1 * 0.9 / n_sel) ** 0.5
    all_random, _ = mask_tokens(ids, lengths, rate=0.5, random_ratio=1.0, spec=spec, generator=gen(5))
    replaced = all_random[all_random != ids]
    assert len(replaced) > 1000 and not torch.isin(replaced, torch.tensor(sorted(SPECIALS))).any()


# ---- token deletion ------------------------------------------------------------------------------


def test_deletion_shortens_by_the_budget_and_keeps_order():
    ids, lengths = make_batch(b=64, t=60)
    ids[:, 1:] = torch.where(ids[:, 1:] >= FIRST_WORD, torch.arange(FIRST_WORD, FIRST_WORD + 59), ids[:, 1:])
    for rate in (0.1, 0.3, 1.0):
        out, out_len = delete_tokens(ids, lengths, rate=rate, spec=SPEC, generator=gen(6))
        for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
            assert len(x) - len(o) == budget(len(x), rate)
            assert is_subsequence(o, x)


# ---- text infilling ------------------------------------------------------------------------------


def test_infilling_hides_exactly_the_budget_and_aligns_back():
    ids, lengths = make_batch(b=64, t=60)
    for rate, lam in ((0.3, 3.0), (0.5, 1.0), (0.15, 3.5), (1.0, 3.0)):
        out, out_len, draws, spans = _infill(ids, lengths, rate=rate, poisson_lambda=lam, random_ratio=0.0,
                                             spec=SPEC, generator=gen(7), with_spans=True)
        for i, (o, x) in enumerate(zip(bodies(out, out_len), bodies(ids, lengths))):
            b = budget(len(x), rate)
            row_spans = [s for s in spans[i].tolist() if s >= 0]
            assert sum(row_spans) == b  # tokens under the masks == the budget
            assert sum(t != MASK for t in o) == len(x) - b
            assert sum(t == MASK for t in o) == len(row_spans)  # one <mask> per span, 0-length ones too
            assert sorted(row_spans) == sorted(s for s in draws[i].tolist() if s >= 0)
            assert glob_align(o, x)  # the reference aligner, blind to the spans
            rebuilt, used = expand(o, x, row_spans)
            assert rebuilt == x and used == len(row_spans)


def test_reference_aligner_rejects_wrong_rows():
    x = [10, 11, 12, 13]
    assert glob_align([10, MASK, 13], x) and glob_align([MASK, 10, 11, 12, 13], x)
    assert not glob_align([11, MASK, 10], x)  # out of order
    assert not glob_align([10, MASK, 14], x)  # a changed token
    assert not glob_align([10, 11, 12], x)  # a token lost without a mask


@pytest.mark.parametrize("lam", [3.0, 3.5])
def test_span_lengths_are_poisson(lam):
    # Rows with n = 300, budget 90: the first 8 draws reach the budget with probability
    # P(Poisson(8λ) >= 90) < 1e-20, so they are never trimmed and are i.i.d. Poisson(λ).
    b, t, first = 2500, 302, 8
    ids = torch.full((b, t), 7)
    ids[:, 0], ids[:, -1] = BOS, EOS
    lengths = torch.full((b,), t)
    _, _, draws, _ = _infill(ids, lengths, rate=0.3, poisson_lambda=lam, random_ratio=0.0, spec=SPEC,
                             generator=gen(8), with_spans=True)
    sample = draws[:, :first].flatten()
    assert (sample >= 0).all()
    counts = torch.bincount(sample).tolist()

    def chi2_p(mean):
        # bins 0..k-1 while the expected count is >= 5, then one pooled tail bin
        pmf = stats.poisson(mean)
        n = len(sample)
        k = 0
        while n * pmf.pmf(k) >= 5 and n * pmf.sf(k) >= 5:
            k += 1
        obs = counts[:k] + [0] * (k - len(counts[:k]))
        obs.append(len(sample) - sum(obs))
        exp = [n * pmf.pmf(j) for j in range(k)] + [n * pmf.sf(k - 1)]
        return stats.chisquare(obs, exp).pvalue

    assert chi2_p(lam) > ALPHA
    assert chi2_p(lam + 0.25) < 1e-6  # the test has the power to tell λ from λ + 0.25


def test_trimmed_span_lands_anywhere():
    # The trimmed (last-drawn) span must not always be the last span in the document.
    b, t = 2000, 62
    ids = torch.arange(t).repeat(b, 1) + FIRST_WORD
    ids[:, 0], ids[:, -1] = BOS, EOS
    lengths = torch.full((b,), t)
    _, _, draws, spans = _infill(ids, lengths, rate=0.3, poisson_lambda=3.0, random_ratio=0.0, spec=SPEC,
                                 generator=gen(9), with_spans=True)
    s = (draws >= 0).sum(1)
    last_drawn = draws.gather(1, (s - 1)[:, None]).squeeze(1)
    last_in_doc = spans.gather(1, (s - 1)[:, None]).squeeze(1)
    first_in_doc = spans[:, 0]
    # With ~6 spans a row, the trimmed span is last in about 1/6 of rows (plus ties of equal lengths).
    assert (last_drawn == last_in_doc).float().mean() < 0.5
    assert abs((last_drawn == first_in_doc).float().mean() - (last_drawn == last_in_doc).float().mean()) < 0.05


def test_infilling_zero_rate_is_identity_and_random_ratio_replaces_masks():
    ids, lengths = make_batch()
    out, out_len = infill_text(ids, lengths, rate=0.0, spec=SPEC, generator=gen(10))
    assert torch.equal(out, ids[:, : out.shape[1]]) and torch.equal(out_len, lengths)
    out, out_len = infill_text(ids, lengths, rate=0.3, random_ratio=1.0, spec=SPEC, generator=gen(10))
    assert not (out == MASK).any()


# ---- sentence permutation ------------------------------------------------------------------------


def test_permutation_keeps_the_sentences():
    ids, lengths = make_batch(b=64, t=60, stop_rate=0.15)
    out, out_len = permute_sentences(ids, lengths, full_stop_ids=[STOP], spec=SPEC, generator=gen(11))
    assert torch.equal(out_len, lengths)
    moved = 0
    for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
        assert Counter(sentences_of(o, x)) == Counter(sentences(x))
        moved += o != x
    assert moved > 20


def sentences_of(noised, original):
    """The noised body cut at the original sentences' sizes, in the order found (a stop-free
    last sentence may land in the middle, so the cut is by matching, not by full stops)."""
    pool = Counter(sentences(original))
    out, i = [], 0
    while i < len(noised):
        match = next((s for s in pool if pool[s] and tuple(noised[i : i + len(s)]) == s), None)
        if match is None:
            return [tuple(noised)]  # not a concatenation of the original sentences
        pool[match] -= 1
        out.append(match)
        i += len(match)
    return out


def test_permutation_is_uniform_and_uses_every_stop_id():
    # Three sentences "a b ." "c !" "d e f" (the last without a stop): all 3! orders equally likely.
    b = 6000
    row = [BOS, 10, 11, STOP, 12, 13, 14, 15, 16, EOS]  # 13 is a second full-stop id
    ids = torch.tensor(row).repeat(b, 1)
    lengths = torch.full((b,), len(row))
    out, _ = permute_sentences(ids, lengths, full_stop_ids=torch.tensor([STOP, 13]), spec=SPEC, generator=gen(12))
    firsts = Counter(tuple(r[1:-1]) for r in out.tolist())
    orders = [sum(p, ()) for p in itertools.permutations([(10, 11, STOP), (12, 13), (14, 15, 16)])]
    assert set(firsts) == set(orders)
    assert stats.chisquare([firsts[o] for o in orders]).pvalue > ALPHA


# ---- document rotation ---------------------------------------------------------------------------


def test_rotation_is_a_rotation_and_uniform():
    ids, lengths = make_batch(b=64, t=60)
    out, out_len = rotate_document(ids, lengths, spec=SPEC, generator=gen(13))
    assert torch.equal(out_len, lengths)
    for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
        assert any(o == x[r:] + x[:r] for r in range(max(1, len(x))))
    b, n = 5000, 5
    ids = torch.tensor([BOS, *range(10, 10 + n), EOS]).repeat(b, 1)
    out, _ = rotate_document(ids, torch.full((b,), n + 2), spec=SPEC, generator=gen(14))
    starts = torch.bincount(out[:, 1] - 10, minlength=n).tolist()
    assert len(starts) == n and stats.chisquare(starts).pvalue > ALPHA


# ---- token insertion -----------------------------------------------------------------------------


def test_insertion_lengthens_by_the_budget_and_removing_gives_back():
    ids, lengths = make_batch(b=64, t=60)
    for rate in (0.1, 0.3, 1.5):
        out, out_len = insert_tokens(ids, lengths, rate=rate, spec=SPEC, generator=gen(15))
        for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
            assert len(o) - len(x) == budget(len(x), rate)
            assert [t for t in o if t != MASK] == x
    out, out_len = insert_tokens(ids, lengths, rate=0.3, random_ratio=0.5, spec=SPEC, generator=gen(16))
    assert torch.equal(out_len - lengths, torch.tensor([budget(int(n) - 2, 0.3) for n in lengths]))
    for o, x in zip(bodies(out, out_len), bodies(ids, lengths)):
        assert is_subsequence(x, o)


def test_insertion_places_tokens_uniformly():
    # One insertion into a 3-token body: each of the 4 places equally likely.
    b = 4000
    ids = torch.tensor([BOS, 10, 11, 12, EOS]).repeat(b, 1)
    out, _ = insert_tokens(ids, torch.full((b,), 5), rate=0.34, spec=SPEC, generator=gen(17))
    where = (out == MASK).long().argmax(1) - 1
    assert stats.chisquare(torch.bincount(where, minlength=4).tolist()).pvalue > ALPHA


# ---- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NOISES))
def test_same_seed_same_output_other_seed_differs(name):
    ids, lengths = make_batch()
    a = call(name, ids, lengths, seed=21)
    b = call(name, ids, lengths, seed=21)
    c = call(name, ids, lengths, seed=22)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])


# ---- the model batch -----------------------------------------------------------------------------


def test_denoise_batch():
    pytest.importorskip("transformers")
    from transformers.models.bart.modeling_bart import shift_tokens_right

    ids, lengths = make_batch()
    wide = torch.cat([ids, torch.full((len(ids), 3), PAD)], dim=1)  # [B, T] with extra padding
    out = denoise(wide, lengths, "bart-base", spec=SPEC, generator=gen(30), full_stop_ids=[STOP])
    assert set(out) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    b, t = wide.shape
    assert out["labels"].shape == out["decoder_input_ids"].shape == (b, t)
    assert out["input_ids"].shape == out["attention_mask"].shape
    noised_len = out["attention_mask"].sum(1)
    assert_well_formed(out["input_ids"], noised_len)
    assert set(out["attention_mask"].unique().tolist()) <= {0, 1} and out["attention_mask"].dtype == torch.long
    pad = torch.arange(t) >= lengths[:, None]
    assert (out["labels"][pad] == IGNORE).all() and torch.equal(out["labels"][~pad], wide[~pad])
    assert torch.equal(out["decoder_input_ids"], shift_tokens_right(out["labels"], PAD, EOS))  # HF, the oracle
    assert (out["decoder_input_ids"][:, 0] == EOS).all()


def test_denoise_max_len_keeps_eos_last():
    ids, lengths = make_batch(t=40)
    steps = [NoiseStep("token_insertion", rate=0.5)]
    grown = denoise(ids, lengths, steps, spec=SPEC, generator=gen(31))
    cut = denoise(ids, lengths, steps, spec=SPEC, generator=gen(31), max_len=36)
    grown_len, cut_len = grown["attention_mask"].sum(1), cut["attention_mask"].sum(1)
    assert int(grown_len.max()) > 36 and cut["input_ids"].shape[1] == 36
    assert torch.equal(cut_len, grown_len.clamp(max=36))
    assert_well_formed(cut["input_ids"], cut_len)
    for i in range(len(ids)):
        n = int(cut_len[i])
        assert torch.equal(cut["input_ids"][i, : n - 1], grown["input_ids"][i, : n - 1])


def test_bad_arguments_are_refused():
    ids, lengths = make_batch()
    with pytest.raises(ValueError):
        denoise(ids, lengths, "bart-huge", spec=SPEC, generator=gen(0))
    with pytest.raises(ValueError):
        denoise(ids, lengths, "bart-base", spec=SPEC, generator=gen(0))  # no full_stop_ids
    with pytest.raises(ValueError):
        NoiseStep("token_masking", rate=1.5)
    with pytest.raises(ValueError):
        NoiseStep("shuffle_words")
    with pytest.raises(ValueError):
        NoiseIds(bos=0, eos=0, pad=1, mask=3, vocab_size=10)
    with pytest.raises(ValueError):
        mask_tokens(ids, lengths + 100, rate=0.3, spec=SPEC, generator=gen(0))
