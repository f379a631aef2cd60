"""Default prompts of the model calls (each can be replaced in the config).

Placeholders are filled by plain replacement, so LaTeX braces in a prompt need no escaping:
``{question}`` everywhere, ``{reference}`` and ``{attempt}`` in the judge, ``{codes}`` (the
MSC list, one ``code name`` per line) in the classifier.
"""

TEACHER = "{question}"

BASE_MODEL = "{question}"  # s1's base-model attempts: the question alone

JUDGE = """You grade a student's attempt at a problem against its reference solution.

# Problem
{question}

## Attempt
{attempt}

## Reference solution
{reference}

If the reference solution ends in a number, an expression or a choice, the attempt is correct \
only if its final answer is the same. If the problem asks for a proof or a derivation, judge \
whether the attempt's reasoning is correct and complete, using the reference as a guide.
Explain briefly, then end your reply with a line holding only "Yes" or "No"."""

# the earlier one-word judge (reference = the short answer); set it as judge.prompt to use it
JUDGE_SHORT = """You are checking an answer to a question against the reference answer.
Question:
{question}
Reference answer:
{reference}
Answer to check:
{attempt}
Does the answer to check say the same as the reference answer? Reply with one word: YES or NO."""
JUDGE_REMINDER = "End your reply with a line holding only Yes or No."

DOMAIN = """Classify the question into one domain of the Mathematics Subject Classification \
(MSC 2020). The classification rubrics, one block per domain with its code and the topics it covers:
{codes}

Question:
{question}

First reason in one or two sentences about which domain fits best. Then end your reply with \
a line of the form "Domain: <two-digit code>"."""
DOMAIN_REMINDER = ("That did not end with one of the listed codes. End your reply with a "
                   "line \"Domain: <two-digit code>\" using a code from the list.")
