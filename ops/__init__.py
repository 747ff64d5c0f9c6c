"""The ten atomic LLM operations (paper section 3.2) as data, and the runner that calls them.

``OPS`` maps each operation name to its ``OpSpec`` (template, inputs, output, parser,
validators); ``run_op`` renders, calls a backend or the engine, parses, validates and retries;
``TemplateBackend`` answers every operation offline without a model.
"""

from ops.parse import ParseRejection
from ops.registry import OPS, OpSpec
from ops.run import OpResult, run_op
from ops.template_backend import TemplateBackend

__all__ = ["OPS", "OpResult", "OpSpec", "ParseRejection", "TemplateBackend", "run_op"]
