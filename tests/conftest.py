import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped cleanly, with a reason, on machines without CUDA (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Qwen2 with a byte-level tokenizer and chat template (tests/tiny_qwen.py)."""
    from tiny_qwen import save_tiny_qwen

    return save_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="module")
def maspo_actor_config():
    """verl's ActorConfig for `algorithm=maspo`, built as verl's engine worker builds it."""
    from verl_config import build_actor_config, compose_ours

    return build_actor_config(compose_ours())
