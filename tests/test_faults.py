"""A training run that survives faults: SIGKILL, SIGINT and SIGTERM against real processes.

Dropout is on in these runs, so exact continuation also proves that no random state is lost.
"""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clozeformer.cli import main
from clozeformer.data.pretrain import BertPretrainData
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.checkpoint import list_checkpoints
from clozeformer.train.config import TrainConfig
from clozeformer.train.loop import StopSignals, TrainingInterrupted
from clozeformer.train.pretrain import pretrain
import textgen
from batches import rows

TINY = ["hidden_size=32", "num_layers=1", "num_heads=2", "intermediate_size=64"]
STEPS = 150


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(corpus, tokenizer dir, cache dir); the cache is built here, before any process is killed."""
    tmp = tmp_path_factory.mktemp("faults")
    corpus = textgen.write_lines(tmp / "corpus.txt", textgen.english(600))
    tok = Tokenizer.train_wordpiece(corpus.read_text(encoding="utf-8").splitlines(), vocab_size=400)
    tok.save(tmp / "tok")
    return corpus, tmp / "tok", tmp / "cache"


def args(env, run_dir, *, save_every=1000, steps=STEPS, extra=()):
    corpus, tok, cache = env
    return ["pretrain", "--corpus", str(corpus), "--tokenizer", str(tok), "--config", "tiny", "--set", *TINY,
            "--max-len", "32", "--batch-size", "8", "--steps", str(steps), "--warmup", "5", "--lr", "2e-3",
            "--log-every", "1", "--eval-every", "50", "--eval-batches", "2", "--save-every", str(save_every),
            "--keep-last", "2", "--cache-dir", str(cache), "--run-dir", str(run_dir), "--quiet", *extra]


def in_process(argv) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()


def launch(argv, log: Path) -> subprocess.Popen:
    """`python -m clozeformer ...` in its own process; stdout and stderr to `log`."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "clozeformer", *argv], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(condition, proc: subprocess.Popen, timeout=60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before the fault could be injected"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.005)


def train_steps(run_dir) -> int:
    path = Path(run_dir) / "metrics.jsonl"
    return path.read_text().count('"split": "train"') if path.exists() else 0


def assert_identical(a, b):
    """Bit-identical loss curves, evaluations and final weights."""
    ta, tb = rows(a), rows(b)
    assert [r["step"] for r in tb] == list(range(1, STEPS + 1))  # every step once: none lost, none repeated
    for key in ("loss", "lr", "grad_norm"):
        assert [r[key] for r in ta] == [r[key] for r in tb], key
    assert rows(a, "eval") == rows(b, "eval")
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight(env, tmp_path_factory):
    """The uninterrupted run every faulted one must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    in_process(args(env, run_dir))
    return run_dir


# ---- SIGKILL: nothing to catch; the last complete checkpoint carries the run ---------------


def test_sigkill_then_resume_reproduces_the_run(env, straight, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(args(env, run_dir, save_every=20), tmp_path / "log")
    wait_for(lambda: list_checkpoints(run_dir), proc)
    proc.kill()  # SIGKILL, the moment the first checkpoint is complete
    assert proc.wait(timeout=30) == -signal.SIGKILL
    done = [p.name for p in list_checkpoints(run_dir)]
    assert done and done[-1] < f"step-{STEPS:07d}", done  # killed mid-run
    in_process(args(env, run_dir, save_every=20, extra=["--resume"]))
    assert_identical(straight, run_dir)


class Crash(Exception):
    pass


def test_resume_drops_a_torn_metrics_line(env, straight, tmp_path, monkeypatch):
    # SIGKILL during an append leaves half a JSON line; resuming must not trip over it
    run_dir = tmp_path / "run"
    real = BertPretrainData.train_batch

    def train_batch(self, index):
        if index == 110:
            raise Crash  # the process dies in step 111, after the step-100 checkpoint
        return real(self, index)

    with monkeypatch.context() as m:
        m.setattr(BertPretrainData, "train_batch", train_batch)
        with pytest.raises(Crash):
            in_process(args(env, run_dir, save_every=100))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 111, "split": "tr')
    in_process(args(env, run_dir, save_every=100, extra=["--resume"]))
    assert_identical(straight, run_dir)


# ---- SIGINT / SIGTERM: save at the current step, then exit 130 / 143 -----------------------


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_resume_continues_exactly(env, straight, tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = launch(args(env, run_dir), tmp_path / "log")  # no periodic checkpoint before the end
    wait_for(lambda: train_steps(run_dir) >= 3, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    log = (tmp_path / "log").read_text()
    k = rows(run_dir)[-1]["step"]
    assert 3 <= k < STEPS
    assert [p.name for p in list_checkpoints(run_dir)] == [f"step-{k:07d}"]  # saved at the step it stopped
    ckpt = run_dir / "checkpoints" / f"step-{k:07d}"
    assert f"clozeformer: interrupted by {sig.name} after step {k}; saved {ckpt}; continue with --resume" in log
    assert "Traceback" not in log
    in_process(args(env, run_dir, extra=["--resume"]))
    assert_identical(straight, run_dir)


def signal_at(monkeypatch, micro_index, sig, times=1):
    """Deliver `sig` to this process while the trainer loads micro-batch `micro_index`."""
    real = BertPretrainData.train_batch

    def train_batch(self, index):
        if index == micro_index:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return real(self, index)

    monkeypatch.setattr(BertPretrainData, "train_batch", train_batch)


def run(env, run_dir, **train):
    corpus, tok, cache = env
    cfg = dict(steps=8, lr=2e-3, warmup_steps=2, grad_accum=2, log_every=1, eval_every=4, save_every=6,
               eval_batches=2)
    resume = train.pop("resume", False)
    return pretrain([corpus], config="tiny", tokenizer=tok, max_len=32, batch_size=8, cache_dir=cache,
                    model_overrides=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                    run_dir=run_dir, train=TrainConfig(**{**cfg, **train}), progress=False, resume=resume)


def test_signal_mid_step_stops_after_the_step(env, tmp_path, monkeypatch):
    ref = run(env, tmp_path / "ref")
    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        signal_at(m, 2 * 3 + 1, signal.SIGTERM)  # during step 4's second micro-batch
        with pytest.raises(TrainingInterrupted) as info:
            run(env, tmp_path / "r")
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    e = info.value
    assert isinstance(e, KeyboardInterrupt) and e.signum == signal.SIGTERM and e.step == 4
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000004"]  # the whole step, then the save
    assert [r["step"] for r in rows(tmp_path / "r")] == [1, 2, 3, 4]
    resumed = run(env, tmp_path / "r", resume=True)
    assert [r["loss"] for r in rows(tmp_path / "r")] == [r["loss"] for r in rows(tmp_path / "ref")]
    assert resumed["eval"] == ref["eval"]
    # a signal at a save step saves once, and one during the last step just finishes the run
    with monkeypatch.context() as m:
        signal_at(m, 2 * 5, signal.SIGINT)
        with pytest.raises(TrainingInterrupted, match="SIGINT after step 6"):
            run(env, tmp_path / "s")
    assert [p.name for p in list_checkpoints(tmp_path / "s")] == ["step-0000006"]
    with monkeypatch.context() as m:
        signal_at(m, 2 * 7, signal.SIGINT)
        assert run(env, tmp_path / "s", resume=True)["steps"] == 8


def test_second_signal_stops_at_once(env, tmp_path, monkeypatch):
    # twice at once is one stop: under torchrun a Ctrl-C or a SIGTERM to every process reaches each rank twice
    # (directly and forwarded), and stopped it without a checkpoint
    with monkeypatch.context() as m:
        signal_at(m, 2 * 2, signal.SIGINT, times=2)
        with pytest.raises(TrainingInterrupted):
            run(env, tmp_path / "echo")
    assert list_checkpoints(tmp_path / "echo")
    with monkeypatch.context() as m:
        m.setattr(StopSignals, "ECHO", 0.0)  # a second signal later than the echo window
        signal_at(m, 2 * 2, signal.SIGINT, times=2)
        with pytest.raises(KeyboardInterrupt) as info:
            run(env, tmp_path / "r")
    assert not isinstance(info.value, TrainingInterrupted)
    assert not (tmp_path / "r" / "checkpoints").exists()  # no checkpoint was begun, so none is half-written


def torchrun(argv, log: Path) -> subprocess.Popen:
    scratch = log.parent / "torchrun-tmp"  # torchrun's own temporary directories, not left in /tmp
    scratch.mkdir(exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 "-m", "clozeformer", *argv], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)})


def test_sigterm_under_torchrun_stops_all_ranks_at_one_step_and_resumes_exactly(env, tmp_path):
    """torchrun forwards SIGTERM to its workers; they agree on the step (the flag rides on the
    per-step all_reduce), rank 0 saves once, and 2 ranks resume bit-identically, dropout included."""
    ref, run_dir = tmp_path / "ref", tmp_path / "run"
    reference = torchrun(args(env, ref), tmp_path / "ref.log")
    proc = torchrun(args(env, run_dir), tmp_path / "log")
    wait_for(lambda: train_steps(run_dir) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) != 0  # torchrun itself reports its workers' exit as a failure
    k = rows(run_dir)[-1]["step"]
    assert [r["step"] for r in rows(run_dir)] == list(range(1, k + 1)) and k < STEPS
    assert [p.name for p in list_checkpoints(run_dir)] == [f"step-{k:07d}"]
    assert (tmp_path / "log").read_text().count(f"interrupted by SIGTERM after step {k}; saved") == 2  # both ranks
    assert reference.wait(timeout=90) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    resumed = torchrun(args(env, run_dir, extra=["--resume"]), tmp_path / "resume.log")
    assert resumed.wait(timeout=90) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert_identical(ref, run_dir)
