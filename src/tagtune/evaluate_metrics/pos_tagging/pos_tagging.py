"""tagtune's POS metric as a Hugging Face ``evaluate`` module, loadable offline by path:

    import evaluate, tagtune.hf_metric
    metric = evaluate.load(tagtune.hf_metric.POS_METRIC_PATH)
    metric.compute(predictions=[["DT", "NN"]], references=[["DT", "VB"]])

Token accuracy and per-tag precision/recall/F1 (macro and weighted averages) on word-level tags,
computed by ``tagtune.metrics.compute_metrics``: the numbers training and ``tagtune evaluate``
report. seqeval's P/R/F1 are included only as ``seqeval_*`` (report-compatible): seqeval reads
POS tags as IOB chunks, so they are not per-tag scores.
"""

import datasets
import evaluate

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of sentences, each a list of predicted tags (strings).
    references: list of sentences, each a list of gold tags, same lengths as predictions.
Returns:
    accuracy, macro_precision/recall/f1, weighted_precision/recall/f1, seqeval_precision/recall/f1,
    num_words, num_sentences, and per_tag: {tag: {precision, recall, f1, support}}.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PosTagging(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        from tagtune.metrics import compute_metrics

        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"sentence {i}: {len(r)} reference tags but {len(p)} predicted tags")
        return compute_metrics(references, predictions)
