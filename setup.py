"""maspo-verl: MASPO and its baselines as a plugin for stock verl."""

from setuptools import find_packages, setup

# The verl releases whose plugin entry points and policy-loss contract this package relies on.
VERL_RANGE = ">=0.9.1,<0.10"
MATH = ["math-verify[antlr4_9_3]>=0.9.0,<0.10"]


def verl_extra(name):
    return [f"verl[{name}]{VERL_RANGE}"]


setup(
    name="maspo-verl",
    version="0.1.0",
    description="MASPO (Mass-Adaptive Soft Policy Optimization) and its baselines for stock verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["maspo_verl", "maspo_verl.*"])
    + ["maspo_verl_configs", "hydra_plugins.maspo_verl"],
    # The Hydra presets live in the repository's configs/ folder and ship as a data-only
    # package, so the Hydra search-path plugin can point at them without importing verl.
    package_dir={"maspo_verl_configs": "configs"},
    package_data={"maspo_verl_configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    # matplotlib: the quickstart's and the report's plots are part of the commands, not extras
    install_requires=[*verl_extra("verl-core"), "torch>=2.4", "matplotlib"],
    extras_require={
        # What a GPU user adds, mirroring verl's own extras of the same names.
        "vllm": verl_extra("vllm"),
        "sglang": verl_extra("sglang"),
        "flash-attn": verl_extra("flash-attn-cu130torch211"),
        "fsdp": verl_extra("fsdp"),
        "megatron": verl_extra("megatron"),
        # the math reward (maspo_verl.rewards); antlr 4.9.3 is the one Hydra/omegaconf need
        "math": MATH,
        "test": ["pytest>=7", "hypothesis>=6", "setuptools>=70.1", *MATH],
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
        ],
    },
)
