"""What evals/, datasets_build/, training/ and bench/ share, kept out of the server and the
client: answer grading (:mod:`s1_common.grading`), reading question files
(:mod:`s1_common.rows`), the response cache (:mod:`s1_common.cache`) and quantiles
(:mod:`s1_common.stats`). Standard library at import time; heavier libraries (math-verify,
pyarrow, datasets) are imported where they are used.
"""
