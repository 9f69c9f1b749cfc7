"""Base models: resolve a reference (starter, directory, GGUF, hub id), load it safely, and
render conversations with ONE chat-rendering function shared by training, eval and serving."""
