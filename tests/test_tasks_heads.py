"""Fine-tuning heads against transformers (the external oracle): same weights, same logits, both directions."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import clozeformer
from clozeformer.interop.model_dir import save_model

transformers = pytest.importorskip("transformers")
TOL = 1e-4
V = 120

BERT = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)
ELECTRA = dict(BERT, embedding_size=16)
BART = dict(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)

CASES = [  # (HF class, config class, config kwargs, num_labels)
    ("BertForSequenceClassification", "BertConfig", BERT, 3),
    ("BertForSequenceClassification", "BertConfig", BERT, 1),  # regression
    ("BertForTokenClassification", "BertConfig", BERT, 5),
    ("BertForQuestionAnswering", "BertConfig", BERT, 2),
    ("ElectraForSequenceClassification", "ElectraConfig", ELECTRA, 3),
    ("ElectraForTokenClassification", "ElectraConfig", ELECTRA, 5),
    ("ElectraForQuestionAnswering", "ElectraConfig", ELECTRA, 2),
    ("BartForSequenceClassification", "BartConfig", BART, 3),
    ("BartForQuestionAnswering", "BartConfig", BART, 2),
]


def batch(bart: bool):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (3, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    lengths = mask.sum(1)
    pad = 1 if bart else 0
    ids = ids.masked_fill(mask == 0, pad)
    if bart:  # every row ends in </s> (the sequence classifier reads its last one)
        ids[torch.arange(3), lengths - 1] = 2
    return ids, mask


def logits(out) -> torch.Tensor:
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits])
    return out.logits


@pytest.mark.parametrize("hf_name,cfg_name,kw,num_labels", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_head_parity_both_directions(tmp_path, one_thread, hf_name, cfg_name, kw, num_labels):
    torch.manual_seed(0)
    hf_cfg = getattr(transformers, cfg_name)(**kw, num_labels=num_labels)
    hf = getattr(transformers, hf_name)(hf_cfg).eval()
    ids, mask = batch(hf_name.startswith("Bart"))
    hf.save_pretrained(tmp_path / "hf")
    ours = clozeformer.load_model(tmp_path / "hf")  # HF -> ours: the right head class comes back
    assert type(ours).__name__ == hf_name and ours.num_labels == num_labels
    with torch.no_grad():
        want = logits(hf(input_ids=ids, attention_mask=mask))
        assert torch.allclose(logits(ours(ids, mask)), want, atol=TOL)

    torch.manual_seed(1)  # ours (fresh weights) -> HF
    fresh = type(ours)(ours.config, num_labels)
    fresh.task = {"labels": [f"c{i}" for i in range(num_labels)]}
    save_model(fresh, tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["architectures"] == [hf_name] and cfg["clozeformer"]["head"] == hf_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = getattr(transformers, hf_name).from_pretrained(tmp_path / "ours").eval()
    if not hf_name.endswith("QuestionAnswering"):
        assert back.config.num_labels == num_labels and back.config.id2label[0] == "c0"
    with torch.no_grad():
        assert torch.allclose(logits(back(input_ids=ids, attention_mask=mask)), logits(fresh.eval()(ids, mask)),
                              atol=TOL)
    reloaded = clozeformer.load_model(tmp_path / "ours")
    assert type(reloaded) is type(fresh) and reloaded.task == fresh.task


def test_loss_matches_transformers(one_thread):
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(transformers.BertConfig(**BERT)).eval()
    ids, mask = batch(False)
    starts, ends = torch.tensor([1, 2, 40]), torch.tensor([3, 2, 41])  # the last lies outside: ignored
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = clozeformer.load_model(d)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends).loss
        got = ours(ids, mask, start_positions=starts, end_positions=ends).loss
    assert abs(float(want) - float(got)) < TOL
