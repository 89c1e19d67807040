"""Raw-text tokenisation: pysbd + NLTK with the `text` extra, the regex fallback without it."""

import sys

import pytest

from tagtune import text

ISSUE = "Mr. Smith bought U.S. stamps at 10:30 a.m. today. He paid $5."


@pytest.fixture
def fallback(monkeypatch):
    """The `text` extra missing: importing pysbd fails."""
    monkeypatch.setitem(sys.modules, "pysbd", None)
    text._library_tokenizers.cache_clear()
    yield
    text._library_tokenizers.cache_clear()


def test_library_tokenisation_keeps_abbreviations_and_splits_ptb_style():
    text._library_tokenizers.cache_clear()
    assert text.tokenizer_name() == "pysbd+nltk"
    assert text.split_text(ISSUE) == [
        ["Mr.", "Smith", "bought", "U.S.", "stamps", "at", "10:30", "a.m.", "today", "."],
        ["He", "paid", "$", "5", "."],
    ]
    # one line is never joined to the next; line numbers are kept for error locations
    assert list(text.split_text_lines("Dr. Who left.\n\nShe didn't.")) == [
        (["Dr.", "Who", "left", "."], 1),
        (["She", "did", "n't", "."], 3),
    ]


def test_regex_fallback_is_used_and_named_without_the_extra(fallback, caplog):
    assert text.tokenizer_name() == "regex (fallback)"
    assert "using the regex fallback" in caplog.text
    sents = text.split_text(ISSUE)
    assert sents[0] == ["Mr", "."]  # the fallback's known weakness, which the extra fixes
    assert ["He", "paid", "$", "5", "."] in sents
