"""CoNLL-2012 reading and writing, the hub layout, and subword alignment (kdx/coref)."""

from pathlib import Path

import pytest

from kdx.coref.align import align
from kdx.coref.conll import mark_text, parse_conll, read_conll, render_conll, render_part, token_marks
from kdx.coref.hub import parts_from_row
from kdx.errors import KdxError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2012" / "cctv_0000.sample.v4_gold_conll"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason=f"the CoNLL-2012 sample is not at {SAMPLE}")


def line(word_index: int, word: str, coref: str, columns: int = 12, doc: str = "d") -> str:
    middle = ["-"] * (columns - 5)
    return "  ".join([doc, "0", str(word_index), word, *middle, coref]) + "\n"


def document(sentences: list[list[tuple[str, str]]], part: int = 0, doc: str = "d") -> str:
    text = f"#begin document ({doc}); part {part:03d}\n"
    for sentence in sentences:
        text += "".join(line(i, w, c, doc=doc) for i, (w, c) in enumerate(sentence)) + "\n"
    return text + "#end document\n"


@needs_sample
def test_the_shared_file_round_trips_byte_for_byte():
    text = SAMPLE.read_text(encoding="utf-8")
    conll = read_conll(SAMPLE)
    assert render_conll(conll) == text
    # Rewriting every part with its own clusters given explicitly changes nothing either.
    assert render_conll(conll, {p.key: p.clusters for p in conll.parts}) == text


@needs_sample
def test_the_shared_file_reads_into_its_parts_and_clusters():
    parts = read_conll(SAMPLE).parts
    assert [p.key for p in parts] == [f"bc/cctv/00/cctv_0000; part {n}" for n in ("000", "001", "003", "005")]
    assert sum(len(p.words) for p in parts) == 173
    assert sum(len(p.mentions) for p in parts) == 13
    first = parts[0]
    assert len(first.sentences) == 3 and first.words[23:25] == ["Hong", "Kong"]
    # Checked by eye against the file: cluster 23 = "Hong Kong" (sentence 1, words 23-24) and
    # "Hong Kong" (sentence 2, words 14-15 = part words 41-42); 18 = "their" and "these ... images".
    assert first.clusters == {23: [(23, 24), (41, 42)], 18: [(28, 28), (32, 37)]}
    assert parts[1].clusters == {19: [(14, 16)]}          # a singleton cluster (within its part) is kept
    assert first.tokens[0].speaker == "Speaker#1"


def test_nested_overlapping_and_multi_mark_tokens_are_read():
    text = document([[("a", "(1|(2)"), ("b", "(1"), ("c", "1)|(3"), ("d", "1)"), ("e", "3)|(1)")]])
    part = parse_conll(text).parts[0]
    # Same-cluster nesting pairs inside out (a stack per cluster), as the reference scorer reads it.
    assert part.clusters == {1: [(0, 3), (1, 2), (4, 4)], 2: [(0, 0)], 3: [(2, 4)]}
    assert render_conll(parse_conll(text)) == text


def test_changed_clusters_are_written_in_nesting_order_and_read_back():
    part = parse_conll(document([[("a", "-"), ("b", "-"), ("c", "-"), ("d", "-")]])).parts[0]
    clusters = {7: [(0, 3), (0, 1)], 8: [(1, 1)], 9: [(1, 3)]}
    marks = token_marks(clusters, 4)
    assert [mark_text(m) for m in marks] == ["(7|(7", "(9|(8)|7)", "-", "9)|7)"]
    written = render_part(part, clusters)
    assert parse_conll(written).parts[0].clusters == {7: [(0, 1), (0, 3)], 8: [(1, 1)], 9: [(1, 3)]}
    # The coreference column stays right-aligned at the line's original width where it fits.
    lines = [x for x in written.splitlines() if x.startswith("d ")]
    assert len({len(x) for x in lines if not x.endswith("|7)") and "|" not in x}) == 1


@pytest.mark.parametrize("column, message", [("1)", "closes a mention of cluster 1 that is not open"),
                                             ("(1", "never closed"), ("(x)", "is not a coreference column")])
def test_malformed_coreference_columns_name_file_and_line(column, message):
    text = document([[("a", "-"), ("b", column)]])
    with pytest.raises(KdxError, match=message) as err:
        parse_conll(text, "f.conll")
    assert "f.conll:3" in str(err.value)


def test_wrong_column_counts_name_file_and_line():
    text = document([[("a", "-"), ("b", "-")]]).replace(line(1, "b", "-"), "d  0  1  b  -  -\n")
    with pytest.raises(KdxError, match=r"f.conll:3: 6 columns, but the sentence's first line \(2\) has 12"):
        parse_conll(text, "f.conll")
    with pytest.raises(KdxError, match=r"f.conll:2: 3 columns"):
        parse_conll("#begin document (d); part 000\nd 0 a\n#end document\n", "f.conll")


def test_parts_must_be_closed():
    with pytest.raises(KdxError, match="no `#end document`"):
        parse_conll(document([[("a", "-")]]).replace("#end document\n", ""))
    with pytest.raises(KdxError, match=r"x:1: `#end document` without"):
        parse_conll("#end document\n", "x")


@needs_sample
def test_hub_rows_map_to_the_same_parts():
    """A hub row (sentences with part_id and per-sentence inclusive spans) built from the sample
    gives back the sample's parts: words, sentences and clusters."""
    parts = read_conll(SAMPLE).parts
    sentences = []
    for part in parts:
        for sentence in part.sentences:
            offset = sentence[0]
            spans = [[c, s - offset, e - offset] for c, members in part.clusters.items()
                     for s, e in members if offset <= s and e <= sentence[-1]]
            sentences.append({"part_id": part.part, "words": [part.words[i] for i in sentence],
                              "speaker": "Speaker#1", "coref_spans": spans})
    mapped = parts_from_row({"document_id": parts[0].document, "sentences": sentences})
    assert [p.key for p in mapped] == [p.key for p in parts]
    for got, want in zip(mapped, parts):
        assert got.words == want.words and got.sentences == want.sentences and got.clusters == want.clusters
        assert parse_conll(render_part(got)).parts[0].clusters == want.clusters


def test_hub_spans_outside_their_sentence_are_errors():
    row = {"document_id": "d", "sentences": [{"part_id": 0, "words": ["a"], "coref_spans": [[1, 0, 1]]}]}
    with pytest.raises(KdxError, match="outside its 1-word sentence"):
        parts_from_row(row)


def test_subword_alignment_maps_mentions_both_ways(wordpiece_tokenizer):
    words = ["Hong", "Kong", "unaffordable", "media", "."]
    alignment = align(wordpiece_tokenizer, words)
    assert len(alignment.subwords) > len(words)               # some words split into pieces
    for start in range(len(words)):
        for end in range(start, len(words)):
            first, last = alignment.subword_span(start, end)
            assert alignment.is_word_start(first) and alignment.is_word_end(last)
            assert alignment.word_span(first, last) == (start, end)


def test_alignment_needs_a_fast_tokenizer():
    class Slow:
        is_fast = False
    with pytest.raises(KdxError, match="fast tokenizer"):
        align(Slow(), ["a"])


@pytest.fixture
def wordpiece_tokenizer():
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hong", "kong", "un", "##af", "##ford", "##able",
             "media", ".", "m", "##e", "##d", "##i", "##a"]
    backend = BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True)
    return PreTrainedTokenizerFast(tokenizer_object=backend._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")
