"""families.FAMILIES is the one place a family is declared: the CLI offers exactly its names, each
family's tokenizer kind exists, every head it declares saves under an HF architecture and loads back
as itself, and the task kinds a family neither heads nor generates are refused with one line."""

import pytest
import torch

from clozeformer.cli import build_parser
from clozeformer.families import FAMILIES, family_of
from clozeformer.interop.model_dir import HEADS, load_model, save_model
from clozeformer.tasks.spec import KINDS, TaskError
from clozeformer.tokenizer import KINDS as TOKENIZER_KINDS


def test_cli_offers_the_registered_families():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    model = next(a for a in sub.choices["pretrain"]._actions if a.dest == "model")
    assert sorted(model.choices) == sorted(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_declaration(name, tmp_path):
    family = FAMILIES[name]
    assert family.tokenizer_kind in TOKENIZER_KINDS and family.config_cls.model_type == name
    cfg = family.config_cls.preset("tiny", vocab_size=97)
    assert family_of(family.model_cls(cfg)) is family
    for kind in KINDS:
        head = family.head(kind)
        assert (head is not None) + (kind in family.text_to_text or kind == "seq2seq" and family.generates) <= 1
        if head is None:
            continue
        torch.manual_seed(0)
        model = head(cfg, {"regression": 1, "extractive-qa": 2}.get(kind, 3)).eval()
        assert HEADS[head.__name__][0] is head
        save_model(model, tmp_path / kind)
        again = load_model(tmp_path / kind)
        assert type(again) is head and family_of(again) is family


@pytest.mark.parametrize("name, uneven", [("bert", {}), ("roberta", {}), ("electra", {"generator_num_layers": 1}),
                                           ("bart", {"decoder_layers": 1}), ("t5", {"num_decoder_layers": 2})])
def test_parameter_count_is_exact_without_building(name, uneven):
    """pretrain refuses a config whose weights outgrow the machine from this count, taken on the meta device."""
    from clozeformer.train.pretrain import parameter_count

    family = FAMILIES[name]
    depth = "encoder_layers" if name == "bart" else "num_layers"
    for cfg in (family.config_cls.preset("tiny", vocab_size=97),
                family.config_cls.preset("tiny", vocab_size=97, **{depth: 3}, **uneven)):
        assert parameter_count(family, cfg) == sum(p.numel() for p in family.model_cls(cfg).parameters())
    deep = family.config_cls.preset("tiny", vocab_size=97, **{depth: 100_000})
    assert parameter_count(family, deep) > 100_000 * 4 * 128 ** 2  # a layer's four attention matrices at least


def test_a_kind_without_head_or_generation_is_refused(tmp_path):
    from clozeformer.train.finetune import _head_model
    from clozeformer.tasks.spec import task_spec

    t5 = FAMILIES["t5"]
    model = t5.model_cls(t5.config_cls.preset("tiny", vocab_size=97))
    with pytest.raises(TaskError, match="t5 has no token-classification head .text to text: use task seq2seq."):
        _head_model(model, task_spec("token-classification"), seed=0)
    assert _head_model(model, task_spec("classification", labels=["a", "b"]), seed=0) is model  # text to text


# Where the code names a family outside its own two files and interop/hf.py's name table, and why.
NAMED_ELSEWHERE = {
    ("cli.py", "bert"), ("demo.py", "bert"), ("train/pretrain.py", "bert"),  # the default family
    ("interop/model_dir.py", "electra"),  # a saved ELECTRA directory holds a generator/ beside it
    ("interop/model_dir.py", "bert"),  # transformers builds BERT's token/QA heads without the pooler
    ("view.py", "bert"), ("view.py", "bart"), ("view.py", "t5"),  # each objective shown on its family's tokenizer
}


def test_a_family_is_named_in_its_own_files_only():
    """Issue 21's proof: adding a family (RoBERTa) is its module in families/, its model file (config class
    and models) and its name table in interop/hf.py. No other code spells a family's name as a string."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "clozeformer"
    found = set()
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for name in FAMILIES:
                    own = (f"families/{name}.py", f"models/{name}.py", "interop/hf.py")
                    if (node.value == name or node.value.startswith(name + ".")) and rel not in own:
                        found.add((rel, name))
    assert found == NAMED_ELSEWHERE
