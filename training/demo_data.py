"""Synthetic letter-counting reasoning data in the s1K column layout ("How many r in raspberry?").

Why this task: its answer is checkable, chance level is low (counts 0..5), and a step-by-step
trace (spell the word, one letter a line, keep a running count) turns a question a tiny model
cannot answer at a glance into one it can. So thinking length matters and budget forcing
visibly moves accuracy, the s1 story in miniature.

The traces are shaped so that each budget-forcing knob means something to the model:
- careful trace: the letter sought in quotes, then each letter of the word followed by the
  running count: "'r': r1a1s1p1b1e1r2r3y3" for "How many r in raspberry?"; the answer is
  the last count. Cutting it short (thinking_max)
  leaves a partial count, so accuracy rises with the budget. This compact layout is chosen for
  learnability: writing the next letter means "find the letter before the count I just wrote
  in the question, take the one after it", the classic induction-head copy (one previous-token
  lookup shared by both sides). A "<letter> <count>" line per letter (a 3-token lookback)
  stayed near chance after 600 CPU steps in our trials. The quoted header gives the letter
  sought a unique left neighbour ("'"), so "is this letter the one I count?" is again a
  previous-token lookup; without it the model copied the word fine but never incremented.
- glance: on long words (>= LAZY_LEN letters) the teacher usually skips the count and writes
  "At a glance: N". The teacher's N is always right, but a tiny model cannot count a long word
  in one step, so what it learns is to stop early on long words with what is, for it, a
  guess: the questions where it thinks too little, as in the paper's motivation.
- "Wait" always means: "Wait, let me count again." and then a full careful recount whose count
  is the answer. It follows glances, slips (a wrong running count, noticed at once; the only
  wrong numbers in the data) and complete careful counts (a confirming recount). Because Wait is not only a sign
  of a mistake, forcing it after a correct count leads to the same answer, and forcing it after
  a glance leads to a careful count.
- cut traces (a share of the training rows, `cut_share`): what budget forcing shows the model
  at a thinking_max cap. Any of the traces above (a slip is replaced by a careful count) cut
  after a random number of characters (one byte-level token each, so mid-line, mid-step or
  at a line end), then exactly what the server forces at the cap: the newline (the s1
  template's "\n" before the end delimiter; a cut right after a newline drops it, because
  the server forces none then), "<|im_start|>answer", "\\nFinal Answer:", and the best
  answer the latest line supports: inside a count (first count or recount) its running
  count (the letter sought among the letters of the word written so far); inside a glance
  the glance; otherwise the last finished estimate (a glance, or a complete count before
  "Wait"), 0 before anything. Always the latest count, never an earlier glance over a later
  partial recount: the answer after a recount must come from the recount, or a forced Wait
  after a wrong glance (for the model, a guess) would not fix it (a first version that
  answered the glance there lost the whole thinking_min gain). The attempt is
  "Final Answer: N", which the s1 layout renders as the forced tokens followed by " N".
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

WAIT = "Wait, let me count again."
GLANCE = "At a glance: {}"
HEADER = "'{}': "  # names the letter being counted before each careful count
LAZY_LEN = 11  # words this long or longer tempt the teacher to glance instead of count
MIN_LEN, MAX_LEN = 3, 12
TEMPLATE = "How many {c} in {w}?"
FINAL = "Final Answer: {}"  # the attempt of a cut trace: the server forces "\nFinal Answer:"

# Real words for readable questions; made-up letter strings give unlimited fresh ones.
_WORD_TEXT = """raspberry strawberry banana apple orange lemon cherry grape mango papaya melon
peach plum apricot coconut pineapple blueberry kiwi lime avocado tomato potato carrot onion
garlic pepper cabbage lettuce spinach broccoli pumpkin cucumber celery radish turnip
mississippi committee address balloon bookkeeper coffee cookie letter little bottle
butterfly caterpillar elephant giraffe hippopotamus kangaroo crocodile alligator penguin
dolphin octopus squirrel rabbit turtle parrot peacock sparrow eagle falcon pelican
library kitchen bedroom window chimney garden balcony hallway basement cellar corridor
mountain volcano river ocean island desert forest meadow valley canyon glacier lagoon
teacher student doctor farmer painter soldier sailor pilot barber dentist engineer
umbrella necklace scissors hammer ladder pencil eraser notebook calendar envelope
telescope microscope calculator keyboard computer monitor printer speaker headphone
accommodate embarrass occurrence possession recommend tomorrow beginning necessary
success assessment parallel millennium questionnaire referee reassess bubble puzzle
giggle jazz pizza mammal llama sheep goose moose noodle spoon balloonist grasshopper
chocolate vanilla caramel biscuit pancake waffle muffin pretzel popcorn sandwich
reasoning thinking budget answer waiting counting letters number question model
banana bandana cinnamon lollipop marshmallow horseradish peppermint watermelon
sassafras tattoo toffee yellow zigzag pepperoni assassin barrel kitten mitten
"""
WORDS = sorted({w for w in _WORD_TEXT.split() if MIN_LEN <= len(w) <= MAX_LEN})


@dataclass
class Example:
    """One row in the s1K layout; `metadata` holds the fields the evaluation needs."""

    question: str
    solution: str
    cot_type: str
    source_type: str
    metadata: str
    cot: str | None
    thinking_trajectories: list[str]
    attempt: str


def count_steps(word: str, letter: str) -> list[str]:
    """The careful count: "<letter><running count>" for each letter; the trace joins them."""
    steps, n = [], 0
    for ch in word:
        n += ch == letter
        steps.append(f"{ch}{n}")
    return steps


def split_words(seed: int = 0, held_out_share: float = 0.25) -> tuple[list[str], list[str]]:
    """Real words split into (train, held-out) deterministically."""
    rng = random.Random(seed)
    words = list(WORDS)
    rng.shuffle(words)
    k = int(len(words) * held_out_share)
    return sorted(words[k:]), sorted(words[:k])


def _random_word(rng: random.Random) -> tuple[str, str]:
    """A made-up string with a chosen letter planted 0..5 times."""
    length = rng.randint(MIN_LEN, MAX_LEN)
    letter = rng.choice(string.ascii_lowercase)
    n = min(length, rng.choices(range(6), weights=(15, 30, 25, 17, 9, 4))[0])
    others = [c for c in string.ascii_lowercase if c != letter]
    chars = [letter] * n + [rng.choice(others) for _ in range(length - n)]
    rng.shuffle(chars)
    return "".join(chars), letter


def _real_word(rng: random.Random, words: list[str]) -> tuple[str, str]:
    word = rng.choice(words)
    if rng.random() < 0.15:
        letter = rng.choice([c for c in string.ascii_lowercase if c not in word])
    else:
        letter = rng.choice(word)
    return word, letter


def sample_question(rng: random.Random, words: list[str]) -> tuple[str, str, str]:
    """(question, word, letter): half real words, half made-up strings."""
    word, letter = _real_word(rng, words) if rng.random() < 0.5 else _random_word(rng)
    return TEMPLATE.format(c=letter, w=word), word, letter


def make_trace(rng: random.Random, word: str, letter: str,
               careful_only: bool = False) -> tuple[str, int, str]:
    """(thinking, answer, kind) for one question; see the module docstring for the kinds.

    careful_only gives only plain careful counts (a warm-up stage for training).
    """
    truth = word.count(letter)
    steps = count_steps(word, letter)
    header = HEADER.format(letter)
    careful = header + "".join(steps)
    if careful_only:
        return careful, truth, "careful"
    lazy = len(word) >= LAZY_LEN
    if rng.random() < (0.7 if lazy else 0.05):
        glance = GLANCE.format(truth)
        if rng.random() < 0.3:
            return "\n".join([glance, WAIT, careful]), truth, "glance-wait"
        return glance, truth, "glance"
    r = rng.random()
    if r < 0.1:  # a slip in the running count, noticed at once
        i = rng.randrange(len(word))
        n = int(steps[i][1:])
        wrong = n + 1 if n == 0 or rng.random() < 0.5 else n - 1
        slipped = header + "".join(steps[:i]) + f"{word[i]}{wrong}"
        return "\n".join([slipped, WAIT, careful]), truth, "slip-wait"
    if r < 0.3:  # a complete count, then a confirming recount (once, rarely twice)
        times = 2 if rng.random() < 0.2 else 1
        return "\n".join([careful] + [WAIT, careful] * times), truth, "check-wait"
    return careful, truth, "careful"


def cut_trace(rng: random.Random, thinking: str, kind: str, word: str,
              letter: str) -> tuple[str, int]:
    """(thinking cut short, best answer from it) for a thinking_max cap; see the docstring.

    The cut keeps 1 .. len - 1 characters. The returned thinking never ends with a newline:
    the s1 layout adds the one before the end delimiter, which is the newline the server
    forces after a mid-line cut, or the trace's own newline after a cut at a line end.
    """
    truth = word.count(letter)
    if kind == "slip-wait":  # no cut slips: the only wrong counts stay the noticed ones
        thinking, kind = HEADER.format(letter) + "".join(count_steps(word, letter)), "careful"
    k = rng.randint(1, len(thinking) - 1) if len(thinking) > 1 else 1
    part = thinking[:k]
    lines = part.split("\n")
    line, before = lines[-1], lines[:-1]
    estimate = truth if before else 0  # a finished line before this one: a glance or a count
    header = HEADER.format(letter)
    if kind.startswith("glance") and not before:
        estimate = truth  # cut inside "At a glance: N": the glance it would give
    elif line.startswith(header) and len(line) > len(header):
        # inside a count: the letters of the word written so far (each followed by a count)
        estimate = line[len(header):][0::2].count(letter)
    return part.removesuffix("\n"), estimate


def generate(n: int, seed: int, words: list[str], exclude: set[str] | None = None,
             careful_only: bool = False, cut_share: float = 0.0) -> list[Example]:
    """n examples; questions in `exclude` are skipped (to keep evaluation held out).

    cut_share of them (drawn from their own random stream, so the questions do not depend on
    it) are cut traces ending in "Final Answer: N".
    """
    rng = random.Random(seed)
    cut_rng = random.Random(seed + 7_777)
    out: list[Example] = []
    while len(out) < n:
        question, word, letter = sample_question(rng, words)
        if exclude and question in exclude:
            continue
        thinking, answer, kind = make_trace(rng, word, letter, careful_only)
        truth = word.count(letter)
        attempt = f"Answer: {answer}"
        if cut_share and cut_rng.random() < cut_share:
            thinking, answer = cut_trace(cut_rng, thinking, kind, word, letter)
            kind = "cut-" + ("careful" if kind == "slip-wait" else kind)
            attempt = FINAL.format(answer)
        meta = {"word": word, "letter": letter, "count": truth, "trace": kind,
                "lazy": len(word) >= LAZY_LEN}
        out.append(Example(
            question=question,
            solution=str(truth),
            cot_type="counting",
            source_type="s1-serve/letter-count",
            metadata=json.dumps(meta),
            cot=None,
            thinking_trajectories=[thinking],
            attempt=attempt,
        ))
    return out


def build_splits(n_train: int, n_eval: int, seed: int = 0,
                 cut_share: float = 0.0) -> tuple[list[Example], list[Example]]:
    """Training rows and held-out evaluation rows (cut_share: of the training rows).

    Held out: the evaluation uses real words never seen in training, made-up strings from
    another seed, and no question text that also occurs in training.
    """
    train_words, eval_words = split_words(seed)
    train = generate(n_train, seed, train_words, cut_share=cut_share)
    seen = {ex.question for ex in train}
    evaluation = generate(n_eval, seed + 10_000, eval_words, exclude=seen)
    return train, evaluation


def write_jsonl(rows: list[Example], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(asdict(row)) + "\n")
    return path


if __name__ == "__main__":
    tr, ev = build_splits(5, 3)
    for ex in tr + ev:
        print(ex.question, "|", ex.thinking_trajectories[0].replace("\n", " / "), "|", ex.attempt)
