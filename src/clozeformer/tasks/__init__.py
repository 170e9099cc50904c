"""Fine-tuning tasks: what a task reads, which head it needs, which metric it reports.

spec.py     TaskSpec, the task kinds and the GLUE-style presets
readers.py  labelled TSV/CSV/JSONL, SQuAD JSON and hf: datasets, with file:line errors
task.py     examples -> features -> batches, and outputs -> predictions -> metrics
qa.py       extractive QA windows over long contexts and best-span decoding
metrics.py  scikit-learn / scipy / seqeval / rouge-score / sacreBLEU, and SQuAD EM/F1
"""

from clozeformer.tasks.spec import KINDS, METRICS, PRESETS, TaskError, TaskSpec, task_spec

__all__ = ["KINDS", "METRICS", "PRESETS", "TaskError", "TaskSpec", "task_spec"]
