"""clozeformer: BERT, BART, ELECTRA and T5 with their real pretraining objectives."""

from clozeformer.config import VERSION as __version__


def load_model(path, *, allow_pickle: bool = False):
    """A model from a clozeformer- or transformers-written directory."""
    from clozeformer.interop.model_dir import load_model as _load

    return _load(path, allow_pickle=allow_pickle)


def load_tokenizer(path):
    """A tokenizer from a directory with tokenizer.json or vocab.txt (or the file itself)."""
    from clozeformer.tokenizer import Tokenizer

    return Tokenizer.load(path)


def save_model(model, directory, tokenizer=None):
    """Write a model (and tokenizer) as a directory that also loads in `transformers`."""
    from clozeformer.interop.model_dir import save_model as _save

    return _save(model, directory, tokenizer)


def finetune(model, task, train, eval=None, **options):
    """Fine-tune a model directory on a labelled task; see clozeformer.train.finetune.finetune."""
    from clozeformer.train.finetune import finetune as _finetune

    return _finetune(model, task, train, eval, **options)


def evaluate(model, data, **options):
    """Metrics of a fine-tuned model directory on a labelled file."""
    from clozeformer.train.finetune import evaluate as _evaluate

    return _evaluate(model, data, **options)


def predict(model, inputs, **options):
    """Predictions of a fine-tuned model directory, one dict per input."""
    from clozeformer.train.finetune import predict as _predict

    return _predict(model, inputs, **options)


__all__ = ["__version__", "evaluate", "finetune", "load_model", "load_tokenizer", "predict", "save_model"]
