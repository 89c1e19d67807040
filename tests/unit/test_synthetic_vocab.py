"""The synthetic models' vocabularies are the same in every process.

They were not: the tokenizers library's WordPiece and Unigram trainers break ties by hash order,
so each cold cache trained a different smoke model, and a test pinned to its tags failed now and then.
"""

import json
import subprocess
import sys

from tagtune.synthetic import ARCHS, WORDPIECE, build_tokenizer

_VOCABS = (
    "import json; from tagtune.synthetic import ARCHS, build_tokenizer; "
    "print(json.dumps({a: sorted(build_tokenizer(a).get_vocab().items()) for a in ARCHS}))"
)


def _vocabs_in_a_new_process() -> dict:
    out = subprocess.run([sys.executable, "-c", _VOCABS], capture_output=True, text=True, check=True)
    return {a: [tuple(x) for x in v] for a, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def test_every_process_builds_the_same_vocabularies():
    first, second = _vocabs_in_a_new_process(), _vocabs_in_a_new_process()
    here = {a: sorted(build_tokenizer(a).get_vocab().items()) for a in ARCHS}
    for arch in ARCHS:
        assert first[arch] == second[arch] == here[arch], arch


def test_small_vocabularies_still_split_long_words():
    for arch in ("bert", "deberta-v3", "xlm-roberta"):
        tok = build_tokenizer(arch)
        assert len(tok.tokenize("unbelievable")) >= 4, arch
        assert len(tok) <= 160, arch
    bert = build_tokenizer("bert")
    assert bert.tokenize("teachers") == ["teacher", "##s"]
    assert set(WORDPIECE) <= set(ARCHS)
