"""chatumm synthesis: single-turn data -> stateful multi-turn dialogues (stages a, b, c).

Kept import-light on purpose: the CLI, the stages and the LLM engine import what they need.
"""

__version__ = "0.1.0"
