"""The package's rooms import one way only (../shared/ARCHITECTURE.md, with three refinements: `generate` and
`objectives` are pure functions over tensors and models, so they sit below `models`, which decode and compute
their losses with them; `infer` sits below `tasks` and `train`, which generate through it; `families`, the one
declaration of each family, sits on `models` and `interop/hf.py` (the names it points to) and below everything
that asks about a family, `interop`'s saving and loading included), and no room
imports another room's private names."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "clozeformer"
# a room may import the rooms of lower rank and its own modules
RANK = {"config": 0, "io": 0, "tokenizer": 1, "nn": 2, "generate": 3, "objectives": 3, "models": 4, "interop.hf": 4.2,
        "families": 4.5, "interop": 5,
        "data": 6, "infer": 7, "tasks": 8, "train": 9, "view": 10, "demo": 11, "cliargs": 11, "__init__": 12, "cli": 13,
        "__main__": 14}  # __init__: the Python API the CLI is written on


def room(module: str) -> str:
    """interop/hf.py (transformers' names, which each family points to) ranks below families; the rest of
    interop (saving and loading through the registry) above."""
    parts = module.split(".")
    if ".".join(parts[1:3]) in RANK:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "__init__"


def imports():
    """(importing module, its room, imported module, name) for every `from clozeformer… import name`."""
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clozeformer":
                for alias in node.names:
                    target = node.module
                    if SRC.parent.joinpath(*node.module.split("."), alias.name + ".py").is_file() or \
                            node.module == "clozeformer":
                        target = f"{node.module}.{alias.name}"  # a module imported from its package
                    yield module, room(module), target, alias.name


def test_every_room_has_a_rank():
    rooms = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert rooms <= set(RANK), rooms - set(RANK)


def test_imports_run_down_the_layering():
    upward = [(m, t) for m, r, t, _ in imports() if room(t) != r and RANK[room(t)] >= RANK[r]]
    assert not upward, upward


def test_no_private_names_across_rooms():
    private = [(m, t, n) for m, r, t, n in imports() if n.startswith("_") and not n.startswith("__") and room(t) != r]
    assert not private, private
