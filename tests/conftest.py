"""Fixtures shared by the test modules."""
import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one torch thread and do not oversubscribe a shared
    machine; the module's previous thread count is restored after it."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, training split (1437 images)."""
    from bnn_toroid import datasets
    return datasets.load("digits")
