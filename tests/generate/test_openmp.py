"""Freeing a thread's OpenMP team (the server hands the model to its worker thread)."""
import sys
import threading

import pytest
import torch

from tunesmith.generate import openmp


def _matmul() -> torch.Tensor:
    a = torch.arange(256 * 256, dtype=torch.float32).reshape(256, 256) / 1e4
    return a @ a


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libgomp is the Linux runtime")
def test_the_callers_team_is_freed_and_torch_still_computes_the_same():
    before = _matmul()  # this thread now owns a team (torch's CPU kernels run on OpenMP)
    if openmp._loaded_libgomp() is None:
        pytest.skip("this torch build does not use libgomp")
    assert openmp.release_thread_pool() is True
    assert torch.equal(_matmul(), before)  # a new team is made on demand
    results: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: results.append(_matmul()))
    worker.start()
    worker.join()
    assert torch.equal(results[0], before)


def test_without_libgomp_it_does_nothing(monkeypatch):
    monkeypatch.setattr(openmp, "_loaded_libgomp", lambda: None)
    assert openmp.release_thread_pool() is False


def test_a_libgomp_without_pause_is_left_alone(monkeypatch):
    class OldRuntime:  # OpenMP 4.5: no omp_pause_resource_all
        pass

    monkeypatch.setattr(openmp, "_loaded_libgomp", lambda: OldRuntime())
    assert openmp.release_thread_pool() is False
