"""Throughput of BART's noising functions (objectives/denoise.py) on one CPU core.

    python benchmarks/bench_noise.py [--batch 32] [--widths 512 128] [--seconds 1.0] [--ref-rows 256]

Batches are B full rows `<s> body… </s>` of random regular ids with full stops placed where
real sentences end: sentence lengths are sampled from ../shared/data/corpus/en_reviews.txt
(words per line, median 19) when present, else from 1 + Geometric(mean 20). Each noise
alone (the single-noise presets), the bart-base and bart-large chains and the full
`denoise` batch are timed (median of 5 runs of about --seconds/5 each); tokens/s counts
input tokens (B × width). Two figures each: per second of this thread's CPU time (what one
core delivers, little moved by other processes) and per second of wall time (moved by
them: compare with the load average printed). Target: >= 5M tokens/s for bart-base on
one core.

For scale, text infilling is also run by a straightforward per-example implementation
(`loop_infill`: a Python loop over rows, numpy within a row, as fairseq's
DenoisingDataset does per example) with the same algorithm, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from clozeformer.objectives.denoise import BART_IDS, apply_noises, denoise

REVIEWS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "en_reviews.txt"
FULL_STOP = 4  # an ordinary id standing for "." (BART's dictionary has "." at 4)
SPEC = BART_IDS


def sentence_lengths() -> tuple[np.ndarray, str]:
    """A pool of sentence lengths in tokens, and where it came from."""
    if REVIEWS.is_file():
        words = [len(line.split()) for line in REVIEWS.read_text(encoding="utf-8").splitlines() if line.strip()]
        return np.asarray(words, dtype=np.int64), f"{REVIEWS.name} words per line"
    rng = np.random.default_rng(0)
    return 1 + rng.geometric(1 / 20, size=20_000), "1 + Geometric(mean 20)"


def make_batch(b: int, t: int, pool: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] of full rows with a full stop ending every sampled sentence, lengths [B] = T."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, SPEC.vocab_size - 1, (b, t), generator=g)  # 5..50262: regular ids
    picks = torch.randint(len(pool), (b, t), generator=g)
    ends = torch.as_tensor(pool)[picks].cumsum(1)  # [B, T] sentence end offsets (more than enough)
    stop = torch.zeros(b, t + 1, dtype=torch.bool)
    stop.scatter_(1, ends.clamp(max=t), True)
    ids = torch.where(stop[:, :t], FULL_STOP, ids)
    ids[:, 0], ids[:, -1] = SPEC.bos, SPEC.eos
    return ids, torch.full((b,), t)


def loop_infill(ids: torch.Tensor, lengths: torch.Tensor, rate: float, poisson_lambda: float,
                rng: np.random.Generator) -> list[np.ndarray]:
    """Text infilling one example at a time (numpy within a row): the same algorithm as
    denoise.infill_text, written the way a per-example dataset would."""
    out = []
    rows = ids.numpy()
    for i in range(len(rows)):
        body = rows[i, 1 : int(lengths[i]) - 1]
        n = len(body)
        budget = round(rate * n)
        spans: list[int] = []
        covered = 0
        while covered < budget:  # Poisson draws until the budget is spent, the last trimmed
            span = min(int(rng.poisson(poisson_lambda)), budget - covered)
            spans.append(span)
            covered += span
        s = len(spans)
        n_items = n - budget + s
        is_span = np.zeros(n_items, dtype=bool)
        is_span[rng.permutation(n_items)[:s]] = True  # where the spans go among the kept tokens
        consume = np.ones(n_items, dtype=np.int64)
        consume[is_span] = rng.permutation(spans) if s else []
        start = np.cumsum(consume) - consume
        items = np.where(is_span, SPEC.mask, body[np.minimum(start, max(n - 1, 0))] if n else SPEC.mask)
        out.append(np.concatenate([[SPEC.bos], items, [SPEC.eos]]))
    return out


def timed(fn, seconds: float) -> tuple[float, float]:
    """(CPU, wall) seconds per call: medians over 5 runs of about seconds/5 each, after a warm-up."""
    fn()
    t0 = time.perf_counter()
    fn()
    per = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(seconds / 5 / per))
    cpu, wall = [], []
    for _ in range(5):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(reps):
            fn()
        cpu.append((time.thread_time() - c0) / reps)
        wall.append((time.perf_counter() - w0) / reps)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 128])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    ap.add_argument("--ref-rows", type=int, default=256, help="rows for the per-example reference")
    args = ap.parse_args()

    torch.set_num_threads(1)
    pool, source = sentence_lengths()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
          f"load average {os.getloadavg()[0]:.2f} (other processes slow every figure)")
    print(f"sentence lengths: {source}, median {int(np.median(pool))} tokens\n")

    names = ["token-masking", "token-deletion", "text-infilling", "sentence-permutation", "document-rotation",
             "token-insertion", "bart-base", "bart-large"]
    rows: dict[str, dict[int, tuple[float, float]]] = {}  # name -> width -> (CPU, wall) tokens/s
    g = torch.Generator().manual_seed(0)
    for t in args.widths:
        ids, lengths = make_batch(args.batch, t, pool)
        tokens = args.batch * t
        for name in names:
            cpu, wall = timed(lambda: apply_noises(ids, lengths, name, spec=SPEC, generator=g,
                                                   full_stop_ids=[FULL_STOP]), args.seconds)
            rows.setdefault(name, {})[t] = (tokens / cpu, tokens / wall)
        cpu, wall = timed(lambda: denoise(ids, lengths, "bart-base", spec=SPEC, generator=g,
                                          full_stop_ids=[FULL_STOP], max_len=t), args.seconds)
        rows.setdefault("denoise(bart-base) batch", {})[t] = (tokens / cpu, tokens / wall)

        # Per-example reference for text infilling, on fewer rows (it is slow); tokens/s as above.
        rng = np.random.default_rng(0)
        ref_ids, ref_len = make_batch(args.ref_rows, t, pool, seed=1)
        cpu, wall = timed(lambda: loop_infill(ref_ids, ref_len, 0.3, 3.0, rng), args.seconds)
        rows.setdefault("per-example loop: text-infilling", {})[t] = (args.ref_rows * t / cpu, args.ref_rows * t / wall)

    print(f"{'':36s}" + "".join(f"{f'T={t} (M tokens/s)':>22s}" for t in args.widths))
    head = f"{'noise, B = ' + str(args.batch):36s}" + f"{'CPU':>11s}{'wall':>11s}" * len(args.widths)
    print(head)
    print("-" * len(head))
    for name, by_t in rows.items():
        print(f"{name:36s}" + "".join(f"{by_t[t][0] / 1e6:11.2f}{by_t[t][1] / 1e6:11.2f}" for t in args.widths))
    print()
    for t in args.widths:
        ratio = rows["text-infilling"][t][0] / rows["per-example loop: text-infilling"][t][0]
        base = rows["bart-base"][t][0]
        verdict = "meets" if base >= 5e6 else "misses"
        print(f"T={t}: vectorised text infilling does {ratio:.1f}x the per-example loop's tokens per CPU second; "
              f"bart-base {base / 1e6:.2f}M tokens per CPU second {verdict} the 5M target")


if __name__ == "__main__":
    main()
