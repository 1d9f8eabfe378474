"""HAGRID records: reading and validating the JSONL schema, and choosing the gold answer.

One JSON object per line:

    {"query_id", "query", "quotes": [{"idx", "docid", "text"}],
     "answers": [{"answer", "answer_type", "informative", "attributable" (may be null),
                  "sentences": [{"text", "index", "answer_type", "informative", "attributable"}]}]}

A file is read whole and checked before anything uses it: a line that is not JSON, a query
without quotes, an answer that is empty or cites a quote id the query does not have, is an error
naming the file, the line and the field. Fields kdx does not read (answer_type, sentences) are
kept out of the records.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from kdx.errors import KdxError
from kdx.tasks.citations import cited_ids

# Gold answer policies: which answers of a query are training targets.
#   attributable_informative  the first answer both attributable and informative, else the first
#                             attributable, else the first informative, else the first (HAGRID's choice)
#   first                     the first answer
#   all                       every answer (one training example each)
GOLD_POLICIES = ("attributable_informative", "first", "all")
SCHEMA_HINT = ('each line is {"query_id", "query", "quotes": [{"idx", "docid", "text"}], '
               '"answers": [{"answer", "informative", "attributable", ...}]}')


@dataclass(frozen=True)
class Quote:
    idx: int
    docid: str | None
    text: str


@dataclass(frozen=True)
class Answer:
    text: str
    informative: bool
    attributable: bool | None


@dataclass(frozen=True)
class Query:
    query_id: str
    query: str
    quotes: tuple[Quote, ...]
    answers: tuple[Answer, ...]

    @property
    def quote_texts(self) -> dict[int, str]:
        return {q.idx: q.text for q in self.quotes}


def gold_answers(query: Query, policy: str) -> list[Answer]:
    """The training targets of `query` under `policy` (GOLD_POLICIES)."""
    if policy not in GOLD_POLICIES:
        raise KdxError(f"task.gold_answer={policy!r} is unknown", f"use one of {list(GOLD_POLICIES)}")
    answers = list(query.answers)
    if policy == "all":
        return answers
    if policy == "attributable_informative":
        for wanted in (lambda a: a.attributable and a.informative, lambda a: a.attributable,
                       lambda a: a.informative):
            for answer in answers:
                if wanted(answer):
                    return [answer]
    return answers[:1]


class RowError(KdxError):
    def __init__(self, where: str, field: str, problem: str, fix: str = SCHEMA_HINT):
        super().__init__(f"{where}: field {field!r}: {problem}", fix)


def flag(row: dict, key: str, where: str, field: str, nullable: bool) -> bool | None:
    value = row.get(key)
    if value is None:
        return None if nullable else False
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise RowError(where, field, f"must be true/false (or 0/1{', null' if nullable else ''}), got {value!r}")


def text_field(row: dict, key: str, where: str, field: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RowError(where, field, "is missing or empty" if value in (None, "") or isinstance(value, str)
                       else f"must be a string, got {type(value).__name__}")
    return value.strip()


def parse_quotes(row: dict, where: str) -> tuple[Quote, ...]:
    quotes = row.get("quotes")
    if not isinstance(quotes, list) or not quotes:
        raise RowError(where, "quotes", "is missing or empty: every query needs the quotes its answers cite")
    parsed, seen = [], set()
    for k, quote in enumerate(quotes):
        field = f"quotes[{k}]"
        if not isinstance(quote, dict):
            raise RowError(where, field, f"must be an object, got {type(quote).__name__}")
        idx = quote.get("idx")
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise RowError(where, f"{field}.idx", f"must be an integer quote number, got {idx!r}")
        if idx in seen:
            raise RowError(where, f"{field}.idx", f"quote number {idx} appears twice")
        seen.add(idx)
        docid = quote.get("docid")
        parsed.append(Quote(idx, None if docid is None else str(docid), text_field(quote, "text", where, f"{field}.text")))
    return tuple(parsed)


def parse_answers(row: dict, quote_ids: set[int], where: str) -> tuple[Answer, ...]:
    answers = row.get("answers")
    if not isinstance(answers, list) or not answers:
        raise RowError(where, "answers", "is missing or empty: every query needs at least one answer")
    parsed = []
    for k, answer in enumerate(answers):
        field = f"answers[{k}]"
        if not isinstance(answer, dict):
            raise RowError(where, field, f"must be an object, got {type(answer).__name__}")
        text = text_field(answer, "answer", where, f"{field}.answer")
        unknown = sorted(cited_ids(text) - quote_ids)
        if unknown:
            raise RowError(where, f"{field}.answer", f"cites quote {unknown} but the query's quotes are "
                           f"{sorted(quote_ids)}", "fix the citation or add the quote it refers to")
        parsed.append(Answer(text, flag(answer, "informative", where, f"{field}.informative", nullable=False),
                             flag(answer, "attributable", where, f"{field}.attributable", nullable=True)))
    return tuple(parsed)


def parse_query(row, where: str) -> Query:
    if not isinstance(row, dict):
        raise KdxError(f"{where}: a line must hold one JSON object, got {type(row).__name__}", SCHEMA_HINT)
    query_id = row.get("query_id")
    if query_id is None or str(query_id).strip() == "":
        raise RowError(where, "query_id", "is missing or empty")
    quotes = parse_quotes(row, where)
    return Query(str(query_id), text_field(row, "query", where, "query"), quotes,
                 parse_answers(row, {q.idx for q in quotes}, where))


def read_queries(path: Path) -> list[Query]:
    """Every query of a HAGRID JSONL file, validated (errors name file, line and field)."""
    if not path.is_file():
        raise KdxError(f"HAGRID file {path} does not exist",
                       "task.data_dir must hold train.jsonl and dev.jsonl in the HAGRID schema")
    queries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise KdxError(f"{where}: not valid JSON ({err.msg}, column {err.colno})", SCHEMA_HINT) from None
            queries.append(parse_query(row, where))
    if not queries:
        raise KdxError(f"HAGRID file {path} holds no queries", SCHEMA_HINT)
    return queries
