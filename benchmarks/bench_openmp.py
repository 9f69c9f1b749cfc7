"""A forward pass on a second thread, with and without the first thread's OpenMP team freed.

    python benchmarks/bench_openmp.py [ROUNDS]     # default 10 passes per measurement

The server's situation: one thread loads the model and runs torch code (here: a warm-up pass),
then a worker thread runs every forward pass. libgomp gives each of the two threads a team of
helpers; more OpenMP threads than cores make it cut the helpers' spinning, so every parallel
region wakes them from sleep. The baseline is the worker as it was (the loading thread's team
still there); the change frees it first (``generate.openmp.release_thread_pool``). The starter
model (float32), one 300-token sequence per pass. Prints seconds per pass and the ratio; the
main thread's own time is printed for reference.
"""
import sys
import threading
import time

import torch

from tunesmith.generate.openmp import release_thread_pool
from tunesmith.models.loading import load_model, resolve_model

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
model = load_model(resolve_model("starter"), dtype="float32", device="cpu").requires_grad_(False).eval()
ids = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(0))


def per_pass() -> float:
    with torch.inference_mode():
        model(input_ids=ids[:, :64])  # warm-up
        t0 = time.perf_counter()
        for _ in range(rounds):
            model(input_ids=ids)
    return (time.perf_counter() - t0) / rounds


def on_worker() -> float:
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(per_pass()))
    t.start()
    t.join()
    return out[0]


print(f"cores {torch.get_num_threads()}, {rounds} passes of 300 tokens each")
main = per_pass()
print(f"loading thread itself: {main:.3f} s per pass")
times: dict[str, list[float]] = {"kept": [], "freed": []}
for _ in range(2):  # alternate, twice: the loading thread's team is rebuilt by its warm-up pass
    per_pass()
    times["kept"].append(on_worker())
    per_pass()
    freed = release_thread_pool()
    times["freed"].append(on_worker())
kept, new = (sum(v) / len(v) for v in times.values())
print(f"worker, loading thread's team kept (baseline): {kept:.3f} s per pass")
print(f"worker, loading thread's team freed: {new:.3f} s per pass (freed: {freed})")
print(f"speed-up {kept / new:.2f}x")
