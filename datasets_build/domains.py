"""Stage 5, domains: put every question in one Mathematics Subject Classification domain.

Why MSC: the paper's diversity signal. s1 classified with an LLM into MSC domains and then
sampled domains uniformly. s1's 61 top-level MSC 2020 areas (all but 00 and 01) ship
with the package (``msc.json``), each with the second-level topics s1's classifier saw; the
default prompt lists them as s1's did (``### area``, ``* Code: NN``, ``* Description: ...``). The classifier reasons briefly, then ends with
``Domain: NN`` (as s1's classifier reasoned before the code); that last line must name one of
the codes (``11``, ``11 Number theory``, ``MSC 11`` or the exact area name); anything else is retried with a reminder
(:mod:`datasets_build.validated`) and, after ``retries``, recorded as ``unknown``.

A source that already labels its questions (``label_field``, read from the metadata) is
trusted when its label is a valid code, and only the other questions go to the model.
``domain_source`` says which: ``label``, ``llm`` or ``unknown``. As in s1, questions whose
classification failed are dropped (reason ``no_domain``) unless ``drop_unknown`` is off.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from importlib import resources

from datasets_build import prompts
from datasets_build.calls import ModelCaller, fill
from datasets_build.config import Domains
from datasets_build.schema import UNKNOWN_DOMAIN, Row, metadata
from datasets_build.tables import StageStats, Table
from datasets_build.validated import ask_validated

_CODE = re.compile(r"^(?:msc(?:\s*2020)?\s*[:#]?\s*)?(\d{2})(?:\s*[-–:.)]?\s*(.*))?$",
                   re.IGNORECASE)


@cache
def msc_codes() -> dict[str, str]:
    """code -> area name, from the packaged ``msc.json``."""
    data = json.loads(resources.files("datasets_build").joinpath("msc.json").read_text())
    return {c["code"]: c["name"] for c in data["codes"]}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.casefold()).split())


def parse_code(reply: str) -> str | None:
    """The MSC code a reply names, or None when it is not exactly one valid code."""
    lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    text = lines[0].strip().strip("*_`'\"").strip().rstrip(".").strip()
    codes = msc_codes()
    by_name = {_norm(name): code for code, name in codes.items()}
    if _norm(text) in by_name:
        return by_name[_norm(text)]
    m = _CODE.match(text)
    if m is None or m.group(1) not in codes:
        return None
    name = _norm(m.group(2) or "")
    if name and not _norm(codes[m.group(1)]).startswith(name):
        return None  # "11 Geometry": the code and the name disagree
    return m.group(1)


_DOMAIN_LINE = re.compile(r"^(?:final\s+)?(?:domain|msc(?:\s+code)?|code)\s*[:：=-]\s*",
                          re.IGNORECASE)


def parse_domain_reply(reply: str) -> str | None:
    """The code on the reply's last line (``Domain: 11``, or a bare code): the classifier
    reasons first, as s1's did. A one-line reply is read like :func:`parse_code`."""
    lines = [ln.strip().strip("*_`") for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    return parse_code(_DOMAIN_LINE.sub("", lines[-1]).strip())


def codes_text() -> str:
    """The classification rubric: one block per area, as s1's prompt laid them out."""
    data = json.loads(resources.files("datasets_build").joinpath("msc.json").read_text())
    return "\n\n".join(f"### {c['name']}\n* Code: {c['code']}\n* Description: "
                       f"{c['description']}" for c in data["codes"])


def _labelled(row: Row, field: str | None) -> str | None:
    if field is None:
        return None
    value = metadata(row).get(field)
    return parse_code(str(value)) if value not in (None, "") else None


async def _classify(caller: ModelCaller, cfg: Domains, row: Row) -> tuple[str, str, int]:
    """(domain, source, model tries)."""
    label = _labelled(row, cfg.label_field)
    if label is not None:
        return label, "label", 0
    if cfg.gen is None:
        return UNKNOWN_DOMAIN, "unknown", 0
    prompt = fill(cfg.gen.prompt, codes=codes_text(), question=row["question"])
    result = await ask_validated(caller, cfg.gen, prompt, f"domain:{row['id']}",
                                 parse_domain_reply,
                                 cfg.retries, prompts.DOMAIN_REMINDER)
    if result.value is None:
        return UNKNOWN_DOMAIN, "unknown", result.tries
    return result.value, "llm", result.tries


async def run_domains(table: Table, cfg: Domains, caller: ModelCaller
                      ) -> tuple[Table, StageStats, list[Row]]:
    rows = [dict(r) for r in table.rows]
    stats = StageStats("domains", rows_in=len(rows), rows_out=len(rows))
    results = await caller.map(rows, lambda r: _classify(caller, cfg, r), "domains")
    names = msc_codes()
    for row, (domain, source, tries) in zip(rows, results, strict=True):
        row.update(domain=domain, domain_name=names.get(domain, "unknown"),
                   domain_source=source, domain_tries=tries)
    stats.notes["by_source"] = dict(Counter(r["domain_source"] for r in rows))
    stats.notes["domains"] = dict(sorted(Counter(r["domain"] for r in rows).items()))
    stats.calls = caller.stats()
    removed: list[Row] = []
    if cfg.drop_unknown:  # s1 drops the questions it could not classify
        removed = [{"id": r["id"], "source_type": r["source_type"], "reason": "no_domain",
                    "detail": f"classification failed after {r['domain_tries']} tries",
                    "question": r["question"][:300]}
                   for r in rows if r["domain"] == UNKNOWN_DOMAIN]
        rows = [r for r in rows if r["domain"] != UNKNOWN_DOMAIN]
        if removed:
            stats.dropped["no_domain"] = len(removed)
        stats.rows_out = len(rows)
    return Table(rows, table.meta), stats, removed
