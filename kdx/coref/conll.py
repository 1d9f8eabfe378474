"""CoNLL-2012 `*_gold_conll` files: reading, writing, and the document/part units kdx scores.

A file holds documents split into parts, each between `#begin document (NAME); part NNN` and
`#end document`. Token lines have whitespace-separated columns; the first four are document id,
part number, word index and word, column 10 (when present) is the speaker, and the last one is the
coreference column: `(k` opens a mention of cluster k on this token, `k)` closes the most recent
open mention of k, `(k)` is a one-token mention, `|` separates several marks, `-` means none.
Sentences are separated by blank lines. The unit of scoring is the (document, part) pair.

Mentions are `(start, end)` word indices within their part, both inclusive. Nested and
overlapping mentions (also of one cluster) are read with one stack per cluster id, as the
reference scorer does; a cluster with one mention is a singleton and is kept.

Round trip: every line that is not a token line (header, footer, blank lines, comments, text
between documents) is kept as read, and so is each token line up to its coreference column. The
writer regenerates the coreference column from the part's clusters: a token whose marks are
unchanged keeps its original text (mark order included), a changed one gets the canonical order
(opens, outermost first; one-token mentions; closes, innermost first), right-aligned to the
line's original width. Reading and writing a file unchanged reproduces it byte for byte.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from kdx.errors import KdxError

BEGIN = re.compile(r"^#begin document \((?P<name>.*)\);\s*part\s+(?P<part>\d+)\s*$")
END = re.compile(r"^#end document\s*$")
MARK = re.compile(r"^(?:\((?P<single>\d+)\)|\((?P<open>\d+)|(?P<close>\d+)\))$")
MIN_COLUMNS = 5          # document, part, word index, word, ..., coreference
SPEAKER_COLUMN = 9       # 0-based: column 10 of a full CoNLL-2012 line
NO_MARK = "-"

Mention = tuple[int, int]   # (first word, last word) within the part, inclusive


@dataclass
class Token:
    columns: list[str]
    line: str          # the line as read, without its line ending
    ending: str        # "\n", "\r\n" or "" (last line of a file without a final newline)
    number: int        # 1-based line number in the file

    @property
    def word(self) -> str:
        return self.columns[3]

    @property
    def speaker(self) -> str:
        return self.columns[SPEAKER_COLUMN] if len(self.columns) > SPEAKER_COLUMN + 1 else "-"


@dataclass
class Part:
    """One (document, part) unit: its token lines, sentences and coreference clusters."""

    document: str
    part: int
    header: str                                        # raw header line with its ending
    footer: str = ""                                   # raw `#end document` line with its ending
    body: list = field(default_factory=list)           # Token or raw str (blank line, comment), in order
    sentences: list[list[int]] = field(default_factory=list)   # word indices (in the part) per sentence
    clusters: dict[int, list[Mention]] = field(default_factory=dict)
    path: str = "<memory>"

    @property
    def key(self) -> str:
        """The unit's name as the reference scorer matches it: `NAME; part NNN`."""
        return f"{self.document}; part {self.part:03d}"

    @property
    def tokens(self) -> list[Token]:
        return [item for item in self.body if isinstance(item, Token)]

    @property
    def words(self) -> list[str]:
        return [token.word for token in self.tokens]

    @property
    def mentions(self) -> list[Mention]:
        return sorted({m for members in self.clusters.values() for m in members})

    def cluster_list(self) -> list[list[Mention]]:
        """The clusters as lists of mentions (cluster id order), what the scorer reads."""
        return [sorted(members) for _, members in sorted(self.clusters.items()) if members]


@dataclass
class ConllFile:
    """A whole file: parts and the raw lines between them, in order."""

    path: str
    items: list = field(default_factory=list)          # Part or raw str

    @property
    def parts(self) -> list[Part]:
        return [item for item in self.items if isinstance(item, Part)]


# ---- reading ------------------------------------------------------------------------------------
def read_conll(path: str | Path) -> ConllFile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise KdxError(f"cannot read CoNLL file {path} ({err.strerror})", "check the path") from None
    return parse_conll(text, str(path))


def split_lines(text: str) -> list[tuple[str, str]]:
    """(content, ending) per line, keeping each line's own ending."""
    lines = []
    for raw in text.splitlines(keepends=True):
        content = raw.rstrip("\r\n")
        lines.append((content, raw[len(content):]))
    return lines


def parse_conll(text: str, path: str = "<memory>") -> ConllFile:
    conll = ConllFile(path)
    part: Part | None = None
    for number, (content, ending) in enumerate(split_lines(text), start=1):
        begin = BEGIN.match(content)
        if begin:
            if part is not None:
                raise KdxError(f"{path}:{number}: `#begin document` inside {part.key} (no `#end document` before it)",
                               "close every part with a `#end document` line")
            part = Part(begin["name"], int(begin["part"]), content + ending, path=path)
            continue
        if END.match(content):
            if part is None:
                raise KdxError(f"{path}:{number}: `#end document` without a `#begin document`",
                               "open every part with `#begin document (NAME); part NNN`")
            part.footer = content + ending
            finish_part(part)
            conll.items.append(part)
            part = None
            continue
        if part is None:
            conll.items.append(content + ending)   # text between documents, kept as is
        elif not content.strip() or content.lstrip().startswith("#"):
            part.body.append(content + ending)
        else:
            part.body.append(token_line(part, content, ending, number, path))
    if part is not None:
        raise KdxError(f"{path}: {part.key} has no `#end document` line", "end every part with `#end document`")
    return conll


def token_line(part: Part, content: str, ending: str, number: int, path: str) -> Token:
    columns = content.split()
    if len(columns) < MIN_COLUMNS:
        raise KdxError(f"{path}:{number}: {len(columns)} columns, a CoNLL token line needs at least {MIN_COLUMNS} "
                       f"(document, part, word index, word, ..., coreference)", "check the line's columns")
    return Token(columns, content, ending, number)


def finish_part(part: Part) -> None:
    """Splits the part into sentences, checks column counts, and reads the clusters."""
    sentence: list[Token] = []
    word = 0
    for item in part.body + [""]:
        if isinstance(item, Token):
            if sentence and len(item.columns) != len(sentence[0].columns):
                raise KdxError(f"{part.path}:{item.number}: {len(item.columns)} columns, but the sentence's first "
                               f"line ({sentence[0].number}) has {len(sentence[0].columns)}",
                               "every token line of a sentence needs the same columns")
            sentence.append(item)
        elif sentence:
            part.sentences.append(list(range(word, word + len(sentence))))
            word += len(sentence)
            sentence = []
    part.clusters = read_clusters(part.tokens, part.path)


def read_clusters(tokens: list[Token], path: str) -> dict[int, list[Mention]]:
    clusters: dict[int, list[Mention]] = {}
    open_mentions: dict[int, list[tuple[int, int]]] = {}   # cluster → stack of (start word, line)
    for index, token in enumerate(tokens):
        for cluster, kind in marks(token.columns[-1], path, token.number):
            if kind == "single":
                clusters.setdefault(cluster, []).append((index, index))
            elif kind == "open":
                open_mentions.setdefault(cluster, []).append((index, token.number))
            else:
                stack = open_mentions.get(cluster)
                if not stack:
                    raise KdxError(f"{path}:{token.number}: `{cluster})` closes a mention of cluster {cluster} "
                                   "that is not open", "balance the brackets of the coreference column")
                start, _ = stack.pop()
                clusters.setdefault(cluster, []).append((start, index))
    for cluster, stack in open_mentions.items():
        if stack:
            raise KdxError(f"{path}:{stack[-1][1]}: `({cluster}` opens a mention that is never closed in its part",
                           "balance the brackets of the coreference column")
    return {cluster: sorted(dict.fromkeys(members)) for cluster, members in clusters.items()}


def marks(column: str, path: str, number: int) -> list[tuple[int, str]]:
    """The (cluster, single|open|close) marks of one coreference column, in written order."""
    if column == NO_MARK:
        return []
    found = []
    for piece in column.split("|"):
        match = MARK.match(piece)
        if not match:
            raise KdxError(f"{path}:{number}: `{column}` is not a coreference column",
                           "write `-`, or marks `(k`, `k)`, `(k)` joined by `|`")
        kind = next(name for name in ("single", "open", "close") if match[name] is not None)
        found.append((int(match[kind]), kind))
    return found


# ---- writing ------------------------------------------------------------------------------------
def token_marks(clusters: dict[int, list[Mention]], length: int) -> list[list[tuple[int, str]]]:
    """Per word, its marks in canonical order: opens (longest first), one-token mentions, closes
    (shortest first), so the brackets nest."""
    opens = [[] for _ in range(length)]
    singles = [[] for _ in range(length)]
    closes = [[] for _ in range(length)]
    for cluster, members in clusters.items():
        for start, end in members:
            if not 0 <= start <= end < length:
                raise KdxError(f"mention {(start, end)} of cluster {cluster} is outside the part's {length} words",
                               "mentions are (first, last) word indices within the part")
            if start == end:
                singles[start].append((cluster, "single"))
            else:
                opens[start].append((-end, cluster))
                closes[end].append((-start, cluster))
    result = []
    for i in range(length):
        result.append([(c, "open") for _, c in sorted(opens[i])] + sorted(singles[i])
                      + [(c, "close") for _, c in sorted(closes[i])])
    return result


def mark_text(token_marks_: list[tuple[int, str]]) -> str:
    if not token_marks_:
        return NO_MARK
    forms = {"single": "({})", "open": "({}", "close": "{})"}
    return "|".join(forms[kind].format(cluster) for cluster, kind in token_marks_)


def with_last_column(token: Token, text: str) -> str:
    """The token's line with its last column replaced, right-aligned to the original width."""
    if text == token.columns[-1]:
        return token.line
    stem = token.line.rstrip()
    stem = stem[: len(stem) - len(token.columns[-1])].rstrip()
    gap = max(1, len(token.line) - len(stem) - len(text))
    return stem + ("\t" if "\t" in token.line else " " * gap) + text


def render_part(part: Part, clusters: dict[int, list[Mention]] | None = None) -> str:
    """The part's text with `clusters` (default: its own) in the coreference column."""
    tokens = part.tokens
    wanted = token_marks(part.clusters if clusters is None else clusters, len(tokens))
    lines = [part.header]
    position = 0
    for item in part.body:
        if not isinstance(item, Token):
            lines.append(item)
            continue
        original = item.columns[-1]
        original_marks = marks(original, part.path, item.number)
        same = sorted(original_marks) == sorted(wanted[position])
        lines.append(with_last_column(item, original if same else mark_text(wanted[position])) + item.ending)
        position += 1
    lines.append(part.footer)
    return "".join(lines)


def render_conll(conll: ConllFile, clusters: dict[str, dict[int, list[Mention]]] | None = None) -> str:
    """The whole file; `clusters` maps a part's key to replacement clusters (absent: its own)."""
    clusters = clusters or {}
    return "".join(render_part(item, clusters.get(item.key)) if isinstance(item, Part) else item
                   for item in conll.items)


def write_conll(conll: ConllFile, path: str | Path, clusters: dict[str, dict[int, list[Mention]]] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_conll(conll, clusters), encoding="utf-8")


def read_parts(paths) -> list[Part]:
    """Every part of every file, in file order; a (document, part) pair given twice is an error."""
    parts, seen = [], {}
    for path in paths:
        for part in read_conll(path).parts:
            if part.key in seen:
                raise KdxError(f"{path}: {part.key} also appears in {seen[part.key]}",
                               "give every (document, part) once")
            seen[part.key] = path
            parts.append(part)
    return parts
