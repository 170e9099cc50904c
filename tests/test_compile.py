"""--compile: the training step run through torch.compile trains as the eager step does, for
each objective's family (its real pretraining batches: packed documents, sparse MLM heads,
ELECTRA's sampled replacements, BART's noise, T5's sentinels; RoBERTa runs BERT's code)."""

import pytest
import torch

import batches
import textgen
from clozeformer.train.pretrain import pretrain


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return textgen.write_lines(tmp_path_factory.mktemp("compile") / "corpus.txt", textgen.english(300))


@pytest.mark.parametrize("family", ["bert", "electra", "bart", "t5"])
def test_compiled_training_matches_eager(family, corpus, tmp_path):
    kw = dict(model=family, config="tiny", max_len=32, batch_size=4, cache_dir=tmp_path / "cache", progress=False)
    train = dict(steps=3, log_every=1, eval_every=100, save_every=100, precision="fp32")
    eager = pretrain([corpus], run_dir=tmp_path / "eager", vocab_size=300, train=train, **kw)
    # inductor draws its own random numbers unless told to use eager's: then ELECTRA's generator
    # samples the same replacements in both runs and the losses can be compared
    with torch._inductor.config.patch(fallback_random=True):
        compiled = pretrain([corpus], run_dir=tmp_path / "compiled", tokenizer=tmp_path / "eager" / "model",
                            train={**train, "compile": True}, **kw)
    a, b = batches.rows(tmp_path / "eager"), batches.rows(tmp_path / "compiled")
    assert [r["step"] for r in b] == [1, 2, 3]
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-5)  # same weights, same batch
    for x, y in zip(a, b):  # three AdamW updates later, still the same run
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-3) and y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-2)
    assert compiled["eval"] == pytest.approx(eager["eval"], rel=1e-3)
