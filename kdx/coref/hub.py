"""The hub dataset `ontonotes/conll2012_ontonotesv5` (config `english_v4`) as kdx parts.

A hub row is one document: `document_id` and `sentences`, each sentence with its `part_id`,
`words`, `speaker` and `coref_spans` — `[cluster_id, start, end]` with word indices inside the
sentence and an inclusive end. kdx's unit is the (document, part) pair of the CoNLL files, so the
sentences of a row are grouped by part_id, their words numbered from the start of the part, and
each span shifted by its sentence's offset. The parts get CoNLL token lines (document, part,
word index, word, five `-` columns, speaker, `*`, coreference) so they can be written and scored
like the local files.
"""

from kdx.coref.conll import Part, Token
from kdx.errors import KdxError

EMPTY_COLUMNS = 5      # POS, parse bit, predicate lemma, frameset, word sense: not kept from the hub


def parts_from_row(row: dict) -> list[Part]:
    document = row.get("document_id")
    if not isinstance(document, str) or not isinstance(row.get("sentences"), list):
        raise KdxError(f"hub row {str(row)[:80]!r} has no document_id/sentences",
                       "use the english_v4 config of ontonotes/conll2012_ontonotesv5")
    by_part: dict[int, list[dict]] = {}
    for sentence in row["sentences"]:
        by_part.setdefault(int(sentence["part_id"]), []).append(sentence)
    return [part_from_sentences(document, number, sentences) for number, sentences in sorted(by_part.items())]


def part_from_sentences(document: str, number: int, sentences: list[dict]) -> Part:
    part = Part(document, number, f"#begin document ({document}); part {number:03d}\n",
                footer="#end document\n", path=f"hub:{document}")
    offset = 0
    for sentence in sentences:
        words = list(sentence["words"])
        for index, word in enumerate(words):
            columns = [document, str(number), str(index), word, *["-"] * EMPTY_COLUMNS,
                       sentence.get("speaker") or "-", "*", "-"]
            part.body.append(Token(columns, "   ".join(columns), "\n", 0))
        part.body.append("\n")
        for cluster, start, end in sentence.get("coref_spans") or []:
            if not 0 <= start <= end < len(words):
                raise KdxError(f"hub document {document} part {number}: span {[cluster, start, end]} is outside "
                               f"its {len(words)}-word sentence", "check the dataset version (english_v4)")
            part.clusters.setdefault(int(cluster), []).append((offset + start, offset + end))
        part.sentences.append(list(range(offset, offset + len(words))))
        offset += len(words)
    part.clusters = {c: sorted(set(members)) for c, members in part.clusters.items()}
    return part


def load_hub_parts(hub_id: str, config: str, split: str, max_documents: int | None = None) -> list[Part]:
    """The hub split's parts (hub split names: train, validation, test)."""
    from datasets import load_dataset

    try:
        rows = load_dataset(hub_id, config, split=split)
    except (OSError, ValueError) as err:
        raise KdxError(f"cannot load {hub_id!r} ({config}, {split}) from the hub ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:200]})",
                       "run online once to cache it, or use task.data_dir=DIR with *_gold_conll files") from None
    parts = []
    for index, row in enumerate(rows):
        if max_documents is not None and index >= max_documents:
            break
        parts += parts_from_row(row)
    return parts
