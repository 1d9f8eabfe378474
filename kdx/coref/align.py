"""Words ↔ subwords for any fast (Rust-backed) Hugging Face tokenizer.

A part's words are tokenized together (`is_split_into_words`), so a word's subwords are those the
tokenizer gives it in context. A word may get no subword at all (a tokenizer that drops some
characters): it then shares the subwords of the word before it (of the next word at the start),
so every mention still maps to a non-empty subword span.
"""

from dataclasses import dataclass

from kdx.errors import KdxError


@dataclass
class Alignment:
    subwords: list[int]          # token ids of the whole part, no special tokens
    word_of: list[int]           # subword → word index
    first: list[int]             # word → its first subword
    last: list[int]              # word → its last subword

    def subword_span(self, start: int, end: int) -> tuple[int, int]:
        """Word mention (inclusive) → subword span (inclusive)."""
        return self.first[start], self.last[end]

    def word_span(self, start: int, end: int) -> tuple[int, int]:
        """Subword span (inclusive) → the words it touches (inclusive)."""
        return self.word_of[start], self.word_of[end]

    def is_word_start(self, subword: int) -> bool:
        return self.first[self.word_of[subword]] == subword

    def is_word_end(self, subword: int) -> bool:
        return self.last[self.word_of[subword]] == subword


def align(tokenizer, words: list[str]) -> Alignment:
    if not getattr(tokenizer, "is_fast", False):
        raise KdxError(f"coreference needs a fast tokenizer (word ids per subword); {type(tokenizer).__name__} is not",
                       "use a checkpoint with a tokenizer.json (any BERT-family model on the hub has one)")
    if not words:
        return Alignment([], [], [], [])
    encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    ids, word_ids = encoding["input_ids"], encoding.word_ids()
    first, last = [-1] * len(words), [-1] * len(words)
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if first[word] < 0:
            first[word] = position
        last[word] = position
    if not ids:
        raise KdxError(f"the tokenizer gives no subwords for the words {words[:10]}...",
                       "check the tokenizer: it drops every character of this text")
    # Words without subwords borrow their neighbour's (the previous word's, else the next one's).
    for word in range(len(words)):
        if first[word] < 0 and word > 0 and first[word - 1] >= 0:
            first[word], last[word] = first[word - 1], last[word - 1]
    for word in reversed(range(len(words))):
        if first[word] < 0:
            first[word], last[word] = first[word + 1], last[word + 1]
    word_of = [w if w is not None else 0 for w in word_ids]
    return Alignment(list(ids), word_of, first, last)
