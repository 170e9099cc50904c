"""BART against transformers: same weights in, same logits, loss and generated ids out."""

import warnings

import pytest
import torch


from clozeformer.config import ConfigError  # noqa: E402
from clozeformer.interop.hf import bart_state_from_hf  # noqa: E402
from clozeformer.interop.model_dir import load_model, load_state, save_model  # noqa: E402
from clozeformer.models.bart import (  # noqa: E402
    BartConfig,
    BartForConditionalGeneration,
    BartForSequenceClassification,
    BartForTokenClassification,
    shift_right,
)

V = 97


def hf_config(transformers, **kw):
    base = dict(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=0,
                eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None, forced_bos_token_id=None,
                no_repeat_ngram_size=0, num_beams=1, early_stopping=False, length_penalty=1.0)
    base.update(kw)
    return transformers.BartConfig(**base)


@pytest.fixture(scope="module")
def pair(transformers, tmp_path_factory):
    """A random transformers BART (non-zero final_logits_bias) and ours loaded from its directory."""
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(hf_config(transformers)).eval()
    with torch.no_grad():
        hf.final_logits_bias.normal_(0, 0.5)
    d = tmp_path_factory.mktemp("hf_bart")
    hf.save_pretrained(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every HF tensor must be used, every parameter of ours filled
        ours = load_model(d)
    return hf, ours


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, V, (3, 11), generator=g)
    ids[:, 0] = 0
    lengths = torch.tensor([11, 7, 4])
    ids[torch.arange(11) >= lengths[:, None]] = 1
    ids[torch.arange(3), lengths - 1] = 2
    mask = (ids != 1).long()
    labels = torch.randint(4, V, (3, 9), generator=g)
    labels[1, 6:] = -100
    return ids, mask, labels


def test_logits_and_loss_match_transformers(pair):
    hf, ours = pair
    ids, mask, labels = batch()
    dec = shift_right(labels, 2, 1)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        got = ours(ids, mask, decoder_input_ids=dec)
        assert (got.logits - ref.logits).abs().max() < 1e-4
        ref_loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert abs(ours(ids, mask, labels=labels).loss.item() - ref_loss.item()) < 1e-5


def test_decoder_attention_mask_reads_as_in_transformers(pair):
    """A 1/0 decoder_attention_mask masks the decoder's own keys as transformers reads it (left padding here)."""
    hf, ours = pair
    ids, mask, labels = batch()
    dec = shift_right(labels, 2, 1)
    dec_mask = torch.ones_like(dec)
    dec_mask[2, :3] = 0
    keep = dec_mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask).logits
        got = ours(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask).logits
        unmasked = ours(ids, mask, decoder_input_ids=dec).logits
    assert (got[keep] - ref[keep]).abs().max() < 1e-4
    assert (unmasked[2, 3:] - got[2, 3:]).abs().max() > 1e-3  # the mask changed what row 2 reads


def test_training_gradients_match_transformers(pair):
    """Every parameter's gradient of a training step (train mode: the fused LM head) equals transformers'."""
    import copy

    from clozeformer.interop.hf import bart_state_to_hf

    hf, ours = (copy.deepcopy(m).train() for m in pair)
    ids, mask, labels = batch()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ours(ids, mask, labels=labels).loss.backward()
    theirs = {n: p.grad for n, p in hf.named_parameters()}
    got = bart_state_to_hf({n: p.grad for n, p in ours.named_parameters()})
    assert got.keys() <= theirs.keys() and len(got) > 40
    for name, grad in got.items():  # relative to each tensor's scale: encoder gradients are ~1e-5 here
        scale = theirs[name].abs().max().item()
        if scale < 1e-10:  # the k-projection biases: zero up to rounding (softmax ignores a shift of every score)
            assert grad.abs().max() < 1e-10, name
            continue
        assert (grad - theirs[name]).abs().max() <= 1e-4 * scale, name


def test_export_loads_in_transformers(transformers, tmp_path):
    torch.manual_seed(3)
    ours = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=V, dropout=0.0)).eval()
    save_model(ours, tmp_path)
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask, labels = batch()
    dec = shift_right(labels, 2, 1)
    with torch.no_grad():
        assert (hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
                - ours(ids, mask, decoder_input_ids=dec).logits).abs().max() < 1e-4
    again = load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_cached_decoding_equals_one_full_pass(pair):
    _, ours = pair
    ids, mask, labels = batch()
    dec = shift_right(labels, 2, 1)
    with torch.no_grad():
        enc = ours.encode(ids, mask)
        full = ours.decode(dec, enc, mask)
        cache = ours.new_cache()
        steps = torch.cat([ours.decode(dec[:, i:i + 1], enc, mask, cache) for i in range(dec.shape[1])], 1)
        # a prefix of 4 at once, then one by one: the causal mask must respect the cached offset
        cache = ours.new_cache()
        mixed = torch.cat([ours.decode(dec[:, :4], enc, mask, cache)]
                          + [ours.decode(dec[:, i:i + 1], enc, mask, cache) for i in range(4, dec.shape[1])], 1)
    assert (steps - full).abs().max() < 1e-5 and (mixed - full).abs().max() < 1e-5


GENERATION_SETTINGS = [
    dict(max_new_tokens=12),
    dict(max_new_tokens=12, num_beams=4),
    dict(max_new_tokens=10, num_beams=4, length_penalty=2.0, no_repeat_ngram_size=2, min_length=5,
         num_return_sequences=2),
    dict(max_new_tokens=9, num_beams=3, early_stopping=True, forced_bos_token_id=0, forced_eos_token_id=2),
    dict(max_new_tokens=9, num_beams=2, early_stopping="never", length_penalty=0.5),
    dict(max_new_tokens=8, no_repeat_ngram_size=1, min_new_tokens=3),
    dict(max_new_tokens=8, min_length=7, min_new_tokens=1),  # min_new_tokens wins, as max_new_tokens below
    dict(max_new_tokens=4, max_length=12),
    dict(max_new_tokens=10, repetition_penalty=1.8),
    dict(max_new_tokens=10, num_beams=3, repetition_penalty=0.7),
]


@pytest.mark.parametrize("settings", GENERATION_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_generation_ids_match_transformers(pair, settings):
    hf, ours = pair
    ids, mask, _ = batch()
    want = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, **settings)
    got = ours.generate(ids, mask, **settings)
    assert got.tolist() == want.tolist()


def test_generation_stops_at_eos_and_pads(pair):
    _, ours = pair
    with torch.no_grad():
        ours.final_logits_bias[2] += 50.0  # </s> always wins: every row is [start, </s>]
    try:
        out = ours.generate(batch()[0], max_new_tokens=10)
        beams = ours.generate(batch()[0], max_new_tokens=10, num_beams=3)
    finally:
        with torch.no_grad():
            ours.final_logits_bias[2] -= 50.0
    assert out.tolist() == [[2, 2]] * 3 and beams.tolist() == [[2, 2]] * 3


def test_generation_longer_than_the_positions_is_refused_before_decoding():
    """BART's decoder has max_positions learned positions: a longer output is refused by name before the
    first step (it failed after decoding that far, telling the user to truncate the input)."""
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=50, max_positions=12)).eval()
    ids = torch.randint(4, 50, (2, 5))
    assert model.generate(ids, max_new_tokens=11).shape[1] <= 12
    with pytest.raises(ValueError, match=r"max_new_tokens 12 needs 13 decoder positions.*allowed: max_new_tokens ≤ 11"):
        model.generate(ids, max_new_tokens=12)


def test_sampling_is_reproducible_and_respects_top_k(pair):
    _, ours = pair
    ids = batch()[0]
    a = ours.generate(ids, max_new_tokens=8, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    greedy = ours.generate(ids, max_new_tokens=8)
    assert a.tolist() == greedy.tolist()  # top-1 sampling is greedy
    s1 = ours.generate(ids, max_new_tokens=8, do_sample=True, top_p=0.9, temperature=1.5,
                       generator=torch.Generator().manual_seed(5))
    s2 = ours.generate(ids, max_new_tokens=8, do_sample=True, top_p=0.9, temperature=1.5,
                       generator=torch.Generator().manual_seed(5))
    assert s1.tolist() == s2.tolist()


def test_sequence_classification_matches_transformers(transformers):
    torch.manual_seed(4)
    hf = transformers.BartForSequenceClassification(hf_config(transformers, num_labels=3)).eval()
    ours = BartForSequenceClassification(BartConfig.preset("tiny", vocab_size=V, hidden_size=32, num_heads=4,
                                                           intermediate_size=48, max_positions=64, dropout=0.0),
                                         num_labels=3).eval()
    state, ignored = bart_state_from_hf(hf.state_dict())
    assert load_state(ours, {k: v for k, v in state.items() if k != "final_logits_bias"}, "hf") == [] and not ignored
    ids, mask, _ = batch()
    with torch.no_grad():
        assert (ours(ids, mask).logits - hf(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5
    with pytest.raises(ValueError, match="</s>"):
        ours(torch.full((1, 4), 5))


def test_token_classification_reads_every_decoder_position():
    torch.manual_seed(5)
    cfg = BartConfig.preset("tiny", vocab_size=V, dropout=0.0)
    model = BartForTokenClassification(cfg, num_labels=5).eval()
    ids, mask, _ = batch()
    labels = torch.randint(0, 5, ids.shape)
    labels[mask == 0] = -100
    out = model(ids, mask, labels=labels)
    assert out.logits.shape == (3, 11, 5) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.bart.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0  # the encoder learns too


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_training_loss_fuses_the_lm_head_without_changing_loss_or_gradients(family):
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    torch.manual_seed(7)
    if family == "bart":
        model = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=V, dropout=0.0))
    else:
        model = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=V, dropout=0.0))
    ids, mask, labels = batch()
    model.eval()  # the two-step path: logits, then cross-entropy
    ref = model(ids, mask, labels=labels)
    ref_grads = torch.autograd.grad(ref.loss, list(model.parameters()), allow_unused=True)
    model.train()  # dropout 0: the same function, the fused path
    out = model(ids, mask, labels=labels)
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    assert out.logits is None and abs(out.loss.item() - ref.loss.item()) < 1e-5
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None) and (a is None or (a - b).abs().max() < 1e-5)


def test_layer_norm_eps_other_than_transformers_fixed_value_is_refused():
    """transformers' BART has no eps key (its LayerNorms keep 1e-5): another would not survive the export."""
    with pytest.raises(ConfigError, match="layer_norm_eps must be 1e-5"):
        BartConfig.preset("tiny", layer_norm_eps=1e-6)
