"""ELECTRA: config, replaced-token detection objective, models, HF parity both ways, RTD view."""

from __future__ import annotations

import pytest
import torch

import clozeformer
from batches import padded_batch
from clozeformer.config import ConfigError
from clozeformer.models.electra import ElectraConfig, ElectraDiscriminator, ElectraForPreTraining, ElectraGenerator
from clozeformer.objectives.rtd import (IGNORE, discriminator_loss, replaced_inputs, rtd_mask,
                                        sample_replacements)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4
V = 211


def tiny(**kw) -> ElectraConfig:
    return ElectraConfig.preset("tiny", **{"vocab_size": V, "max_positions": 64, **kw})


# ---- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction,hidden,heads,ffn", [(0.25, 64, 1, 256), (1 / 3, 85, 1, 340), (0.5, 128, 2, 512)])
def test_generator_sizes_follow_google_electra(fraction, hidden, heads, ffn):
    cfg = ElectraConfig.preset("small", generator_fraction=fraction)
    assert (cfg.hidden_size, cfg.embedding_size, cfg.num_layers) == (256, 128, 12)
    assert (cfg.generator_hidden, cfg.generator_heads, cfg.generator_intermediate) == (hidden, heads, ffn)


@pytest.mark.parametrize("fraction", [0.25, 1 / 3, 0.5])
def test_pair_runs_at_each_generator_size(fraction):
    torch.manual_seed(0)
    pair = ElectraForPreTraining(tiny(generator_fraction=fraction, hidden_size=192, num_heads=2))
    ids, mask, _ = padded_batch(V)
    labels = torch.full_like(ids, IGNORE)
    labels[:, 1:4] = ids[:, 1:4]
    out = pair(ids, mask, labels=labels, replace_u=torch.rand(ids.shape))
    assert out.sampled.shape == (9,) and out.logits.shape == ids.shape and torch.isfinite(out.loss)
    assert out.generator_logits is None  # training: the generator's head is fused into its loss
    assert pair.generator.electra.layers[0].attn.qkv.in_features == round(fraction * 192)


def test_fused_generator_head_gives_the_plain_paths_loss_samples_and_gradients():
    """Training fuses the generator's vocabulary projection into its loss and draws the samples
    in the same pass; the plain path (eval mode, logits materialised) must agree on all of it."""
    torch.manual_seed(0)
    pair = ElectraForPreTraining(tiny(dropout=0.0, attention_dropout=0.0))
    ids, mask, _ = padded_batch(V, 4)
    labels = torch.full_like(ids, IGNORE)
    labels[:, 1:5] = ids[:, 1:5]
    u = torch.rand(ids.shape)
    runs = []
    for training in (True, False):
        pair.train(training)
        pair.zero_grad()
        out = pair(ids, mask, labels=labels, replace_u=u)
        out.loss.backward()
        runs.append((out, {k: p.grad.clone() for k, p in pair.named_parameters() if p.grad is not None}))
    (fused, g_fused), (plain, g_plain) = runs
    assert fused.generator_logits is None and plain.generator_logits.shape == (12, V)
    assert torch.equal(fused.sampled, plain.sampled) and torch.equal(fused.replaced, plain.replaced)
    assert torch.allclose(fused.losses["mlm"], plain.losses["mlm"], atol=1e-6)
    assert g_fused.keys() == g_plain.keys() and "generator.mlm.bias" in g_fused
    for k in g_plain:
        assert torch.allclose(g_fused[k], g_plain[k], atol=1e-6, rtol=1e-4), k


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="divisible"):
        ElectraConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ConfigError, match="generator_fraction"):
        ElectraConfig(generator_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown electra config key"):
        ElectraConfig.from_dict({"hiden_size": 3})
    cfg = tiny(discriminator_weight=20.0)
    assert ElectraConfig.from_dict(cfg.to_dict()) == cfg


# ---- objective -----------------------------------------------------------------------------


def test_rtd_mask_selects_15_percent_masks_85_keeps_15_never_random():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 500, (64, 128), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    out = rtd_mask(ids, mask_id=4, vocab_size=500, special_ids=[0, 1, 2, 3, 4], generator=g)
    sel = out["labels"] != IGNORE
    assert (sel.sum(1) == round(0.15 * 126)).all()
    assert torch.equal(out["labels"][sel], ids[sel])
    masked = (out["input_ids"] == 4) & sel
    assert abs(masked.sum() / sel.sum() - 0.85) < 0.03
    assert torch.equal(out["input_ids"][sel & ~masked], ids[sel & ~masked])  # the rest kept, none random
    assert torch.equal(out["input_ids"][~sel], ids[~sel])
    u = out["replace_u"]
    assert u.shape == ids.shape and u.min() >= 0 and u.max() < 1
    g2 = torch.Generator().manual_seed(0)
    torch.randint(10, 500, (64, 128), generator=g2)
    again = rtd_mask(ids, mask_id=4, vocab_size=500, special_ids=[0, 1, 2, 3, 4], generator=g2)
    assert all(torch.equal(out[k], again[k]) for k in out)  # a pure function of the generator's state


def test_sampling_is_inverse_cdf_of_the_softmax():
    logits = torch.log(torch.tensor([[0.1, 0.0, 0.6, 0.3]]))  # id 1 has zero mass
    u = torch.tensor([0.0, 0.05, 0.11, 0.69, 0.71, 0.999])
    got = sample_replacements(logits.expand(6, 4), u)
    assert got.tolist() == [0, 0, 2, 2, 3, 3]
    # empirically: frequencies match the softmax, and the same u gives the same samples
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 50, generator=g).expand(200_000, 50)
    u = torch.rand(200_000, generator=g)
    s = sample_replacements(logits, u)
    freq = torch.bincount(s, minlength=50).float() / len(s)
    assert (freq - logits[0].softmax(-1)).abs().max() < 0.005
    assert torch.equal(s, sample_replacements(logits, u))


def test_sampling_has_no_gradient_path():
    logits = torch.randn(5, 7, requires_grad=True)
    assert not sample_replacements(logits, torch.rand(5)).requires_grad


def test_replaced_labels_count_a_correct_guess_as_original():
    ids = torch.tensor([[2, 4, 11, 4, 3, 0], [2, 12, 4, 13, 3, 0]])
    labels = torch.tensor([[-100, 10, -100, 20, -100, -100], [-100, -100, 30, -100, -100, -100]])
    disc_ids, replaced = replaced_inputs(ids, labels, torch.tensor([10, 21, 31]))
    assert disc_ids.tolist() == [[2, 10, 11, 21, 3, 0], [2, 12, 31, 13, 3, 0]]
    assert replaced.tolist() == [[False, False, False, True, False, False], [False, False, True, False, False, False]]
    logits = torch.tensor([[0.0, 0, 0, 0, 0, 9], [0, 0, 0, 0, 0, 9]])
    mask = (ids != 0).long()
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask.bool()], replaced[mask.bool()].float())
    assert torch.allclose(discriminator_loss(logits, replaced, mask), by_hand)  # pad positions left out


# ---- models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return ElectraForPreTraining(tiny())


def test_pair_shares_only_token_and_position_embeddings(pair):
    d, g = pair.discriminator.electra.embeddings, pair.generator.electra.embeddings
    assert d.tok.weight is g.tok.weight and d.pos.weight is g.pos.weight
    assert pair.generator.mlm.embedding.weight is d.tok.weight  # generator head tied to the shared embeddings
    assert d.token_type.weight is not g.token_type.weight and d.norm.weight is not g.norm.weight
    disc_params = {id(p) for p in pair.discriminator.parameters()}
    shared = [n for n, p in pair.generator.named_parameters() if id(p) in disc_params]
    assert sorted(shared) == ["electra.embeddings.pos.weight", "electra.embeddings.tok.weight"]
    assert pair.discriminator.electra.project.in_features == 64  # E=64 -> H=128
    assert pair.generator.electra.project.out_features == 32


def test_rtd_step_losses_and_gradients(pair):
    pair.train()
    ids, mask, _ = padded_batch(V, 3)
    g = torch.Generator().manual_seed(0)
    batch = rtd_mask(ids, mask_id=4, vocab_size=V, special_ids=[0, 1, 2, 3, 4], generator=g)
    torch.manual_seed(1)
    out = pair(batch["input_ids"], mask, labels=batch["labels"], replace_u=batch["replace_u"])
    assert torch.allclose(out.loss, out.losses["mlm"] + 50.0 * out.losses["disc"])
    sel = batch["labels"] != IGNORE
    assert torch.equal(out.disc_input_ids[~sel], batch["input_ids"][~sel])
    assert torch.equal(out.replaced, out.disc_input_ids != torch.where(sel, batch["labels"], ids))
    # the discriminator loss reaches the generator only through the shared embeddings (sampling is discrete)
    pair.zero_grad()
    out.losses["disc"].backward()
    gen_only = [p for n, p in pair.generator.named_parameters() if "embeddings.tok" not in n and "embeddings.pos" not in n]
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in gen_only)
    assert pair.discriminator.head.out.weight.grad.abs().max() > 0
    pair.zero_grad()
    # the same batch and noise give the same samples (dropout aside: eval mode)
    pair.eval()
    a = pair(batch["input_ids"], mask, labels=batch["labels"], replace_u=batch["replace_u"])
    b = pair(batch["input_ids"], mask, labels=batch["labels"], replace_u=batch["replace_u"])
    assert torch.equal(a.disc_input_ids, b.disc_input_ids) and torch.equal(a.loss, b.loss)


# ---- HF parity -----------------------------------------------------------------------------



def hf_config(transformers, **kw):
    base = dict(vocab_size=V, embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=64)
    return transformers.ElectraConfig(**{**base, **kw})


def test_import_hf_discriminator_and_generator(transformers, tmp_path):
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(hf_config(transformers)).eval()
    gen = transformers.ElectraForMaskedLM(hf_config(transformers, hidden_size=16, num_attention_heads=2,
                                                    intermediate_size=64, num_hidden_layers=1)).eval()
    disc.save_pretrained(tmp_path / "d")
    gen.save_pretrained(tmp_path / "g")
    ours_d, ours_g = clozeformer.load_model(tmp_path / "d"), clozeformer.load_model(tmp_path / "g")
    assert isinstance(ours_d, ElectraDiscriminator) and isinstance(ours_g, ElectraGenerator)
    ids, mask, types = padded_batch(V)
    keep = mask.bool()
    with torch.no_grad():
        assert (ours_d(ids, mask, types).logits - disc(input_ids=ids, attention_mask=mask,
                                                            token_type_ids=types).logits)[keep].abs().max() < TOL
        assert (ours_g(ids, mask, types).logits - gen(input_ids=ids, attention_mask=mask,
                                                      token_type_ids=types).logits)[keep].abs().max() < TOL
    # an HF pair laid out as ours (generator/ inside the discriminator) loads as the pretraining pair
    with torch.no_grad():  # in place: the generator's LM head stays tied to its word embeddings
        gen.electra.embeddings.word_embeddings.weight.copy_(disc.electra.embeddings.word_embeddings.weight)
        gen.electra.embeddings.position_embeddings.weight.copy_(disc.electra.embeddings.position_embeddings.weight)
    gen.save_pretrained(tmp_path / "d" / "generator")
    both = clozeformer.load_model(tmp_path / "d")  # a generator shallower than the discriminator keeps its depth
    assert isinstance(both, ElectraForPreTraining) and both.config.generator_hidden == 16
    assert both.config.generator_layers == 1 and both.config.num_layers == 2
    with torch.no_grad():
        assert (both.generator(ids, mask, types).logits - gen(input_ids=ids, attention_mask=mask,
                                                              token_type_ids=types).logits)[keep].abs().max() < TOL
    clozeformer.save_model(both, tmp_path / "again")
    with torch.no_grad():
        again = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "again" / "generator").eval()
        assert again.config.num_hidden_layers == 1
        assert (again(input_ids=ids, attention_mask=mask, token_type_ids=types).logits - gen(
            input_ids=ids, attention_mask=mask, token_type_ids=types).logits)[keep].abs().max() < TOL


def test_export_pair_loads_in_transformers(transformers, tmp_path, pair):
    pair.eval()
    clozeformer.save_model(pair, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "generator" / "config.json").is_file()
    ids, mask, types = padded_batch(V, 2)
    keep = mask.bool()
    with torch.no_grad():
        hf_d = transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval()
        hf_g = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
        ref_d = hf_d(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        ref_g = hf_g(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert (pair(ids, mask, types).logits - ref_d)[keep].abs().max() < TOL
        assert (pair.generator(ids, mask, types).logits - ref_g)[keep].abs().max() < TOL
    back = clozeformer.load_model(tmp_path)
    assert isinstance(back, ElectraForPreTraining) and back.config == pair.config
    a, b = pair.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    alone = clozeformer.load_model(tmp_path / "generator")
    assert isinstance(alone, ElectraGenerator)


# ---- RTD view ------------------------------------------------------------------------------


def test_replaced_token_detection_rows():
    from clozeformer.infer import replaced_token_detection
    from clozeformer.tokenizer import Tokenizer

    texts = ["the movie was good and the plot was fun", "a bad film with a dull plot", "good fun"] * 20
    tok = Tokenizer.train_wordpiece(texts, vocab_size=120)
    torch.manual_seed(0)
    model = ElectraForPreTraining(tiny(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id))
    rows = replaced_token_detection(model, tok, "the movie was good and the plot was fun", seed=0, rate=0.3)
    assert [r.original for r in rows] == tok.tokens(tok.encode("the movie was good and the plot was fun"))
    masked = [r for r in rows if r.masked_input != r.original or r.sample is not None]
    assert len([r for r in rows if r.sample is not None]) == round(0.3 * (len(rows) - 2))
    assert all(0.0 <= r.p_replaced <= 1.0 for r in rows)
    assert all(r.replaced == (r.sample is not None and r.sample != r.original) for r in rows)
    assert masked and rows == replaced_token_detection(model, tok, "the movie was good and the plot was fun",
                                                       seed=0, rate=0.3)
