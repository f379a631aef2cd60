"""s1-eval: the s1 paper's test-time-scaling measurements against a running server.

Loads a benchmark from local files (:mod:`evals.benchmarks`), sweeps thinking
budgets (:mod:`evals.settings`, :mod:`evals.runner`) against s1-serve or any
OpenAI-compatible endpoint through :mod:`client`, caches every answer
(:mod:`evals.cache`) so an interrupted run resumes, grades without a judge
(:mod:`s1_common.grading`), and reports accuracy, mean thinking tokens and the
paper's Control / Scaling / Performance (:mod:`evals.metrics`,
:mod:`evals.report`) with a plot (:mod:`evals.plot`). Command line:
``s1-eval`` (:mod:`evals.cli`).
"""
