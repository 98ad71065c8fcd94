"""Articles → chunks that fit the model, measured with the model's own tokenizer.

A chunk is a run of whole sentences (or paragraphs, or lines) whose tokens,
together with the article's title and the model's special tokens, fit in the
model's maximum sequence length, so the model never truncates silently. A
sentence longer than that on its own is cut between words. Consecutive chunks
share up to ``overlap_tokens`` tokens of whole sentences.

Every chunk keeps its character offsets: ``article.text[chunk.start:chunk.end]
== chunk.text``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import BadInputError
from .records import Article, Chunk

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""A tokenizer: text → the (start, end) character span of each token, no special tokens."""

# Where a chunk may end: after a paragraph break or a line break, or after
# sentence-ending punctuation (and any closing quotes or brackets) and a space.
_BOUNDARY = re.compile(r"\n\s*\n|\n|(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+")
MAX_TITLE_TOKENS = 64


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


class Chunker:
    """Splits articles into chunks that fit the model.

    Args:
        token_spans: the model's tokenizer (see :data:`TokenSpans`).
        max_tokens: the model's maximum sequence length, special tokens included.
        overlap_tokens: how many tokens of whole sentences consecutive chunks share.
        special_tokens: how many special tokens the model adds ([CLS], [SEP], ...).
        chunk_tokens: an optional smaller limit on the tokens of one chunk's text.

    Example:
        >>> chunker = Chunker(encoder.token_spans, max_tokens=256, overlap_tokens=32)
        >>> chunks = chunker.chunks(article)
    """

    def __init__(
        self,
        token_spans: TokenSpans,
        max_tokens: int,
        overlap_tokens: int = 0,
        special_tokens: int = 2,
        chunk_tokens: int | None = None,
    ) -> None:
        if overlap_tokens < 0:
            raise BadInputError(f"overlap must be 0 or more tokens, not {overlap_tokens}")
        if chunk_tokens is not None and chunk_tokens < 16:
            raise BadInputError(f"chunk size must be at least 16 tokens, not {chunk_tokens}")
        if max_tokens - special_tokens - MAX_TITLE_TOKENS < 16:
            raise BadInputError(f"the model's maximum of {max_tokens} tokens is too small to chunk")
        self.token_spans = token_spans
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.special_tokens = special_tokens
        self.chunk_tokens = chunk_tokens

    def title_prefix(self, article: Article) -> str:
        """The title as it is prepended to each chunk, cut to at most 64 tokens."""
        title = " ".join((article.title or "").split())
        spans = self.token_spans(title)
        if len(spans) > MAX_TITLE_TOKENS:
            title = title[: spans[MAX_TITLE_TOKENS - 1][1]]
        return title

    def embed_text(self, article: Article, chunk: Chunk) -> str:
        """What the model sees for a chunk: the title, a space, the chunk's text."""
        title = self.title_prefix(article)
        return f"{title} {chunk.text}" if title else chunk.text

    def chunks(self, article: Article) -> list[Chunk]:
        """Split one article; an article with no tokens gives no chunks."""
        title = self.title_prefix(article)
        budget = self.max_tokens - self.special_tokens - len(self.token_spans(title))
        if self.chunk_tokens is not None:
            budget = min(budget, self.chunk_tokens)
        # Tokenising "title text" can differ from the sum of the parts by a
        # token or two for some tokenizers; measure the result and tighten.
        for _ in range(8):
            chunks = self._split(article, budget)
            over = max((self._overflow(title, c) for c in chunks), default=0)
            if over <= 0:
                return chunks
            budget -= over
        raise AssertionError(f"could not fit chunks of {article.id!r} in {self.max_tokens} tokens")

    def _overflow(self, title: str, chunk: Chunk) -> int:
        text = f"{title} {chunk.text}" if title else chunk.text
        return len(self.token_spans(text)) + self.special_tokens - self.max_tokens

    def _split(self, article: Article, budget: int) -> list[Chunk]:
        text = article.text
        spans = self.token_spans(text)
        if not spans:
            return []
        starts = [s for s, _ in spans]
        units: list[_Unit] = []
        for start, end in _segments(text):
            first = bisect.bisect_left(starts, start)
            last = bisect.bisect_left(starts, end)
            if last > first:
                units.extend(_fit(text, spans, first, last, budget))
        overlap = min(self.overlap_tokens, budget // 2)
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j, total = i, 0
            while j < len(units) and total + units[j].tokens <= budget:
                total += units[j].tokens
                j += 1
            start, end = units[i].start, units[j - 1].end
            chunks.append(Chunk(article.id, len(chunks), start, end, text[start:end], total))
            if j == len(units):
                break
            # Step back over whole trailing units that fit in the overlap.
            k, shared = j, 0
            while k - 1 > i and shared + units[k - 1].tokens <= overlap:
                k -= 1
                shared += units[k].tokens
            if shared + units[j].tokens > budget:
                k = j
            i = k
        return chunks


def _segments(text: str) -> list[tuple[int, int]]:
    """Sentence-like pieces of text, as (start, end) with surrounding space trimmed."""
    pieces, pos = [], 0
    for match in _BOUNDARY.finditer(text):
        pieces.append((pos, match.start()))
        pos = match.end()
    pieces.append((pos, len(text)))
    trimmed = []
    for start, end in pieces:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            left = start + (len(piece) - len(piece.lstrip()))
            trimmed.append((left, left + len(stripped)))
    return trimmed


def _fit(
    text: str, spans: Sequence[tuple[int, int]], first: int, last: int, budget: int
) -> list[_Unit]:
    """Tokens first..last-1 as units of at most `budget` tokens, cut between words."""
    units = []
    while last - first > budget:
        cut = first + budget
        # Prefer a cut where the next token starts a new word (whitespace before it).
        word = cut
        while word > first + budget // 2 and not text[spans[word][0] - 1].isspace():
            word -= 1
        if word > first + budget // 2:
            cut = word
        units.append(_Unit(spans[first][0], spans[cut - 1][1], cut - first))
        first = cut
    units.append(_Unit(spans[first][0], spans[last - 1][1], last - first))
    return units
