"""Tokenising a large corpus into the memory-mapped cache: speed, memory, CPU use, random reads.

    python benchmarks/bench_tokenize.py [--gb 1.0] [--gb 0.25 1.0] [--vocab 8000] [--fetches 10000] [--keep DIR]

First trains an 8k WordPiece vocabulary on a 20k-document sample, then calibrates: the
tokenizer's own `encode_batch` on one thread and on all (RAYON_NUM_THREADS), so the build's
CPU use can be read against what this machine gives right now. Then, for each size: writes
a text file of that many GB in a temporary directory (one document per line, 1-6 sentences
sampled from ../shared/data/corpus/en_reviews.txt when present, else synthetic Zipfian
text), and times `load_corpus` building the cache from scratch. Reports wall time, throughput (MB/s of text,
tokens/s), CPU use (process CPU time / wall: 2.0 means both cores busy), peak RSS
(`ru_maxrss`, and VmRSS sampled every 0.1 s by a thread, with the thread count), then the
time of a second `load_corpus` (a cache hit: hashing only) and random reads from the
memmap (sentence and document fetches per second). ru_maxrss also counts the memmap pages
those reads touch (RssFile, printed after them): file-backed, shared and reclaimable, they
grow with the reads, not with the build.

Each size runs in its own subprocess (which only loads the tokenizer), so each peak RSS is
that size's build, not the tokenizer training's; with several
sizes a last table compares them: a bounded build has the same peak at 0.25 GB and 1 GB.
The load average is printed too, since other processes on the machine slow the build.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REVIEWS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "en_reviews.txt"


def sentence_pool() -> tuple[list[str], str]:
    """Sentences to sample from, and where they came from."""
    if REVIEWS.is_file():
        lines = [line.strip() for line in REVIEWS.read_text(encoding="utf-8").splitlines() if line.strip()]
        # The file is lower-cased, one review fragment per line; make each a sentence.
        return [line[0].upper() + line[1:] + ("" if line[-1] in ".!?" else " .") for line in lines], str(REVIEWS)
    rng = random.Random(0)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(20_000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf's law
    pool = [" ".join(rng.choices(words, weights, k=rng.randint(5, 25))).capitalize() + " ." for _ in range(50_000)]
    return pool, "synthetic (Zipfian words)"


def write_corpus(path: Path, size_bytes: int, pool: list[str], seed: int = 0) -> int:
    """One document per line, 1-6 random sentences each, until size_bytes; returns the line count."""
    rng = random.Random(seed)
    written = lines = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            chunk = "\n".join(" ".join(rng.choices(pool, k=rng.randint(1, 6))) for _ in range(5000)) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
            lines += 5000
    return lines


class RssSampler(threading.Thread):
    """Peak VmRSS and thread count of this process, read from /proc/self/status every `every` s."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_kb, self.max_threads, self.samples = every, 0, 0, 0
        self._halt = threading.Event()

    @staticmethod
    def fields() -> dict[str, int]:
        """VmRSS, RssAnon (heap: what a leak grows), RssFile (mapped file pages) in KiB, and Threads."""
        out = {}
        try:
            for line in open("/proc/self/status"):
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                    out[key] = int(value.split()[0])
        except OSError:
            pass
        return out

    @classmethod
    def read(cls) -> tuple[int, int]:
        f = cls.fields()
        return f.get("VmRSS", 0), f.get("Threads", 0)

    def run(self) -> None:
        while not self._halt.is_set():
            rss, threads = self.read()
            self.peak_kb, self.max_threads = max(self.peak_kb, rss), max(self.max_threads, threads)
            self.samples += 1
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process, Rust's included
    return r.ru_utime + r.ru_stime


def sample_documents(pool: list[str], n: int = 20_000) -> list[str]:
    rng = random.Random(1)
    return [" ".join(rng.choices(pool, k=rng.randint(1, 6))) for _ in range(n)]


def calibrate(tok_dir: str) -> dict:
    """encode_batch alone (no reading, no writing): MB/s and CPU use; run with and without RAYON_NUM_THREADS=1."""
    from clozeformer.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_dir)
    texts = [s for d in sample_documents(sentence_pool()[0], 40_000) for s in d.split(" . ")]
    tok.encode_batch(texts[:1000])
    best = (float("inf"), 0.0)
    for _ in range(2):
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        tok.encode_batch(texts)
        wall = time.perf_counter() - t0
        best = min(best, (wall, (cpu_seconds() - cpu0) / wall))
    return {"mb_per_s": sum(map(len, texts)) / 1e6 / best[0], "cpu_use": best[1]}


def one_size(gb: float, tok_dir: str, args) -> dict:
    from clozeformer.data import cache
    from clozeformer.tokenizer import Tokenizer

    result: dict = {"gb": gb}
    tok = Tokenizer.load(tok_dir)
    result["vocab"] = tok.vocab_size
    with tempfile.TemporaryDirectory(prefix="bench_tokenize.", dir=args.keep) as tmp:
        tmp = Path(tmp)
        pool, source = sentence_pool()
        text = tmp / "corpus.txt"
        t = time.perf_counter()
        n_docs = write_corpus(text, int(gb * 1e9), pool)
        size = text.stat().st_size
        result.update(source=source, bytes=size, documents=n_docs, write_s=time.perf_counter() - t)
        del pool
        rss_before, _ = RssSampler.read()

        # The build: hashing (the cache key) + reading + tokenising + writing, from scratch.
        sampler = RssSampler()
        sampler.start()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        cache = cache.load_corpus(text, tok, cache_dir=tmp / "cache")
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        sampler.stop()
        result.update(build_s=wall, cpu_s=cpu, cpu_use=cpu / wall, mb_per_s=size / 1e6 / wall,
                      tokens=cache.n_tokens, sentences=cache.n_sentences, tokens_per_s=cache.n_tokens / wall,
                      rss_before_mb=rss_before / 1024, rss_peak_sampled_mb=sampler.peak_kb / 1024,
                      rss_samples=sampler.samples, threads_max=sampler.max_threads,
                      cache_mb=sum(p.stat().st_size for p in cache_files(tmp / "cache")) / 1e6)

        # A second load finds the cache: the key (sha256 of the file) is all it computes.
        t = time.perf_counter()
        again = cache.load_corpus(text, tok, cache_dir=tmp / "cache")
        result["cache_hit_s"] = time.perf_counter() - t
        assert again.n_tokens == cache.n_tokens

        # Random access through the memmap (pages mostly in the OS cache right after the build).
        rng = np.random.default_rng(0)
        picks = rng.integers(0, cache.n_sentences, args.fetches)
        t = time.perf_counter()
        n_ids = sum(len(np.asarray(cache.sentence(i))) for i in picks)
        result["sentence_fetches_per_s"] = args.fetches / (time.perf_counter() - t)
        docs = rng.integers(0, cache.n_documents, args.fetches)
        t = time.perf_counter()
        n_ids += sum(len(s) for d in docs for s in cache.document(d))
        result["document_fetches_per_s"] = args.fetches / (time.perf_counter() - t)
        assert n_ids > 0
        after = RssSampler.fields()  # the memmap's touched pages show as RssFile, not heap
        result.update(after_reads_anon_mb=after.get("RssAnon", 0) / 1024,
                      after_reads_file_mb=after.get("RssFile", 0) / 1024)
        del cache, again
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return result


def cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def report(r: dict) -> None:
    print(f"--- {r['gb']:g} GB: {r['bytes'] / 1e6:,.0f} MB, {r['documents']:,} documents "
          f"(text from {r['source']}; written in {r['write_s']:.1f} s)")
    print(f"  build         {r['build_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU -> CPU use {r['cpu_use']:.2f} "
          f"(of {len(os.sched_getaffinity(0))} cores), up to {r['threads_max']} threads")
    print(f"  throughput    {r['mb_per_s']:.2f} MB/s of text, {r['tokens_per_s']:,.0f} tokens/s "
          f"({r['tokens']:,} tokens, {r['sentences']:,} sentences; cache {r['cache_mb']:,.0f} MB)")
    print(f"  memory        peak RSS {r['ru_maxrss_mb']:,.0f} MB (ru_maxrss: writing the file, build, reads); "
          f"sampled VmRSS peak "
          f"{r['rss_peak_sampled_mb']:,.0f} MB during the build, {r['rss_before_mb']:,.0f} MB before it "
          f"({r['rss_samples']} samples)")
    print(f"  cache hit     {r['cache_hit_s']:.1f} s (sha256 of the file, then map)")
    print(f"  random reads  {r['sentence_fetches_per_s']:,.0f} sentences/s, {r['document_fetches_per_s']:,.0f} "
          f"documents/s from the memmap; after them RssAnon {r['after_reads_anon_mb']:,.0f} MB, "
          f"RssFile {r['after_reads_file_mb']:,.0f} MB (mapped cache pages: the OS's to drop)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, nargs="+", default=[1.0], help="corpus size(s) in GB (default 1.0)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--fetches", type=int, default=10_000)
    ap.add_argument("--keep", help="make the temporary directory under this one (default: the system's)")
    ap.add_argument("--child", choices=["train", "size", "calibrate"], help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "train":
        from clozeformer.tokenizer import Tokenizer

        t = time.perf_counter()
        tok = Tokenizer.train_wordpiece(sample_documents(sentence_pool()[0]), vocab_size=args.vocab)
        tok.save(args.tokenizer)
        print("RESULT " + json.dumps({"vocab": tok.vocab_size, "seconds": time.perf_counter() - t}), flush=True)
        return
    if args.child == "size":
        print("RESULT " + json.dumps(one_size(args.gb[0], args.tokenizer, args)), flush=True)
        return
    if args.child == "calibrate":
        print("RESULT " + json.dumps(calibrate(args.tokenizer)), flush=True)
        return

    # This process stays small (stdlib only; the work happens in children), because Linux
    # hands a parent's peak RSS on to its children's ru_maxrss through fork and exec.
    from importlib.metadata import version

    def child(*extra: str, env: dict | None = None) -> dict:
        cmd = [sys.executable, __file__, "--tokenizer", str(tok_dir), "--vocab", str(args.vocab),
               "--fetches", str(args.fetches), *(["--keep", args.keep] if args.keep else []), *extra]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])

    def load() -> str:
        return " ".join(open("/proc/loadavg").read().split()[:3])

    print(f"python {sys.version.split()[0]}, tokenizers {version('tokenizers')}, numpy {version('numpy')}; "
          f"{len(os.sched_getaffinity(0))} cores; TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS')}")
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_tok.", dir=args.keep) as tok_dir:
        trained = child("--child", "train")
        print(f"tokenizer: WordPiece, {trained['vocab']:,} ids, trained on 20,000 sampled documents in "
              f"{trained['seconds']:.1f} s")
        one = child("--child", "calibrate", env={**os.environ, "RAYON_NUM_THREADS": "1"})
        every = child("--child", "calibrate")
        print(f"calibration (encode_batch alone, load average {load()}): 1 thread {one['mb_per_s']:.2f} MB/s "
              f"(CPU use {one['cpu_use']:.2f}); all threads {every['mb_per_s']:.2f} MB/s "
              f"(CPU use {every['cpu_use']:.2f}), speed-up {every['mb_per_s'] / one['mb_per_s']:.2f}x")
        results = []
        for gb in args.gb:
            print(f"load average before {gb:g} GB: {load()}", flush=True)
            r = child("--child", "size", "--gb", str(gb))
            report(r)
            results.append(r)
    print(f"load average after: {load()}")
    if len(results) > 1:
        print("\n| corpus | build | MB/s | tokens/s | CPU use | peak RSS (ru_maxrss) | sampled peak | cache hit |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['bytes'] / 1e9:.2f} GB | {r['build_s']:.0f} s | {r['mb_per_s']:.2f} "
                  f"| {r['tokens_per_s']:,.0f} "
                  f"| {r['cpu_use']:.2f} | {r['ru_maxrss_mb']:,.0f} MB | {r['rss_peak_sampled_mb']:,.0f} MB "
                  f"| {r['cache_hit_s']:.1f} s |")


if __name__ == "__main__":
    main()
