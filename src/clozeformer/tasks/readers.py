"""Labelled task files: TSV/CSV (the `csv` module, standard quoting), JSONL, SQuAD JSON, or `hf:` datasets.

Every reader returns records `(where, fields)`: `where` names the source and line ("dev.tsv:12",
or "hf:nyu-mll/glue:sst2 row 12") so that every later error can point at it. Errors name file:line:
a missing column (with the columns present), an empty file, invalid UTF-8 (data/corpus.py's
strict line reader), a row with too many or too few fields.

    hf:NAME[:CONFIG][?split=…&data_files=…]   as for corpora (data/corpus.HubCorpus), e.g.
    hf:nyu-mll/glue:sst2?split=validation, or hf:json?data_files=dev.jsonl through `datasets`' own
    local loader (offline); without ?split= the caller's split (train, or validation for eval).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clozeformer.data.corpus import TABLES, CorpusError, HubCorpus, check_file, parse_json, read_lines, table_rows
from clozeformer.tasks.spec import TaskError

Record = tuple[str, dict[str, Any]]


def read_records(source: str | Path, split: str = "train") -> list[Record]:
    """All records of a local file or an `hf:` dataset (`split` is the dataset split used by default)."""
    text = str(source)
    if text.startswith("hf:"):
        return _hf_records(text, split)
    path = Path(source)
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    try:
        check_file(path)  # a missing file or a directory named as one, before its name's suffix
        if suffix in TABLES:
            records = _csv_records(path, TABLES[suffix])
        elif suffix in (".jsonl", ".json"):
            records = _jsonl_records(path)
        else:
            raise TaskError(f"{path}: unknown format {suffix or '(no extension)'!r}; use .tsv, .csv or .jsonl "
                            "(or hf:NAME)")
    except CorpusError as e:
        raise TaskError(str(e)) from None
    if not records:
        raise TaskError(f"{path}:1: empty file (no rows)")
    return records


def _csv_records(path: Path, delimiter: str) -> list[Record]:
    return [(f"{path}:{n}", row) for n, row in table_rows(path, delimiter)]


def _jsonl_records(path: Path) -> list[Record]:
    records = []
    for n, line in read_lines(path):
        if not line.strip():
            continue
        record = parse_json(line, path, n)
        if not isinstance(record, dict):
            raise TaskError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
        records.append((f"{path}:{n}", record))
    return records


def _hf_records(spec: str, split: str) -> list[Record]:
    try:
        ds = HubCorpus.parse(spec).load(split=split)
    except CorpusError as e:
        raise TaskError(str(e)) from None
    records = [(f"{spec} row {i + 1}", dict(row)) for i, row in enumerate(ds)]
    if not records:
        raise TaskError(f"{spec}: empty dataset (no rows)")
    return records


def field(record: Record, column: str, kind: type | tuple[type, ...] = str) -> Any:
    """record's value in `column`; a clear error names the record and the columns present."""
    where, fields = record
    if column not in fields:
        raise TaskError(f"{where}: no column {column!r} (columns present: {', '.join(map(str, fields)) or 'none'})")
    value = fields[column]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a numeric label in JSON or a datasets ClassLabel
    if not isinstance(value, kind):
        raise TaskError(f"{where}: column {column!r} holds {type(value).__name__}, expected "
                        f"{getattr(kind, '__name__', kind)}")
    return value


def read_squad(source: str | Path) -> list[dict[str, Any]]:
    """SQuAD v1.1 JSON -> [{"id", "question", "context", "answers": [(text, char_start), …], "where"}]."""
    path = Path(source)
    try:
        raw = "\n".join(line for _, line in read_lines(path))  # strict UTF-8 with file:line errors
        if not raw.strip():
            raise TaskError(f"{path}:1: empty file")
        doc = parse_json(raw, path)
    except CorpusError as e:
        raise TaskError(str(e)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise TaskError(f"{path}: expected SQuAD v1.1 layout {{\"data\": [{{\"paragraphs\": [...]}}]}}")
    examples = []
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para.get("context"), str) or not isinstance(para.get("qas"), list):
                raise TaskError(f"{where}: needs a string 'context' and a list 'qas' (keys present: "
                                f"{', '.join(para)})")
            for q, qa in enumerate(para["qas"]):
                if not isinstance(qa.get("question"), str):
                    raise TaskError(f"{where}.qas[{q}]: no string 'question' (keys present: {', '.join(qa)})")
                answers = answers_in(f"{where}.qas[{q}]", para["context"],
                                     [(ans.get("text"), ans.get("answer_start")) for ans in qa.get("answers", [])
                                      if isinstance(ans, dict)])
                examples.append({"id": str(qa.get("id", f"{a}-{p}-{q}")), "question": qa["question"],
                                 "context": para["context"], "answers": answers, "where": f"{where}.qas[{q}]"})
    if not examples:
        raise TaskError(f"{path}: no questions")
    return examples


def answers_in(where: str, context: str, pairs: list[tuple[Any, Any]]) -> list[tuple[str, int]]:
    """An extractive-QA example's (text, answer_start) pairs, each the context's own text at its start."""
    for text, start in pairs:
        if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
            raise TaskError(f"{where}: an answer is a non-empty text and an integer answer_start, got {text!r} at "
                            f"{start!r}")
        if start < 0 or context[start:start + len(text)] != text:
            raise TaskError(f"{where}: answer {text!r} is not the context's text at answer_start {start}")
    return list(pairs)
