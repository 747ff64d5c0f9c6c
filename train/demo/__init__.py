"""``python -m train demo``: chat with a trained model in the browser (the ``demo`` extra).

A thin page over ``train.infer.Chat``: the model is loaded once and serves every tab, one
generation at a time; each tab's turns stream in as they are written (``Chat.reply``'s
``on_progress``), and a conversation can be saved as a ``DialogueSample`` in a shard directory.

settings      the settings panel: inference knobs with BAGEL's defaults
conversation  Conversation: one tab's Chat, streaming, undo, ``[image N]`` references
record        a conversation as a DialogueSample of the task its shape makes; saving it
app           the Gradio page (and the page shown when the checkpoint cannot be read)
cli           the command
"""
