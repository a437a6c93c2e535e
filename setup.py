"""MTLSER: multi-task speech emotion recognition (SpeechBrain recipe + library)."""

from setuptools import find_packages, setup

setup(
    name="mtlser",
    version="0.1.0",
    description=(
        "Multi-task speech emotion recognition: one wav2vec 2.0 encoder, "
        "emotion + CTC ASR + speaker heads (SpeechBrain recipe for IEMOCAP)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mtlser_lobes", "mtlser_lobes.*"]),
    # Pinned to a combination verified together (torchaudio must match torch
    # exactly; SpeechBrain 1.1 imports torchaudio at import time).
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "speechbrain==1.1.2",
        "transformers==5.24.0",
        "huggingface_hub==2.4.0",
        "safetensors==0.8.0",
        "PyYAML==6.0.4",
        "sentencepiece==0.2.3",
        "hyperpyyaml==1.2.3",
        "soundfile==0.14.0",
        "scikit-learn==1.9.1",
        "scipy==1.17.1",
        "numpy==2.4.6",
        "tqdm==4.70.1",
        # plots of the cross-validation studies (run_experiments.py)
        "matplotlib==3.11.2",
        # espeak-ng's library and voices, for the synthetic demo corpus (no root needed)
        "espeakng-loader==0.2.4",
    ],
    extras_require={
        # run_experiments.py --launcher submitit (Slurm) / --launcher ray
        "slurm": ["submitit==1.5.4"],
        "ray": ["ray==2.60.0"],
        # mtlser-export --onnx (exporter) and mtlser-infer --backend onnx (runtime)
        "onnx": ["onnxruntime==1.32.0", "onnx==1.23.2", "onnxscript==0.7.2"],
        # mtlser-demo, the browser demo (Gradio; gradio 6.31 needs pillow < 13: pip picks 12.3)
        "demo": ["gradio==6.31.0", "gradio_client==2.7.2"],
        # use_tensorboard: True in hparams/mtl.yaml
        "tensorboard": ["tensorboard==2.21.0"],
        # pytest-xdist runs the tests in two workers; submitit's local executor exercises the
        # cluster launcher in the tests; the ONNX, demo and
        # TensorBoard tests need their extras, and the browser test drives Debian's chromium
        # through Playwright
        "test": [
            "pytest==9.2.0", "pytest-xdist==3.8.0", "submitit==1.5.4",
            "onnxruntime==1.32.0", "onnx==1.23.2", "onnxscript==0.7.2",
            "gradio==6.31.0", "gradio_client==2.7.2", "tensorboard==2.21.0", "playwright==1.65.2",
        ],
    },
    entry_points={
        "console_scripts": [
            "mtlser-tiny-encoder=mtlser_lobes.demo.tiny_encoder:main",
            "mtlser-demo-corpus=mtlser_lobes.demo.demo_corpus:main",
            "mtlser-export=mtlser_lobes.inference.cli:export_main",
            "mtlser-infer=mtlser_lobes.inference.cli:main",
            "mtlser-demo=mtlser_lobes.inference.demo_app:main",
        ]
    },
)
