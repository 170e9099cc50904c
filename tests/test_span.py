"""T5 span corruption: lengths as T5's helper, reconstruction, statistics of the noise, determinism."""

from __future__ import annotations

import pytest
import torch

from clozeformer.objectives.span import (noise_counts, random_spans_noise_mask, span_corruption, span_lengths,
                                         spans_from_mask)

EOS = 1
SENTINELS = list(range(999, 899, -1))  # <extra_id_0> = 999, counting down as T5's vocabulary does


def expand(inputs: list[int], targets: list[int]) -> list[int]:
    """Put each sentinel's span from the targets back into the inputs (the inverse of corruption)."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    spans, current = {}, None
    for t in targets[:-1]:
        if t in SENTINELS:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans.pop(t) if t in SENTINELS else [t])
    assert not spans  # every span went back in
    return out


def test_span_lengths_matches_t5_helper():
    assert span_lengths(512) == (568, 114)  # T5's random_spans_helper, the paper's 512-token inputs
    for inputs in (16, 64, 128, 177, 512, 1024):
        raw, targets = span_lengths(inputs)
        n, k = noise_counts(raw)
        assert (raw - n + k + 1, n + k + 1) == (inputs, targets)
        n1, k1 = noise_counts(raw + 1)
        assert raw + 1 - n1 + k1 + 1 > inputs  # the longest raw length that fits


def test_reconstruction_and_shapes():
    raw, targets_len = span_lengths(128)
    ids = torch.randint(2, 899, (16, raw), generator=torch.Generator().manual_seed(0))
    out = span_corruption(ids, sentinel_ids=SENTINELS, eos_id=EOS, generator=torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == (16, 128) and out["labels"].shape == (16, targets_len)
    n, k = noise_counts(raw)
    for row, inputs, targets in zip(ids.tolist(), out["input_ids"].tolist(), out["labels"].tolist()):
        assert expand(inputs, targets) == row
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[:k]  # sentinels in order, one per span
        assert [t for t in targets if t in SENTINELS] == used
        assert inputs[0] not in SENTINELS and targets[-2] not in SENTINELS  # kept text first, a span last


def test_noise_mask_counts_and_statistics():
    b, length = 400, 568
    mask = random_spans_noise_mask(b, length, generator=torch.Generator().manual_seed(0))
    n, k = noise_counts(length)
    assert (n, k) == (85, 28)
    assert (mask.sum(1) == n).all()
    starts = mask & ~torch.nn.functional.pad(mask[:, :-1], (1, 0))
    assert (starts.sum(1) == k).all()
    assert not mask[:, 0].any() and mask[:, -1].all()  # kept span first, noise span last
    # noise is spread over the whole row: each quarter holds ≈ the density
    quarters = mask.float().view(b, 4, length // 4).mean((0, 2))
    assert ((quarters - 0.15).abs() < 0.02).all(), quarters
    # uniformly random partition of n items into k non-empty parts: P(part = 1) = (k − 1) / (n − 1)
    # (0.321 here; a Poisson(3) length would give ≈ 0.15 of ones among lengths ≥ 1)
    ends = mask & ~torch.nn.functional.pad(mask[:, 1:], (0, 1))
    lengths = ends.nonzero()[:, 1] - starts.nonzero()[:, 1] + 1
    assert lengths.float().mean().item() == pytest.approx(n / k)
    assert (lengths == 1).float().mean().item() == pytest.approx((k - 1) / (n - 1), abs=0.02)


def test_determinism_by_seed():
    ids = torch.randint(2, 899, (4, 100), generator=torch.Generator().manual_seed(0))
    run = lambda seed: span_corruption(ids, sentinel_ids=SENTINELS, eos_id=EOS,  # noqa: E731
                                       generator=torch.Generator().manual_seed(seed))
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_doc_example_korean():
    tokens = ["인코더", "-", "디코더", "모델", "구조"]
    vocab = {"</s>": EOS, "<extra_id_0>": SENTINELS[0], "<extra_id_1>": SENTINELS[1]}
    vocab.update({t: 10 + i for i, t in enumerate(tokens)})
    words = {i: t for t, i in vocab.items()}
    ids = torch.tensor([[vocab[t] for t in tokens]])
    noise = torch.tensor([[t in ("인코더", "디코더") for t in tokens]])
    out = spans_from_mask(ids, noise, SENTINELS, EOS)
    inputs = [words[i] for i in out["input_ids"][0].tolist()]
    targets = [words[i] for i in out["labels"][0].tolist()]
    assert inputs == ["<extra_id_0>", "-", "<extra_id_1>", "모델", "구조", "</s>"]
    assert "".join(inputs[:3]) + " " + " ".join(inputs[3:-1]) == "<extra_id_0>-<extra_id_1> 모델 구조"
    assert " ".join(targets) == "<extra_id_0> 인코더 <extra_id_1> 디코더 </s>"


def test_explicit_mask_rejects_ragged_rows_and_too_few_sentinels():
    ids = torch.arange(12).view(2, 6) + 10
    ragged = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]]).bool()
    with pytest.raises(ValueError, match="same number"):
        spans_from_mask(ids, ragged, SENTINELS, EOS)
    two_spans = torch.tensor([[0, 1, 0, 1, 0, 0]] * 2).bool()
    with pytest.raises(ValueError, match="sentinel"):
        spans_from_mask(ids, two_spans, SENTINELS[:1], EOS)
    with pytest.raises(ValueError, match="sentinel"):
        span_corruption(torch.zeros(1, 568, dtype=torch.long), sentinel_ids=SENTINELS[:5], eos_id=EOS,
                        generator=torch.Generator())


def test_span_arguments_out_of_range_are_named():
    """density 0 or 2 and mean_span 0 masked nonsense or divided by zero; inputs_length 10**12 never returned."""
    for density, mean_span in ((0.0, 3.0), (2.0, 3.0), (float("nan"), 3.0), (0.15, 0)):
        with pytest.raises(ValueError, match="allowed: 0 < density < 1, mean_span ≥ 1"):
            span_lengths(512, density, mean_span)
    with pytest.raises(ValueError, match="inputs_length 1000000000000 is out of range"):
        span_lengths(10 ** 12)
