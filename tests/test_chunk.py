"""Chunking: offsets, coverage, token limits with the title, boundaries, overlap, properties."""

from __future__ import annotations

import random
import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch import Article, BadInputError
from semsearch.chunk import MAX_TITLE_TOKENS, Chunker
from tests.conftest import FakeEncoder

FAKE = FakeEncoder()  # module level: Hypothesis tests cannot take function-scoped fixtures
WORDS = (
    "the council approved a new budget for schools roads and hospitals after long debate "
    "ministers said inflation would ease while critics warned of rising costs unaffable "
    "internationalisation Zürich naïve co-operation 2024 3.5%"
)
VOCAB = WORDS.split()


def prose(sentences, words=8, seed=0, paragraph=5):
    """Deterministic sentences of `words` words, a blank line every `paragraph` sentences."""
    rng = random.Random(seed)
    out = []
    for i in range(sentences):
        sentence = " ".join(rng.choice(VOCAB) for _ in range(words))
        sep = "\n\n" if i % paragraph == paragraph - 1 else " "
        out.append(sentence[0].upper() + sentence[1:] + rng.choice(".!?") + sep)
    return "".join(out).strip()


def words_only(n, seed=0):
    rng = random.Random(seed)
    return " ".join(rng.choice([w for w in VOCAB if w.isalpha()]) for _ in range(n))


def starts_sentence(text, i):
    return i == 0 or text[:i].rstrip()[-1] in ".!?"


def fake_chunker(max_tokens=120, overlap_tokens=0, chunk_tokens=None):
    return Chunker(FAKE.token_spans, max_tokens, overlap_tokens, 2, chunk_tokens)


def check(chunker, article):
    """Chunk the article and assert every invariant; return the chunks."""
    chunks = chunker.chunks(article)
    spans = chunker.token_spans(article.text)
    assert bool(chunks) == bool(spans)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.article_id == article.id
        assert c.text == article.text[c.start : c.end]
        seen = len(chunker.token_spans(chunker.embed_text(article, c)))
        assert seen + chunker.special_tokens <= chunker.max_tokens
        if chunker.chunk_tokens is not None:
            assert c.n_tokens <= chunker.chunk_tokens
    for prev, nxt in pairwise(chunks):
        assert prev.start < nxt.start and prev.end < nxt.end  # progress
        shared = sum(1 for start, _ in spans if nxt.start <= start < prev.end)
        assert shared <= chunker.overlap_tokens
    # Coverage, in order: ends increase, so the first chunk ending at or after
    # a token is the only one that can hold it.
    k = 0
    for start, end in spans:
        while k < len(chunks) and chunks[k].end < end:
            k += 1
        assert k < len(chunks) and chunks[k].start <= start, (start, end)
    return chunks


# Offsets, ordinals, coverage


def test_chunk_text_slices_the_article_and_ordinals_count_from_zero():
    article = Article(id="a", text=prose(60), title="Budget debate")
    chunks = check(fake_chunker(), article)
    assert len(chunks) >= 5
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(c.text == article.text[c.start : c.end] for c in chunks)


def test_every_token_is_in_a_chunk_and_chunks_cover_the_text():
    article = Article(id="a", text=prose(80, seed=3))
    chunks = check(fake_chunker(), article)
    assert chunks[0].start == 0
    assert chunks[-1].end == len(article.text)
    joined = " ".join(c.text for c in chunks).split()
    assert joined == article.text.split()  # no overlap: the words, once each, in order


def test_n_tokens_counts_the_chunk_text():
    article = Article(id="a", text=prose(40, seed=1))
    chunks = check(fake_chunker(overlap_tokens=12), article)
    assert all(c.n_tokens == len(FAKE.token_spans(c.text)) for c in chunks)


def test_a_short_article_is_one_trimmed_chunk():
    article = Article(id="a", text="\n  Hello there, world.  \n")
    (chunk,) = check(fake_chunker(), article)
    assert (chunk.start, chunk.end, chunk.text) == (3, 22, "Hello there, world.")
    assert chunk.n_tokens == 5


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n", "\u2028\x85\u3000"])
def test_article_without_tokens_gives_no_chunks(text):
    assert fake_chunker().chunks(Article(id="a", text=text, title="Title")) == []


# Boundaries


def test_chunks_end_at_sentence_ends_when_sentences_are_short():
    article = Article(id="a", text=prose(100, seed=5, paragraph=1000))
    chunks = check(fake_chunker(chunk_tokens=40), article)
    assert len(chunks) > 10
    assert all(c.text[-1] in ".!?" for c in chunks)
    assert all(starts_sentence(article.text, c.start) for c in chunks)


def test_paragraph_breaks_are_boundaries_too():
    text = "\n\n".join(f"Paragraph {i} has words but no full stop" for i in range(30))
    chunks = check(fake_chunker(chunk_tokens=20), Article(id="a", text=text))
    assert len(chunks) > 5
    assert all(c.text.startswith("Paragraph") and c.text.endswith("stop") for c in chunks)


def test_long_sentence_without_punctuation_is_cut_between_words():
    text = words_only(600)
    chunks = check(fake_chunker(chunk_tokens=50), Article(id="a", text=text))
    assert len(chunks) >= 12
    for c in chunks:
        assert c.start == 0 or text[c.start - 1] == " "
        assert c.end == len(text) or text[c.end] == " "
        assert c.n_tokens <= 50


# Overlap


def test_overlap_makes_consecutive_chunks_share_whole_sentences():
    article = Article(id="a", text=prose(60, words=5, paragraph=1000))
    chunks = check(fake_chunker(overlap_tokens=14, chunk_tokens=40), article)
    assert len(chunks) > 5
    for prev, nxt in pairwise(chunks):
        assert nxt.start < prev.end
        assert starts_sentence(article.text, nxt.start)  # whole sentences are shared
        assert prev.text.endswith(article.text[nxt.start : prev.end])


def test_without_overlap_chunks_do_not_share_text():
    article = Article(id="a", text=prose(60, words=5, paragraph=1000))
    chunks = check(fake_chunker(overlap_tokens=0, chunk_tokens=40), article)
    assert len(chunks) > 5
    assert all(prev.end < nxt.start for prev, nxt in pairwise(chunks))


@pytest.mark.parametrize("overlap", [39, 40, 1000])
def test_overlap_as_large_as_the_chunk_still_makes_progress(overlap):
    article = Article(id="a", text=prose(60, words=5))
    chunks = check(fake_chunker(overlap_tokens=overlap, chunk_tokens=40), article)
    no_overlap = fake_chunker(chunk_tokens=40).chunks(article)
    # Overlap is capped at half a chunk, so at most about twice as many chunks.
    assert len(no_overlap) < len(chunks) <= 2 * len(no_overlap) + 1


def test_overlap_of_sentences_longer_than_the_overlap_is_skipped():
    article = Article(id="a", text=prose(40, words=12, paragraph=1000))
    chunks = check(fake_chunker(overlap_tokens=5, chunk_tokens=40), article)
    assert all(prev.end < nxt.start for prev, nxt in pairwise(chunks))


# Limits and settings


def test_chunk_tokens_caps_each_chunk():
    article = Article(id="a", text=prose(80, words=6))
    for cap in (16, 30, 64):
        chunks = check(fake_chunker(max_tokens=300, chunk_tokens=cap), article)
        assert max(c.n_tokens for c in chunks) <= cap
        assert max(c.n_tokens for c in chunks) > cap - 8  # chunks are filled, not tiny


def test_the_title_counts_against_the_model_limit():
    article = Article(id="a", text=prose(60), title=words_only(40))
    untitled = Article(id="a", text=article.text)
    chunker = fake_chunker(max_tokens=100)
    titled_chunks = check(chunker, article)
    assert max(c.n_tokens for c in titled_chunks) <= 100 - 2 - 40
    assert len(titled_chunks) > len(check(chunker, untitled))


def test_long_title_is_cut_to_64_tokens():
    article = Article(id="a", text="Body.", title="  Very\nlong " + words_only(100, seed=2))
    prefix = fake_chunker().title_prefix(article)
    assert len(FAKE.token_spans(prefix)) == MAX_TITLE_TOKENS
    assert " ".join(article.title.split()).startswith(prefix)
    (chunk,) = check(fake_chunker(), article)
    assert fake_chunker().embed_text(article, chunk) == f"{prefix} Body."


def test_embed_text_without_title_is_the_chunk_text():
    for title in (None, "", "  \n "):
        article = Article(id="a", text="Just the body.", title=title)
        (chunk,) = check(fake_chunker(), article)
        assert fake_chunker().embed_text(article, chunk) == "Just the body."


@pytest.mark.parametrize(
    "settings_",
    [
        {"max_tokens": 120, "overlap_tokens": -1},
        {"max_tokens": 120, "chunk_tokens": 15},
        {"max_tokens": 120, "chunk_tokens": 0},
        {"max_tokens": 81},
        {"max_tokens": 100, "special_tokens": 21},
    ],
)
def test_invalid_settings_raise_bad_input(settings_):
    with pytest.raises(BadInputError):
        Chunker(FAKE.token_spans, **settings_)


def test_smallest_valid_settings_are_accepted():
    chunker = Chunker(FAKE.token_spans, max_tokens=82, special_tokens=2, chunk_tokens=16)
    article = Article(id="a", text=prose(20), title=words_only(80))
    assert len(check(chunker, article)) > 1


def test_tokens_between_sentences_are_measured_and_the_budget_tightened():
    # This tokenizer makes every space a token, so a chunk holds more tokens
    # than its sentences alone; the chunker must measure and shrink to fit.
    def spaces_count(text):
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]|\s", text)]

    chunker = Chunker(spaces_count, max_tokens=100, special_tokens=2)
    article = Article(id="a", text=prose(60, paragraph=2), title="Budget debate")
    chunks = chunker.chunks(article)
    assert len(chunks) > 5
    for c in chunks:
        assert c.text == article.text[c.start : c.end]
        assert len(spaces_count(chunker.embed_text(article, c))) + 2 <= 100


# The real model's tokenizer


def real_chunker(encoder, overlap_tokens=0):
    return Chunker(encoder.token_spans, 256, overlap_tokens, special_tokens=2)


@pytest.mark.model
def test_real_long_article_fits_the_model(real_encoder):
    text = prose(700, words=8, seed=7)  # about 5,600 words
    article = Article(id="long", text=text, title="Council approves the new budget")
    chunker = real_chunker(real_encoder, overlap_tokens=32)
    chunks = check(chunker, article)
    assert len(chunks) > 20
    for c in chunks:
        assert len(real_encoder.token_spans(chunker.embed_text(article, c))) + 2 <= 256
        assert c.text[-1] in ".!?"
    assert all(nxt.start < prev.end for prev, nxt in pairwise(chunks))


@pytest.mark.model
def test_real_long_title_is_cut_and_chunks_still_fit(real_encoder):
    title = " ".join(["Internationalisation of unaffable co-operation in Zürich"] * 20)
    article = Article(id="t", text=prose(200, seed=8), title=title)
    chunker = real_chunker(real_encoder)
    prefix_tokens = len(real_encoder.token_spans(chunker.title_prefix(article)))
    assert len(real_encoder.token_spans(title)) > MAX_TITLE_TOKENS
    assert MAX_TITLE_TOKENS - 4 <= prefix_tokens <= MAX_TITLE_TOKENS
    for c in check(chunker, article):
        assert len(real_encoder.token_spans(chunker.embed_text(article, c))) + 2 <= 256


@pytest.mark.model
def test_real_enormous_sentence_is_cut_between_words(real_encoder):
    text = words_only(4000, seed=9)
    article = Article(id="s", text=text, title="One endless sentence")
    chunks = check(real_chunker(real_encoder), article)
    assert len(chunks) > 10
    for c in chunks:
        assert c.start == 0 or text[c.start - 1] == " "
        assert c.end == len(text) or text[c.end] == " "


@pytest.mark.model
def test_real_unbroken_string_is_cut_and_still_fits(real_encoder):
    text = "https://example.com/" + "/".join(f"segment{i}xq" for i in range(600))
    article = Article(id="u", text=text, title="A very long link")
    chunks = check(real_chunker(real_encoder), article)
    assert len(chunks) > 5
    assert "".join(c.text for c in chunks) == text


# Properties


PIECES = ["word", "Ab", "é", "東京", "x" * 40, "a.b", "(", ")", ",", ".", "!", "?", "…", "”"]
SPACES = [" ", "  ", "\n", "\n\n", "\t", "\u2028"]
# Plain random text rarely fills a chunk; word-and-punctuation soup does.
TEXTS = st.text(max_size=800) | st.lists(st.sampled_from(PIECES + SPACES), max_size=600).map(
    "".join
)
TITLES = st.none() | st.text(max_size=120) | st.integers(0, 150).map(words_only)


@settings(max_examples=100, deadline=None)
@given(
    text=TEXTS,
    title=TITLES,
    max_tokens=st.integers(82, 300),
    overlap=st.integers(0, 150),
    chunk_tokens=st.none() | st.integers(16, 200),
)
def test_property_invariants_hold_for_any_text(text, title, max_tokens, overlap, chunk_tokens):
    chunker = fake_chunker(max_tokens, overlap, chunk_tokens)
    article = Article(id="p", text=text, title=title)
    chunks = check(chunker, article)
    assert all(c.n_tokens == len(FAKE.token_spans(c.text)) for c in chunks)
    if overlap == 0:
        assert all(p.end <= n.start for p, n in pairwise(chunks))


@settings(max_examples=100, deadline=None)
@given(
    sentences=st.integers(1, 120),
    words=st.integers(1, 40),
    seed=st.integers(0, 1000),
    overlap=st.integers(0, 80),
    chunk_tokens=st.none() | st.integers(16, 120),
)
def test_property_prose_of_any_shape(sentences, words, seed, overlap, chunk_tokens):
    article = Article(id="p", text=prose(sentences, words, seed), title=words_only(seed % 70))
    chunks = check(fake_chunker(140, overlap, chunk_tokens), article)
    assert chunks[0].start == 0 and chunks[-1].end == len(article.text)


@pytest.mark.model
@settings(max_examples=50, deadline=None)
@given(text=TEXTS.map(lambda t: t * 4), title=TITLES, overlap=st.integers(0, 64))
def test_property_real_tokenizer_fits_the_model(real_encoder, text, title, overlap):
    article = Article(id="p", text=text, title=title)
    check(real_chunker(real_encoder, overlap), article)
