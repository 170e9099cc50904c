"""The GPU check (issue 22): one markdown table of parity on the device, training-step speed
against transformers, and a torchrun run killed and resumed.

    bash benchmarks/gpu_check.sh                 # on a CUDA machine (installs with --no-deps, then this)
    python benchmarks/gpu_check.py --dry-run     # CPU, tiny shapes, the same code (tests/test_gpu_check.py)

Rows:
- parity, for each of the five families: our tiny model saved, loaded into transformers' class from the saved
  config; fp32 logits on the device (max |Δ| ≤ 1e-4) and, for BART and T5, greedy generated
  ids (identical).
- step speed: BERT-base MLM (L12 H768, 128 tokens, batch 256, 15% of tokens predicted),
  T5-v1.1-base span corruption (512 → 114 tokens, batch 128, nanoT5's shape) and BART-base
  denoising (512 → 512, batch 32). A step is forward + loss + backward + fused AdamW +
  zero_grad under bf16 autocast, same weights and batch for both, ours and transformers
  (SDPA attention) each eager and compiled. Input tokens/s over the timed steps, and the
  share of the device's peak: FLOPs each implementation runs (torch.utils.flop_counter, one
  step) per second over the bf16 matmul rate measured here (an 8192³ GEMM). transformers
  computes the LM head on every position; ours on the predicted ones only, so ours runs
  fewer FLOPs for the same update.
- varlen attention (training stacks attend per document, CUDA's path): a tiny BERT on packed rows of
  several documents, fp32, loss and gradients against the dense block-diagonal mask (max |Δ| ≤ 1e-4);
  a tiny BART's decoder (causal varlen: flash, bf16 only), bf16, varlen against dense within twice the
  difference bf16 itself makes against fp32, and every decoder attention run per document; the BERT-base
  and BART-base steps above on such rows (documents of 8-64 tokens, no dropout), varlen against dense, tokens/s.
- torchrun, one process (one GPU: NCCL refuses two ranks on one device, so no collective runs):
  BERT tiny pretraining, SIGTERM after its first checkpoint, then `--resume` to the end.

Prints the device (and for CPU its capability), then the table. Exit status 1 if a parity row fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from clozeformer.demo import stdlib_documents, write_corpus
from clozeformer.interop.model_dir import save_model
from clozeformer.models.bart import BartConfig, BartForConditionalGeneration
from clozeformer.models.bert import BertConfig, BertForPreTraining
from clozeformer.models.electra import ElectraConfig, ElectraDiscriminator
from clozeformer.models.roberta import RobertaConfig, RobertaForMaskedLM
from clozeformer.models.t5 import T5Config, T5ForConditionalGeneration
from clozeformer.nn import attention

NANOT5_A100_TOKENS_S = 128 * 512 / 0.56  # nanoT5: T5-v1.1-base, 128 × 512 inputs, 0.56 s/step on one A100
VOCAB = 211  # parity models

# family: (our class, config, HF class, batch, input length, target length)
FULL = {
    "bert": (BertForPreTraining, BertConfig.preset("base", vocab_size=30522, nsp=False), "BertForMaskedLM", 256, 128, 0),
    "t5": (T5ForConditionalGeneration, T5Config.preset("base-v1_1", vocab_size=32128), "T5ForConditionalGeneration",
           128, 512, 114),
    "bart": (BartForConditionalGeneration, BartConfig.preset("base", vocab_size=50265), "BartForConditionalGeneration",
             32, 512, 512),
}
DRY = {
    "bert": (BertForPreTraining, BertConfig.preset("tiny", vocab_size=500, nsp=False), "BertForMaskedLM", 4, 32, 0),
    "t5": (T5ForConditionalGeneration, T5Config.preset("tiny", vocab_size=500), "T5ForConditionalGeneration", 4, 32, 8),
    "bart": (BartForConditionalGeneration, BartConfig.preset("tiny", vocab_size=500), "BartForConditionalGeneration",
             4, 32, 32),
}
PARITY = {
    "bert": (BertForPreTraining, BertConfig.preset("tiny", vocab_size=VOCAB)),
    "roberta": (RobertaForMaskedLM, RobertaConfig.preset("tiny", vocab_size=VOCAB)),
    "electra": (ElectraDiscriminator, ElectraConfig.preset("tiny", vocab_size=VOCAB)),
    "bart": (BartForConditionalGeneration, BartConfig.preset("tiny", vocab_size=VOCAB)),
    "t5": (T5ForConditionalGeneration, T5Config.preset("tiny", vocab_size=VOCAB)),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (f"CPU, torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 flags: {', '.join(bf16) or 'none'}, {torch.get_num_threads()} threads")


def peak_flops(device: torch.device, n: int) -> float:
    """bf16 matmul FLOP/s of an n³ GEMM on this device (the median of 5 after 2 warm-ups)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(7):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times[2:])[2]


# ---- parity -----------------------------------------------------------------------------------

def parity(family: str, device: torch.device, tmp: Path) -> tuple[float, bool | None]:
    """(max |Δ logits| against transformers, generated ids equal — None for encoders)."""
    cls, cfg = PARITY[family]
    torch.manual_seed(0)
    ours = cls(cfg).eval()
    save_model(ours, tmp / family)
    arch = (tmp / family / "config.json").read_text()
    name = next(n for n in ("BertForPreTraining", "RobertaForMaskedLM", "ElectraForPreTraining",
                            "BartForConditionalGeneration", "T5ForConditionalGeneration") if n in arch)
    hf = getattr(transformers, name).from_pretrained(tmp / family, attn_implementation="eager").to(device).eval()
    ours.to(device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 11:], mask[2, 5:] = 0, 0
    ids, mask = ids.masked_fill(mask == 0, cfg.pad_token_id).to(device), mask.to(device)
    keep = mask.bool()
    with torch.no_grad():
        if family in ("bert", "roberta", "electra"):
            ref = hf(input_ids=ids, attention_mask=mask)
            ref = ref.prediction_logits if family == "bert" else ref.logits
            diff = (ours(ids, mask).logits - ref)[keep].abs().max().item()
            return diff, None
        dec = torch.randint(5, VOCAB, (3, 9), generator=g).to(device)
        diff = (ours(ids, mask, decoder_input_ids=dec).logits - hf(input_ids=ids, attention_mask=mask,
                                                                    decoder_input_ids=dec).logits).abs().max().item()
        want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, num_beams=1)
        got = ours.generate(ids, mask, max_new_tokens=10)
    return diff, got.tolist() == want.tolist()


# ---- step speed -------------------------------------------------------------------------------

def make_batch(family: str, cfg, b: int, t: int, t_out: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    vocab = cfg.vocab_size
    ids = torch.randint(5, vocab, (b, t), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "bert":
        pick = torch.rand(b, t, generator=g) < 0.15
        batch["labels"] = torch.where(pick, ids, -100)
    else:
        batch["labels"] = torch.randint(5, vocab, (b, t_out), generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def timed_steps(model, batch: dict, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per training step (bf16 autocast where the device has it, fused AdamW)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type in ("cuda", "cpu"))
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):  # compilation, allocator, cuDNN/cuBLAS heuristics
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def step_flops(model, batch: dict, device: torch.device) -> float:
    """FLOPs of one forward + backward as this implementation runs them."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def speed(family: str, shapes: dict, device: torch.device, tmp: Path, peak: float, *, warmup: int, steps: int,
          backend: str) -> list[dict]:
    cls, cfg, hf_name, b, t, t_out = shapes[family]
    torch.manual_seed(0)
    ours = cls(cfg)
    save_model(ours, tmp / f"speed-{family}")
    hf = getattr(transformers, hf_name).from_pretrained(tmp / f"speed-{family}", attn_implementation="sdpa")
    batch = make_batch(family, cfg, b, t, t_out, device)
    rows = []
    for impl, model in (("ours", ours), ("transformers", hf)):
        model.to(device)
        flops = step_flops(model, batch, device)
        for compiled in (False, True):
            run = torch.compile(model, backend=backend) if compiled else model
            sec = timed_steps(run, batch, device, warmup, steps)
            rows.append({"family": family, "impl": impl, "compiled": compiled, "tokens_s": b * t / sec,
                         "mfu": flops / sec / peak, "ms": 1000 * sec})
        model.cpu()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---- varlen attention ---------------------------------------------------------------------------

def packed_documents(family: str, batch: dict, g: torch.Generator) -> dict:
    """The batch's rows as packed documents of 8-64 tokens: its attention_mask becomes segment ids; for BART
    the target rows hold as many documents (decoder_attention_mask), the k-th target pairing with the k-th source."""
    b, t = batch["input_ids"].shape
    seg = torch.zeros(b, t, dtype=torch.long)
    for r in range(b):
        at, k = 0, 1
        while at < t:
            n = int(torch.randint(8, 65, (1,), generator=g))
            seg[r, at: at + n] = k
            at, k = at + n, k + 1
    seg = seg.to(batch["input_ids"].device)
    if family == "bart":  # targets as long as their sources (denoising)
        return {**batch, "attention_mask": seg, "labels": batch["input_ids"], "decoder_attention_mask": seg}
    return {**batch, "attention_mask": seg}


def with_varlen(on: bool, device: torch.device, f):
    """f() with training stacks attending per document (on) or with the dense masked kernel."""
    saved = attention.VARLEN_DEVICES
    attention.VARLEN_DEVICES = (device.type,) if on else ()
    try:
        return f()
    finally:
        attention.VARLEN_DEVICES = saved


def loss_and_grads(model, batch: dict, device: torch.device, bf16: bool) -> list[torch.Tensor]:
    model.zero_grad()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    return [loss.detach().float()] + [p.grad.float().clone() for p in model.parameters() if p.grad is not None]


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor], relative: bool = False) -> float:
    """max |Δ| over the loss and every gradient (relative: each over the largest |value| of b's tensor)."""
    return max(((x - y).abs().max() / (y.abs().max() if relative else 1)).item() for x, y in zip(a, b))


def varlen_parity(device: torch.device) -> float:
    """max |Δ| of the loss and every gradient, varlen against dense, tiny BERT in fp32 without dropout."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=VOCAB, nsp=False, dropout=0.0,
                                                 attention_dropout=0.0)).to(device).train()
    batch = packed_documents("bert", make_batch("bert", model.config, 8, 160, 0, device),
                             torch.Generator().manual_seed(2))
    batch["attention_mask"][1, 100:] = 0  # and padding
    a, b = (with_varlen(on, device, lambda: loss_and_grads(model, batch, device, False)) for on in (True, False))
    return largest_difference(a, b)


def decoder_varlen_parity(device: torch.device) -> tuple[float, float, int]:
    """Tiny BART on packed documents under bf16 autocast, no dropout (the decoder's causal varlen kernel is
    flash: bf16, no dropout): (relative Δ of the loss and gradients, varlen against dense; the same for dense
    bf16 against dense fp32, the rounding either path carries; decoder attention calls per document)."""
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig.preset("tiny", vocab_size=VOCAB, dropout=0.0,
                                                           attention_dropout=0.0)).to(device).train()
    batch = packed_documents("bart", make_batch("bart", model.config, 8, 160, 160, device),
                             torch.Generator().manual_seed(2))
    calls = []
    attend = attention.Packed.attend
    attention.Packed.attend = lambda *a, **k: calls.append(k.get("causal") or k.get("keys")) or attend(*a, **k)
    try:
        varlen = with_varlen(True, device, lambda: loss_and_grads(model, batch, device, True))
    finally:
        attention.Packed.attend = attend
    dense, fp32 = (with_varlen(False, device, lambda: loss_and_grads(model, batch, device, bf16))
                   for bf16 in (True, False))
    return largest_difference(varlen, dense, True), largest_difference(dense, fp32, True), sum(map(bool, calls))


def varlen_speed(family: str, shapes: dict, device: torch.device, *, warmup: int, steps: int
                 ) -> tuple[float, float, float]:
    """(documents per row, varlen tokens/s, dense tokens/s): our speed model on packed documents, eager, no
    dropout (a BART decoder attends per document only without: flash's causal varlen kernel takes none)."""
    cls, cfg, _, b, t, t_out = shapes[family]
    torch.manual_seed(0)
    model = cls(cfg.replace(dropout=0.0, attention_dropout=0.0)).to(device)
    batch = packed_documents(family, make_batch(family, cfg, b, t, t_out, device), torch.Generator().manual_seed(3))
    sec = [with_varlen(on, device, lambda: timed_steps(model, batch, device, warmup, steps)) for on in (True, False)]
    model.cpu()
    docs = batch["attention_mask"].max(1).values.float().mean().item()
    return docs, b * t / sec[0], b * t / sec[1]


# ---- torchrun, killed and resumed --------------------------------------------------------------

def torchrun_resume(device: torch.device, tmp: Path, steps: int) -> str:
    corpus = write_corpus(tmp / "corpus.txt", stdlib_documents(300_000))
    run = tmp / "torchrun"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "clozeformer",
            "pretrain", "--corpus", str(corpus), "--blank-line-docs", "--model", "bert", "--config", "tiny",
            "--vocab-size", "2000", "--max-len", "64", "--batch-size", "16", "--steps", str(steps), "--save-every", "5",
            "--eval-every", str(steps), "--device", device.type, "--run-dir", str(run), "--cache-dir", str(tmp / "cache"),
            "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp / "torchrun.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 300
        while not (run / "checkpoints" / "step-0000005").is_dir():
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                return f"failed before its first checkpoint: {log.read_text()[-300:]!r}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    stopped = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")]
    with open(tmp / "resume.log", "w") as f:
        rc = subprocess.run(argv + ["--resume"], stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600).returncode
    final = run / "checkpoints" / f"step-{steps:07d}"
    if rc != 0 or not final.is_dir():
        return f"resume failed (exit {rc}): {(tmp / 'resume.log').read_text()[-300:]!r}"
    return f"stopped by SIGTERM at {max(stopped)}, resumed to step-{steps:07d}"


# ---- the table --------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, compile backend 'eager': checks the code")
    ap.add_argument("--families", default="bert,t5,bart", help="step-speed rows (parity always runs all four)")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default 10; dry run 1)")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: error: no CUDA device here; use --dry-run for the CPU check")
    device = torch.device("cpu" if args.dry_run else "cuda")
    shapes, backend = (DRY, "eager") if args.dry_run else (FULL, "inductor")
    steps = args.steps or (1 if args.dry_run else 10)
    warmup = 1 if args.dry_run else 3
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity means fp32
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    print(describe(device))
    peak = peak_flops(device, 512 if args.dry_run else 8192)
    print(f"bf16 matmul peak measured here: {peak / 1e12:.3g} TFLOP/s\n")
    print("| check | ours | transformers | ours / transformers | goal |")
    print("|---|---|---|---|---|")
    failed = False
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for family in PARITY:
            diff, same = parity(family, device, tmp)
            ok = diff <= 1e-4 and same is not False
            failed |= not ok
            gen = "" if same is None else f"; greedy ids {'identical' if same else 'DIFFER'}"
            print(f"| parity {family} (fp32) | max abs Δ logits {diff:.1e}{gen} | | | ≤ 1e-4 {'✓' if ok else '✗'} |",
                  flush=True)
        for family in args.families.split(","):
            rows = speed(family, shapes, device, tmp, peak, warmup=warmup, steps=steps, backend=backend)
            by = {(r["impl"], r["compiled"]): r for r in rows}
            best_hf = max(by["transformers", False]["tokens_s"], by["transformers", True]["tokens_s"])
            for compiled in (False, True):
                o, h = by["ours", compiled], by["transformers", compiled]
                goal = ""
                if compiled and family == "bert":
                    goal = f"≥ 1.5× transformers+compile ({o['tokens_s'] / best_hf:.2f}×), ≥ 45% MFU"
                elif compiled and family == "bart":
                    goal = f"≥ 1.5× transformers+compile ({o['tokens_s'] / best_hf:.2f}×)"
                elif compiled and family == "t5":
                    goal = f"≥ 2.5× nanoT5 A100 ({o['tokens_s'] / NANOT5_A100_TOKENS_S:.2f}×)"
                print(f"| {family} step{' compiled' if compiled else ''} ({o['ms']:.0f} / {h['ms']:.0f} ms) | "
                      f"{o['tokens_s']:,.0f} tok/s, {100 * o['mfu']:.0f}% of peak | "
                      f"{h['tokens_s']:,.0f} tok/s, {100 * h['mfu']:.0f}% of peak | "
                      f"{o['tokens_s'] / h['tokens_s']:.2f}× | {goal} |", flush=True)
        diff = varlen_parity(device)
        failed |= not diff <= 1e-4
        print(f"| varlen attention = dense masked, tiny BERT on packed documents (fp32) | max abs Δ loss and "
              f"gradients {diff:.1e} | | | ≤ 1e-4 {'✓' if diff <= 1e-4 else '✗'} |", flush=True)
        diff, rounding, calls = decoder_varlen_parity(device)
        ok = calls == 2 * BartConfig.preset("tiny").decoder_layers and diff <= 2 * rounding
        failed |= not ok
        print(f"| varlen decoder = dense masked, tiny BART on packed documents (bf16) | relative Δ loss and "
              f"gradients {diff:.1e} ({calls} decoder attentions per document) | bf16's own error against fp32: "
              f"{rounding:.1e} | | ≤ 2× bf16's error {'✓' if ok else '✗'} |", flush=True)
        for family in ("bert", "bart"):
            if family in args.families.split(","):
                docs, fast, dense = varlen_speed(family, shapes, device, warmup=warmup, steps=steps)
                print(f"| {family} step on packed documents ({docs:.1f} per row, no dropout), varlen / dense masked "
                      f"| {fast:,.0f} tok/s | dense: {dense:,.0f} tok/s | {fast / dense:.2f}× | |", flush=True)
        result = torchrun_resume(device, tmp, steps=20)
        failed |= not result.startswith("stopped")
        print(f"| torchrun, 1 process on {device.type} (world size 1: no collective), SIGTERM and --resume | {result} | | | |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
