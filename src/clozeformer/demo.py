"""`clozeformer demo`: pretrain a tiny BERT offline on text every Python install already has.

The corpus is the English of the standard library's own documentation: the help topics of
`pydoc_data.topics` and the docstrings of the stdlib's modules, classes and functions, read
with `ast` from the source files (nothing is imported or executed, nothing downloaded).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from clozeformer.infer import fill_mask
from clozeformer.interop.model_dir import load_model
from clozeformer.io import atomic_write, check_new_dir
from clozeformer.tokenizer import Tokenizer
from clozeformer.train.distributed import resolve_device
from clozeformer.train.config import fast_bf16
from clozeformer.train.pretrain import pretrain
from clozeformer.view import render_text, view

SHOWCASE = "A list is a mutable sequence. Use append to add an item to the end of the list."
# Fill-mask probes and the answers that count as hits, fixed before the runs they are scored on (the
# sentences are the earlier demo's; the answer sets were written down before this recipe's first run).
PROBES = [
    ("The [MASK] statement is used to leave a loop early.", {"break"}),
    ("Raise an [MASK] if the file does not exist.", {"exception", "error", "oserror"}),
    ("Return true if the [MASK] is empty.", {"list", "string", "set", "queue", "sequence", "buffer", "stack",
                                              "deque", "dictionary", "container", "mapping", "tuple"}),
    ("Open the file for [MASK] and return a file object.", {"reading", "writing", "read", "write", "appending"}),
    ("If the argument is not given, the default [MASK] is used.", {"value", "encoding"}),
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__", "ensurepip"}


def _sentences(text: str) -> list[str]:
    """Paragraphs of a doc -> sentences, whitespace collapsed; code-like lines dropped."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines()]
        if not lines or any(ln.startswith((">>>", "...", "$", "|", "+-", "==")) for ln in lines):
            continue
        flat = " ".join(ln for ln in lines if ln)
        out.extend(s for s in _SENTENCE_END.split(flat) if len(s.split()) >= 4)
    return out


def _stdlib_sources(root: Path) -> list[Path]:
    """The standard library's .py files in sorted order, without walking into the skipped directories (a
    site-packages with torch in it holds most of the files under the stdlib root)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        found += [Path(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def stdlib_documents(max_chars: int = 4_000_000) -> list[list[str]]:
    """Documents (lists of sentences) from pydoc topics, then stdlib docstrings, in a fixed order."""
    docs: list[list[str]] = []
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for name in sorted(topics):
        docs.append(_sentences(topics[name]))
    for path in _stdlib_sources(Path(sysconfig.get_paths()["stdlib"])):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    docs.append(_sentences(doc))
        if sum(len(s) for d in docs for s in d) > max_chars:
            break
    return [d for d in docs if d]


def write_corpus(path: Path, docs: list[list[str]]) -> Path:
    """BERT's format: one sentence per line, a blank line between documents."""
    atomic_write(path, "\n\n".join("\n".join(d) for d in docs) + "\n")
    return path


def run_demo(out_dir: str | Path = "runs/demo", *, minutes: float | None = None, steps: int | None = None,
             progress: bool = True) -> dict:
    """Pretrain the demo's tiny BERT for `minutes` (default 2.5) or exactly `steps` with the small-budget
    recipe, then show what it learnt. Returns the pretraining summary plus `probe_hits`."""
    if minutes is not None and steps is not None:
        raise ValueError(f"minutes {minutes:g} and steps {steps}: the demo trains for a time or for a number of "
                         "steps; give one")
    out_dir = Path(out_dir)
    earlier = out_dir / ".earlier-run"  # an earlier demo's outputs, set aside until this run has its own
    if (out_dir / "stdlib_docs.txt").is_file():  # an earlier demo's directory (it wrote that first): replaced
        _remove(earlier)
        earlier.mkdir()
        for name in _OUTPUTS:
            if (out_dir / name).exists():
                os.replace(out_dir / name, earlier / name)
    else:  # anything else is not the demo's to replace
        check_new_dir(out_dir, "--out")
    try:
        summary = _run_demo(out_dir, 2.5 if minutes is None else minutes, steps, progress)
    except BaseException:  # interrupted or failed: the earlier run comes back, whole
        for name in (p.name for p in earlier.iterdir()) if earlier.is_dir() else ():
            _remove(out_dir / name)
            os.replace(earlier / name, out_dir / name)
        raise
    finally:
        _remove(earlier)
    return summary


_OUTPUTS = ("checkpoints", "model", "tokenizer", "metrics.jsonl", "loss.png")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _run_demo(out_dir: Path, minutes: float, steps: int | None, progress: bool) -> dict:
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"clozeformer demo: a tiny BERT pretrained on the Python {sys.version_info.major}."
          f"{sys.version_info.minor} standard library's documentation, on this machine, offline.\n")
    docs = stdlib_documents()
    corpus = write_corpus(out_dir / "stdlib_docs.txt", docs)
    n_sent = sum(len(d) for d in docs)
    print(f"corpus   {corpus}  ({len(docs):,} documents, {n_sent:,} sentences, "
          f"{corpus.stat().st_size / 1e6:.1f} MB)")
    precision = "bf16" if fast_bf16(resolve_device("auto")) else "fp32"  # bf16 only where the CPU runs it natively
    budget = f"{steps} steps" if steps else f"{minutes:g} minutes"
    # The small-budget recipe of `clozeformer pretrain --config tiny` (BENCHMARKS.md, "A recipe for minutes"):
    # MLM only, whole documents packed into 128-token rows, mimetic init, no dropout, a high peak lr.
    train = {"precision": precision, "eval_every": 250, "eval_batches": 16, "save_every": 10 ** 9, "seed": 0,
             **({"steps": steps} if steps else {"minutes": minutes})}
    print(f"training BERT tiny for {budget}: MLM only, rows of 32 x 128 tokens, {precision}")
    summary = pretrain([corpus], model="bert", config="tiny", run_dir=out_dir, vocab_size=8000,
                       blank_line_docs=True, max_len=128, batch_size=32, nsp=False, train=train,
                       cache_dir=out_dir / "cache", progress=progress)
    before, after = summary["eval_before"], summary["eval"]
    print(f"\nmodel    BERT tiny, {summary['parameters'] / 1e6:.1f}M parameters, {summary['steps']} steps in "
          f"{summary['elapsed_s']:.0f} s, {summary['n_tokens']:,} corpus tokens")
    print(f"held-out MLM accuracy  {before['mlm_acc']:.1%} before -> {after['mlm_acc']:.1%} after "
          f"(MLM loss {before['mlm_loss']:.2f} -> {after['mlm_loss']:.2f}; 15% of held-out tokens masked)\n")
    model, tok = load_model(summary["model_dir"]), Tokenizer.load(summary["model_dir"])
    print("fill-mask (top 5; a hit when an answer written down before training is among them):")
    hits = 0
    for text, answers in PROBES:
        preds = fill_mask(model, tok, text, top_k=5)[0]
        hit = any(p.token in answers for p in preds)
        hits += hit
        print(f"  {text}\n    -> " + ", ".join(f"{p.token} ({p.score:.2f})" for p in preds)
              + ("   hit" if hit else f"   miss (wanted {' / '.join(sorted(answers)[:3])}…)"))
    print(f"probe hits: {hits} of {len(PROBES)}")
    print("\nwhat each family's objective does to a sentence (clozeformer noise --objective …):")
    for objective in ("mlm", "text-infilling", "sentence-permutation", "span-corruption"):
        print(render_text(view(objective, SHOWCASE, tokenizer=tok if objective == "mlm" else None, seed=1),
                          color=sys.stdout.isatty()) + "\n")
    print(f"saved model   {summary['model_dir']}  (loads in clozeformer and in transformers)")
    print(f"checkpoint    {summary['checkpoint']}")
    print(f"loss curve    {summary['plot']}")
    print(f"metrics log   {out_dir / 'metrics.jsonl'}")
    print(f"try           clozeformer fill-mask {summary['model_dir']} \"Return the [MASK] of the list.\"")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return {**summary, "probe_hits": hits}
