"""The worker's batching on a fake engine: who shares an engine call, in what order, how the
answers are split back, and the bounded queue."""

from __future__ import annotations

import threading

import pytest

from tunesmith.generate import Generation, GenerationConfig
from tunesmith.serve.scheduler import Job, QueueFull, Scheduler, ShuttingDown, batch_key


class FakeEngine:
    max_batch_size = 4

    def __init__(self):
        self.calls: list[tuple] = []
        self.gate = threading.Event()

    def generate(self, convs, cfg, *, adapter=None, on_token=None):
        self.gate.wait(10)
        self.calls.append((adapter, [c[0]["content"] for c in convs], cfg.seed))
        for i in range(len(convs)):
            on_token(i, [7])
        return [Generation(f"{adapter}:{c[0]['content']}", 1, 1, "stop", 0.0, [7]) for c in convs]


def job(text, adapter=None, n=1, cfg=GenerationConfig(), seed=None, rid="r"):
    key = batch_key(adapter, cfg, seeded=seed is not None, request_id=rid)
    return Job([{"role": "user", "content": text}], n, adapter, cfg, key,
               random_seed=seed is None and not cfg.greedy)


def test_waiting_jobs_with_the_same_settings_share_one_call_in_arrival_order():
    engine = FakeEngine()
    sched = Scheduler(engine, max_queue=8)
    sched.start()
    try:
        first = sched.submit(job("first"))
        jobs = [sched.submit(j) for j in (job("a", "x"), job("b", "y"), job("c", "x"), job("d", "x", n=3),
                                          job("e", "x", cfg=GenerationConfig(max_new_tokens=5)))]
        engine.gate.set()
        results = [j.future.result(10) for j in [first, *jobs]]
    finally:
        sched.stop()
    assert [(a, texts) for a, texts, _ in engine.calls] == [
        (None, ["first"]), ("x", ["a", "c"]), ("y", ["b"]), ("x", ["d", "d", "d"]), ("x", ["e"])]
    assert [r[0].text for r in results] == ["None:first", "x:a", "y:b", "x:c", "x:d", "x:e"]
    assert len(results[4]) == 3


def test_seeded_sampling_runs_alone_and_unseeded_sampling_shares_a_fresh_seed():
    hot = GenerationConfig(temperature=1.0, seed=3)
    assert batch_key("x", hot, seeded=True, request_id="a") != batch_key("x", hot, seeded=True, request_id="b")
    assert batch_key("x", hot, seeded=False, request_id="a") == batch_key("x", hot, seeded=False, request_id="b")
    greedy = GenerationConfig(seed=1)
    assert batch_key("x", greedy, seeded=True, request_id="a") == batch_key("x", GenerationConfig(), seeded=False,
                                                                            request_id="b")
    engine = FakeEngine()
    engine.gate.set()
    sched = Scheduler(engine)
    sched.start()
    try:
        sched.submit(job("s", cfg=hot, seed=3)).future.result(10)
        sched.submit(job("u", cfg=hot)).future.result(10)
    finally:
        sched.stop()
    assert engine.calls[0][2] == 3 and engine.calls[1][2] != 3


def test_a_full_queue_refuses_and_stopping_fails_the_waiting_jobs():
    sched = Scheduler(FakeEngine(), max_queue=2)  # not started: jobs wait
    waiting = [sched.submit(job("a")), sched.submit(job("b"))]
    with pytest.raises(QueueFull):
        sched.submit(job("c"))
    sched.stop()
    for j in waiting:
        with pytest.raises(ShuttingDown):
            j.future.result(1)


def test_streaming_callbacks_get_the_jobs_own_choice_index():
    engine = FakeEngine()
    engine.gate.set()
    seen = []
    sched = Scheduler(engine)
    j = job("a", n=2)
    j.on_token = lambda choice, ids: seen.append((choice, list(ids)))
    sched.submit(job("before-not-started"))
    sched.submit(j)
    sched.start()
    try:
        j.future.result(10)
    finally:
        sched.stop()
    assert seen == [(0, [7]), (1, [7])]


def test_after_step_runs_on_the_worker_before_the_next_call_and_a_failure_keeps_the_answers():
    """The server's confidence scoring runs as a job's ``after`` step: on the worker thread,
    between engine calls (so requests arriving meanwhile wait and batch), its result in
    ``extra`` when the future resolves; a failing step costs only its result."""
    engine = FakeEngine()
    order: list[str] = []
    worker: list[str] = []
    real_generate = engine.generate

    def generate(convs, cfg, **kw):
        order.append("generate " + ",".join(c[0]["content"] for c in convs))
        return real_generate(convs, cfg, **kw)

    engine.generate = generate
    sched = Scheduler(engine)

    def scored(name):
        def step(answers):
            worker.append(threading.current_thread().name)
            order.append(f"after {name}")
            if name == "b":
                raise RuntimeError("scoring broke")
            return [f"{name}:{a.text}" for a in answers]
        return step

    a, b = job("a"), job("b")
    a.after, b.after = scored("a"), scored("b")
    late = job("late")
    sched.submit(a)
    sched.submit(b)
    sched.start()
    try:
        engine.gate.set()
        assert a.future.result(10)[0].text == "None:a"
        sched.submit(late)
        assert b.future.result(10)[0].text == "None:b"  # the answers go without the failed step
        late.future.result(10)
    finally:
        sched.stop()
    assert a.extra == ["a:None:a"] and b.extra is None and late.extra is None
    assert order[:3] == ["generate a,b", "after a", "after b"]
    assert worker == ["tunesmith-engine", "tunesmith-engine"]


class TimedEngine(FakeEngine):
    """Each call takes ``seconds`` (the gate open)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.gate.set()

    def generate(self, convs, cfg, *, adapter=None, on_token=None):
        import time

        time.sleep(self.seconds)
        return super().generate(convs, cfg, adapter=adapter, on_token=on_token)


def _closed_loop(sched, clients: int, rounds: int, stagger: float) -> None:
    """``clients`` threads, each sending its next request ``stagger * i`` s after its answer
    (clients whose next requests arrive a few milliseconds apart, as over HTTP)."""
    import time

    def client(i: int) -> None:
        for r in range(rounds):
            sched.submit(job(f"{i}-{r}")).future.result(10)
            time.sleep(stagger * i)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


@pytest.mark.parametrize("wait", [0.0, 0.2])
def test_batch_wait_keeps_concurrent_clients_in_full_calls(wait):
    engine = TimedEngine(0.05)
    sched = Scheduler(engine, batch_wait=wait)
    sched.start()
    try:
        _closed_loop(sched, clients=4, rounds=6, stagger=0.01)
    finally:
        sched.stop()
    sizes = [len(texts) for _, texts, _ in engine.calls]
    assert sum(sizes) == 24
    if wait:  # after the first burst (and before the first client ends) every call holds all four
        assert sizes[1:-1] == [4] * (len(sizes) - 2), sizes
    else:  # taken at once: the first arrival runs (nearly) alone
        assert len(sizes) > 7, sizes


def test_batch_wait_never_delays_a_lone_client():
    import time

    engine = TimedEngine(0.0)
    sched = Scheduler(engine, batch_wait=5.0)
    sched.start()
    try:
        t0 = time.perf_counter()
        for r in range(5):
            sched.submit(job(f"x{r}")).future.result(10)
        elapsed = time.perf_counter() - t0
    finally:
        sched.stop()
    assert elapsed < 1.0 and len(engine.calls) == 5


def test_a_job_cancelled_during_the_batch_wait_leaves_the_worker_running():
    import time

    engine = TimedEngine(0.0)
    sched = Scheduler(engine, batch_wait=0.3)
    sched._recent.append(4)  # as after concurrent traffic: a part-full batch waits
    sched.start()
    try:
        gone = sched.submit(job("gone"))
        time.sleep(0.1)
        gone.cancelled = True  # its client left while the worker held the batch open
        time.sleep(0.4)
        assert sched.submit(job("next")).future.result(10)[0].text == "None:next"
    finally:
        sched.stop()
    assert [texts for _, texts, _ in engine.calls] == [["next"]]


def test_clients_that_queued_during_a_call_wait_for_the_ones_it_answered():
    """Two clients start while the first two's call runs: at its end their jobs are old. Timed
    from their arrival the batch wait would be over, and the two pairs would take turns in
    half-full calls; timed from the answers going back, every later call holds all four."""
    import time

    engine = TimedEngine(0.3)
    sched = Scheduler(engine, batch_wait=0.2)
    sched.start()

    def client(i: int) -> None:
        time.sleep(0.1 if i >= 2 else 0.0)  # clients 2 and 3 arrive during the first call
        for r in range(4):
            sched.submit(job(f"{i}-{r}")).future.result(10)
            time.sleep(0.005 * i)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        sched.stop()
    sizes = [len(texts) for _, texts, _ in engine.calls]
    assert sum(sizes) == 16
    assert sizes[0] <= 2 and sizes[1:4] == [4, 4, 4], sizes


def test_every_after_step_of_a_call_runs_before_any_answer_goes_back():
    """A response sent while the worker still scores the call's other answers takes a core
    from the scorer's OpenMP team: the worker finishes every after-step, then resolves the
    futures, in job order."""
    engine = FakeEngine()
    events: list[str] = []
    sched = Scheduler(engine)
    jobs = [job(name) for name in "abc"]
    for j in jobs:
        j.after = (lambda name: lambda answers: events.append(f"after {name}"))(j.conversation[0]["content"])
        j.future.add_done_callback((lambda name: lambda _: events.append(f"back {name}"))(j.conversation[0]["content"]))
        sched.submit(j)
    sched.start()
    try:
        engine.gate.set()
        for j in jobs:
            j.future.result(10)
    finally:
        sched.stop()
    assert events == ["after a", "after b", "after c", "back a", "back b", "back c"]
