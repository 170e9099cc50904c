"""RoBERTa, the fifth family: transformers as the oracle in both directions (MaskedLM and
SequenceClassification logits ≤ 1e-4), positions offset by the padding id, and pretraining and
fine-tuning through the same API as the other families."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

import textgen
from batches import padded_batch
from clozeformer.cli import main
from clozeformer.config import ConfigError
from clozeformer.infer import fill_mask, mlm_model
from clozeformer.interop.model_dir import load_model, save_model
from clozeformer.models.roberta import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification
from clozeformer.tokenizer import Tokenizer

TOL = 1e-4
V = 211


def hf_config(transformers, **kw):
    return transformers.RobertaConfig(**{**dict(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=128, max_position_embeddings=40), **kw})


def batch(seed=0):
    ids, mask, _ = padded_batch(V, seed)
    return ids.masked_fill(mask == 0, 1), mask  # RoBERTa's <pad> is 1


@pytest.mark.parametrize("cls_name", ["RobertaForMaskedLM", "RobertaForSequenceClassification", "RobertaModel"])
def test_import_from_transformers(transformers, tmp_path, cls_name):
    torch.manual_seed(0)
    hf = getattr(transformers, cls_name)(hf_config(transformers, num_labels=3)).eval()
    hf.save_pretrained(tmp_path)
    if cls_name == "RobertaModel":  # a bare encoder: the LM head is new, the pooler ignored
        with pytest.warns(UserWarning, match="freshly initialised"):
            ours = load_model(tmp_path)
    else:
        ours = load_model(tmp_path)
    ids, mask = batch()
    keep = mask.bool()
    with torch.no_grad():
        ref, out = hf(input_ids=ids, attention_mask=mask), ours(ids, mask)
    if cls_name == "RobertaModel":
        assert type(ours) is RobertaForMaskedLM
        assert (out.last_hidden_state - ref.last_hidden_state)[keep].abs().max() < TOL
    elif cls_name == "RobertaForMaskedLM":
        assert (out.logits - ref.logits)[keep].abs().max() < TOL
    else:
        assert type(ours) is RobertaForSequenceClassification and (out.logits - ref.logits).abs().max() < TOL


@pytest.mark.parametrize("cls", [RobertaForMaskedLM, RobertaForSequenceClassification])
def test_export_loads_in_transformers(transformers, tmp_path, cls):
    torch.manual_seed(1)
    cfg = RobertaConfig.preset("tiny", vocab_size=V, hidden_size=64, num_heads=4, intermediate_size=128,
                               max_positions=40)
    ours = (cls(cfg) if cls is RobertaForMaskedLM else cls(cfg, 2)).eval()
    with torch.no_grad():  # non-zero biases and norms, so a misplaced tensor shows
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_model(ours, tmp_path)
    hf = getattr(transformers, cls.__name__).from_pretrained(tmp_path).eval()
    ids, mask = batch(1)
    keep = mask.bool()
    with torch.no_grad():
        ref, out = hf(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits
    diff = (out - ref)[keep] if cls is RobertaForMaskedLM else out - ref
    assert diff.abs().max() < TOL


def test_positions_start_after_the_padding_id():
    cfg = RobertaConfig.preset("tiny", vocab_size=V, max_positions=12)
    assert cfg.position_offset == 2 and cfg.max_length == 10
    model = RobertaForMaskedLM(cfg).eval()
    with torch.no_grad():
        model(torch.full((1, 10), 5))  # positions 2 … 11: the last row of the table
        with pytest.raises(ValueError, match="sequence length 11 exceeds max_positions 10"):
            model(torch.full((1, 11), 5))
    with pytest.raises(ConfigError, match="no next-sentence prediction"):
        RobertaConfig(nsp=True)


def test_pretrain_then_finetune(tmp_path):
    from clozeformer.train.finetune import finetune
    from clozeformer.train.pretrain import pretrain

    corpus = textgen.write_lines(tmp_path / "corpus.txt", textgen.english(300))
    s = pretrain([corpus], model="roberta", config="tiny", run_dir=tmp_path / "pre", vocab_size=400, max_len=32,
                 batch_size=8, cache_dir=tmp_path / "cache", progress=False,
                 train=dict(steps=30, eval_every=30, save_every=30, precision="fp32"))
    model = load_model(s["model_dir"])
    assert type(model) is RobertaForMaskedLM and model.config.max_positions == 512 + 2
    assert s["eval"]["mlm_loss"] < s["eval_before"]["mlm_loss"] and "nsp_loss" not in s["eval"]
    tok = Tokenizer.load(s["model_dir"])
    (preds,) = fill_mask(mlm_model(model), tok, "the film was <mask> .", top_k=3)  # RoBERTa's mask token
    assert len(preds) == 3
    with pytest.raises(ValueError, match=r"no <mask> in 'the film was \[MASK\] \.' \(this model's mask token is "
                                         r"<mask>, not \[MASK\]\)"):
        fill_mask(mlm_model(model), tok, "the film was [MASK] .")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fill-mask", s["model_dir"], "the film was <mask> .", "--top-k", "3"]) == 0
    shown = out.getvalue().splitlines()[1]  # byte-level pieces shown as their text, not as "Ġthe"
    assert shown.startswith("  [MASK] #1: ") and "Ġ" not in shown and shown.count("(0.") == 3
    rows = textgen.labelled(200)
    textgen.write_lines(tmp_path / "train.tsv", ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in rows[:160]])
    textgen.write_lines(tmp_path / "dev.tsv", ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in rows[160:]])
    out = finetune(s["model_dir"], "sst2", tmp_path / "train.tsv", tmp_path / "dev.tsv", run_dir=tmp_path / "ft",
                   epochs=1, batch_size=16, lr=1e-4, progress=False)
    tuned = load_model(tmp_path / "ft" / "best")
    assert type(tuned) is RobertaForSequenceClassification and "accuracy" in out["eval"]


def test_positions_count_tokens_and_the_head_is_gelu_as_in_transformers(transformers, tmp_path):
    """transformers numbers RoBERTa's positions by a running count of non-padding ids (left padding and
    a padding id inside the text shift them) and its LM head uses exact gelu whatever hidden_act is."""
    torch.manual_seed(2)
    hf = transformers.RobertaForMaskedLM(hf_config(transformers, hidden_act="relu")).eval()
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    ids, mask = batch(2)
    left = torch.stack([torch.cat([r[m.bool()].new_full((int((m == 0).sum()),), 1), r[m.bool()]])
                        for r, m in zip(ids, mask)])  # the same rows padded on the left
    left_mask = (left != 1).long()
    inside = ids.clone()
    inside[0, 3] = 1  # a padding id inside attended text
    for x, m in ((ids, mask), (left, left_mask), (inside, mask)):
        with torch.no_grad():
            diff = (ours(x, m).logits - hf(input_ids=x, attention_mask=m).logits)[m.bool()]
        assert diff.abs().max() < TOL
    save_model(ours, tmp_path / "back")
    back = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert (ours(left, left_mask).logits - back(input_ids=left, attention_mask=left_mask).logits)[
            left_mask.bool()].abs().max() < TOL
