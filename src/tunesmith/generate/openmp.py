"""One OpenMP team per process: hand the model over to the engine's worker thread at full speed.

PyTorch's CPU kernels run on OpenMP. GNU OpenMP (``libgomp``, the runtime Linux wheels of torch
ship) gives every thread that starts a parallel region a team of helper threads of its own, kept
for the life of that thread. While a process has no more OpenMP threads than cores, idle helpers
spin for a few milliseconds before they sleep, so the next parallel region (the next layer's
matmul) starts at once. Once a second thread has run torch code, the helpers outnumber the cores
and libgomp cuts the spinning to ~100 iterations: every region then wakes its helpers from sleep.

The server hits exactly that case: the thread that loads the model (and, in ``demo
--operate``, runs evals and training) owns one team, and the engine's worker thread, which does
all the serving, gets a second. Measured on this 2-core machine (benchmarks/bench_openmp.py): the
starter's forward pass on the worker thread was 1.15-1.2x slower than on the loading thread, and
the served confidence scorer up to 1.5x. :func:`release_thread_pool`, called by the loading
thread once the worker owns the model, frees the loading thread's team (``omp_pause_resource_all``
with ``omp_pause_hard``, which libgomp implements for the calling thread's pool): the worker's
team is then the only one and spins again. Should the loading thread run torch code later, it
simply gets a new team.

Only libgomp is touched; with another OpenMP runtime (LLVM's ``libomp`` on macOS, where a hard
pause would stop every thread's runtime) or none, this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t: free the threads (soft keeps them allocated)


_found: ctypes.CDLL | None = None  # the handle, once found (it stays mapped for the process's life)


def _loaded_libgomp() -> ctypes.CDLL | None:
    """The libgomp this process already has mapped (torch's own copy, usually), else None."""
    global _found
    if _found is not None:
        return _found
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if Path(path).name.startswith("libgomp") and ".so" in path:
            try:
                _found = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)  # already loaded: the same handle
            except OSError:
                return None
            return _found
    return None


def release_thread_pool() -> bool:
    """Free the calling thread's OpenMP helper threads (libgomp only). True if they were freed
    (or there were none); False where there is nothing to do or the runtime refused (it does
    while the caller is inside a parallel region)."""
    lib = _loaded_libgomp()
    if lib is None:
        return False
    try:
        pause = lib.omp_pause_resource_all
    except AttributeError:  # a libgomp older than OpenMP 5.0 (GCC 9)
        return False
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    ok = pause(OMP_PAUSE_HARD) == 0
    if not ok:
        log.debug("libgomp kept this thread's pool (omp_pause_resource_all refused)")
    return ok
