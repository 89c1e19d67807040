"""The one reader family: multilingual CoNLL-U (multiword tokens), CoNLL-2003 columns,
unlabelled reading for prediction, and mapping predictions back to surface tokens."""

import json

import pytest
from test_data import cfg

from tagtune import DataError
from tagtune.data import load_corpus
from tagtune.predict_io import format_output, read_input
from tagtune.readers import ReadOptions, read_sentences

# French UD (GSD style): "du" = "de le", "au" = "à le"; XPOS is "_" as in most UD treebanks
FRENCH = """# sent_id = fr-1
# text = Il parle du chat au voisin.
1\tIl\til\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tparle\tparler\tVERB\t_\t_\t0\troot\t_\t_
3-4\tdu\t_\t_\t_\t_\t_\t_\t_\t_
3\tde\tde\tADP\t_\t_\t5\tcase\t_\t_
4\tle\tle\tDET\t_\t_\t5\tdet\t_\t_
5\tchat\tchat\tNOUN\t_\t_\t2\tobl\t_\t_
6-7\tau\t_\t_\t_\t_\t_\t_\t_\t_
6\tà\tà\tADP\t_\t_\t8\tcase\t_\t_
7\tle\tle\tDET\t_\t_\t8\tdet\t_\t_
8\tvoisin\tvoisin\tNOUN\t_\t_\t2\tobl\t_\t_
9\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_

# sent_id = fr-2
1\tÇa\tcela\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tva\taller\tVERB\t_\t_\t0\troot\t_\t_
3\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_
"""

FR_WORDS = ["Il", "parle", "de", "le", "chat", "à", "le", "voisin", "."]
FR_UPOS = ["PRON", "VERB", "ADP", "DET", "NOUN", "ADP", "DET", "NOUN", "PUNCT"]


def test_french_conllu_upos_tags_the_syntactic_words_of_multiword_tokens(tmp_path):
    p = tmp_path / "fr.conllu"
    p.write_text(FRENCH, encoding="utf-8")
    corpus = load_corpus(cfg(train_file=str(p), conllu_tag_column="upos", eval_every_epoch=False))
    assert [s.words for s in corpus.train] == [FR_WORDS, ["Ça", "va", "."]]
    assert corpus.train[0].tags == FR_UPOS
    assert corpus.train[0].multiword == [(2, 3, "du"), (5, 6, "au")]
    assert corpus.labels == ["ADP", "DET", "NOUN", "PRON", "PUNCT", "VERB"]
    with pytest.raises(DataError, match=r"fr.conllu:3: token 'Il' has no XPOS tag") as err:
        load_corpus(cfg(train_file=str(p), eval_every_epoch=False))  # default xpos: empty in this treebank
    assert "--conllu_tag_column upos" in str(err.value)


def test_predictions_map_back_to_multiword_surface_tokens(tmp_path):
    p = tmp_path / "fr.conllu"
    p.write_text(FRENCH, encoding="utf-8")
    sents, fmt = read_input(str(p))
    assert fmt == "conllu" and sents[0].words == FR_WORDS and sents[0].tags is None
    preds = [FR_UPOS, ["PRON", "VERB", "PUNCT"]]
    rec = json.loads(format_output(sents, preds, None, "jsonl").splitlines()[0])
    assert rec["words"] == FR_WORDS and rec["tags"] == FR_UPOS
    assert rec["multiword_tokens"] == [
        {"form": "du", "first": 2, "last": 3, "tag": "ADP+DET"},
        {"form": "au", "first": 5, "last": 6, "tag": "ADP+DET"},
    ]
    conll = format_output(sents, preds, None, "conll").split("\n\n")[0].splitlines()
    assert conll[2:4] == ["de\tADP", "le\tDET"]  # one row per tagged (syntactic) word


CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll2003_four_columns_read_the_last_column_as_tags(tmp_path):
    p = tmp_path / "eng.train.txt"  # the original files are .txt: sniffed as columns
    p.write_text(CONLL2003)
    corpus = load_corpus(cfg(train_file=str(p), conll_tag_column=-1, eval_every_epoch=False))
    assert [s.words for s in corpus.train] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert [s.tags for s in corpus.train] == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"]]
    assert corpus.train[1].where == f"{p}:9"
    chunks = read_sentences(str(p), ReadOptions(conll_tag_column=2))
    assert chunks[0].tags == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]
    # the same file as prediction input: words only
    sents, fmt = read_input(str(p))
    assert fmt == "conll" and sents[1].words == ["Peter", "Blackburn"]
