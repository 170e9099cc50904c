"""T5: parity with transformers (v1.0 and v1.1, both directions), the decoding protocol, init, config."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

import clozeformer
from clozeformer.config import ConfigError
from clozeformer.interop.hf import t5_state_to_hf
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration
from clozeformer.nn.layers import mimetic_init
from clozeformer.nn.position import relative_position_bucket

TOL = 1e-4
VOCAB = 101
# num_decoder_layers ≠ num_layers, d_kv · heads ≠ d_model, and few buckets with a short max distance
# so that the log-spaced and the saturated buckets all occur in 30 positions
HF_SMALL = dict(vocab_size=VOCAB, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0)
V1_1 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def hf_model(transformers, v11: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**HF_SMALL, **(V1_1 if v11 else {})))
    if v11:  # transformers ≥ 5 ties even v1.1's head unless given a distinct one, as real v1.1 checkpoints hold
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
    return model.eval()


def batch(seed: int = 0):
    """Right-padded encoder inputs [3, 30] and labels [3, 25] padded with -100."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (3, 30), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    mask[2, 7:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(2, VOCAB, (3, 25), generator=g)
    labels[0, 18:] = -100
    labels[2, 4:] = -100
    return ids, mask, labels


def assert_same_outputs(ours, hf, seed=0):
    ids, mask, labels = batch(seed)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        out = ours(ids, mask, labels=labels)
    keep = labels != -100
    assert out.logits.shape == ref.logits.shape == (3, 25, VOCAB)
    assert (out.logits - ref.logits)[keep].abs().max() < TOL
    assert abs(out.loss.item() - ref.loss.item()) < TOL
    return out


def test_a_source_of_padding_alone_reads_as_transformers_reads_it(transformers, tmp_path, one_thread):
    """A batch row whose attention_mask is all 0: transformers' additive mask makes its attention even, as ours
    does in self-attention; in cross-attention a boolean mask read nothing, 2.4 logits apart."""
    hf = hf_model(transformers, False)
    hf.save_pretrained(tmp_path)
    ours = clozeformer.load_model(tmp_path)
    ids, mask, labels = batch(0)
    mask[1] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels).logits
        out = ours(ids, mask, labels=labels).logits
    assert (out - ref).abs().max() < TOL


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0", "v1.1"])
def test_load_transformers_directory_matches_logits_and_loss(transformers, tmp_path, v11, one_thread):
    hf = hf_model(transformers, v11)
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing freshly initialised, nothing ignored
        ours = clozeformer.load_model(tmp_path)
    assert isinstance(ours, T5ForConditionalGeneration)
    assert ours.config.tie_word_embeddings is (not v11)
    assert ours.config.feed_forward == ("gated-gelu" if v11 else "relu")
    assert (ours.lm_head is None) is (not v11)
    out = assert_same_outputs(ours, hf)
    # decoder_input_ids given explicitly, with a decoder padding mask, gives transformers' logits too
    ids, mask, labels = batch(1)
    dec = torch.full((3, 1), ours.config.decoder_start_token_id)
    dec = torch.cat([dec, labels.clamp(min=0)[:, :-1]], 1)
    dmask = (labels != -100).long()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask).logits
        got = ours(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dmask).logits
    assert (got - ref)[dmask.bool()].abs().max() < TOL
    assert out.loss.requires_grad is False


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0", "v1.1"])
def test_export_loads_in_transformers_unchanged(transformers, tmp_path, v11, one_thread):
    torch.manual_seed(3)
    cfg = T5Config.from_dict(dict(vocab_size=VOCAB, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3,
                                  num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                  **(dict(feed_forward="gated-gelu", tie_word_embeddings=False) if v11 else {})))
    ours = T5ForConditionalGeneration(cfg).eval()
    clozeformer.save_model(ours, tmp_path)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert (hf.lm_head.weight is hf.shared.weight) is (not v11)
    assert_same_outputs(ours, hf, seed=2)
    back = clozeformer.load_model(tmp_path)
    assert list(back.state_dict()) == list(ours.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


def test_v1_1_checkpoint_with_tied_head_loads_exactly(transformers, tmp_path, one_thread):
    # transformers ≥ 5 builds v1.1 (unscaled) with the head tied and saves no lm_head.weight
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**HF_SMALL, **V1_1)).eval()
    hf.save_pretrained(tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the head is the shared embedding, not "freshly initialised"
        ours = clozeformer.load_model(tmp_path / "hf")
    assert torch.equal(ours.lm_head.weight, ours.shared.weight) and ours.untrained == ()
    assert_same_outputs(ours, hf, seed=3)
    clozeformer.save_model(ours, tmp_path / "ours")  # exported whole, as the generator it is (not a bare T5Model)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"]
    assert_same_outputs(ours, transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "ours").eval(), seed=3)


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0", "v1.1"])
def test_cached_decoding_equals_full_forward(v11, one_thread):
    cfg = T5Config.preset("tiny", vocab_size=VOCAB, relative_attention_num_buckets=8,
                          relative_attention_max_distance=12,
                          **(dict(feed_forward="gated-gelu", tie_word_embeddings=False) if v11 else {}))
    torch.manual_seed(4)
    model = T5ForConditionalGeneration(cfg).eval()
    ids, mask, labels = batch(4)
    dec = torch.randint(2, VOCAB, (3, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(ids, mask, decoder_input_ids=dec).logits  # [3, 20, V]
        enc = model.encode(ids, mask)
        cache = model.new_cache()
        steps = []
        for t in range(0, 20, 1 if v11 else 3):  # one token at a time, or chunks of 3 (positions start at cache.length)
            chunk = dec[:, t:t + (1 if v11 else 3)]
            assert cache.length == t
            steps.append(model.decode(chunk, enc, mask, cache))
        assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("settings", [dict(num_beams=1), dict(num_beams=4), dict(num_beams=3, length_penalty=2.0,
                                                                              no_repeat_ngram_size=2)],
                         ids=["greedy", "beam4", "beam3-lp2-ngram2"])
def test_generation_matches_transformers(transformers, one_thread, settings):
    # equal stack depths: transformers sizes its generation cache by num_layers, not num_decoder_layers
    torch.manual_seed(6)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**{**HF_SMALL, "num_decoder_layers": 2})).eval()
    ours = T5ForConditionalGeneration(T5Config.from_dict(dict(
        vocab_size=VOCAB, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20))).eval()
    ours.load_state_dict(_ours_from(hf))
    ids, mask, _ = batch(6)
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, **settings)
        got = ours.generate(ids, mask, max_new_tokens=12, **settings)
    assert torch.equal(got, ref)


def _ours_from(hf):
    from clozeformer.interop.hf import t5_state_from_hf

    state, ignored = t5_state_from_hf(hf.state_dict())
    assert not ignored
    return state


def test_relative_position_buckets():
    offsets = torch.arange(-200, 201)
    bi = relative_position_bucket(offsets, bidirectional=True)
    causal = relative_position_bucket(offsets, bidirectional=False)
    # T5 / Mesh TF: 16 buckets per direction, 8 exact, log-spaced to 128, saturating after
    assert bi[200 + 0] == 0 and bi[200 + 1] == 17 and bi[200 - 1] == 1 and bi[200 - 7] == 7
    assert bi[200 - 8] == 8 and bi[200 - 127] == 15 and bi[200 - 200] == 15 and bi[200 + 200] == 31
    assert int(bi.min()) == 0 and int(bi.max()) == 31
    assert (causal[offsets >= 0] == 0).all()  # later keys all share bucket 0 (masked anyway)
    assert causal[200 - 15] == 15 and causal[200 - 16] == 16 and causal[200 - 200] == 31
    assert (causal[:201].flip(0).diff() >= 0).all()  # monotone in distance


def test_init_follows_mesh_tf(one_thread):
    cfg = T5Config.preset("mini", vocab_size=2000, initializer_factor=1.0)
    torch.manual_seed(0)
    m = T5ForConditionalGeneration(cfg)
    d, dkv, inner, dff = 256, 64, 256, 1024
    layer = m.decoder.layers[1]
    qkv = layer.attn.qkv.weight
    checks = [(m.shared.weight, 1.0), (qkv[:inner], (d * dkv) ** -0.5), (qkv[inner:], d ** -0.5),
              (layer.attn.out.weight, inner ** -0.5), (layer.cross.q.weight, (d * dkv) ** -0.5),
              (layer.ffn.up.weight, d ** -0.5), (layer.ffn.down.weight, dff ** -0.5),
              (m.encoder.bias.embedding.weight, d ** -0.5)]
    for w, std in checks:
        assert w.std().item() == pytest.approx(std, rel=0.15)
    assert (m.encoder.norm.weight == 1).all() and (layer.ffn_norm.weight == 1).all()
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())  # no linear biases anywhere


def test_mimetic_init_reads_word_order_from_the_first_step(transformers, tmp_path, one_thread):
    """T5 has no position embedding for mimetic init to make sinusoidal: its relative tables start local
    instead (encoder heads on the previous / next token, decoder heads on the token / the previous one),
    self-attention drops the identity that would outscore them, cross-attention keeps it, and the model
    still exports unchanged."""
    torch.manual_seed(0)
    own = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=200)).eval()
    mimetic = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=200)).eval()
    mimetic.load_state_dict(own.state_dict())
    mimetic_init(mimetic)
    offsets = torch.arange(-300, 301)
    for stack, preferred in ((mimetic.encoder, (-1, 1)), (mimetic.decoder, (0, -1))):
        table = stack.bias.embedding.weight.detach()  # [32 buckets, 2 heads]
        bias = table[relative_position_bucket(offsets, bidirectional=stack is mimetic.encoder)]  # [601, 2]
        for h, o in enumerate(preferred):
            assert offsets[bias[:, h].argmax()] == o  # the first such offset: a later key shares bucket 0 in causal
            assert bias[300 + o, h] - bias[300 + o - 1, h] == pytest.approx(1.0)  # the sharp head: 1 nat a token
            assert bias[300 + o, h] - bias[300 - 60, h] > 50  # far keys are out of reach
    width = 64
    qkv, cross_q, cross_k = (mimetic.encoder.layers[0].attn.qkv.weight.detach(),
                             mimetic.decoder.layers[0].cross.q.weight.detach(),
                             mimetic.decoder.layers[0].cross.kv.weight.detach())
    self_qk = qkv[:width].T @ qkv[128:128 + width]
    cross_qk = cross_q[:width].T @ cross_k[:width]
    def diagonal_share(m):
        return (m.diag().mean() / (m - torch.diag(m.diag())).abs().mean()).item()
    assert diagonal_share(self_qk) < 1 < 5 < diagonal_share(cross_qk)
    # word order: reversing a sentence changes what a bag-of-words encoder would return in reverse only
    ids = torch.randint(5, 200, (4, 24))
    with torch.no_grad():
        order = [((m.encode(ids) - m.encode(ids.flip(1)).flip(1)).norm(dim=-1) / m.encode(ids).norm(dim=-1)).mean()
                 for m in (own, mimetic)]
    assert order[0] < 0.1 < 0.2 < order[1]
    clozeformer.save_model(mimetic, tmp_path)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    labels = torch.randint(5, 200, (4, 7))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, labels=labels).logits, mimetic(ids, labels=labels).logits,
                                   atol=1e-4, rtol=1e-4)


def test_training_step_and_label_shift(one_thread):
    cfg = T5Config.preset("tiny", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_heads=4)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg)
    ids, mask, labels = batch(7)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    model.eval()
    dec = torch.cat([torch.zeros(3, 1, dtype=torch.long), labels.clamp(min=0)[:, :-1]], 1)  # start = pad = 0
    with torch.no_grad():
        assert torch.equal(model(ids, mask, labels=labels).logits, model(ids, mask, decoder_input_ids=dec).logits)
    with pytest.raises(ValueError, match="decoder_input_ids or labels"):
        model(ids, mask)


def test_label_smoothing_smooths_the_training_loss_only(one_thread):
    """The fused training loss with `label_smoothing` equals cross-entropy against (1 − ε)·one-hot + ε/V
    over the logits; evaluation still reports the plain cross-entropy."""
    cfg = T5Config.preset("tiny", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_heads=4, dropout=0.0)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg)
    ids, mask, labels = batch(7)
    model.eval()
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
    flat = out.logits.flatten(0, 1)
    model.train()
    model.label_smoothing = 0.1
    smoothed = model(ids, mask, labels=labels).loss
    assert abs(smoothed.item() - F.cross_entropy(flat, labels.flatten(), label_smoothing=0.1).item()) < 1e-5
    assert abs(smoothed.item() - out.loss.item()) > 1e-3  # so the line above tells the two apart
    model.eval()
    with torch.no_grad():
        assert model(ids, mask, labels=labels).loss.item() == out.loss.item()


def test_state_names_are_hf_names(transformers):
    cfg = T5Config.preset("tiny", vocab_size=VOCAB, feed_forward="gated-gelu", tie_word_embeddings=False)
    hf_keys = set(t5_state_to_hf(T5ForConditionalGeneration(cfg).state_dict()))
    ref = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4, **V1_1))
    assert hf_keys == {k for k in ref.state_dict() if not k.endswith("embed_tokens.weight")}  # tied to shared


def test_config_validation_and_presets():
    small = T5Config.preset("small")
    assert (small.d_model, small.d_kv, small.d_ff, small.num_layers, small.num_heads) == (512, 64, 2048, 6, 8)
    v11 = T5Config.preset("small", feed_forward="gated-gelu", tie_word_embeddings=False)
    assert not v11.tie_word_embeddings
    with pytest.raises(ConfigError, match="feed_forward"):
        T5Config(feed_forward="swiglu")
    with pytest.raises(ConfigError, match="buckets"):
        T5Config(relative_attention_num_buckets=7)
    with pytest.raises(ConfigError, match="unknown t5 config key"):
        T5Config.from_dict({"d_modle": 3})


@pytest.mark.parametrize("options, match", [
    (dict(do_sample=True, temperature=float("nan")), "temperature must be positive and finite, got nan"),
    (dict(do_sample=True, temperature=0.0), "temperature"), (dict(do_sample=True, top_p=float("nan")), "top_p"),
    (dict(num_beams=2, length_penalty=float("nan")), "length_penalty"), (dict(no_repeat_ngram_size=-1), "≥ 0"),
    (dict(num_beams=2, length_penalty=1e308), r"length_penalty must be a number in \[-50, 50\], got 1e\+308"),
    (dict(top_k=-2), "top_k must be ≥ 0"), (dict(num_beams=0), "num_beams"),
    (dict(num_beams=10 ** 6), "allowed: 1 ≤ num_beams ≤ 256"),  # it ran until killed
])
def test_generation_settings_are_checked_before_decoding(options, match):
    """A nan temperature failed inside torch.multinomial after the encoder ran; a nan length penalty and a
    negative n-gram size were accepted silently."""
    from clozeformer.generate import GenerationConfig

    with pytest.raises(ValueError, match=match):
        GenerationConfig(**options)


def test_generation_length_is_bounded_without_position_limit():
    """T5's relative positions set no limit, so `--max-new-tokens 100000000` decoded until killed; a
    generation is now bounded by LENGTH_CAP, by name, before the encoder runs."""
    from clozeformer.config import LENGTH_CAP

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=40)).eval()
    ids = torch.randint(3, 40, (1, 4))
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3).shape[1] == 4
    with pytest.raises(ValueError, match=rf"max_new_tokens {LENGTH_CAP + 1} is more.*≤ {LENGTH_CAP}"):
        model.generate(ids, max_new_tokens=LENGTH_CAP + 1)
    with pytest.raises(ValueError, match=rf"≤ {LENGTH_CAP}"):
        model.generate(ids, max_length=10 ** 8)


def test_a_source_longer_than_the_cap_is_truncated_with_a_warning():
    """A 20,000-word line asked T5's attention for 29 GB (a MemoryError traceback); sources are cut at LENGTH_CAP,
    as BART's are at its positions, and both say so. A fine-tuning task's generation length is held to it too."""
    from clozeformer.config import LENGTH_CAP
    from clozeformer.infer import generate_texts
    from clozeformer.tasks.spec import TaskError, TaskSpec
    from clozeformer.tokenizer import Tokenizer

    tok = Tokenizer.train("unigram", ["a b c d e f g"] * 20, vocab_size=40, extra_ids=4)
    model = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=32,
                                                       num_layers=1, num_heads=2))
    with pytest.warns(UserWarning, match=rf"text of \d+ tokens truncated to {LENGTH_CAP}"):
        assert len(generate_texts(model, tok, ["a b " * LENGTH_CAP], max_new_tokens=2)) == 1
    with pytest.raises(TaskError, match=rf"max_new_tokens 100000 is out of range; allowed: 1 ≤ max_new_tokens ≤ "
                                        rf"{LENGTH_CAP}"):
        TaskSpec(kind="seq2seq", max_new_tokens=100_000)


def test_generate_refuses_ids_options_and_masks_it_would_misread(one_thread):
    """A forced id of -2 wrapped to V-2, 2.5 new tokens made 3, "no" as do_sample sampled, a [1, T] mask was
    broadcast over the batch, float ids failed in the embedding."""
    model = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=64)).eval()
    ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    for options, error, says in ((dict(forced_bos_token_id=-2), ValueError, r"forced_bos_token_id -2: allowed: an "
                                  r"id in 0 … 63"),
                                 (dict(pad_token_id=10 ** 6), ValueError, "pad_token_id 1000000"),
                                 (dict(max_new_tokens=2.5), TypeError, "max_new_tokens must be int or None"),
                                 (dict(do_sample="no"), TypeError, "do_sample must be bool, got str 'no'"),
                                 (dict(num_beams=True), TypeError, "num_beams must be int, got bool True")):
        with pytest.raises(error, match=says):
            model.generate(ids, **{"max_new_tokens": 3, **options})
    with pytest.raises(ValueError, match=r"attention_mask \(1, 4\) must be the shape of input_ids \(2, 4\)"):
        model.generate(ids, torch.ones(1, 4, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"input_ids must be a 2-D integer tensor .* got torch.float32 \(2, 4\)"):
        model.generate(ids.float(), max_new_tokens=3)
    with pytest.raises(TypeError, match="input_ids must be a tensor of ids"):
        model.generate([[5, 6, 1]], max_new_tokens=3)
