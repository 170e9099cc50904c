"""`clozeformer noise` (what an objective does to a sentence) and `clozeformer generate`."""

import contextlib
import io

import pytest
import torch

from clozeformer.cli import main
from clozeformer.interop.model_dir import save_model
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
from clozeformer.tokenizer import Tokenizer
from clozeformer.view import OBJECTIVES, render_html, render_text, view, word_tokenizer

TEXT = "I'm learning PyTorch. PyTorch is a machine learning library."


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def rows(v):
    return {r.label: r.cells for r in v.rows}


@pytest.mark.parametrize("objective", [o for o in OBJECTIVES if o != "rtd"])
def test_every_objective_keeps_the_text_recoverable(objective):
    v = view(objective, TEXT, seed=3)
    r = rows(v)
    if objective == "nsp":
        assert r["IsNext"][0] == "[CLS]" and r["IsNext"].count("[SEP]") == 2
        return
    original = [c for c in r["original"] if c]
    words = [w for w, _ in __import__("tokenizers").pre_tokenizers.Whitespace().pre_tokenize_str(TEXT)]
    assert [c for c in original if c not in ("[CLS]", "[SEP]", "<s>", "</s>")] == words
    if objective in ("mlm", "whole-word-mlm"):  # every target sits where the input differs or was kept
        assert sum(bool(c) for c in r["target"]) == round(0.15 * len(words))
    elif objective == "span-corruption":  # sentinels in the input, each one opening a span in the target
        sentinels = [c for c in r["input"] if c.startswith("<extra_id_")]
        assert sentinels and [c for c in r["target"] if c.startswith("<extra_id_")] == sentinels
    else:  # BART: the target is the whole original
        assert [c for c in r["target"] if c not in ("<s>", "</s>")] == words


def test_infilling_view_aligns_each_mask_with_its_span():
    v = view("text-infilling", TEXT, seed=1)
    r = rows(v)
    # every column whose input is <mask> covers original tokens or is an inserted mask (length-0 span)
    assert any(c == "<mask>" for c in r["input"])
    for top, bottom in zip(r["original"], r["input"]):
        assert bottom in ("<mask>", top, "")


def test_same_seed_same_view_and_rendering():
    a, b = view("bart-base", TEXT, seed=7), view("bart-base", TEXT, seed=7)
    assert rows(a) == rows(b)
    plain, coloured = render_text(a, color=False), render_text(a, color=True)
    assert "\x1b[" not in plain and "\x1b[" in coloured
    page = render_html(a)
    assert page.startswith("<!doctype html>") and "&lt;mask&gt;" in page


def test_subword_tokenizer_and_errors():
    tok = Tokenizer.train("bpe", [TEXT] * 20 + ["machine learning is fun."] * 20, vocab_size=300)
    v = view("token-masking", TEXT, tokenizer=tok, seed=0)
    assert rows(v)["original"][0] == "<s>"
    with pytest.raises(ValueError, match="unknown objective"):
        view("nope", TEXT)
    with pytest.raises(ValueError, match="empty"):
        view("mlm", "   ")
    with pytest.raises(ValueError, match="rtd needs"):
        view("rtd", TEXT)
    with pytest.raises(ValueError, match="two sentences"):
        view("nsp", "one sentence only")
    assert word_tokenizer(TEXT, "t5").sentinel_id(0) == word_tokenizer(TEXT, "t5").vocab_size - 1


def test_noise_cli_prints_and_writes_html(tmp_path):
    code, out, _ = run("noise", "--objective", "text-infilling", "--seed", "2", "--html", str(tmp_path / "v.html"),
                       TEXT)
    assert code == 0 and "original" in out and "input" in out and "\x1b[" not in out  # piped: plain
    assert (tmp_path / "v.html").read_text().count("<tr>") == 3
    code, _, err = run("noise", "--objective", "bogus", TEXT)
    assert code == 1 and "unknown objective" in err
    # an option the objective does not read is refused, not ignored
    for argv, named in ((["--objective", "document-rotation", "--rate", "0.5"], "document-rotation has no rate"),
                        (["--objective", "bart-base", "--rate", "0.5"], "bart-base has no rate"),
                        (["--objective", "nsp", "--rate", "0.5"], "nsp has no rate"),
                        (["--objective", "mlm", "--second", "B"], "mlm reads one text")):
        code, out, err = run("noise", *argv, TEXT)
        assert (code, out) == (1, "") and named in err, err
    code, out, _ = run("noise", "--objective", "token-deletion", "--rate", "0.5", TEXT)
    assert code == 0 and "input" in out


def test_generate_cli_prints_one_line_per_input(tmp_path, monkeypatch):
    texts = ["the cat sat on the mat .", "a dog ran .", "birds fly south in winter ."]
    tok = Tokenizer.train("bpe", texts * 30, vocab_size=300)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=tok.vocab_size, hidden_size=32,
                                                           num_heads=2, intermediate_size=64))
    save_model(model, tmp_path / "bart", tok)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, out, err = run("generate", str(tmp_path / "bart"), "--input", str(src), "--num-beams", "2",
                         "--max-new-tokens", "6")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    model.eval()
    for text, line in zip(texts, lines):
        ids = torch.tensor([tok.encode(text)])
        want = tok.decode(model.generate(ids, num_beams=2, max_new_tokens=6)[0].tolist()).strip()
        assert line == want
    monkeypatch.setattr("sys.stdin", io.StringIO(texts[0] + "\n"))
    code, out, _ = run("generate", str(tmp_path / "bart"), "--max-new-tokens", "6", "--num-beams", "2")
    assert code == 0 and out.splitlines() == lines[:1]
    # an option that would change nothing (transformers warns and ignores it) is refused, before any output
    for extra, named in ((["--temperature", "0.5"], "--temperature changes nothing without --sample"),
                         (["--top-k", "5", "--num-beams", "2"], "--top-k changes nothing without --sample"),
                         (["--length-penalty", "2"], "--length-penalty changes nothing without --num-beams N (N > 1)")):
        code, out, err = run("generate", str(tmp_path / "bart"), "--input", str(src), *extra)
        assert (code, out) == (1, "") and named in err, err
    # unless the checkpoint's own settings make it count: a saved num_beams lets --length-penalty work
    (tmp_path / "bart" / "generation_config.json").write_text('{"num_beams": 2}')
    code, out, err = run("generate", str(tmp_path / "bart"), "--input", str(src), "--length-penalty", "2",
                         "--max-new-tokens", "6")
    assert code == 0 and len(out.splitlines()) == 3, err


def test_noise_cli_rtd_with_an_electra_model(tmp_path):
    from clozeformer.models.electra import ElectraConfig, ElectraForPreTraining

    texts = ["the movie was good and the plot was fun", "a bad film with a dull plot"] * 20
    tok = Tokenizer.train("wordpiece", texts, vocab_size=120)
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.preset("tiny", vocab_size=tok.vocab_size, pad_token_id=tok.pad_id))
    save_model(model, tmp_path / "electra", tok)
    code, out, err = run("noise", "--objective", "rtd", "--model", str(tmp_path / "electra"), "--rate", "0.3",
                         texts[0])
    assert code == 0, err
    labels = [line.split()[0] for line in out.splitlines()[1:5]]
    assert labels == ["original", "masked", "generator", "P(replaced)"]
    assert out.splitlines()[1].split()[1:] == tok.tokens(tok.encode(texts[0]))


def test_generate_cli_refuses_an_encoder_only_model(tmp_path):
    from clozeformer.models.bert import BertConfig, BertForPreTraining

    tok = Tokenizer.train("wordpiece", ["a b c d e f"] * 10, vocab_size=60)
    save_model(BertForPreTraining(BertConfig.preset("tiny", vocab_size=tok.vocab_size)), tmp_path / "bert", tok)
    (tmp_path / "in.txt").write_text("a b c\n", encoding="utf-8")
    code, _, err = run("generate", str(tmp_path / "bert"), "--input", str(tmp_path / "in.txt"))
    assert code == 1 and "does not generate text" in err


def test_span_view_keeps_the_final_eos_in_its_column():
    """</s> ends the original as it ends the input, so a span dropped at the end never sits over it."""
    for seed in range(30):
        v = view("span-corruption", TEXT, seed=seed)
        original, inputs = v.rows[0], v.rows[1]
        assert original.cells[-1] == inputs.cells[-1] == "</s>" and original.styles[-1] == "", seed
        for top, bottom, style in zip(original.cells, inputs.cells, original.styles):
            if bottom.startswith("<extra_id_") and top:
                assert style == "gone"  # a dropped token is struck through, the span's first one too


def test_folded_infilling_span_struck_through_from_its_first_token():
    for seed in range(30):
        v = view("text-infilling", TEXT, seed=seed)
        for top, bottom, style in zip(v.rows[0].cells, v.rows[1].cells, v.rows[0].styles):
            if top and bottom != top:  # masked or deleted: the model never reads it
                assert style == "gone", (seed, top, bottom)


def test_html_target_row_has_its_own_columns():
    page = render_html(view("span-corruption", TEXT, seed=1))
    tables = page.split("<table>")[1:]
    assert len(tables) == 2 and ">target<" not in tables[0] and ">target<" in tables[1]


def test_view_splits_sentences_as_training_does():
    """'…' and '。' end sentences in the corpus reader; NSP's A/B and BART's permutation use the same rule."""
    v = view("nsp", "The first one… The second one。The third one!", seed=0)
    cells = rows(v)["IsNext"]
    a = cells[1:cells.index("[SEP]")]
    assert "first" in a and "second" not in a and "third" not in a  # A = the first of three sentences
