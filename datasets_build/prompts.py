"""Default prompts of the model calls (each can be replaced in the config).

Placeholders are filled by plain replacement, so LaTeX braces in a prompt need no escaping:
``{question}`` everywhere, ``{reference}`` and ``{attempt}`` in the judge, ``{codes}`` (the
MSC list, one ``code name`` per line) in the classifier.
"""

TEACHER = "{question}"

BASE_MODEL = "{question}\n\nPut your final answer within \\boxed{}."

JUDGE = """You are checking an answer to a question against the reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to check:
{attempt}

Does the answer to check say the same as the reference answer? Reply with one word: YES or NO."""

JUDGE_REMINDER = "Reply with exactly one word: YES or NO."

DOMAIN = """Classify the question into one domain of the Mathematics Subject Classification \
(MSC 2020). The domains:

{codes}

Question:
{question}

Reply with the two-digit code of the one domain that fits best, and nothing else."""

DOMAIN_REMINDER = ("That is not one of the listed codes. "
                   "Reply with only a two-digit code from the list.")
