"""Budgeted pretraining: a time budget with its schedule and resume, the small-budget recipe, the plateau
alarm and mimetic initialisation. Corpora come from the standard library's documentation (offline)."""

import contextlib
import io
import json
import warnings

import numpy as np
import pytest
import torch

from clozeformer.cli import main
from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.interop.model_dir import load_model, save_model
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.nn.attention import Attention
from clozeformer.nn.layers import mimetic_init
from clozeformer.tokenizer import Tokenizer
from clozeformer.train import loop
from clozeformer.train.config import TrainConfig, lr_factor
from clozeformer.train.loop import TrainingInterrupted
from clozeformer.train.pretrain import PlateauAlarm, pretrain, unigram_entropy
from batches import rows

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    docs = stdlib_documents(150_000)
    path = write_corpus(tmp / "docs.txt", docs)
    tok = Tokenizer.train_wordpiece([s for d in docs for s in d], vocab_size=600)
    return path, tok, tmp / "cache"


class FakeClock:
    """Every call advances half a second: a time budget then takes a known number of steps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def budget_run(corpus, run_dir, monkeypatch, resume=False, **train):
    path, tok, cache = corpus
    clock = FakeClock()
    monkeypatch.setattr(loop, "_clock", lambda kind: clock)
    cfg = dict(minutes=0.1, warmup_fraction=0.25, lr=1e-3, eval_every=4, eval_batches=1, log_every=1, save_every=5)
    return pretrain([path], config="tiny", model_overrides=TINY, tokenizer=tok, max_len=32, batch_size=4,
                    nsp=False, blank_line_docs=True, cache_dir=cache, run_dir=run_dir,
                    train={k: v for k, v in {**cfg, **train}.items() if v is not None},
                    resume=resume, progress=False)


def test_time_budget_schedules_over_elapsed_time_and_stops(corpus, tmp_path, monkeypatch):
    s = budget_run(corpus, tmp_path / "run", monkeypatch)
    train = rows(tmp_path / "run")
    # 6 s at 0.5 s a step: 12 steps; the lr of step k follows the elapsed time before it
    assert s["steps"] == 12 and [r["step"] for r in train] == list(range(1, 13))
    cfg = TrainConfig(minutes=0.1, warmup_fraction=0.25, lr=1e-3)
    assert [r["lr"] for r in train] == pytest.approx([1e-3 * lr_factor(k, cfg, 0.5 * k) for k in range(12)])
    assert max(r["lr"] for r in train) == pytest.approx(1e-3)  # the peak at 25% of the budget
    assert train[0]["lr"] == 0.0 and train[-1]["lr"] < 2e-4
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["elapsed_s"] == 6.0
    assert s["elapsed_s"] == 6.0 and (tmp_path / "run" / "model" / "config.json").is_file()


# relative_lr: one optimizer group per parameter; without the budget on resume, the run keeps its own (it
# trained on to the default 1000 steps)
@pytest.mark.parametrize("relative_lr, budget_again", [(False, True), (True, False)])
def test_time_budget_resumes_what_is_left(corpus, tmp_path, monkeypatch, relative_lr, budget_again):
    straight = budget_run(corpus, tmp_path / "straight", monkeypatch, relative_lr=relative_lr)
    real = loop.fit

    def interrupted_fit(*a, **k):  # SIGTERM-like stop after step 7: a checkpoint there, then resume
        calls = {"n": 0}
        data = a[1]
        batch = data.train_batch

        def train_batch(i):
            calls["n"] += 1
            if calls["n"] == 8:
                raise TrainingInterrupted(15, 7, tmp_path)
            return batch(i)
        data.train_batch = train_batch
        return real(*a, **k)

    monkeypatch.setattr("clozeformer.train.pretrain.fit", interrupted_fit)
    with pytest.raises(TrainingInterrupted):
        budget_run(corpus, tmp_path / "resumed", monkeypatch, save_every=1, relative_lr=relative_lr)
    monkeypatch.setattr("clozeformer.train.pretrain.fit", real)
    s = budget_run(corpus, tmp_path / "resumed", monkeypatch, save_every=1, resume=True, relative_lr=relative_lr,
                   **({} if budget_again else {"minutes": None}))
    # the resumed run spends only what the checkpoint left of the budget, on the same schedule
    assert s["steps"] == straight["steps"] == 12
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    same = load_model(tmp_path / "straight" / "model").state_dict()
    assert all(torch.equal(v, same[k]) for k, v in load_model(tmp_path / "resumed" / "model").state_dict().items())


def test_relative_lr_moves_every_matrix_by_the_same_share_of_its_size():
    """Adam moves every weight by about lr a step whatever its size; with relative_lr (T5's recipe) each
    matrix moves by lr × its RMS / the median matrix's RMS: T5's RMS-1 embeddings and its small queries alike."""
    from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                num_decoder_layers=1, num_heads=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def shares(relative):  # one AdamW step on random gradients: mean |change| / RMS, per matrix
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(before[n])
                p.grad = torch.randn_like(p)
        groups = loop.param_groups(model, 0.0, relative=relative)
        torch.optim.AdamW([{**g, "lr": 1e-3 * g["lr_scale"]} for g in groups], lr=1e-3).step()
        return {n: ((p.detach() - before[n]).abs().mean() / before[n].pow(2).mean().sqrt()).item()
                for n, p in model.named_parameters() if p.ndim >= 2}

    absolute, relative = shares(False), shares(True)
    # absolute: the embeddings (RMS 1) move 0.1% of their size, the decoder's cross-attention query
    # (RMS (32·8)^-½) 1.6%
    assert absolute["decoder.layers.0.cross.q.weight"] > 10 * absolute["shared.weight"]
    assert max(relative.values()) == pytest.approx(min(relative.values()), rel=0.02)
    assert all(g["lr_scale"] == 1.0 for g in loop.param_groups(model, 0.0, relative=True) if g["params"][0].ndim == 1)


def test_small_budget_recipe_is_the_default_for_tiny_and_mini(corpus, tmp_path):
    path, tok, cache = corpus
    kw = dict(tokenizer=tok, max_len=32, batch_size=4, nsp=False, blank_line_docs=True, cache_dir=cache,
              progress=False)
    s = pretrain([path], config="tiny", model_overrides=TINY, run_dir=tmp_path / "tiny", train={"steps": 2}, **kw)
    cfg = json.loads((tmp_path / "tiny" / "model" / "config.json").read_text())
    state = json.loads(next((tmp_path / "tiny" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["model_config"]["dropout"] == state["model_config"]["attention_dropout"] == 0.0  # in pretraining
    assert cfg["hidden_dropout_prob"] == cfg["attention_probs_dropout_prob"] == 0.1  # exported to fine-tune with
    assert state["train_config"]["lr"] == 2e-3 and state["data"]["mlm_rate"] == 0.25
    assert 0.9 < s["real_token_fraction"] <= 1.0
    # ELECTRA exports two models, both with their dropout back
    pretrain([path], model="electra", config="tiny", model_overrides=TINY, run_dir=tmp_path / "el", train={"steps": 1},
             **kw)
    state = json.loads(next((tmp_path / "el" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["model_config"]["dropout"] == 0.0
    for part in ("", "generator/"):
        cfg = json.loads((tmp_path / "el" / "model" / part / "config.json").read_text())
        assert cfg["hidden_dropout_prob"] == cfg["attention_probs_dropout_prob"] == 0.1, part
    # explicit values win; a preset beyond mini keeps the family's own defaults
    s = pretrain([path], config="tiny", model_overrides={**TINY, "dropout": 0.1}, mlm_rate=0.15,
                 run_dir=tmp_path / "explicit", train={"steps": 2, "lr": 1e-4}, **kw)
    state = json.loads(next((tmp_path / "explicit" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["train_config"]["lr"] == 1e-4 and state["data"]["mlm_rate"] == 0.15
    assert state["model_config"]["dropout"] == 0.1
    pretrain([path], config="small", model_overrides=TINY, run_dir=tmp_path / "small", train={"steps": 1}, **kw)
    state = json.loads(next((tmp_path / "small" / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["train_config"]["lr"] == TrainConfig().lr and state["model_config"]["dropout"] == 0.1


def test_real_token_fraction_is_logged(corpus, tmp_path):
    path, tok, cache = corpus
    pretrain([path], config="tiny", model_overrides=TINY, tokenizer=tok, max_len=64, batch_size=8, nsp=False,
             blank_line_docs=True, cache_dir=cache, run_dir=tmp_path / "run", train={"steps": 3, "log_every": 1},
             progress=False)
    assert all(0.9 < r["real_frac"] <= 1.0 for r in rows(tmp_path / "run"))


def test_plateau_alarm_says_so_once():
    alarm = PlateauAlarm("mlm_loss", 7.0, after=0.3, margin=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alarm(10, {"mlm_loss": 6.9}, 0.1)  # too early to tell
        alarm(20, {"mlm_loss": 6.5}, 0.4)  # within a nat of the unigram level past 30%: says so
        alarm(30, {"mlm_loss": 6.4}, 0.6)  # once
    assert len(caught) == 1 and "6.50" in str(caught[0].message) and "Try:" in str(caught[0].message)
    quiet = PlateauAlarm("mlm_loss", 7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet(20, {"mlm_loss": 5.5}, 0.5)  # reads context: nothing to say
        quiet(20, {"loss": 9.0}, 0.5)
        quiet(20, {"mlm_loss": 5.5, "disc_auc": 0.7}, 0.5)  # a discriminator that tells replaced tokens apart
    assert not quiet.said and not quiet.plateau


def test_memorising_alarm_says_so_once_and_is_not_a_plateau():
    """A loss that left the plateau and comes back up is memorisation (a small corpus read many times), not a
    model that never read context: one warning saying so, with its best step, and no plateau warning."""
    alarm = PlateauAlarm("token_loss", 4.8, after=0.3, margin=1.0, rise=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, loss in ((100, 4.5), (200, 4.8), (500, 3.98), (1000, 3.68), (1500, 3.56), (2000, 3.62), (2500, 3.79),
                           (3000, 3.87)):  # 4.8 rose too, but in the first 30% of the budget
            alarm(step, {"token_loss": loss}, step / 4000)  # 3.79 is within a nat of 4.8, but was 3.56
    assert len(caught) == 1 and "3.79 at step 2500" in str(caught[0].message)
    assert "3.56 at step 1500" in str(caught[0].message) and "Try:" in str(caught[0].message)
    assert alarm.memorising and not alarm.plateau and alarm.best == (3.56, 1500)


def test_collapsed_discriminator_alarm_says_so_once():
    """ELECTRA's discriminator at chance (AUC ~0.5) past 30% of the budget: collapsed, with what to try."""
    alarm = PlateauAlarm("mlm_loss", 7.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alarm(10, {"mlm_loss": 5.0, "disc_auc": 0.5}, 0.1)  # too early to tell
        alarm(20, {"mlm_loss": 5.0, "disc_auc": 0.51}, 0.4)
        alarm(30, {"mlm_loss": 5.0, "disc_auc": 0.50}, 0.6)
    assert len(caught) == 1 and "AUC 0.51" in str(caught[0].message) and "--lr" in str(caught[0].message)
    assert not alarm.plateau  # the generator reads context; only the discriminator failed


def test_plateau_alarm_in_a_run_on_noise(corpus, tmp_path):
    """Tokens drawn at random carry no context: the run stays on the unigram level, and says so."""
    path, tok, cache = corpus
    rng = np.random.default_rng(0)
    words = sorted({w for w in path.read_text(encoding="utf-8").lower().split() if w.isalpha()})[:300]
    noise = tmp_path / "noise.txt"
    noise.write_text("\n".join(" ".join(rng.choice(words, 20)) for _ in range(400)) + "\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = pretrain([noise], config="tiny", model_overrides=TINY, tokenizer=tok, max_len=32, batch_size=8,
                     nsp=False, cache_dir=cache, run_dir=tmp_path / "run", progress=False,
                     train={"steps": 20, "eval_every": 10, "eval_batches": 2})
    assert s["plateau"] and sum("unigram level" in str(w.message) for w in caught) == 1
    ids = np.concatenate([tok.encode(line, add_special_tokens=False) for line in noise.read_text().splitlines()])
    assert s["unigram_entropy"] == pytest.approx(unigram_entropy(ids, tok.vocab_size), abs=0.05)
    assert s["eval"]["mlm_loss"] > s["unigram_entropy"] - 1.0


def test_mimetic_init_shapes_attention_and_exports_unchanged(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=120))
    mimetic_init(model)
    attn = next(m for m in model.modules() if isinstance(m, Attention))
    d, w = 128, 64
    weight = attn.qkv.weight.detach()
    q, k, v = weight[:d], weight[d:2 * d], weight[2 * d:]
    qk = q[:w].T @ k[:w]  # ≈ rank-64 part of 0.7 Z + 0.7 I: a strong diagonal
    assert qk.diag().mean() > 5 * (qk - torch.diag(qk.diag())).abs().mean()
    assert (attn.out.weight.detach() @ v).diag().mean() == pytest.approx(-0.4, abs=0.05)  # W_o W_v ≈ 0.4 Z − 0.4 I
    pos = model.bert.embeddings.pos.weight.detach()  # sinusoidal: similarity falls with distance, the same everywhere
    sim = pos @ pos.T
    assert sim[10, 11] > sim[10, 14] > sim[10, 40] and sim[10, 11] == pytest.approx(sim[200, 201].item(), rel=1e-4)
    assert pos.std().item() == pytest.approx(0.05, rel=0.01)
    save_model(model, tmp_path / "m")
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).prediction_logits, load_model(tmp_path / "m").eval()(ids).logits,
                                   atol=1e-4, rtol=1e-4)


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv,message", [
    (["--minutes", "-1"], "--minutes: -1 is out of range; allowed: a number > 0"),
    (["--minutes", "1", "--warmup-fraction", "1.5"], "--warmup-fraction: 1.5 is out of range; allowed: a number in [0, 1)"),
    (["--weight-init", "xavier"], "invalid choice"),
    (["--cross-document"], "cross_document needs nsp=False"),
])
def test_pretrain_budget_options_bad_input(corpus, tmp_path, argv, message):
    path, tok, cache = corpus
    tok.save(tmp_path / "tok")
    code, out, err = cli("pretrain", "--corpus", str(path), "--tokenizer", str(tmp_path / "tok"), "--config",
                         "tiny", "--run-dir", str(tmp_path / "run"), "--cache-dir", str(cache), "--quiet", *argv)
    assert code == 1 and err.count("\n") == 1 and err.startswith("clozeformer: error: ") and message in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_cross_document_with_nsp_is_refused_before_the_corpus_is_read(corpus, tmp_path):
    """No tokenizer trained, no cache built, no run directory: the combination is refused first."""
    path, _, _ = corpus
    code, out, err = cli("pretrain", "--corpus", str(path), "--config", "tiny", "--run-dir", str(tmp_path / "run"),
                         "--cache-dir", str(tmp_path / "cache"), "--quiet", "--cross-document")
    assert code == 1 and "cross_document needs nsp=False" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_demo_budget_bad_input(tmp_path):
    code, out, err = cli("demo", "--minutes", "0", "--out", str(tmp_path / "demo"))
    assert code == 1 and "--minutes: 0 is out of range; allowed: a number > 0" in err and not (tmp_path / "demo").exists()


def cls_self_attention(model_dir, texts, tok) -> float:
    """How much of its attention [CLS] gives itself in the last layer (transformers reads the export)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    batch = [tok.encode(t)[:32] for t in texts]
    ids = torch.tensor([b + [tok.pad_id] * (32 - len(b)) for b in batch])
    with torch.no_grad():
        out = hf(ids, attention_mask=(ids != tok.pad_id).long(), output_attentions=True)
    return out.attentions[-1][:, :, 0, 0].mean().item()


def test_electra_recipe_leaves_the_discriminators_cls_free_to_read_the_sentence(corpus, tmp_path):
    """Mimetic attention (W_qᵀW_k ≈ Z + I) makes every token attend to itself. The discriminator never learns to
    move [CLS] off itself (it is never replaced), and a classifier reading [CLS] then sees one token, not the
    sentence: SST-2 59% from a mimetic random ELECTRA (78% from a normal one), 68% after 20 minutes of pretraining
    (BENCHMARKS.md).
    ELECTRA's recipe keeps the discriminator's [CLS] reading the sentence."""
    path, tok, cache = corpus
    texts = [t for t in path.read_text().splitlines() if len(t) > 40][:8]
    kw = dict(tokenizer=tok, max_len=32, batch_size=4, nsp=False, blank_line_docs=True, cache_dir=cache,
              progress=False, model="electra", config="tiny", model_overrides={"embedding_size": 128},  # E = H
              train={"steps": 1, "lr": 1e-6})
    recipe = pretrain([path], run_dir=tmp_path / "recipe", **kw)
    mimetic = pretrain([path], run_dir=tmp_path / "mimetic", weight_init="mimetic", **kw)
    assert cls_self_attention(mimetic["model_dir"], texts, tok) > 0.4
    assert cls_self_attention(recipe["model_dir"], texts, tok) < 0.2
