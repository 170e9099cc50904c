"""Scale-out: real `torchrun --nproc_per_node 2 -m clozeformer pretrain` on CPU (gloo) against one process.

Equivalence needs the same arithmetic, so these runs:
- share one tokenizer file (WordPiece training is not reproducible across processes);
- turn dropout off (2 ranks draw dropout for half batches: other masks than one process);
- pretrain MLM-only on packed full windows (--no-nsp), where every row predicts the same
  number of tokens, so the mean over ranks of per-rank mean losses is the global mean.
  `equal_shares` asserts that premise for the micro-batches used.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clozeformer.cli import main
from clozeformer.data.cache import load_corpus
from clozeformer.data.pretrain import BertPretrainData, MLMSpec
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.config import TrainConfig
from clozeformer.train.distributed import Dist, shard, sum_over_ranks
from clozeformer.train.loop import fit
from clozeformer.train.pretrain import bert_metrics
import textgen
from batches import rows

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.0, attention_dropout=0.0)
STEPS, BATCH, MAX_LEN, RATE = 4, 8, 32, 0.15  # `data` below is what these CLI runs train on


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(corpus, tokenizer dir, cache dir): 800 sentences in documents of 40, so packed windows
    cross document ends and only the end of a run of training documents leaves a short row."""
    tmp = tmp_path_factory.mktemp("dist")
    lines = textgen.english(800)
    corpus = textgen.write_lines(tmp / "docs.txt", lines, blank_line_docs=40)
    Tokenizer.train_wordpiece(lines, vocab_size=400).save(tmp / "tok")
    return corpus, tmp / "tok", tmp / "cache"


def args(env, run_dir, *extra):
    corpus, tok, cache = env
    return ["pretrain", "--corpus", str(corpus), "--blank-line-docs", "--tokenizer", str(tok), "--config", "tiny",
            "--set", *(f"{k}={v}" for k, v in TINY.items()), "--no-nsp", "--mlm-rate", str(RATE), "--max-len", str(MAX_LEN),
            "--batch-size", str(BATCH), "--steps", str(STEPS), "--warmup", "1", "--lr", "2e-3", "--log-every", "1",
            "--eval-every", "2", "--save-every", "2", "--eval-batches", "2", "--cache-dir", str(cache),
            "--run-dir", str(run_dir), "--precision", "fp32", "--quiet", *extra]


def one_process(env, run_dir, *extra) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args(env, run_dir, *extra))
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def torchrun(env, run_dir, *extra, argv=None) -> str:
    """Two ranks on CPU through torchrun (`python -m torch.distributed.run`) of pretraining (or `argv`); returns
    stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clozeformer", *(argv or args(env, run_dir, *extra))]
    scratch = Path(run_dir).parent / "torchrun-tmp"  # torchrun's own temporary directories, not left in /tmp
    scratch.mkdir(exist_ok=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def assert_same_run(a, b, steps=None, tol=1e-5):
    """Train and eval rows of runs a and b agree within tol (for the given steps, default all)."""
    for split, keys in (("train", ("loss", "grad_norm", "lr")), ("eval", ("loss", "mlm_loss", "mlm_acc"))):
        ra = [r for r in rows(a, split) if steps is None or r["step"] in steps]
        rb = [r for r in rows(b, split) if steps is None or r["step"] in steps]
        assert [r["step"] for r in ra] == [r["step"] for r in rb], split
        for key in keys:
            assert [r[key] for r in ra] == pytest.approx([r[key] for r in rb], abs=tol, rel=0), (split, key)


def assert_close_files(a: Path, b: Path, name: str, tol=1e-5):
    ta, tb = load_file(str(a / name)), load_file(str(b / name))
    ta.pop("rng.torch_cpu", None), tb.pop("rng.torch_cpu", None)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k].double(), tb[k].double(), atol=tol, rtol=0), k


def data(env, batch_size=BATCH) -> BertPretrainData:
    corpus, tok_dir, cache = env
    tok = Tokenizer.load(tok_dir)
    cache = load_corpus([corpus], tok, cache_dir=cache, blank_line_docs=True)
    return BertPretrainData(cache, MLMSpec.from_tokenizer(tok, rate=RATE), max_len=MAX_LEN, batch_size=batch_size, nsp=False,
                            seed=0, eval_fraction=0.02)


def equal_shares(env, micro_batches, world=2) -> None:
    """The premise of exact equivalence: every rank's rows hold the same number of predictions."""
    d = data(env)
    for i in micro_batches:
        counts = (d.train_batch(i)["labels"] != -100).sum(1).reshape(world, -1).sum(1)  # [world]
        assert counts.eq(counts[0]).all(), (i, counts.tolist())


def without_last_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of run src as if it had stopped after its step-2 checkpoint."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "checkpoints" / f"step-{STEPS:07d}")
    shutil.rmtree(dst / "model")
    return dst


@pytest.fixture(scope="module")
def single(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    return run_dir, one_process(env, run_dir)


@pytest.fixture(scope="module")
def ddp(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    return run_dir, torchrun(env, run_dir)


# ---- unit: sharding and reduction need no process group -----------------------------------


def test_shard_takes_this_ranks_rows():
    batch = {"input_ids": torch.arange(24).reshape(8, 3), "labels": torch.arange(8)}
    assert shard(batch, Dist()) is batch
    part = shard(batch, Dist(rank=1, world_size=4))
    assert part["input_ids"].tolist() == [[6, 7, 8], [9, 10, 11]] and part["labels"].tolist() == [2, 3]
    whole = [shard(batch, Dist(rank=r, world_size=4))["labels"] for r in range(4)]
    assert torch.equal(torch.cat(whole), batch["labels"])  # the ranks' rows are the global batch, in order
    with pytest.raises(ValueError, match="batch size 8 is not divisible by the world size 3"):
        shard(batch, Dist(rank=0, world_size=3))
    assert sum_over_ranks([1.5, 2, True], Dist()) == [1.5, 2, True]


# ---- DDP ----------------------------------------------------------------------------------


def test_ddp_two_ranks_match_one_process(env, single, ddp):
    equal_shares(env, range(STEPS))
    (a, summary), (b, stdout) = single, ddp
    assert_same_run(a, b)
    assert [r["step"] for r in rows(b)] == list(range(1, STEPS + 1))  # rank 0 alone writes: no duplicate rows
    assert_close_files(Path(summary["checkpoint"]), b / "checkpoints" / f"step-{STEPS:07d}", "model.safetensors")
    assert_close_files(Path(summary["checkpoint"]), b / "checkpoints" / f"step-{STEPS:07d}", "optimizer.safetensors")
    assert_close_files(a / "model", b / "model", "model.safetensors")
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert (b / "loss.png").is_file()
    ddp_summary = json.loads(stdout)  # one summary: rank 0 prints it
    assert ddp_summary["steps"] == STEPS and ddp_summary["eval"] == pytest.approx(summary["eval"], abs=1e-5)
    # throughput counts the tokens of both ranks: the global batch, as one process does
    assert all(r["tokens_per_s"] > 0 for r in rows(b))


def test_checkpoint_from_two_ranks_resumes_on_one(env, single, ddp, tmp_path):
    run_dir = without_last_checkpoint(ddp[0], tmp_path / "run")
    one_process(env, run_dir, "--resume")
    assert_same_run(single[0], run_dir)
    assert_close_files(single[0] / "model", run_dir / "model", "model.safetensors")


def test_checkpoint_from_one_process_resumes_on_two(env, single, tmp_path):
    run_dir = without_last_checkpoint(single[0], tmp_path / "run")
    torchrun(env, run_dir, "--resume")
    assert_same_run(single[0], run_dir)
    assert_close_files(single[0] / "model", run_dir / "model", "model.safetensors")


# ---- FSDP2 (fully_shard works on CPU with gloo) -------------------------------------------


def test_fsdp_resumes_a_one_process_checkpoint_and_matches(env, tmp_path):
    """FSDP shards a restored model and optimizer, accumulates over 2 micro-batches, and gathers
    full checkpoints again: steps 3-4 and the final checkpoint equal one process's."""
    equal_shares(env, range(2 * STEPS))
    ref = tmp_path / "ref"
    summary = one_process(env, ref, "--grad-accum", "2")
    run_dir = without_last_checkpoint(ref, tmp_path / "run")
    torchrun(env, run_dir, "--grad-accum", "2", "--fsdp", "--resume")
    assert_same_run(ref, run_dir)
    final = run_dir / "checkpoints" / f"step-{STEPS:07d}"
    assert_close_files(Path(summary["checkpoint"]), final, "model.safetensors")
    assert_close_files(Path(summary["checkpoint"]), final, "optimizer.safetensors")
    assert_close_files(ref / "model", run_dir / "model", "model.safetensors")


# ---- gradient accumulation (one process) --------------------------------------------------


class DoubleBatches:
    """Micro-batch i of this data is micro-batches 2i and 2i+1 of `data`, concatenated."""

    def __init__(self, data):
        self.data = data

    def train_batch(self, index):
        a, b = self.data.train_batch(2 * index), self.data.train_batch(2 * index + 1)
        return {k: torch.cat([a[k], b[k]]) for k in a}

    def eval_batches(self, n):
        return self.data.eval_batches(n)


def test_grad_accumulation_equals_a_double_batch(env, tmp_path):
    equal_shares(env, range(2 * STEPS), world=1)  # every micro-batch predicts as many tokens
    d = data(env)
    cfg = BertConfig.preset("tiny", vocab_size=d.spec.vocab_size, nsp=False, **TINY)
    results = []
    for name, source, accum in (("accum", d, 2), ("double", DoubleBatches(d), 1)):
        torch.manual_seed(0)
        model = BertForPreTraining(cfg)
        train = TrainConfig(steps=STEPS, lr=2e-3, warmup_steps=1, grad_accum=accum, log_every=1, eval_every=2,
                            save_every=STEPS, eval_batches=2, device="cpu")
        fit(model, source, train, tmp_path / name, metrics_fn=bert_metrics, progress=False)
        results.append((rows(tmp_path / name), model.state_dict()))
    (ra, wa), (rb, wb) = results
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in ra] == pytest.approx([r[key] for r in rb], abs=1e-5, rel=0), key
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0) for k in wa)


def test_fsdp_in_one_process_says_it_trains_unsharded(monkeypatch):
    """--fsdp without torchrun changed nothing, silently."""
    from clozeformer.train import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.warns(UserWarning, match="--fsdp shards the model over torchrun's processes; this run has one"):
        par = distributed.parallelize(model, opt, torch.optim.AdamW, distributed.init("cpu"), fsdp=True)
    assert par.model is model


def test_finetune_under_torchrun_prints_one_summary(single, tmp_path):
    """Every rank printed its JSON summary (stdout no longer parsed as JSON); rank 0 alone prints, as pretrain."""
    rows = textgen.labelled(64)
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    out = torchrun(None, tmp_path / "ft", argv=["finetune", "--model", str(single[0] / "model"), "--task", "sst2",
                                                "--train", str(train), "--epochs", "1", "--batch-size", "8",
                                                "--max-len", "32", "--run-dir", str(tmp_path / "ft"), "--quiet"])
    assert json.loads(out)["task"] == "classification"
