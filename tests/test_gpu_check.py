"""benchmarks/gpu_check.py cannot rot: its dry run (CPU, tiny shapes, compile backend 'eager')
goes through every row the GPU run prints — parity against transformers, the step timings of
ours and transformers eager and compiled, varlen attention (encoders, BART's decoder) against the
dense mask, torchrun killed and resumed."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_every_row(transformers):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[:6]] == ["| check"] + [f"| parity {f} (fp32)" for f in
                                                                    ("bert", "roberta", "electra", "bart", "t5")]
    assert all("✓" in r for r in rows[1:6]) and sum("greedy ids identical" in r for r in rows) == 2
    for family in ("bert", "t5", "bart"):
        assert sum(r.startswith((f"| {family} step (", f"| {family} step compiled")) and "tok/s" in r for r in rows) == 2
    assert "✓" in next(r for r in rows if r.startswith("| varlen attention = dense masked"))
    assert "✓" in next(r for r in rows if r.startswith("| varlen decoder = dense masked"))
    for family in ("bert", "bart"):
        assert any(r.startswith(f"| {family} step on packed documents") and "tok/s" in r for r in rows)
    assert "resumed to step-0000020" in rows[-1] and "stopped by SIGTERM" in rows[-1]
    assert "capability" in out.stdout and "TFLOP/s" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_says_so():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().endswith("no CUDA device here; use --dry-run for the CPU check")
