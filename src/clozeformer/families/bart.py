"""BART (Lewis et al. 2020): a denoising autoencoder (five noises) on GPT-2's cased byte-level BPE;
classification from the decoder's last </s>, generation."""

from typing import Any

from clozeformer.families.family import Family, task_heads
from clozeformer.interop import hf
from clozeformer.models.bart import (BartConfig, BartForConditionalGeneration, BartForQuestionAnswering,
                                     BartForSequenceClassification, BartForTokenClassification)


def bart_fields(tok, max_len: int) -> dict[str, Any]:
    return {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, "bos_token_id": tok.bos_id,
            "eos_token_id": tok.eos_id, "decoder_start_token_id": tok.eos_id, "max_positions": max(1024, max_len)}


FAMILY = Family(
    "bart", BartConfig, BartForConditionalGeneration, "bpe", lowercase=False, token_types=False, objective="denoise",
    config_fields=bart_fields,
    heads=task_heads(BartForSequenceClassification, BartForTokenClassification, BartForQuestionAnswering),
    # transformers' BartConfig forces </s> (id 2) at the maximum length unless a saved config says otherwise
    hf=hf.HFMapping(BartForConditionalGeneration, ("BartModel", "BartForConditionalGeneration"), ("bart.",),
                    hf.bart_state_to_hf, hf.bart_state_from_hf, hf.bart_config_to_hf, hf.bart_config_from_hf,
                    {"forced_eos_token_id": 2}))
