"""The vLLM engine side: the budget logits processor and its device edit, engine start
and model facts, the pre-flight memory check, and the s1 reasoning parser. Imports the
budget core, never the API layer."""
