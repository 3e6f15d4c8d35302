"""Fuzzing pyllamacy's native surface: GGUF files, kv_overrides, chat templates, GBNF grammars
and JSON schemas. A case fails only when the process running it dies (signal, abort, exit)
or hangs; Python exceptions are the expected answer to bad input. See docs/FUZZING.md."""
