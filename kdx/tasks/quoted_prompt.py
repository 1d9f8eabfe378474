"""Prompts of a query with numbered quotes, as token ids that fit a length budget.

The template comes from the task config: `prompt_template` holds `{query}` and `{quotes}` once
each, `quote_template` renders one quote from `{idx}` (its number) and `{text}`, in that order.
Pieces are tokenized separately and joined, so every quote's marker ("[3] ") stays whole: when the
prompt is too long, quote texts are shortened — the longest first, all to one common cap (the
largest cap that fits) — and only when even the markers do not fit are whole quotes dropped from
the end. A quote's number is never cut off from, or left without, its place in the prompt.

The tokenizer's own special tokens wrap the prompt (e.g. `</s>` after a T5 prompt, `[CLS] … [SEP]`
around a WordPiece one).
"""

from dataclasses import dataclass

from kdx.errors import KdxError


@dataclass(frozen=True)
class Templates:
    prompt: str
    quote: str

    def __post_init__(self):
        for name, text, fields in (("prompt_template", self.prompt, ("{query}", "{quotes}")),
                                   ("quote_template", self.quote, ("{idx}", "{text}"))):
            for f in fields:
                if text.count(f) != 1:
                    raise KdxError(f"task.{name} must hold {f} exactly once: {text!r}",
                                   f"write the template with {' and '.join(fields)}")
        if self.quote.index("{idx}") > self.quote.index("{text}"):
            raise KdxError(f"task.quote_template puts the text before the quote number: {self.quote!r}",
                           "write the number first, e.g. '[{idx}] {text}'")


def fit_caps(lengths: list[int], room: int) -> list[int]:
    """Per piece, how many tokens to keep: everything if all fit, otherwise every piece cut to the
    largest common cap c with sum(min(length, c)) <= room."""
    if sum(lengths) <= room:
        return list(lengths)
    low, high = 0, max(lengths)
    while low < high:   # the largest c that fits
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            low = mid
        else:
            high = mid - 1
    return [min(n, low) for n in lengths]


def special_wrap(tokenizer, probe: str = "hello") -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text (found by encoding a
    probe with and without them: tokenizers expose no common method for it)."""
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise KdxError(f"the tokenizer changes the text {probe!r} when it adds its special tokens",
                   "use a tokenizer whose special tokens only wrap the text")


class PromptEncoder:
    """Token ids of prompts for (query, [(quote number, text)]) within `budget` tokens."""

    def __init__(self, tokenizer, templates: Templates, budget: int):
        self.tokenizer, self.templates, self.budget = tokenizer, templates, budget
        self.prefix, self.suffix = special_wrap(tokenizer)
        self.specials = len(self.prefix) + len(self.suffix)
        before_idx, rest = templates.quote.split("{idx}")
        self.between, self.after_text = rest.split("{text}")
        self.before_idx = before_idx

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def with_specials(self, ids: list[int]) -> list[int]:
        return self.prefix + ids + self.suffix

    def __call__(self, query: str, quotes: list[tuple[int, str]]) -> list[int]:
        head, tail = self.templates.prompt.split("{quotes}")
        head_ids = self.encode(head.replace("{query}", query))
        tail_ids = self.encode(tail.replace("{query}", query))
        markers = [self.encode(f"{self.before_idx}{idx}{self.between}") for idx, _ in quotes]
        texts = [self.encode(text) for _, text in quotes]
        ends = [self.encode(self.after_text) for _ in quotes]
        fixed = self.specials + len(head_ids) + len(tail_ids)
        if fixed > self.budget:
            raise KdxError(f"the prompt without any quote takes {fixed} tokens, more than the {self.budget} "
                           "the task leaves for it", "raise task.max_length or lower task.max_answer_tokens")
        kept = len(quotes)
        while kept and fixed + sum(len(m) + len(e) for m, e in zip(markers[:kept], ends[:kept])) > self.budget:
            kept -= 1    # even the markers alone do not fit: drop whole quotes from the end
        room = self.budget - fixed - sum(len(m) + len(e) for m, e in zip(markers[:kept], ends[:kept]))
        caps = fit_caps([len(t) for t in texts[:kept]], room)
        body = []
        for marker, text, end, cap in zip(markers, texts, ends, caps):
            body += marker + text[:cap] + end
        return self.with_specials(head_ids + body + tail_ids)
