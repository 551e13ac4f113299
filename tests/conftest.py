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
