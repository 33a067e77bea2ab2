"""Kernel-test setup: Triton's interpreter on machines without CUDA, and NaN-filled `torch.empty` for the Triton tests.

TRITON_INTERPRET must be set before any `@triton.jit` is decorated, i.e. before a kernel module is imported: this
conftest is imported before the test modules, so it is set here.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def nan_empty(request, monkeypatch):
    """In test_triton_* modules, torch.empty returns NaNs: an output row a kernel forgets to write fails the test."""
    if not request.module.__name__.rpartition(".")[2].startswith("test_triton"):
        yield
        return
    real_empty = torch.empty

    def empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        if out.is_floating_point() or out.is_complex():
            out.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch, "empty", empty)
    yield
