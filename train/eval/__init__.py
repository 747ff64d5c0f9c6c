"""Measuring context tracking: teacher-forced probes of a checkpoint's final answers, and the
generation report (its final answers generated, beside the references).

config    EvalConfig: the ``eval`` section of the training config and the CLI's options
variants  the histories a final turn is scored under: true, dependencies replaced, none
dataset   the evaluation set: the held-out dialogues chosen per task, with their variants
probes    documents -> packed batches -> per-document CE, MSE and intent decisions
report    per-dialogue records, per-group means with bootstrap intervals
render    report.json, report.md (and report.png through ``plot``)
run       Evaluator: sharded over ranks, reduced on rank 0, with throughput
generation  GenerationReport: the final turns generated (``train.infer``) beside the references
page      the generation report's HTML page (jinja2, autoescaped) from its JSONL rows
hook      TrainingEval: ``eval.every`` during training (probes, and the generation report)
cli       ``python -m train eval`` (``--generate N`` for the generation report)
"""
