"""TrainConfig: every setting of a run, documented where it is declared.

Precedence (lowest to highest): the dataclass defaults below, a recipe's subclass defaults,
an optional YAML/JSON file given with ``--config FILE``, then command-line flags.
``__post_init__`` validates everything before any model or data loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

from .errors import ConfigError


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    """Settings for one token-classification fine-tuning run (model x method x data)."""

    # ---- recipe / naming -------------------------------------------------------------
    recipe: str = _help("Name of the experiment; used in run names, groups and the output folder.", default="custom")

    # ---- model ----------------------------------------------------------------------
    model_name_or_path: str = _help(
        "Hub id or local folder of a pretrained encoder (e.g. bert-base-cased, roberta-base), or "
        "'synthetic:bert' / 'synthetic:roberta' for a tiny random-init model with a locally built tokenizer.",
        default="bert-base-cased",
    )
    tokenizer_name: Optional[str] = _help("Tokenizer hub id or folder; defaults to model_name_or_path.", default=None)
    trust_remote_code: bool = _help(
        "Allow model code from the hub to run. Off unless you trust the repository.", default=False
    )
    attn_implementation: str = _help(
        "Attention kernel passed to transformers: 'sdpa' (fast), 'eager'.", default="sdpa"
    )

    # ---- data -----------------------------------------------------------------------
    dataset_name: Optional[str] = _help(
        "Hub dataset id (e.g. batterydata/pos_tagging) or 'synthetic:pos' for generated tagged sentences. "
        "Leave empty to use train_file/validation_file.",
        default=None,
    )
    dataset_config_name: Optional[str] = _help(
        "Hub dataset configuration name, if the dataset has several.", default=None
    )
    train_file: Optional[str] = _help(
        "Local training file: .json/.jsonl, .conllu, or whitespace-column CoNLL.", default=None
    )
    validation_file: Optional[str] = _help("Local validation file (same formats as train_file).", default=None)
    test_file: Optional[str] = _help("Local test file (same formats as train_file).", default=None)
    data_format: Literal["auto", "json", "conllu", "conll"] = _help(
        "File format; 'auto' picks by extension (.json/.jsonl -> json, .conllu -> conllu, anything else -> conll).",
        default="auto",
    )
    words_field: str = _help("JSON/hub field holding the list of words.", default="words")
    labels_field: str = _help("JSON/hub field holding the list of tags (strings or class ids).", default="labels")
    conllu_tag_column: Literal["xpos", "upos"] = _help(
        "CoNLL-U column used as the tag: xpos (Penn Treebank) or upos.", default="xpos"
    )
    conll_word_column: int = _help("0-based word column of whitespace-column CoNLL files.", default=0)
    conll_tag_column: int = _help("0-based tag column of whitespace-column CoNLL files (-1 = last).", default=-1)
    eval_split: str = _help(
        "Split used for validation: 'auto' = validation/dev when present, else test (as in the study); "
        "or a split name such as 'test'.",
        default="auto",
    )
    max_train_samples: Optional[int] = _help(
        "Keep only the first N training sentences (debugging, smoke runs).", default=None
    )
    max_eval_samples: Optional[int] = _help("Keep only the first N evaluation sentences.", default=None)
    tagging_scheme: Literal["auto", "none", "IOB1", "IOB2", "IOBES", "BILOU"] = _help(
        "How tags encode spans. 'none' = flat tags (POS): token accuracy is the primary metric. IOB1/IOB2/IOBES/BILOU "
        "= spans (NER, chunking): entity-level F1 is primary (seqeval strict mode; IOB1 its default mode). "
        "'auto' detects it from the training tags and logs what it found.",
        default="auto",
    )
    unseen_eval_labels: Literal["error", "ignore", "as_o"] = _help(
        "Evaluation tags the training split lacks: 'error' stops with each tag and its count; 'ignore' leaves "
        "those words out of every score; 'as_o' trains/evaluates the loss with O in their place but scores the "
        "real tag (a word error; its span a missed entity). The count of such words is in the results.",
        default="error",
    )
    constrain_decoding: bool = _help(
        "Span schemes: replace each sentence's per-word argmax by the best sequence the scheme allows "
        "(Viterbi over the tag log-probabilities; no 'I-X' after 'O' or after 'B-Y').",
        default=False,
    )

    # ---- features -------------------------------------------------------------------
    max_length: Optional[int] = _help(
        "Max sub-tokens per window incl. special tokens; default = the tokenizer's limit (512 for BERT/RoBERTa). "
        "Longer sentences are split into overlapping windows, never truncated.",
        default=None,
    )
    stride: int = _help(
        "Words of left context repeated from the previous window when a sentence is split.", default=32
    )
    label_all_subtokens: bool = _help(
        "Train on every sub-token (label copied from its word). Off: first sub-token only, the rest -100. "
        "Evaluation always scores one prediction per word (its first sub-token).",
        default=False,
    )
    group_by_length: bool = _help(
        "Batch sentences of similar length together (still shuffled) to cut padding.", default=True
    )
    length_group_batches: int = _help(
        "With group_by_length: how many batches' worth of shuffled sentences are sorted by length together "
        "before they are cut into batches, which are then shuffled. 0 (default): the whole epoch at once, as "
        "fairseq buckets (padding on EWT: 0.2 to 1.4 in 100 sub-tokens); 50: the Trainer's mega-batches "
        "(6 to 7 in 100), the same accuracy.",
        default=0,
    )
    length_run_batches: int = _help(
        "With group_by_length: the sorted batches are shuffled in runs of this many neighbours, so that a few "
        "steps in a row share a sentence length. On CPU in bf16 every new length builds new matmul kernels, "
        "which the rest of its run reuses: 4 trains 1.06x faster than 1 on EWT, the same accuracy. "
        "1: every batch shuffled on its own.",
        default=4,
    )
    cache_features: bool = _help(
        "Keep tokenised features under $TAGTUNE_CACHE/features (default ~/.cache/tagtune), keyed by the data, "
        "the tokenizer and the feature settings: reruns, resumes and every rank of a launch tokenise once.",
        default=True,
    )

    # ---- method ---------------------------------------------------------------------
    method: Literal["full", "lora", "peft"] = _help(
        "'full' fine-tunes every weight; 'lora' trains LoRA adapters + the classifier; 'peft' trains the adapter "
        "that --peft_method names + the classifier.",
        default="full",
    )
    peft_method: Literal["lora", "ia3", "loha", "lokr"] = _help(
        "Adapter type under --method peft (peft's token-classification tuners): lora, ia3 (learned scaling "
        "vectors), loha (Hadamard product of low-rank pairs), lokr (Kronecker product).",
        default="lora",
    )
    lora_r: int = _help("Adapter rank (LoRA, LoHa, LoKr).", default=8)
    lora_alpha: int = _help("Adapter scaling alpha (LoRA: effective scale = alpha / r).", default=16)
    lora_dropout: float = _help("Dropout on the adapter branch (LoHa/LoKr: module dropout).", default=0.1)
    lora_target_modules: Optional[list[str]] = _help(
        "Module names to adapt; empty = peft's default for the architecture (query, value for BERT/RoBERTa); "
        "'all-linear' = every linear layer but the classifier. Models peft has no default for (DistilBERT, "
        "ModernBERT) need a list; the error names their linear layers.",
        default=None,
    )
    use_dora: bool = _help(
        "LoRA only: DoRA (weight-decomposed LoRA: a trained magnitude per output feature).", default=False
    )
    use_rslora: bool = _help("LoRA only: rank-stabilised scaling alpha / sqrt(r) instead of alpha / r.", default=False)

    # ---- optimisation ---------------------------------------------------------------
    learning_rate: float = _help("Peak AdamW learning rate.", default=5e-5)
    per_device_train_batch_size: int = _help("Sentences (windows) per device per forward pass.", default=16)
    per_device_eval_batch_size: int = _help(
        "Sentences (windows) per device per evaluation batch, where per_device_eval_batch_tokens is 0.", default=32
    )
    per_device_eval_batch_tokens: Optional[int] = _help(
        "Size evaluation and prediction batches in padded sub-tokens instead: the split, longest first, is cut into "
        "batches of at most this many (sentences x the batch's longest; a longer sentence alone), whatever their "
        "sentence count, so short sentences still make large matmuls. Empty = 2048 on CPU, never on GPU; "
        "0 = per_device_eval_batch_size sentences per batch.",
        default=None,
    )
    eval_batch_cuts: bool = _help(
        "With per_device_eval_batch_tokens, place the cuts between batches of the longest-first split where they "
        "compute the fewest positions, counting each batch as 100 padded sub-tokens of fixed cost (one exact "
        "dynamic programme): EWT dev on CPU gets 26 batches with 2.9 percent padding instead of 19 with 8.0. "
        "False = fill each batch up to the budget. `tagtune predict` with this run's model follows it.",
        default=True,
    )
    gradient_accumulation_steps: int = _help("Forward passes per optimizer step.", default=1)
    num_train_epochs: float = _help("Epochs over the training split.", default=3.0)
    max_steps: int = _help("If > 0: stop after this many optimizer steps (overrides num_train_epochs).", default=-1)
    weight_decay: float = _help("AdamW weight decay; biases and LayerNorm weights get none.", default=0.01)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.999)
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    max_grad_norm: float = _help("Gradient clipping norm; 0 disables clipping.", default=1.0)
    lr_scheduler_type: Literal["linear", "constant", "cosine"] = _help(
        "Learning-rate schedule after warmup.", default="linear"
    )
    warmup_ratio: float = _help("Fraction of optimizer steps used for linear warmup.", default=0.0)
    warmup_steps: int = _help("Warmup steps; overrides warmup_ratio when > 0.", default=0)
    seed: int = _help("Seed for model init, LoRA init, shuffling and dropout.", default=42)

    # ---- precision / speed ----------------------------------------------------------
    mixed_precision: Optional[Literal["no", "fp16", "bf16"]] = _help(
        "Override the accelerate config's precision. Empty = what `accelerate launch`/config says. "
        "bf16 needs a GPU of compute capability >= 8.0 or a CPU with native bf16 (AVX512-BF16/AMX; CPU autocast); "
        "fp16 is ignored on CPU (runs fp32, logged).",
        default=None,
    )
    optim: Literal["adamw_torch_fused", "adamw_torch"] = _help(
        "Optimizer implementation (the Trainer's names): torch AdamW fused (one kernel per parameter, fastest) "
        "or foreach. fp16 loss scaling always uses foreach, so that skipped steps hold the schedule.",
        default="adamw_torch_fused",
    )
    torch_compile: bool = _help("Wrap the model in torch.compile (GPU; first steps are slower).", default=False)
    dataloader_num_workers: int = _help("Data-loader worker processes (GPU runs benefit; 0 on CPU).", default=0)
    micro_batch_tokens: Optional[int] = _help(
        "Run a training batch of more padded sub-tokens (sentences x length) than this as several forward/backward "
        "passes before its one optimizer step, with the same gradient: bounds the activation memory of the longest "
        "batches. Empty = on CPU 1024 in bf16 and 512 in fp32 (the same activation bytes), never on GPU; 0 = never. "
        "Not under DeepSpeed (its own micro-steps).",
        default=None,
    )
    micro_batch_attention_length: int = _help(
        "In micro_batch_tokens, a sentence padded past this many sub-tokens counts as length x length / this: "
        "attention's memory grows with the square of the length, so batches of long sentences run in smaller "
        "parts and the rest stay whole (MiniLM on EWT, bf16: peak RSS 1,140 MiB instead of 1,250, 2% slower). "
        "0 = count padded sub-tokens only.",
        default=64,
    )
    cpu_malloc_reuse: bool = _help(
        "On a CPU run under glibc (Linux), keep freed memory in the process so that each step reuses the "
        "previous step's pages instead of faulting in fresh ones from the kernel (mallopt: large blocks from the "
        "heap, no trimming; the heap keeps its peak size until the next evaluation returns its free pages): bf16 "
        "training 1.08x as fast here "
        "at the same peak RSS. Left off when glibc's malloc variables or a preloaded malloc are set. "
        "False = glibc's defaults.",
        default=True,
    )
    cpu_kernel_cache_bound: bool = _help(
        "On a CPU run, bound the caches of compiled kernels that oneDNN and ideep keep per matmul shape "
        "(ONEDNN_PRIMITIVE_CACHE_CAPACITY=64, LRU_CACHE_CAPACITY=1): with a new sentence length nearly every "
        "step they otherwise grow for the whole run (MiniLM on EWT, bf16: peak RSS 1,886 MiB instead of 1,334). "
        "The price is rebuilding a new length's kernels, up to a tenth of bf16 training time on some CPUs "
        "(docs/performance.md). "
        "Variables the user set are kept; process-wide, read once by the libraries. "
        "False = the libraries' defaults (1,024 entries each): speed before memory.",
        default=True,
    )
    cpu_bulk_dropout: bool = _help(
        "On a CPU run, dropout layers, and the attention probabilities' dropout of SDPA models, draw their "
        "keep-masks in bulk from numpy's PCG64 (seeded from torch's generator at each call, so seeds and "
        "checkpoints still decide them) instead of torch's bernoulli_, which draws one number per element on one "
        "thread on non-Intel CPUs (README, Dropout masks in bulk). Same keep probability; not the same masks. "
        "Off under torch_compile. False = torch's dropout.",
        default=True,
    )
    cpu_half_matmul_attention: bool = _help(
        "On a CPU run in bf16, evaluation (and `tagtune predict` with this run's model) computes attention for "
        "batches padded to at most 48 sub-tokens as two bf16 matmuls with the softmax in float32, instead of "
        "torch's flash kernel, whose cost per (sentence, head) short batches do not amortise (README, What tagtune "
        "does differently). Scores rounded to bf16 before the softmax, as in transformers' eager attention. "
        "float32 and GPU runs are unchanged. False = SDPA throughout.",
        default=True,
    )
    cpu_packed_linear: bool = _help(
        "On a CPU run (not under DeepSpeed or torch_compile), evaluation (and `tagtune predict` with this run's "
        "model) runs the Linear layers on weights packed once per evaluation for oneDNN, in the evaluation's "
        "precision, instead of packing them again in every call (MKL's sgemm in fp32, oneDNN in bf16): "
        "`tagtune predict` of EWT dev 1.11x as fast in fp32 and 1.06x in bf16 on the AMD machine, the same tags "
        "(README, What tagtune does differently). Products differ from sgemm's in the last bits. "
        "False = torch's Linear.",
        default=True,
    )
    cpu_sparse_embedding_grad: bool = _help(
        "On a one-process CPU run (no DeepSpeed, no torch_compile), the input embedding's backward is sparse "
        "and its rows are written into one dense gradient kept across steps, instead of a zeroed 45 MiB "
        "gradient (MiniLM) allocated every step (README, Sparse embedding gradient). The optimizer sees the "
        "same gradient. False = the dense backward.",
        default=True,
    )

    ddp_timeout: int = _help(
        "Seconds a process waits in a collective (all-reduce, barrier, gather) before failing with an error, "
        "so that a stuck or dead rank stops the run instead of hanging it.",
        default=1800,
    )

    # ---- evaluation / logging -------------------------------------------------------
    eval_every_epoch: bool = _help("Evaluate on the validation split at the end of each epoch.", default=True)
    logging_steps: int = _help(
        "Log training loss/lr/throughput every N optimizer steps (fewer host syncs).", default=10
    )

    # ---- outputs --------------------------------------------------------------------
    output_dir: Optional[str] = _help("Run directory; default outputs/<recipe>.", default=None)
    overwrite_output_dir: bool = _help("Allow writing into an output_dir that holds another run.", default=False)
    save_model: bool = _help(
        "Save the final model (full) or adapter (LoRA) with tokenizer and label maps.", default=True
    )

    # ---- checkpoints and failures (README "Resuming and failures") ---------------------
    checkpointing_steps: int = _help(
        "Save a resumable checkpoint to <output_dir>/checkpoints/step-<N>/ every N optimizer steps; 0 = only at epoch ends.",
        default=0,
    )
    checkpoint_epoch_end: bool = _help(
        "Also save a checkpoint at the end of every epoch (after its evaluation).", default=True
    )
    save_total_limit: int = _help(
        "Keep only the newest K checkpoints (older ones are deleted after a save succeeds); 0 = keep all.", default=2
    )
    resume_from_checkpoint: Optional[str] = _help(
        "'latest' = continue from the newest checkpoint in output_dir (a fresh start when there is none), "
        "or a checkpoint folder. Restores weights, optimizer, schedule, scaler, RNG and the position in the epoch.",
        default=None,
    )
    nonfinite_loss_patience: int = _help(
        "Stop (keeping the last good checkpoint) once the training loss has been NaN/inf for this many consecutive "
        "optimizer steps; checked at log points and before each checkpoint.",
        default=10,
    )

    # ---- tracking -------------------------------------------------------------------
    report_to: Literal["auto", "wandb", "tensorboard", "none"] = _help(
        "Tracker: 'auto' = wandb (online when logged in, else offline with a log line), or tensorboard, or none.",
        default="auto",
    )
    project: str = _help("W&B project / tracker project name.", default="tagtune")
    run_name: Optional[str] = _help("Tracker run name; default <recipe>-<model>-<method>.", default=None)
    run_group: Optional[str] = _help(
        "Tracker group; default the model name, so the study's runs sit together.", default=None
    )

    # ---- checks -----------------------------------------------------------------------
    def __post_init__(self) -> None:
        # empty values given on a command line mean "not set"
        if self.lora_target_modules is not None and len(self.lora_target_modules) == 0:
            self.lora_target_modules = None
        if self.resume_from_checkpoint is not None and not str(self.resume_from_checkpoint).strip():
            self.resume_from_checkpoint = None
        self._check_choices()
        self._check_numbers()
        self._check_data_source()
        self._check_methods()
        if self.output_dir is None:
            self.output_dir = os.path.join("outputs", self.recipe)

    def _bad(self, name: str, why: str) -> None:
        raise ConfigError(f"invalid value {getattr(self, name)!r}: {why}", where=f"config field '{name}'")

    def _check_choices(self) -> None:
        # recipes may re-declare a field as plain str; the base class's choices still hold
        for name, choices in _choices().items():
            value = getattr(self, name)
            if value is not None and value not in choices:
                self._bad(name, f"choose one of {list(choices)}")

    def _check_numbers(self) -> None:
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "lora_r",
            "lora_alpha",
            "logging_steps",
            "nonfinite_loss_patience",
            "ddp_timeout",
        ):
            if getattr(self, name) < 1:
                self._bad(name, "must be >= 1")
        if self.learning_rate <= 0:
            self._bad("learning_rate", "must be > 0")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            self._bad("num_train_epochs", "must be > 0 (or set max_steps > 0)")
        for name in (
            "weight_decay",
            "max_grad_norm",
            "warmup_steps",
            "stride",
            "dataloader_num_workers",
            "checkpointing_steps",
            "save_total_limit",
            "micro_batch_attention_length",
            "length_group_batches",
        ):
            if getattr(self, name) < 0:
                self._bad(name, "must be >= 0")
        if self.length_run_batches < 1:
            self._bad("length_run_batches", "must be >= 1 (1 = every batch shuffled on its own)")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 0:
            self._bad("micro_batch_tokens", "must be >= 0 (0 = never split a batch)")
        if self.per_device_eval_batch_tokens is not None and self.per_device_eval_batch_tokens < 0:
            self._bad(
                "per_device_eval_batch_tokens", "must be >= 0 (0 = batches of per_device_eval_batch_size sentences)"
            )
        for name in ("warmup_ratio", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                self._bad(name, "must be in [0, 1)")
        if not (0.0 < self.adam_beta1 < 1.0 and 0.0 < self.adam_beta2 < 1.0):
            self._bad("adam_beta1", "betas must be in (0, 1)")
        if self.max_length is not None and self.max_length < 8:
            self._bad("max_length", "must be >= 8 (room for special tokens and at least one word)")
        for name in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                self._bad(name, "must be >= 1 when set")

    def _check_data_source(self) -> None:
        if not self.model_name_or_path:
            self._bad("model_name_or_path", "a model id or folder is required")
        if not self.dataset_name and not self.train_file:
            raise ConfigError(
                "no training data: set dataset_name or train_file",
                where="config fields 'dataset_name'/'train_file'",
                fix="e.g. --dataset_name batterydata/pos_tagging or --train_file train.conllu --validation_file dev.conllu",
            )
        if self.dataset_name and self.train_file:
            raise ConfigError(
                "both dataset_name and train_file are set; choose one",
                where="config fields 'dataset_name'/'train_file'",
                fix="pass --dataset_name '' to use local files",
            )

    def _check_methods(self) -> None:
        """The fine-tuning method's options, and decoding's, agree with each other."""
        if self.lora_target_modules and "all-linear" in self.lora_target_modules and len(self.lora_target_modules) > 1:
            self._bad("lora_target_modules", "'all-linear' stands alone; give it or a list of module names")
        if self.method == "lora" and self.peft_method != "lora":
            self._bad("peft_method", f"--method lora trains LoRA; use --method peft --peft_method {self.peft_method}")
        if self.method == "full" and (self.peft_method != "lora" or self.use_dora or self.use_rslora):
            self._bad("method", "peft_method/use_dora/use_rslora need --method lora or --method peft")
        for name in ("use_dora", "use_rslora"):
            if getattr(self, name) and self.peft_method != "lora":
                self._bad(name, f"a LoRA option; peft_method is {self.peft_method}")
        if self.constrain_decoding and self.tagging_scheme == "none":
            self._bad("constrain_decoding", "flat tags (tagging_scheme none) have no span transitions to constrain")

    # ---- helpers ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def method_name(self) -> str:
        return method_name(self.method, self.peft_method, self.use_dora, self.use_rslora)

    @property
    def model_short_name(self) -> str:
        return Path(self.model_name_or_path.rstrip("/")).name.replace("synthetic:", "synthetic-")


def method_name(method: str, peft_method: str = "lora", use_dora: bool = False, use_rslora: bool = False) -> str:
    """'full', or the adapter with its variant: 'lora', 'lora+dora', 'lora+rslora', 'ia3', ... (reports)."""
    if method == "full":
        return "full"
    return peft_method + ("+dora" if use_dora else "") + ("+rslora" if use_rslora else "")


C = TypeVar("C", bound=TrainConfig)

# Names a run_ner.py (HF token-classification example) user already knows, meaning the same thing here.
RUN_NER_ALIASES = {
    "max_seq_length": "max_length",
    "label_all_tokens": "label_all_subtokens",
    "text_column_name": "words_field",
    "label_column_name": "labels_field",
}
PRECISION_FLAGS = ("fp16", "bf16")  # HF Trainer booleans -> mixed_precision


def _choices() -> dict[str, tuple]:
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is Literal:
            out[name] = typing.get_args(hint)
        elif args and typing.get_origin(args[0]) is Literal:
            out[name] = typing.get_args(args[0])
    return out


def _base_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file not found: {path}", where="--config", fix="give the path of a .yaml or .json file"
        )
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as err:  # parse errors of either format
        raise ConfigError(f"cannot parse config file: {err}", where=str(p)) from None
    if not isinstance(values, dict):
        raise ConfigError("config file must hold a mapping of field: value", where=str(p))
    return values


def parse(cls: type[C] = TrainConfig, args: Optional[Sequence[str]] = None) -> C:  # type: ignore[assignment]
    """Build a ``cls`` from defaults (class, recipe) < ``--config FILE`` < command-line flags."""
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(args)

    parser = HfArgumentParser(cls, description=(cls.__doc__ or "").strip())
    parser.add_argument(
        "--config", default=None, help="YAML or JSON file of field: value overrides (applied before CLI flags)."
    )
    helps = _base_help()
    for action in parser._actions:  # a recipe's re-declared field keeps the base field's help and choices
        name = action.dest
        if name in helps and not action.help:
            action.help = helps[name]
        if name in _choices() and action.choices is None:
            action.choices = list(_choices()[name])
    _add_aliases(parser)
    if known.config:
        values = _read_config_file(known.config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown field(s) {unknown}",
                where=known.config,
                fix=f"valid fields are listed by --help; e.g. {sorted(names)[:5]} ...",
            )
        parser.set_defaults(**values)
    namespace = parser.parse_args(rest)
    kwargs = _apply_aliases({k: v for k, v in vars(namespace).items() if k != "config"}, rest)
    try:
        return cls(**kwargs)
    except TypeError as err:  # e.g. a string where a number belongs, from a YAML/JSON file
        raise ConfigError(f"wrong value type: {err}", where=known.config or "command line") from None


def _add_aliases(parser: argparse.ArgumentParser) -> None:
    """run_ner.py's flag names, listed in --help; each parses exactly as the field it stands for."""
    from transformers.hf_argparser import string_to_bool

    group = parser.add_argument_group("run_ner.py names (aliases of the fields above)")
    actions = {a.dest: a for a in parser._actions}
    for alias, name in RUN_NER_ALIASES.items():
        a = actions[name]
        group.add_argument(
            f"--{alias}",
            dest=f"alias:{alias}",
            type=a.type,
            nargs=a.nargs,
            const=a.const,
            choices=a.choices,
            default=None,
            metavar="BOOL" if a.nargs == "?" else alias.upper(),
            help=f"same as --{name}",
        )
    for flag in PRECISION_FLAGS:
        group.add_argument(
            f"--{flag}",
            dest=f"alias:{flag}",
            type=string_to_bool,
            nargs="?",
            const=True,
            default=None,
            metavar="BOOL",
            help=f"same as --mixed_precision {flag}",
        )


def _given(flag: str, argv: Sequence[str]) -> bool:
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in argv)


def _apply_aliases(kwargs: dict[str, Any], argv: Sequence[str]) -> dict[str, Any]:
    """Move alias values onto their fields; an alias and its field both given is an error."""
    for alias, name in RUN_NER_ALIASES.items():
        value = kwargs.pop(f"alias:{alias}")
        if value is None:
            continue
        if _given(name, argv):
            raise ConfigError(
                f"--{alias} and --{name} are the same setting, given twice", where="command line", fix="pass one"
            )
        kwargs[name] = value
    wanted = [flag for flag in PRECISION_FLAGS if kwargs.pop(f"alias:{flag}")]
    if wanted:
        if len(wanted) > 1 or _given("mixed_precision", argv):
            raise ConfigError(
                f"conflicting precision flags: {', '.join('--' + f for f in wanted)}"
                + (" and --mixed_precision" if _given("mixed_precision", argv) else ""),
                where="command line",
                fix="pass one of --mixed_precision no|fp16|bf16, --fp16 or --bf16",
            )
        kwargs["mixed_precision"] = wanted[0]
    return kwargs
