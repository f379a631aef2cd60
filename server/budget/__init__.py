"""The pure budget core: the state machine (machine), the spec, formats, draws, replay
(interventions) and the reasoning splitter. No vLLM, FastAPI or torch: it runs in
microseconds and serves the engine, the API, the client, the evaluation and the
benchmarks alike."""
