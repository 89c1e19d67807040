"""Raw text -> sentences of Penn-Treebank-style words, for `tagtune predict` on plain text.

With the ``text`` extra (``pip install -e .[text]``): pysbd splits sentences (it knows
abbreviations such as ``Mr.``, ``U.S.``, ``a.m.``) and NLTK's ``NLTKWordTokenizer`` (the
improved Treebank tokenizer; its rules ship in the code, no ``nltk.download`` needed) splits
words: ``$5`` -> ``$ 5``, ``don't`` -> ``do n't``, a sentence-final ``.`` split off. Words are
cut from the original text by the tokenizer's spans, so quotes stay as written (no ``` `` ```).

Without the extra, a regex fallback (``REGEX``) is used and ``tokenizer_name()`` says so: it
splits sentences after every ``.``/``!``/``?`` before whitespace, so it breaks ``Mr. Smith``.
Either way every non-empty line is split on its own: a sentence never spans two lines.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from typing import Any, Optional

logger = logging.getLogger(__name__)

WORD_PATTERN = re.compile(
    r"""
    \d+(?:[.,:]\d+)*\b              # numbers: 5, 1,000, 3.14, 10:30
  | \w+(?:-\w+)*?(?=n't\b)          # "do" of "don't"
  | n't\b                           # "n't"
  | '(?:s|re|ve|ll|d|m)\b           # clitics: 's 're 've 'll 'd 'm
  | \w+(?:-\w+)*                    # words, hyphenated words
  | \.\.\.                          # ellipsis
  | [^\w\s]                         # any other symbol, one per word
    """,
    re.VERBOSE | re.IGNORECASE,
)
# a sentence runs to . ! ? (repeated, plus closing quotes/brackets) before whitespace, or to the line's end
SENTENCE = re.compile(r"""\S.*?(?:[.!?]+["'”’)\]]*(?=\s|$)|$)""")


@functools.cache
def _library_tokenizers() -> Optional[tuple[Any, Any]]:
    """(pysbd segmenter, NLTK word tokenizer), or None when the ``text`` extra is missing."""
    try:
        import pysbd
        from nltk.tokenize.destructive import NLTKWordTokenizer
    except ImportError as err:
        logger.warning(
            "raw text: %s; using the regex fallback, which splits 'Mr. Smith' and 'U.S.' "
            "(pip install 'tagtune[text]' for pysbd + NLTK)",
            err,
        )
        return None
    return pysbd.Segmenter(language="en", clean=False, char_span=True), NLTKWordTokenizer()


def tokenizer_name() -> str:
    """Which tokenisation ``split_text`` uses: 'pysbd+nltk' or 'regex (fallback)'."""
    return "pysbd+nltk" if _library_tokenizers() is not None else "regex (fallback)"


def _split_line(line: str) -> Iterator[list[str]]:
    libs = _library_tokenizers()
    if libs is None:
        for m in SENTENCE.finditer(line):
            yield WORD_PATTERN.findall(m.group())
        return
    segmenter, words = libs
    for span in segmenter.segment(line):
        sent = line[span.start : span.end]
        yield [sent[a:b] for a, b in words.span_tokenize(sent)]


def split_text_lines(text: str, first_line: int = 1) -> Iterator[tuple[list[str], int]]:
    """(words, line number) for every sentence of ``text``, whose first line is line ``first_line``."""
    for lineno, line in enumerate(text.splitlines(), first_line):
        if not line.strip():
            continue
        for words in _split_line(line):
            if words:
                yield words, lineno


def split_text(text: str) -> list[list[str]]:
    """Raw text -> sentences of words, by the rule in the module docstring."""
    return [ws for ws, _ in split_text_lines(text)]
