"""Generated text for the tests, so that a clone without ../shared runs the suite (imported as `textgen`:
pytest puts tests/ on sys.path).

Three small grammars, deterministic for a seed: English movie reviews with a sentiment label (negation and
"but" decide it, so a classifier has something to learn beyond single words), Korean reviews in the style of
NSMC (particles, endings, laughter and crying jamo), and English→German image captions in the style of
Multi30k. The words are common ones; the sentences are made here, so no licence applies. They stand in for
../shared's real data wherever a test needs text with structure rather than a particular corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# ---- English reviews -------------------------------------------------------------------------------------

_SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the script", "the director's work", "the cast",
             "the soundtrack", "the ending", "the story", "her performance", "his performance", "the dialogue",
             "the camera work", "the pacing", "the characters", "the sequel", "the premise", "the visual effects",
             "the humor", "the first hour", "the final scene", "the lead actor", "the screenplay", "the music",
             "the editing", "this documentary", "the animation", "the romance", "the villain"]
_VERBS = ["is", "was", "feels", "seems", "remains", "turns out to be", "becomes", "looks", "sounds", "stays"]
_GOOD = ["wonderful", "brilliant", "moving", "funny", "charming", "clever", "beautiful", "gripping", "delightful",
         "smart", "touching", "fresh", "powerful", "elegant", "memorable", "warm", "witty", "engaging",
         "thoughtful", "stunning", "honest", "sharp", "lively", "tender", "inventive"]
_BAD = ["boring", "dull", "clumsy", "tedious", "awful", "flat", "lifeless", "predictable", "messy", "shallow",
        "painful", "silly", "forgettable", "bland", "tiresome", "pointless", "confusing", "weak", "cheap", "lazy",
        "stale", "hollow", "sloppy", "grating", "muddled"]
_ADVERBS = ["very", "quite", "rather", "truly", "mostly", "surprisingly", "deeply", "utterly", "often",
            "almost always", "a little", "remarkably", "oddly"]
_TAILS = ["from start to finish", "for most of its running time", "in every scene", "despite a slow start",
          "even on a second viewing", "for adults and children alike", "by the standards of the genre",
          "in the second half", "compared with the book", "at almost two hours"]
_OPENERS = ["to be honest,", "in the end,", "sadly,", "frankly,", "on the whole,", "at times,", "as expected,",
            "for once,"]


def _clause(r: random.Random) -> tuple[str, int]:
    good = r.random() < 0.5
    negated = r.random() < 0.2
    adj = r.choice(_GOOD if good else _BAD)
    words = [r.choice(_SUBJECTS), r.choice(_VERBS)]
    if negated:
        words.append("not")
    if r.random() < 0.6:
        words.append(r.choice(_ADVERBS))
    words.append(adj)
    if r.random() < 0.3:
        words.append(r.choice(_TAILS))
    return " ".join(words), int(good != negated)


def review(r: random.Random) -> tuple[str, int]:
    """One review sentence and its label (1 positive): a clause, or two joined by and/but (but: the second
    clause decides)."""
    text, label = _clause(r)
    if r.random() < 0.2:
        text = f"{r.choice(_OPENERS)} {text}"
    u = r.random()
    if u < 0.25:
        second, label2 = _clause(r)
        text, label = f"{text}, but {second}", label2
    elif u < 0.4:
        second, _ = _clause(r)
        text = f"{text} and {second}"
    text = text[0].upper() + text[1:] + r.choice([".", ".", ".", "!", " ..."])
    return text, label


def english(n: int, seed: int = 0) -> list[str]:
    """n review sentences."""
    r = random.Random(seed)
    return [review(r)[0] for _ in range(n)]


def labelled(n: int, seed: int = 0) -> list[tuple[str, int]]:
    r = random.Random(seed)
    return [review(r) for _ in range(n)]


def prose(n: int) -> list[str]:
    """The first n sentences of the installed Python's own documentation (pydoc topics, then docstrings; the
    demo's corpus): real English with a wide vocabulary, for tokenizer tests that need one. Not committed."""
    from clozeformer.demo import stdlib_documents

    out: list[str] = []
    for chars in (300_000, 4_000_000):
        out = [s for doc in stdlib_documents(max_chars=chars) for s in doc][:n]
        if len(out) == n:
            break
    return out


# ---- Korean reviews --------------------------------------------------------------------------------------

_KO_SUBJECTS = ["이 영화는", "배우들 연기가", "스토리가", "결말이", "음악이", "연출이", "대사가", "이 드라마는",
                "주인공이", "영상미가", "감독의 연출이", "줄거리가", "전개가", "캐릭터들이", "후반부가", "액션이",
                "분위기가", "반전이", "마지막 장면이", "원작보다"]
_KO_ADVERBS = ["정말", "너무", "진짜", "조금", "꽤", "아주", "생각보다", "완전", "그냥", "역시", "의외로", "엄청"]
_KO_GOOD = ["좋았다", "재밌다", "감동적이다", "훌륭하다", "최고다", "멋지다", "따뜻하다", "신선하다", "재미있어요",
            "좋네요", "볼만하다", "아름답다", "인상적이다", "마음에 든다"]
_KO_BAD = ["지루하다", "별로다", "실망스럽다", "유치하다", "아쉽다", "최악이다", "뻔하다", "재미없다", "노잼이다",
           "어색하다", "짜증난다", "허술하다", "답답하다", "억지스럽다"]
_KO_TAILS = ["", "", "", " ㅋㅋ", " ㅋㅋㅋ", " ㅠㅠ", " ㅎㅎ", "!!", "...", " 추천합니다", " 다시 보고 싶다",
             " 시간 아깝다", " 평점 10점", " 돈 아깝다", " 가족과 함께 봤어요"]


def korean_review(r: random.Random) -> tuple[str, int]:
    good = r.random() < 0.5
    parts = [r.choice(_KO_SUBJECTS)]
    if r.random() < 0.7:
        parts.append(r.choice(_KO_ADVERBS))
    parts.append(r.choice(_KO_GOOD if good else _KO_BAD))
    if r.random() < 0.3:
        parts.append(r.choice(_KO_SUBJECTS))
        parts.append(r.choice(_KO_GOOD if good else _KO_BAD))
    return " ".join(parts) + r.choice(_KO_TAILS), int(good)


def korean(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [korean_review(r)[0] for _ in range(n)]


# ---- English -> German captions --------------------------------------------------------------------------

_WHO = [("a man", "ein mann", 1), ("a woman", "eine frau", 1), ("a dog", "ein hund", 1), ("a child", "ein kind", 1),
        ("a boy", "ein junge", 1), ("a girl", "ein mädchen", 1), ("two men", "zwei männer", 2),
        ("two women", "zwei frauen", 2), ("a group of people", "eine gruppe von menschen", 1),
        ("three children", "drei kinder", 2), ("an old man", "ein alter mann", 1), ("a young woman", "eine junge frau", 1)]
_DO = [("is running", "läuft", "are running", "laufen"), ("is sitting", "sitzt", "are sitting", "sitzen"),
       ("is standing", "steht", "are standing", "stehen"), ("is playing", "spielt", "are playing", "spielen"),
       ("is walking", "geht", "are walking", "gehen"), ("is waiting", "wartet", "are waiting", "warten"),
       ("is eating", "isst", "are eating", "essen"), ("is smiling", "lächelt", "are smiling", "lächeln")]
_WHERE = [("in the park", "im park"), ("on the street", "auf der straße"), ("near the water", "am wasser"),
          ("in front of a building", "vor einem gebäude"), ("on a bench", "auf einer bank"),
          ("in the snow", "im schnee"), ("on the beach", "am strand"), ("in a kitchen", "in einer küche"),
          ("at a market", "auf einem markt"), ("under a tree", "unter einem baum")]


def pairs(n: int, seed: int = 0) -> list[dict]:
    """n {"en", "de"} captions."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        en_who, de_who, number = r.choice(_WHO)
        en1, de1, en2, de2 = r.choice(_DO)
        en_where, de_where = r.choice(_WHERE)
        en_do, de_do = (en1, de1) if number == 1 else (en2, de2)
        out.append({"en": f"{en_who} {en_do} {en_where}.".capitalize(), "de": f"{de_who} {de_do} {de_where}.".capitalize()})
    return out


# ---- files -----------------------------------------------------------------------------------------------

def write_lines(path: Path, lines: list[str], blank_line_docs: int = 0) -> Path:
    """One line per document, or documents of `blank_line_docs` lines separated by blank lines."""
    if blank_line_docs:
        lines = ["\n".join(lines[i: i + blank_line_docs]) + "\n" for i in range(0, len(lines), blank_line_docs)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    Path(path).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records), encoding="utf-8")
    return Path(path)
