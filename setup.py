"""maspo-verl: MASPO and its baselines as a plugin for stock verl."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# One version source: maspo_verl/__init__.py (read as text, so building never imports torch or verl).
VERSION = re.search(r'^__version__ = "([^"]+)"', Path("maspo_verl/__init__.py").read_text(), re.M).group(1)

# The verl releases whose plugin entry points and policy-loss contract this package relies on.
VERL_RANGE = ">=0.9.1,<0.10"
MATH = ["math-verify[antlr4_9_3]>=0.9.0,<0.10"]


def verl_extra(name):
    return [f"verl[{name}]{VERL_RANGE}"]


setup(
    name="maspo-verl",
    version=VERSION,
    description="MASPO (Mass-Adaptive Soft Policy Optimization) and its baselines for stock verl",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    project_urls={"Paper": "https://arxiv.org/abs/2602.17550"},
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    python_requires=">=3.10",
    packages=find_packages(include=["maspo_verl", "maspo_verl.*"]) + ["maspo_verl_configs", "hydra_plugins.maspo_verl"],
    # The Hydra presets live in the repository's configs/ folder and ship as a data-only
    # package, so the Hydra search-path plugin can point at them without importing verl.
    package_dir={"maspo_verl_configs": "configs"},
    package_data={"maspo_verl_configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    # matplotlib: the quickstart's and the report's plots are part of the commands, not extras;
    # scipy: the benchmark's statistics; tqdm: progress with an ETA (named, not borrowed from transformers);
    # filelock: one kit build at a time per folder
    install_requires=[*verl_extra("verl-core"), "torch>=2.4", "matplotlib", "scipy", "tqdm", "filelock"],
    extras_require={
        # What a GPU user adds, mirroring verl's own extras of the same names.
        "vllm": verl_extra("vllm"),
        "sglang": verl_extra("sglang"),
        "flash-attn": verl_extra("flash-attn-cu130torch211"),
        "fsdp": verl_extra("fsdp"),
        "megatron": verl_extra("megatron"),
        # the math reward (maspo_verl.rewards); antlr 4.9.3 is the one Hydra/omegaconf need
        "math": MATH,
        # build and twine: the wheel test builds and checks the package as users get it;
        # ruff: lint and format (scripts/test.sh runs it; pinned so formatting does not drift)
        # pytest-xdist: the suite runs its test files on two processes (scripts/test.sh);
        # pytest 9.2 renamed the node id xdist 3.8's loadgroup appends the group to, so there every
        # file's tests (and its trainer runs) spread over both workers (tests/test_packaging.py)
        "test": [
            "pytest>=7,<9.2",
            "pytest-xdist>=3.5",
            "hypothesis>=6",
            "setuptools>=70.1",
            "build",
            "twine>=6,<7",
            "ruff>=0.17,<0.18",
            *MATH,
        ],
    },
    entry_points={
        # verl >= 0.9 imports every `verl.plugins` entry point on `import verl`, in every
        # process (driver, TaskRunner, Ray workers); importing the module registers everything.
        "verl.plugins": ["maspo_verl = maspo_verl.verl_plugin"],
        "console_scripts": [
            "maspo-verl-train = maspo_verl.main_ppo:cli",
            "maspo-verl-data = maspo_verl.data.math_sets:main",
            "maspo-verl-eval = maspo_verl.eval.__main__:main",
            "maspo-verl-report = maspo_verl.report.__main__:main",
            "maspo-verl-bench = maspo_verl.bench.__main__:cli",
            "maspo-verl-rewards = maspo_verl.rewards.__main__:main",
        ],
    },
)
