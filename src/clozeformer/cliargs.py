"""The command line's argument handling in the house format: typed, ranged numbers that name the
value and what is allowed, `--help` that names every default, and errors as one line
`clozeformer: error: …` with exit status 1 (argparse's own exit 2 and usage block otherwise)."""

from __future__ import annotations

import argparse
import math
import sys

from clozeformer.config import MAX_VOCAB, MIN_MAX_LEN

# An error message longer than this is cut in the middle (it may quote a whole input text).
_MAX_MESSAGE = 600


def one_line(message: str) -> str:
    line = " ".join(str(message).split())
    if len(line) > _MAX_MESSAGE:
        half = _MAX_MESSAGE // 2
        line = f"{line[:half]} … ({len(line) - 2 * half:,} characters) … {line[-half:]}"
    return line


def _unset(default) -> bool:
    """A default --help does not name: none, a flag's False, or suppressed (by identity: 0 == False)."""
    return default is None or default is False or default is argparse.SUPPRESS


class Help(argparse.HelpFormatter):
    """--help names every default: the value, unless the help text already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or _unset(action.default) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Once(argparse._StoreAction):
    """An option that takes one value: given twice, it is refused (argparse would keep the last silently)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given", set())
        if self.dest in given:
            parser.error(f"{option_string} is given twice; give it once")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


# string arguments an empty value is meaningful for (no prefix) or that name the empty text themselves
_MAY_BE_EMPTY = {"prefix", "pair_prefix", "text", "second"}


def _nonempty(value: str) -> str:
    """A path or name: "" (an unset shell variable) would be the current directory, or nothing."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} names nothing; give a path or name")
    return value


class Parser(argparse.ArgumentParser):
    """argparse in the house format: a bad option is one line, `clozeformer: error: …`, exit status 1;
    --help names every default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", Help)
        kwargs.setdefault("allow_abbrev", False)  # `--dev x` must not be read as `--device x`
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        if not kwargs.get("help") and not _unset(kwargs.get("default")) and args[0].startswith("-"):
            kwargs["help"] = "(default: %(default)s)"  # argparse prints nothing for an option without help
        dest = kwargs.get("dest") or args[0].lstrip("-").replace("-", "_")
        if "action" not in kwargs and "type" not in kwargs and dest not in _MAY_BE_EMPTY:
            kwargs["type"] = _nonempty
        if args[0].startswith("-") and "action" not in kwargs:  # argparse keeps the last of a repeated option
            kwargs["action"] = "extend" if kwargs.get("nargs") in ("+", "*") else _Once
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.removeprefix("clozeformer").strip()
        print(f"clozeformer: error: {command + ': ' if command else ''}{one_line(message)}", file=sys.stderr)
        self.exit(1)


class FamilyNames:
    """`--model`'s choices: the families' registry, read when argparse first asks (it imports torch, which
    the commands that take no --model do without)."""

    def __iter__(self):
        from clozeformer.families import FAMILIES

        return iter(FAMILIES)

    def __contains__(self, name: object) -> bool:
        return name in list(self)


def number(kind: type, low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False):
    """An argparse `type` that reads an int or a float and refuses it outside [low, high] (ends
    open where asked) or not finite (nan, inf), naming the value and the allowed range."""
    ends = (f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}" if low is not None and high is not None
            else f"{'>' if open_low else '≥'} {low}" if low is not None else f"{'<' if open_high else '≤'} {high}")
    allowed = f"{'an integer' if kind is int else 'a number'} {'in ' if low is not None and high is not None else ''}{ends}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        fits = math.isfinite(value) and (low is None or (value > low if open_low else value >= low)) and \
            (high is None or (value < high if open_high else value <= high))
        if not fits:
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {allowed}")
        return value

    return parse


COUNT = number(int, 1)  # batch sizes, steps, lengths, beams…
VOCAB = number(int, 1, MAX_VOCAB)  # sizes of a tokenizer to train
NONNEGATIVE = number(int, 0)
SEED = number(int, 0, 2 ** 63 - 1)  # torch's generators take a signed 64-bit seed
POSITIVE = number(float, 0, open_low=True)  # learning rates, minutes, temperatures
RATE = number(float, 0, 1, open_low=True, open_high=True)  # shares of tokens: masking, noise
SHARE = number(float, 0, 1, open_high=True)  # warmup shares, Adam betas
PRECISIONS = ["auto", "fp32", "bf16"]
PRECISION_HELP = ("auto (default): bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX512-BF16 or "
                  "AMX), else fp32; bf16 elsewhere is emulated and ~100x slower")
MAX_LEN = number(int, MIN_MAX_LEN)

LABEL_SMOOTHING_HELP = "label smoothing of the written text's training loss (T5, BART); 0.1 is the usual value"
RELATIVE_LR_HELP = "scale each weight matrix's lr by its initial RMS over the median matrix's, as Adafactor does"
COMPILE_HELP = ("torch.compile the training step (model and loss, forward and backward); the first steps "
                "pay for compiling. Evaluation and saved models are the same as without it")
