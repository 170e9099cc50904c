"""The training loop through `pretrain`: learning, exact resume, checkpoints, NaN handling, bf16, schedule."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clozeformer.infer import fill_mask
from clozeformer.interop.model_dir import load_model
from clozeformer.data.pretrain import BertPretrainData
from clozeformer.models.bert import BertForPreTraining
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.checkpoint import latest_checkpoint, list_checkpoints, verify
from clozeformer.train.config import TrainConfig, lr_factor
from clozeformer.train.loop import TrainingError
from clozeformer.train.pretrain import pretrain
import textgen
from batches import rows

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.1,
            attention_dropout=0.1)  # the small-budget recipe turns dropout off unless a run sets it


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(corpus path, tokenizer, cache dir): 2000 generated review sentences in documents of five."""
    tmp = tmp_path_factory.mktemp("train")
    lines = textgen.english(2000)
    path = textgen.write_lines(tmp / "docs.txt", lines, blank_line_docs=5)
    tok = Tokenizer.train_wordpiece(lines, vocab_size=1000)
    return path, tok, tmp / "cache"


def run(env, run_dir, *, seed_init=0, nsp=True, max_len=32, batch_size=8, overrides=None, **train):
    """A tiny pretraining run; the global RNG is seeded first so model init is reproducible."""
    path, tok, cache = env
    resume = train.pop("resume", False)
    cfg = dict(steps=6, lr=2e-3, warmup_steps=2, eval_every=1000, save_every=1000, eval_batches=2, log_every=1)
    torch.manual_seed(seed_init)
    return pretrain([path], config="tiny", model_overrides={**TINY, **(overrides or {})}, tokenizer=tok,
                    max_len=max_len, batch_size=batch_size, nsp=nsp, blank_line_docs=True, cache_dir=cache,
                    run_dir=run_dir, train=TrainConfig(**{**cfg, **train}), progress=False, resume=resume,
                    eval_fraction=0.05)


def weights(model_dir):
    return load_file(str(Path(model_dir) / "model.safetensors"))


# ---- learning -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    summary = run(env, run_dir, steps=60, lr=5e-3, warmup_steps=6, max_len=64, batch_size=16, eval_every=30,
                  save_every=30, eval_batches=4)
    return run_dir, summary


def test_held_out_mlm_loss_falls(trained, env):
    run_dir, summary = trained
    before, after = summary["eval_before"], summary["eval"]
    assert before["mlm_loss"] > math.log(env[1].vocab_size) - 0.5  # an untrained model is near-uniform over the vocab
    assert after["mlm_loss"] < before["mlm_loss"] - 0.5
    assert after["loss"] < before["loss"] - 0.5
    assert 0.0 <= after["nsp_acc"] <= 1.0 and after["mlm_acc"] > before["mlm_acc"]
    evals = rows(run_dir, "eval")
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[-1]["mlm_loss"] == pytest.approx(after["mlm_loss"])
    train = rows(run_dir)
    assert [r["step"] for r in train] == list(range(1, 61))
    first, last = sum(r["loss"] for r in train[:5]) / 5, sum(r["loss"] for r in train[-5:]) / 5
    assert last < first - 0.5
    assert all(math.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0 for r in train)


def test_plot_and_metrics_written(trained):
    run_dir, summary = trained
    png = Path(summary["plot"])
    assert png == run_dir / "loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert Path(summary["checkpoint"]).is_dir() and Path(summary["checkpoint"]).name == "step-0000060"
    assert summary["steps"] == 60 and summary["skipped_steps"] == 0
    lrs = [r["lr"] for r in rows(run_dir)]
    cfg = TrainConfig(steps=60, lr=5e-3, warmup_steps=6)
    assert lrs == pytest.approx([5e-3 * lr_factor(s, cfg) for s in range(60)])
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temp directories left


def test_fill_mask_top_k_over_non_special_tokens(trained, env):
    _, tok, _ = env
    run_dir, summary = trained
    model, mtok = load_model(summary["model_dir"]), Tokenizer.load(summary["model_dir"])
    assert mtok.fingerprint == tok.fingerprint
    # the saved model is the final checkpoint's model
    final = weights(summary["checkpoint"])
    assert all(torch.equal(final[k], t) for k, t in weights(summary["model_dir"]).items())
    text = "the movie was [MASK] and the acting was [MASK] ."
    preds = fill_mask(model, mtok, text, top_k=5)
    assert len(preds) == 2 and all(len(p) == 5 for p in preds)
    ids = mtok.encode(text, specials=True)
    where = [i for i, t in enumerate(ids) if t == mtok.mask_id]
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, where].softmax(-1)
    for row, p in zip(preds, probs):
        scores = [x.score for x in row]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        chosen = [x.token_id for x in row]
        assert len(set(chosen)) == 5
        assert not set(chosen) & set(mtok.special_ids)
        assert all(x.token == mtok.tokens([x.token_id])[0] for x in row)
        assert [x.score for x in row] == pytest.approx(p[chosen].tolist(), rel=1e-5)
        others = torch.ones_like(p, dtype=torch.bool)
        others[chosen] = False
        others[mtok.special_ids] = False
        assert p[others].max() <= min(scores) + 1e-7  # nothing better was left out
    assert mtok.decode(ids[:where[0]] + [preds[0][0].token_id]) in preds[0][0].sequence
    with pytest.raises(ValueError, match=r"no \[MASK\]"):
        fill_mask(model, mtok, "no mask here")


# ---- exact resume -------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_at(monkeypatch, micro_index):
    """Make the data raise when the trainer asks for micro-batch `micro_index` (a killed run)."""
    real = BertPretrainData.train_batch

    def train_batch(self, index):
        if index >= micro_index:
            raise Interrupted(index)
        return real(self, index)

    monkeypatch.setattr(BertPretrainData, "train_batch", train_batch)


@pytest.mark.parametrize("grad_accum,nsp", [(1, True), (2, False)])
def test_exact_resume(env, tmp_path, monkeypatch, grad_accum, nsp):
    n, crash_step, save_every = 8, 5, 3  # crash after step 5: checkpoint at 3, steps 4 and 5 lost
    kw = dict(steps=n, grad_accum=grad_accum, save_every=save_every, eval_every=4, nsp=nsp)
    straight = run(env, tmp_path / "straight", **kw)

    with monkeypatch.context() as m:
        interrupt_at(m, crash_step * grad_accum)
        with pytest.raises(Interrupted):
            run(env, tmp_path / "resumed", **kw)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step-0000003"]
    assert [r["step"] for r in rows(tmp_path / "resumed")] == [1, 2, 3, 4, 5]
    # resuming re-initialises the model from another seed: everything must come from the checkpoint
    resumed = run(env, tmp_path / "resumed", resume=True, seed_init=123, **kw)

    a, b = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, n + 1))  # lost steps 4, 5 dropped and redone, once each
    for key in ("loss", "lr", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key  # bit-identical
    assert rows(tmp_path / "straight", "eval")[1:] == rows(tmp_path / "resumed", "eval")[1:]
    assert straight["eval"] == resumed["eval"]
    wa, wb = weights(straight["model_dir"]), weights(resumed["model_dir"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # and the losses really depend on the dropout stream: another seed gives other losses
    other = run(env, tmp_path / "other", seed=1, **kw)
    assert [r["loss"] for r in rows(tmp_path / "other")] != [r["loss"] for r in a]
    assert other["steps"] == n


def test_dropout_is_on_in_these_runs(env, tmp_path):
    # two runs differing only in the dropout RNG stream must differ, else the resume test proves nothing
    a = run(env, tmp_path / "a", steps=2)
    b = run(env, tmp_path / "b", steps=2, overrides={"dropout": 0.0, "attention_dropout": 0.0})
    assert rows(tmp_path / "a")[0]["loss"] != rows(tmp_path / "b")[0]["loss"]
    assert a["eval_before"] == b["eval_before"]  # same init, eval has no dropout


def test_same_seed_same_run_regardless_of_global_rng(env, tmp_path):
    a = run(env, tmp_path / "a", steps=2, seed_init=1)
    b = run(env, tmp_path / "b", steps=2, seed_init=2)
    assert a["eval_before"] == b["eval_before"]


def test_resume_continues_to_more_steps(env, tmp_path):
    run(env, tmp_path / "r", steps=3, save_every=3)
    s = run(env, tmp_path / "r", steps=5, save_every=5, resume=True)
    assert s["steps"] == 5 and [r["step"] for r in rows(tmp_path / "r")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("change,match", [
    (dict(overrides={"hidden_size": 64}), r"model_config changed \(hidden_size"),
    (dict(overrides={"dropout": 0.2}), r"model_config changed \(dropout"),
    (dict(lr=1e-3), r"train_config changed \(lr: \[0\.002\] -> \[0\.001\]"),
    (dict(grad_accum=2), r"train_config changed \(grad_accum"),
    (dict(seed=7), r"train_config changed \(seed"),
    (dict(max_len=48), r"data changed \(max_len"),
    (dict(nsp=False), r"model_config changed \(nsp"),
])
def test_resume_refuses_changed_setup(env, tmp_path, change, match):
    run(env, tmp_path / "r", steps=2, save_every=2)
    before = {p.name: (p / "model.safetensors").read_bytes() for p in list_checkpoints(tmp_path / "r")}
    with pytest.raises(TrainingError, match=match):
        run(env, tmp_path / "r", steps=4, resume=True, **change)
    after = {p.name: (p / "model.safetensors").read_bytes() for p in list_checkpoints(tmp_path / "r")}
    assert before == after


def test_label_smoothing_needs_a_model_that_writes_text(env, tmp_path):
    with pytest.raises(TrainingError, match="label_smoothing 0.1: only models that write text"):
        run(env, tmp_path / "r", label_smoothing=0.1)
    assert not (tmp_path / "r").exists()


def test_resume_reads_a_training_field_the_checkpoint_predates_as_its_default():
    from clozeformer.train.loop import _check_same

    now = {"train_config": TrainConfig(lr=2e-3).to_dict()}
    saved = json.loads(json.dumps(now["train_config"]))  # as a checkpoint holds it
    older = {"train_config": {k: v for k, v in saved.items() if k != "label_smoothing"}}
    _check_same(older, now, Path("ckpt"))  # saved before label smoothing existed: its default, 0.0
    with pytest.raises(TrainingError, match=r"train_config changed \(label_smoothing: \[0.0\] -> \[0.1\]"):
        _check_same(older, {"train_config": TrainConfig(lr=2e-3, label_smoothing=0.1).to_dict()}, Path("ckpt"))


def test_resume_without_checkpoint_errors(env, tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint to continue"):  # before any work
        run(env, tmp_path / "empty", resume=True)


# ---- checkpoints --------------------------------------------------------------------------


def test_corrupted_newest_checkpoint_is_skipped(env, tmp_path):
    straight = run(env, tmp_path / "ref", steps=4)
    run(env, tmp_path / "r", steps=4, save_every=2)
    ckpts = list_checkpoints(tmp_path / "r")
    assert [p.name for p in ckpts] == ["step-0000002", "step-0000004"]
    weights_file = ckpts[-1] / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # flip bytes inside the last tensor
    weights_file.write_bytes(bytes(data))
    (tmp_path / "r" / "checkpoints" / ".step-0000006.tmp").mkdir()  # a half-written one: ignored
    with pytest.raises(ValueError, match="checksum"):
        verify(ckpts[-1])
    with pytest.warns(UserWarning, match=r"skipping checkpoint step-0000004.*model\.safetensors"):
        found = latest_checkpoint(tmp_path / "r")
    assert found[0] == ckpts[0] and found[1]["step"] == 2
    with pytest.warns(UserWarning, match="skipping checkpoint step-0000004"):
        s = run(env, tmp_path / "r", steps=4, save_every=2, resume=True)
    assert s["steps"] == 4
    verify(list_checkpoints(tmp_path / "r")[-1])  # the newest is rewritten and sound again
    # resumed from step 2, the run reproduces the uninterrupted one
    assert [r["loss"] for r in rows(tmp_path / "r")] == [r["loss"] for r in rows(tmp_path / "ref")]
    wa, wb = weights(straight["model_dir"]), weights(s["model_dir"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_missing_state_file_is_skipped(env, tmp_path):
    run(env, tmp_path / "r", steps=4, save_every=2)
    newest = list_checkpoints(tmp_path / "r")[-1]
    (newest / "trainer_state.json").unlink()
    with pytest.warns(UserWarning, match="skipping checkpoint step-0000004"):
        found = latest_checkpoint(tmp_path / "r")
    assert found[1]["step"] == 2


@pytest.mark.parametrize("keep_last", [1, 2, 3])
def test_checkpoint_rotation(env, tmp_path, keep_last):
    run(env, tmp_path / "r", steps=5, save_every=1, keep_last=keep_last)
    names = [p.name for p in list_checkpoints(tmp_path / "r")]
    assert names == [f"step-{s:07d}" for s in range(6 - keep_last, 6)]
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == names
    for p in list_checkpoints(tmp_path / "r"):
        state = verify(p)
        assert {"config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json"} <= set(state["files"])
        assert state["step"] == int(p.name.split("-")[1])


# ---- non-finite losses --------------------------------------------------------------------


def nan_from(monkeypatch, bad_calls):
    """Make training forwards number `bad_calls` (0-based, a set or a predicate) return a NaN loss."""
    real = BertForPreTraining.forward
    count = {"n": 0}

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.training:
            i = count["n"]
            count["n"] += 1
            if (bad_calls(i) if callable(bad_calls) else i in bad_calls):
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(BertForPreTraining, "forward", forward)


def test_nan_loss_stops_and_keeps_checkpoints(env, tmp_path, monkeypatch):
    run(env, tmp_path / "ref", steps=6, save_every=2)
    with monkeypatch.context() as m:
        nan_from(m, lambda i: i >= 4)  # step 5 onwards
        with pytest.raises(TrainingError, match=r"non-finite loss at step 5;.*intact"):
            run(env, tmp_path / "r", steps=6, save_every=2)
    ckpts = list_checkpoints(tmp_path / "r")
    assert [p.name for p in ckpts] == ["step-0000002", "step-0000004"]
    for p in ckpts:
        verify(p)
        assert all(torch.isfinite(t).all() for t in weights(p).values())
    ref = {p.name: weights(p) for p in list_checkpoints(tmp_path / "ref")}
    assert all(torch.equal(ref["step-0000004"][k], t) for k, t in weights(ckpts[-1]).items())
    assert [r["step"] for r in rows(tmp_path / "r")] == [1, 2, 3, 4]
    # the run can go on from its last good checkpoint
    s = run(env, tmp_path / "r", steps=6, save_every=2, resume=True)
    assert s["steps"] == 6


def test_a_step_leaves_its_loss_on_the_device(env, tmp_path, monkeypatch):
    """The host reads the loss only for a logged step: a read would make every step wait for a GPU.
    The loss is marked (a tensor subclass that counts the reads of it and of what is computed from it)."""
    reads = []

    class Watched(torch.Tensor):
        def item(self):
            reads.append("item")
            return super().item()

        def __float__(self):
            reads.append("float")
            return super().__float__()

        def __bool__(self):
            reads.append("bool")
            return super().__bool__()

        def __int__(self):
            reads.append("int")
            return super().__int__()

    real = BertForPreTraining.forward

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.training:
            out.loss = out.loss.as_subclass(Watched)
        return out

    monkeypatch.setattr(BertForPreTraining, "forward", forward)
    s = run(env, tmp_path / "r", steps=6, log_every=3)
    assert s["steps"] == 6 and [r["step"] for r in rows(tmp_path / "r")] == [3, 6]
    assert 2 <= len(reads) <= 4, reads  # at steps 3 and 6 only: the loss, and whether any step was non-finite


def test_huge_lr_stops_with_training_error(env, tmp_path):
    with pytest.raises(TrainingError, match="non-finite loss"):
        run(env, tmp_path / "r", steps=20, lr=1e30, warmup_steps=0, clip_norm=1e30, save_every=1)
    for p in list_checkpoints(tmp_path / "r"):
        verify(p)


def test_nan_policy_skip_continues(env, tmp_path, monkeypatch):
    run(env, tmp_path / "ref", steps=2)
    nan_from(monkeypatch, {2})  # step 3 only
    s = run(env, tmp_path / "r", steps=6, save_every=2, nan_policy="skip")
    assert s["steps"] == 6 and s["skipped_steps"] == 1
    train = rows(tmp_path / "r")
    assert [r["step"] for r in train] == [1, 2, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) for r in train)
    assert [r["loss"] for r in train[:2]] == [r["loss"] for r in rows(tmp_path / "ref")]
    assert all(torch.isfinite(t).all() for t in weights(s["model_dir"]).values())
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000004", "step-0000006"]
    assert math.isfinite(s["eval"]["loss"])


def test_nan_policy_skip_on_save_or_last_step_still_saves(env, tmp_path, monkeypatch):
    nan_from(monkeypatch, {1, 3})  # steps 2 (a save step) and 4 (the last)
    s = run(env, tmp_path / "r", steps=4, save_every=2, nan_policy="skip")
    assert s["skipped_steps"] == 2
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000002", "step-0000004"]
    assert Path(s["checkpoint"]).is_dir()
    assert "eval" in s


# ---- precision and schedule ---------------------------------------------------------------


def test_bf16_runs_on_cpu(env, tmp_path):
    s = run(env, tmp_path / "r", steps=3, precision="bf16", device="cpu")
    train = rows(tmp_path / "r")
    assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
    assert math.isfinite(s["eval"]["loss"]) and math.isfinite(s["eval_before"]["mlm_loss"])
    # the weights stay fp32 (autocast, not a cast of the model)
    assert all(t.dtype == torch.float32 for t in weights(s["model_dir"]).values())
    # bf16 really changes the arithmetic (it is not silently fp32)
    run(env, tmp_path / "f", steps=3, precision="fp32", device="cpu")
    assert train[0]["loss"] != rows(tmp_path / "f")[0]["loss"]
    assert abs(train[0]["loss"] - rows(tmp_path / "f")[0]["loss"]) < 0.1


def test_lr_factor_warmup_and_decay():
    cfg = TrainConfig(steps=110, warmup_steps=10, schedule="linear")
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0)
    assert lr_factor(109, cfg) == pytest.approx(0.01)
    assert lr_factor(500, cfg) == 0.0  # clamped past the end
    cos = TrainConfig(steps=110, warmup_steps=10, schedule="cosine")
    assert lr_factor(10, cos) == pytest.approx(1.0)
    assert lr_factor(60, cos) == pytest.approx(0.5)
    assert lr_factor(35, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, cos) == pytest.approx(0.0, abs=1e-12)
    const = TrainConfig(steps=110, warmup_steps=10, schedule="constant")
    assert lr_factor(5, const) == pytest.approx(0.6) and lr_factor(100, const) == 1.0
    nowarm = TrainConfig(steps=4, warmup_steps=0)
    assert [lr_factor(s, nowarm) for s in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    # monotone: up during warmup, down after
    vals = [lr_factor(s, cos) for s in range(110)]
    assert all(a <= b for a, b in zip(vals[:10], vals[1:11]))
    assert all(a >= b for a, b in zip(vals[10:], vals[11:]))


@pytest.mark.parametrize("bad", [dict(precision="fp16"), dict(schedule="step"), dict(nan_policy="ignore"),
                                 dict(steps=-1), dict(grad_accum=0), dict(lr=0.0), dict(warmup_steps=-1),
                                 dict(minutes=-1.0), dict(warmup_fraction=1.0), dict(clock="cpu"),
                                 dict(label_smoothing=1.0), dict(label_smoothing=-0.1), dict(lr=float("nan")),
                                 dict(lr=float("inf")), dict(minutes=float("inf")), dict(eps=0.0),
                                 dict(weight_decay=float("inf")), dict(clip_norm=float("inf"))])
def test_train_config_validation(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


@pytest.mark.parametrize("family", ["bert", "roberta", "electra", "bart", "t5"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0])
def test_model_configs_refuse_non_finite_or_zero_epsilons_and_init(family, value):
    """A nan layer_norm_eps or an infinite init std would train nothing but NaNs: refused by name."""
    from clozeformer.config import ConfigError
    from clozeformer.families import FAMILIES

    cls = FAMILIES[family].config_cls
    init = "initializer_factor" if family == "t5" else "initializer_range"
    for name in ("layer_norm_eps", init):
        with pytest.raises(ConfigError, match=name):
            cls.preset("tiny", **{name: value})


# ---- ELECTRA through the same loop ---------------------------------------------------------------


def test_electra_exact_resume_metrics_and_model_dir(env, tmp_path, monkeypatch):
    from clozeformer.models.electra import ElectraForPreTraining

    path, tok, cache = env

    def go(run_dir, resume=False, seed_init=0):
        torch.manual_seed(seed_init)
        train = TrainConfig(steps=6, lr=2e-3, warmup_steps=2, eval_every=3, save_every=3, eval_batches=2, log_every=1)
        return pretrain([path], model="electra", config="tiny", model_overrides=TINY, tokenizer=tok, max_len=32,
                        batch_size=8, blank_line_docs=True, cache_dir=cache, run_dir=run_dir, train=train,
                        progress=False, resume=resume, eval_fraction=0.05)

    straight = go(tmp_path / "straight")
    with monkeypatch.context() as m:
        interrupt_at(m, 5)  # ELECTRA's data wraps BertPretrainData: killed while fetching step 6's batch
        with pytest.raises(Interrupted):
            go(tmp_path / "resumed")
    resumed = go(tmp_path / "resumed", resume=True, seed_init=123)
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit-identical, sampling noise included
    assert straight["eval"] == resumed["eval"]
    ev = straight["eval"]
    assert {"mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "disc_auc"} <= set(ev)
    assert 0.0 <= ev["disc_auc"] <= 1.0 and 0.0 < ev["replaced_frac"] < 0.15
    model = load_model(straight["model_dir"])
    assert isinstance(model, ElectraForPreTraining)
    assert (Path(straight["model_dir"]) / "generator" / "tokenizer.json").is_file()
    wa, wb = weights(straight["model_dir"]), weights(resumed["model_dir"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ga, gb = (weights(Path(s["model_dir"]) / "generator") for s in (straight, resumed))
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_resume_refuses_a_run_of_another_kind_before_any_work(tmp_path):
    """pretrain --resume on a fine-tuning run wrote its tokenizer there, then failed on a config mismatch."""
    import json

    from clozeformer.train.checkpoint import check_fresh

    ckpt = tmp_path / "checkpoints" / "step-0000002"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2, "data": {"task": {"kind": "classification"}}}))
    with pytest.raises(ValueError, match="holds a fine-tuning run; this command continues pretraining runs"):
        check_fresh(tmp_path, True, run="pretraining")
    check_fresh(tmp_path, True, run="fine-tuning")
    with pytest.raises(ValueError, match="is at step 2, past steps 1"):
        check_fresh(tmp_path, True, run="fine-tuning", steps=1)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]


@pytest.mark.parametrize("damage", [b'{"step": 1}\n\xff\xfe\n', b'{"step": 1}\n[1, 2]\n', b'{"split": "eval"}\n'])
def test_a_damaged_metrics_log_is_named_on_resume(tmp_path, damage):
    """Bad bytes, a row that is no object, a row without a step: the file is named (a bare codec or KeyError)."""
    from clozeformer.train.loop import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(damage)
    with pytest.raises(TrainingError, match=rf"{path}: not a metrics log this run wrote .*; move it aside"):
        MetricsLog(path, resume_step=1)
    assert path.read_bytes() == damage  # left as it was


@pytest.mark.parametrize("given, says", [
    (dict(steps=2.5), "steps must be int, got float 2.5"),  # trained 3 steps, then failed after saving
    (dict(steps=True), "steps must be int, got bool True"),  # trained 1 step
    (dict(warmup_steps=float("nan")), "warmup_steps must be int, got float nan"),  # trained at lr 0
    (dict(seed="abc"), "seed must be int, got str 'abc'"),  # torch's ValueError after the tokenizer
    (dict(betas=(0.9,)), r"betas must be two numbers \(B1, B2\), got \(0.9,\)"),  # IndexError in torch.optim
    (dict(lr="1e-3"), "lr must be float, got str '1e-3'"),
    (dict(compile="no"), "compile must be bool, got str 'no'"),
])
def test_train_config_fields_are_of_their_type(given, says):
    with pytest.raises(TypeError, match=says):
        TrainConfig(**given)
    assert TrainConfig(betas=[0.9, 0.98], minutes=3, steps=np.int64(5)).betas == (0.9, 0.98)  # lists, ints, numpy


def test_an_optimizer_restored_keeps_its_own_implementation_flags():
    """An FSDP run saves fused=False in its param_groups; loaded into the fused AdamW of a DDP or one-process
    resume, the optimizer stepped unfused while the fused path's found_inf was passed (an AssertionError)."""
    from clozeformer.train.checkpoint import load_optimizer, optimizer_tensors

    weight = torch.nn.Parameter(torch.ones(3))
    saved = torch.optim.AdamW([weight], lr=1e-3, fused=False)
    weight.grad = torch.ones(3)
    saved.step()
    tensors, groups = optimizer_tensors(saved)
    resumed = torch.optim.AdamW([weight], lr=1e-3, fused=True)
    load_optimizer(resumed, tensors, groups)
    assert resumed.param_groups[0]["fused"] is True and resumed.param_groups[0]["lr"] == 1e-3
    weight.grad = torch.ones(3)
    resumed.step()  # the fused kernel, with the restored moments
    assert int(resumed.state[weight]["step"]) == 2
