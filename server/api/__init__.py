"""The layer over vLLM's OpenAI server: command line, app, request dependency and
engine-call hook, budget objects, admission, metrics and errors."""
