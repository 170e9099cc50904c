"""T5 (Raffel et al. 2020): span corruption with sentinels on a cased SentencePiece Unigram vocabulary;
every task answered as text (classification and regression included)."""

from typing import Any

from clozeformer.families.family import SMALL_BUDGET, TEXT_TO_TEXT, Family
from clozeformer.interop import hf
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration


def t5_fields(tok, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "eos_token_id": tok.eos_id,
            "decoder_start_token_id": tok.pad_id}


FAMILY = Family(
    "t5", T5Config, T5ForConditionalGeneration, "unigram", lowercase=False, token_types=False, objective="span",
    config_fields=t5_fields, text_to_text=TEXT_TO_TEXT,
    # Adam with T5's init needs each matrix's lr scaled to its size, as Adafactor does (loop.param_groups)
    small_budget={**SMALL_BUDGET, "lr": 1e-3, "relative_lr": True},
    hf=hf.HFMapping(T5ForConditionalGeneration, ("T5Model", "T5ForConditionalGeneration"),
                    ("shared.", "encoder.", "decoder."), hf.t5_state_to_hf, hf.t5_state_from_hf, hf.t5_config_to_hf,
                    hf.t5_config_from_hf))
