"""Measuring context tracking: teacher-forced probes of a checkpoint's final answers.

config    EvalConfig: the ``eval`` section of the training config and the CLI's options
variants  the histories a final turn is scored under: true, dependencies replaced, none
dataset   the evaluation set: the held-out dialogues chosen per task, with their variants
probes    documents -> packed batches -> per-document CE, MSE and intent decisions
report    per-dialogue records, per-group means with bootstrap intervals
render    report.json, report.md (and report.png through ``plot``)
run       Evaluator: sharded over ranks, reduced on rank 0, with throughput
hook      TrainingEval: ``eval.every`` during training
cli       ``python -m train eval``

A generation report (sampling the final turn with the inference code and showing it beside the
reference) belongs beside these as its own module: it can reuse ``dataset`` (the same held-out
dialogues and variants) and ``render``'s output directory, and needs nothing from ``probes``.
"""
