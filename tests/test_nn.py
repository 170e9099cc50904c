"""The shared core: fast dropout statistics and the dropout attention path against SDPA."""

import math

import pytest
import torch
import torch.nn.functional as F

from clozeformer.nn.attention import _attention_with_dropout
from clozeformer.nn.functional import dropout


def test_dropout_rate_and_expectation():
    torch.manual_seed(0)
    x = torch.ones(2000, 1000)
    y = dropout(x, 0.1, True)
    n = x.numel()
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    assert abs(y.mean().item() - 1.0) < 4 * math.sqrt(0.1 / 0.9 / n)  # unbiased: survivors scaled up
    assert torch.equal(dropout(x, 0.1, False), x) and torch.equal(dropout(x, 0.0, True), x)


def test_dropout_every_int16_lane_of_a_draw_is_uniform():
    # four mask bits come from each 64-bit draw; a lane with a stuck sign bit would keep or drop too often
    torch.manual_seed(1)
    y = dropout(torch.ones(4000, 1000), 0.5, True).view(-1, 4)
    n = y.shape[0]
    for lane in range(4):
        assert abs((y[:, lane] == 0).float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)


def test_dropout_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.ones(300, 200, requires_grad=True)
    y = dropout(x, 0.3, True)
    (y * 2).sum().backward()
    assert torch.equal(x.grad, 2 * y.detach())  # d/dx of x·keep·scale is keep·scale: y itself at x = 1


def test_dropout_follows_the_global_generator():
    torch.manual_seed(3)
    a = dropout(torch.ones(64, 64), 0.5, True)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(torch.ones(64, 64), 0.5, True))


def test_dropout_attention_path_equals_sdpa_without_dropout():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 4:] = False
    for m, causal in ((None, False), (mask, False), (None, True)):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal)
        got = _attention_with_dropout(q, k, v, m, causal, 0.0)
        assert (got - ref).abs().max() < 1e-5


def test_fully_padded_row_stays_finite_in_training():
    q = torch.randn(1, 2, 4, 8)
    mask = torch.zeros(1, 1, 1, 4, dtype=torch.bool)
    assert torch.isfinite(_attention_with_dropout(q, q, q, mask, False, 0.1)).all()



def test_cross_attention_matches_a_hand_computation():
    from clozeformer.nn.attention import Attention

    torch.manual_seed(0)
    attn = Attention(16, 4, cross=True).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 3:] = False
    q = attn.q(x).view(2, 5, 4, 4).transpose(1, 2)  # [B, H, T, d]
    k, v = (t.view(2, 7, 4, 4).transpose(1, 2) for t in attn.kv(ctx).chunk(2, dim=-1))
    w = ((q @ k.transpose(-1, -2)) / 2.0).masked_fill(~mask, float("-inf")).softmax(-1)  # √d = 2
    ref = attn.out((w @ v).transpose(1, 2).reshape(2, 5, 16))
    assert (attn(x, mask, context=ctx) - ref).abs().max() < 1e-5


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_linear_cross_entropy_matches_the_two_step_loss_and_gradients(smoothing):
    from clozeformer.nn.functional import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(300, 16, requires_grad=True)  # more rows than one chunk at V = 40,000
    w = (torch.randn(40_000, 16) * 0.1).requires_grad_()
    b = (torch.randn(40_000) * 0.1).requires_grad_()
    y = torch.randint(0, 40_000, (300,))
    ref = F.cross_entropy(F.linear(h, w, b), y, label_smoothing=smoothing)
    grads = torch.autograd.grad(ref * 3.0, (h, w, b))
    got = linear_cross_entropy(h, w, b, y, smoothing=smoothing)
    mine = torch.autograd.grad(got * 3.0, (h, w, b))
    assert abs(got.item() - ref.item()) < 1e-5
    for a, r in zip(mine, grads):
        assert (a - r).abs().max() < 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls, float32 softmax: close to float32
        low = linear_cross_entropy(h, w, None, y)
    assert low.dtype == torch.float32 and abs(low.item() - F.cross_entropy(F.linear(h, w), y).item()) < 2e-2
    empty = linear_cross_entropy(h[:0], w, b, y[:0])
    assert empty.item() == 0.0 and empty.requires_grad
def test_bf16_training_attention_takes_the_matmul_path_and_agrees_with_sdpa(monkeypatch):
    """CPU training in bf16 without dropout runs the explicit path (SDPA's flash backward is slower
    there); its output and gradients agree with SDPA's within bf16 rounding."""
    from clozeformer.nn import attention

    torch.manual_seed(0)
    layer = attention.Attention(32, 4)
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False
    calls = []
    explicit = attention._attention_with_dropout
    monkeypatch.setattr(attention, "_attention_with_dropout", lambda *a, **k: calls.append(1) or explicit(*a, **k))
    results = []
    for training in (True, False):
        layer.train(training)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(xi, mask, causal=True)
        y.float().square().sum().backward()
        results.append((y.float(), xi.grad, layer.qkv.weight.grad.clone()))
    assert len(calls) == 1  # the training pass only; eval stays on SDPA
    for a, b in zip(*results):
        assert (a - b).abs().max() <= 0.02 * b.abs().max()


@pytest.mark.parametrize("t5", [False, True], ids=["post-norm", "pre-norm+relative-bias"])
def test_packed_training_encoder_equals_the_padded_one_at_every_real_token(t5):
    """Training with padding runs the position-wise parts on the real tokens only (Packed); without
    dropout the outputs at real positions and every gradient equal the padded computation's, for
    BERT's post-norm layers and T5's pre-norm layers with their relative position bias."""
    from clozeformer.nn import Stack, TransformerLayer
    from clozeformer.nn.position import RelativePositionBias

    torch.manual_seed(0)
    opts = dict(pre_norm=True, norm="rms", bias=False, scale=1.0) if t5 else {}
    layers = Stack(TransformerLayer(32, 4, 64, dropout=0.0, attention_dropout=0.0, **opts) for _ in range(2))
    bias = RelativePositionBias(4, bidirectional=True) if t5 else None
    x = torch.randn(3, 9, 32)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 2:] = 0
    keep = attention_mask.bool()
    results = []
    for packed in (True, False):
        layers.zero_grad()
        xi = x.clone().requires_grad_()
        if packed:
            y = layers(xi, attention_mask, bias=bias)
        else:  # the padded layout, layer by layer
            y = xi
            mask = attention_mask.bool()[:, None, None, :]
            if t5:
                mask = bias(9, 9).masked_fill(~mask, torch.finfo(torch.float32).min)
            for layer in layers:
                y = layer(y, mask)
        (y[keep] ** 2).sum().backward()
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in layers.parameters()]))
    (yp, gp, wp), (yd, gd, wd) = results
    assert torch.equal(yp[~keep], torch.zeros_like(yp[~keep]))  # padding rows of the packed result
    assert (yp[keep] - yd[keep]).abs().max() < 1e-5
    assert (gp - gd).abs().max() < 1e-5
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(wp, wd))


@pytest.mark.parametrize("rows", ["padded", "packed documents"])
def test_varlen_attention_equals_the_dense_masked_one(monkeypatch, rows):
    """Attention per document on nested tensors (CUDA's path, forced onto the CPU here) gives the
    dense masked path's outputs at every real token and its gradients, for dynamically padded
    rows (0/1 mask) and for packed rows of several documents (segment ids, padding at the end)."""
    from clozeformer.nn import Stack, TransformerLayer, attention

    torch.manual_seed(0)
    layers = Stack(TransformerLayer(32, 4, 64, dropout=0.0, attention_dropout=0.0) for _ in range(2))
    if rows == "padded":
        attention_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7])
    else:  # documents of 1 to 6 tokens; the second row full (no padding), the first has a one-token document
        attention_mask = torch.tensor([[1, 1, 1, 2, 3, 3, 3, 0, 0], [1, 1, 2, 2, 2, 2, 2, 2, 3], [1] * 4 + [0] * 5])
    keep = attention_mask.bool()
    x = torch.randn(3, 9, 32)
    calls = []
    results = []
    for devices in (("cuda", "cpu"), ("cuda",)):
        monkeypatch.setattr(attention, "VARLEN_DEVICES", devices)
        attend = attention.Packed.attend
        monkeypatch.setattr(attention.Packed, "attend", lambda *a, **k: calls.append(devices) or attend(*a, **k))
        layers.zero_grad()
        xi = x.clone().requires_grad_()
        y = layers(xi, attention_mask)
        (y[keep] ** 2).sum().backward()
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in layers.parameters()]))
    assert calls == [("cuda", "cpu")] * 2  # both layers on the varlen path, none on the dense one
    (yv, gv, wv), (yd, gd, wd) = results
    assert torch.equal(yv[~keep], torch.zeros_like(yv[~keep]))
    for a, b in [(yv[keep], yd[keep]), (gv, gd), *zip(wv, wd)]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # summation order differs with the thread count


@pytest.mark.parametrize("rows", ["padded", "packed documents"])
def test_decoder_varlen_equals_the_dense_masked_one(monkeypatch, rows):
    """A training decoder attends per document too (CUDA's varlen kernel; on the CPU each document
    alone through SDPA): causal self-attention within each target document, cross-attention from
    the k-th target document of a row to the k-th source document; the dense masks' outputs at every
    real token and their gradients, for the decoder's input and the encoder output alike."""
    from clozeformer.nn import Stack, TransformerLayer, attention

    torch.manual_seed(0)
    layers = Stack((TransformerLayer(32, 4, 64, dropout=0.0, attention_dropout=0.0, cross=True) for _ in range(2)),
                   decoder=True)
    if rows == "padded":
        sources = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
        targets = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7])
    else:  # each row's k-th target document pairs with its k-th source document, lengths differ
        sources = torch.tensor([[1, 1, 2, 2, 2, 3, 0], [1, 2, 2, 2, 2, 2, 2], [1] * 3 + [0] * 4])
        targets = torch.tensor([[1, 1, 1, 2, 3, 3, 3, 0, 0], [1, 1, 2, 2, 2, 2, 2, 2, 2], [1] * 4 + [0] * 5])
    keep = targets.bool()
    x, context = torch.randn(3, 9, 32), torch.randn(3, 7, 32)
    calls, results = [], []
    attend = attention.Packed.attend
    monkeypatch.setattr(attention.Packed, "attend",
                        lambda *a, **k: calls.append((k.get("causal", False), k.get("keys") is not None))
                        or attend(*a, **k))
    for devices in (("cuda", "cpu"), ("cuda",)):
        monkeypatch.setattr(attention, "VARLEN_DEVICES", devices)
        layers.zero_grad()
        xi, ci = x.clone().requires_grad_(), context.clone().requires_grad_()
        y = layers(xi, targets, context=ci, context_mask=sources)
        (y[keep] ** 2).sum().backward()
        results.append((y.detach(), xi.grad, ci.grad, [p.grad.clone() for p in layers.parameters()]))
    assert calls == [(True, False), (False, True)] * 2  # per layer: self causal, cross to the sources; no dense
    (yv, gv, cv, wv), (yd, gd, cd, wd) = results
    assert torch.equal(yv[~keep], torch.zeros_like(yv[~keep]))
    for a, b in [(yv[keep], yd[keep]), (gv, gd), (cv, cd), *zip(wv, wd)]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # where the per-document kernel cannot serve, the dense masks do: attention dropout (flash's causal
    # varlen takes none), or targets whose documents do not pair up with the sources'
    calls.clear()
    monkeypatch.setattr(attention, "VARLEN_DEVICES", ("cuda", "cpu"))
    if rows == "packed documents":  # one source document per row against several target documents
        layers(x, targets, context=context, context_mask=sources.clamp(max=1))
    for layer in layers:
        layer.attn.dropout = 0.1
    layers(x, targets, context=context, context_mask=sources)
    assert calls == []


def test_varlen_offsets_follow_rows_and_segments():
    """Each run of one segment id within a row is one document; a new row starts a new one even
    with the same id; padding is no document."""
    from clozeformer.nn.attention import Packed

    p = Packed(torch.tensor([[1, 1, 2, 0], [1, 2, 2, 2], [1, 1, 1, 1]]), varlen=True)
    assert p.offsets.tolist() == [0, 2, 3, 4, 7, 11]
    assert p.lengths == (1, 4)


def test_a_mask_of_another_batch_is_refused_not_broadcast():
    """bert(ids [2, T], attention_mask [1, T]) broadcast the one mask over the batch and answered."""
    from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
    from clozeformer.models.bert import BertConfig, BertForPreTraining

    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    bert = BertForPreTraining(BertConfig.preset("tiny", vocab_size=32)).eval()
    with pytest.raises(ValueError, match=r"attention_mask \(1, 4\) does not match the batch: expected \(2, 4\)"):
        bert(ids, attention_mask=torch.ones(1, 4, dtype=torch.long))
    bart = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=32)).eval()
    with pytest.raises(ValueError, match=r"attention_mask \(2, 3\) does not match the batch: expected \(2, 4\)"):
        bart(ids, torch.ones(2, 3, dtype=torch.long), decoder_input_ids=ids)


@pytest.mark.parametrize("ids, says", [
    (torch.tensor([5, 6, 7]), r"input_ids must be a 2-D integer tensor \[batch, length\] of at least one id, got "
                              r"torch.int64 \(3,\)"),  # IndexError: tuple index out of range
    (torch.tensor([[5.0, 6.0]]), "got torch.float32"),
    (torch.zeros(0, 4, dtype=torch.long), r"\(0, 4\)"),  # cannot reshape a tensor of 0 elements
])
def test_ids_every_model_reads_are_named_when_malformed(ids, says):
    from clozeformer.models.bert import BertConfig, BertForPreTraining
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    for model in (BertForPreTraining(BertConfig.preset("tiny", vocab_size=32)),
                  T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=32))):
        with pytest.raises(ValueError, match=says):
            model.eval()(ids, decoder_input_ids=torch.tensor([[0]])) if hasattr(model, "encode") else model(ids)
