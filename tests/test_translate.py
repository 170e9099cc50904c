"""BART translation with a new source encoder (BART §3.4): the two stages, saving, BLEU, the CLI."""

import contextlib
import io
import json

import pytest
import torch

from clozeformer.cli import main
from clozeformer.data.corpus import CorpusError
from clozeformer.data.pairs import PairData, read_pairs
from clozeformer.interop.model_dir import load_model, save_model
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration, BartForTranslation
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.config import TrainConfig
from clozeformer.train.translate import train_translation
import textgen

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translate")
    pairs = textgen.pairs(400)
    textgen.write_jsonl(tmp / "train.jsonl", pairs[:160])
    textgen.write_jsonl(tmp / "test.jsonl", pairs[160:176])
    german = [x["de"] for x in pairs]
    tok = Tokenizer.train("bpe", german, vocab_size=500)
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32,
                                                          num_heads=2, intermediate_size=64, max_positions=64))
    save_model(bart, tmp / "bart", tok)
    return tmp, bart


def test_two_stages_freeze_then_train_everything(setup):
    tmp, bart = setup
    quick = dict(warmup_steps=0, eval_every=100, save_every=100, log_every=1, seed=1)
    summary = train_translation(tmp / "bart", tmp / "train.jsonl", source_field="en", target_field="de",
                                run_dir=tmp / "run", eval_file=tmp / "test.jsonl", test_file=tmp / "test.jsonl",
                                source_vocab_size=300, max_len=48, batch_size=16, num_beams=2, max_new_tokens=12,
                                stage1=TrainConfig(steps=4, lr=1e-2, **quick),
                                stage2=TrainConfig(steps=2, lr=1e-3, **quick), progress=False)
    trained = load_model(summary["model_dir"])
    assert isinstance(trained, BartForTranslation)
    before, after = bart.state_dict(), trained.state_dict()
    # stage 1 may move only the new encoder, the positions and layer 0's q/k/v; stage 2 moves the rest
    stage1 = load_model(tmp / "run" / "stage1" / "checkpoints" / "step-0000004").state_dict()
    moved1 = {k for k in before if not torch.equal(before[k], stage1[k])}
    assert moved1 == {"bart.encoder.pos.weight", "bart.encoder.layers.0.attn.qkv.weight",
                      "bart.encoder.layers.0.attn.qkv.bias"}
    assert any(not torch.equal(stage1[k], after[k]) for k in before if k not in moved1)  # stage 2: all
    assert summary["stage1"]["trainable_parameters"] < summary["stage2"]["trainable_parameters"]
    assert 0.0 <= summary["bleu_beam1"] <= 100.0 and 0.0 <= summary["bleu_beam2"] <= 100.0
    # the BART part of the saved translator loads in transformers unchanged
    transformers = pytest.importorskip("transformers")
    hf = transformers.BartForConditionalGeneration.from_pretrained(summary["model_dir"])
    assert torch.equal(hf.model.shared.weight, trained.bart.shared.weight)
    # resuming a finished run trains nothing more
    again = train_translation(tmp / "bart", tmp / "train.jsonl", source_field="en", target_field="de",
                              run_dir=tmp / "run", source_vocab_size=300, max_len=48, batch_size=16,
                              stage1=TrainConfig(steps=4, lr=1e-2, **quick),
                              stage2=TrainConfig(steps=2, lr=1e-3, **quick), resume=True, progress=False)
    assert again["stage2"]["resumed"] == "complete"
    assert all(torch.equal(a, b) for a, b in zip(load_model(again["model_dir"]).state_dict().values(),
                                                 after.values()))


def test_cli_translate(setup):
    tmp, _ = setup
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["translate", "--bart", str(tmp / "bart"), "--train", str(tmp / "train.jsonl"), "--source", "en",
                     "--target", "de", "--run-dir", str(tmp / "cli"), "--stage1-steps", "2", "--stage2-steps", "1",
                     "--source-vocab-size", "300", "--max-len", "48", "--batch-size", "8", "--buckets", "4", "--quiet"])
    assert code == 0, err.getvalue()
    summary = json.loads(out.getvalue()[out.getvalue().index("{"):])
    assert isinstance(load_model(summary["model_dir"]), BartForTranslation)
    # resumed without the stages' steps, each keeps its own (stage 1 trained on to the default 1000)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["translate", "--bart", str(tmp / "bart"), "--train", str(tmp / "train.jsonl"), "--source", "en",
                     "--target", "de", "--run-dir", str(tmp / "cli"), "--max-len", "48", "--batch-size", "8",
                     "--buckets", "4", "--resume", "--quiet"]) == 0
    again = json.loads(out.getvalue()[out.getvalue().index("{"):])
    assert again["stage1"] == {"steps": 2, "resumed": "complete"} and again["stage2"]["resumed"] == "complete"
    # options the run would not use are refused before anything is read or written
    base = ["translate", "--bart", str(tmp / "bart"), "--train", str(tmp / "train.jsonl"), "--source", "en", "--target",
            "de", "--run-dir", str(tmp / "refused"), "--max-len", "48", "--quiet"]
    for extra, named in ((["--num-beams", "2"], "num_beams 2 is the beam search scored on the test pairs"),
                         (["--max-len", "100"], "max_len 100 exceeds the BART model's 64 positions"),
                         (["--test", str(tmp / "bart" / "config.json")], "config.json:1:"),  # read before training
                         (["--source-tokenizer", str(tmp / "bart"), "--source-vocab-size", "300"],
                          "source_vocab_size 300 shapes a source tokenizer trained on the pairs")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            given = base + extra
            if extra[0] == "--max-len":  # in place of base's (an option given twice is refused)
                given = [*base[:base.index("--max-len")], *base[base.index("--max-len") + 2:], *extra]
            assert main(given) == 1
        assert named in err.getvalue() and not (tmp / "refused").exists()
    # the translator reads another vocabulary: fine-tuning it or continuing its pretraining is refused by name
    # (both failed with an IndexError inside BART's embeddings)
    textgen.write_jsonl(tmp / "s2s.jsonl", [{"source": "a", "target": "b"}] * 4)
    for argv in (["finetune", "--model", summary["model_dir"], "--task", "seq2seq", "--train", str(tmp / "s2s.jsonl"),
                  "--run-dir", str(tmp / "refused")],
                 ["pretrain", "--model", "bart", "--init", summary["model_dir"], "--corpus", str(tmp / "train.jsonl"),
                  "--text-field", "de", "--run-dir", str(tmp / "refused")]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(argv) == 1
        assert "is a translator (BART with the new source encoder in source/)" in err.getvalue(), err.getvalue()
        assert not (tmp / "refused").exists()


def test_pair_files_fail_clearly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"en": "a"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: no field 'de'"):
        read_pairs(bad, "en", "de")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty"):
        read_pairs(tmp_path / "empty.jsonl", "en", "de")


def test_length_buckets_cover_each_epoch_once_and_pad_less():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 40, (1000,), generator=g)
    # target lengths follow source lengths, as a translation's do
    lengths = torch.stack([src, src + torch.randint(-2, 3, (1000,), generator=g)], 1).tolist()
    sources = [[5] * s for s, _ in lengths]
    targets = [[7] * t for _, t in lengths]

    def data(buckets):
        return PairData(sources, targets, source_pad=0, batch_size=16, seed=3, buckets=buckets)

    def padded_share(batches):
        pad = sum(int((1 - b["attention_mask"]).sum()) + int((b["labels"] == -100).sum()) for b in batches)
        return pad / sum(b["input_ids"].numel() + b["labels"].numel() for b in batches)

    bucketed, plain = data(8), data(0)
    per_epoch = 1000 // 16  # 62 whole batches; the 8 rows left over sit out this epoch
    for epoch in range(2):
        batches = [bucketed.train_batch(epoch * per_epoch + k) for k in range(per_epoch)]
        counted = torch.tensor([[int(m.sum()), int(l.ne(-100).sum())] for b in batches
                                for m, l in zip(b["attention_mask"], b["labels"])])
        # every row once: the multiset of (source, target) lengths is a sub-multiset of the data's, missing 8
        rows = sorted(map(tuple, counted.tolist()))
        remaining = sorted(map(tuple, lengths))
        for r in rows:
            remaining.remove(r)
        assert len(remaining) == 8
        assert padded_share(batches) < 0.5 * padded_share([plain.train_batch(k) for k in range(62)])
        # rows come in no length order within a batch, so the ranks' halves under torchrun are alike
        first_half_longer = [b["attention_mask"][:8].sum() > b["attention_mask"][8:].sum() for b in batches]
        assert 0.25 < sum(first_half_longer) / len(batches) < 0.75
    # batch k is a pure function of (seed, k)
    assert torch.equal(data(8).train_batch(70)["labels"], bucketed.train_batch(70)["labels"])
    assert not torch.equal(data(8).train_batch(70)["labels"], bucketed.train_batch(71)["labels"])


@pytest.mark.parametrize("buckets", [0, 4])
def test_a_batch_larger_than_the_data_holds_each_row_once(buckets):
    """20 pairs at batch 64 gave batches holding every pair three or four times (the order runs on into the next
    epochs): now the batch is the 20 pairs, with a warning, as fine-tuning's TaskData does."""
    from clozeformer.tasks.task import TaskData

    sources = [[5 + i] * (1 + i % 3) for i in range(20)]
    with pytest.warns(UserWarning, match="batch_size 64 is more than the 20 training rows; each batch holds all 20"):
        pairs = PairData(sources, [[7]] * 20, source_pad=0, batch_size=64, seed=0, buckets=buckets)
    with pytest.warns(UserWarning, match="batch_size 64 is more than the 20 training rows"):
        task = TaskData([{"input_ids": s, "labels": 0} for s in sources], [], pad_id=0, batch_size=64, seed=0)
    for k in range(3):
        for ids in (pairs.train_batch(k)["input_ids"], task.train_batch(k)["input_ids"]):
            assert sorted(ids[:, 0].tolist()) == list(range(5, 25))  # every row, once


@pytest.mark.parametrize("bad, error, says", [
    (dict(max_new_tokens=0), ValueError, "max_new_tokens 0 is out of range"),  # after both stages and the save
    (dict(num_beams=0), ValueError, "num_beams 0 is out of range"),  # ran beam 4 and called it so
    (dict(batch_size=0), ValueError, "batch_size 0 is out of range"),  # range() arg 3 must not be zero
    (dict(buckets=-1), ValueError, "buckets -1 is out of range; allowed: an integer ≥ 0"),
    (dict(source_layers=1.5), TypeError, "source_layers must be int, got float 1.5"),
    (dict(max_len=1), ValueError, "max_len 1 is out of range; allowed: an integer ≥ 8"),
])
def test_translation_arguments_are_checked_before_any_work(setup, tmp_path, bad, error, says):
    tmp, _ = setup
    with pytest.raises(error, match=says):
        train_translation(tmp / "bart", tmp / "train.jsonl", source_field="en", target_field="de",
                          run_dir=tmp_path / "run", test_file=tmp / "test.jsonl", source_vocab_size=300,
                          stage1={"steps": 1}, stage2={"steps": 1}, progress=False, **bad)
    assert not (tmp_path / "run").exists()
