"""`tunesmith train` under `accelerate launch`: two CPU processes (DDP over gloo).

What must hold for the trainer to scale out unchanged:
  * 2 ranks x grad_accum 1 give the same weights as 1 process x grad_accum 2 (same global
    micro-batches per optimizer step, loss normalised by the step's global trained tokens);
  * an epoch whose last step has fewer micro-batches than ranks does not hang (the idle
    rank still joins the gradient all-reduce);
  * only rank 0 writes: one artifact, one metrics line per step, one TensorBoard log,
    checkpoints without leftovers;
  * a run SIGKILLed mid-epoch and resumed under 2 processes ends with the same weights as an
    uninterrupted 2-process run, dropout included (every rank's RNG is restored).

Each launch starts two Python processes (~30 s on 2 cores); a timeout kills the whole process
tree, so a rank stuck in a collective fails the test instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.test_trainer import _trainer, adapter_weights, make_project
from tunesmith.config import load_config
from tunesmith.train.recipe import train
from tunesmith.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
DDP_CPU = EXAMPLES / "ddp_cpu.yaml"
LAUNCH_TIMEOUT_S = 300
WORLD = 2
# 10 training examples pack (max_length 128, two per row) into 5 rows = 3 micro-batches of 2
# rows: an odd count, so each epoch ends with a one-micro-batch step that leaves rank 1 idle.
N_RECORDS = 12
SETTINGS = {"batch_size": 2, "max_length": 128, "packing": True, "max_steps": 6, "save_every": 2,
            "eval_every": 2, "precision": "fp32", "lr": 0.01, "lora": {"dropout": 0.0}}


def project(root: Path, **overrides: object) -> Path:
    return make_project(root, json.dumps(SETTINGS | overrides), n=N_RECORDS)


def _kill_tree(pid: int) -> None:
    """torchrun starts each rank in its own session: kill descendants one by one, by pid."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def launch(cfg_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` WORLD CPU processes of `tunesmith train --json`, with a hard timeout."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CPU),
           "--num_processes", str(WORLD), "-m", "tunesmith.cli", "train", "-c", str(cfg_path), "--json", *args]
    # No GPU even where one exists (gloo on CPU); one thread per rank on a 2-core machine.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cfg_path.parent)  # stray relative writes land in the tmp project
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"accelerate launch still running after {LAUNCH_TIMEOUT_S} s (a rank stuck in a "
                    f"collective?); stderr tail:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def exported_summary(proc: subprocess.CompletedProcess) -> dict:
    """The JSON summary of the one rank that exported; other ranks may print model_id null."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    exported = [r for r in rows if r["model_id"]]
    assert len(exported) == 1, f"expected exactly one exporting rank, got {rows}"
    return exported[0]


def weights_of(summary: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(summary["path"]) / "adapter" / "adapter_model.safetensors"))


def step_events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "step"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Run A: one process, 2 micro-batches accumulated per step."""
    cfg = load_config(project(tmp_path_factory.mktemp("single"), grad_accum=2))
    events: list[dict] = []
    result = train(cfg, log=events.append)
    return cfg, result, [e for e in events if e.get("event") == "step"]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Run B: two processes, one micro-batch each per step (same global batch as A)."""
    cfg_path = project(tmp_path_factory.mktemp("ddp"), grad_accum=1, tracking={"mlflow": False, "tensorboard": True})
    start = time.perf_counter()
    proc = launch(cfg_path)
    summary = exported_summary(proc)
    print(f"2-process launch: {time.perf_counter() - start:.1f} s")
    return cfg_path, summary


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(single, ddp, tmp_path):
    cfg, result_a, steps_a = single
    _, summary_b = ddp
    trainer = _trainer(cfg, tmp_path / "plan")
    assert len(trainer.epoch_batches(0)) % WORLD == 1  # the idle-rank step is exercised
    steps_b = step_events(Path(summary_b["run_dir"]))
    assert summary_b["metrics"]["steps"] == SETTINGS["max_steps"] == len(steps_b)
    assert summary_b["metrics"]["epochs_started"] >= 2  # crossed epoch ends
    for a, b in zip(steps_a, steps_b, strict=True):
        assert (a["trained_tokens"], a["tokens"]) == (b["trained_tokens"], b["tokens"])  # same data
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    wa, wb = adapter_weights(result_a), weights_of(summary_b)
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    moved = max(float(v.abs().max()) for k, v in wa.items() if "lora_B" in k)  # B starts at 0
    print(f"max |single - ddp| over adapter weights: {diff:.3g} (largest lora_B entry {moved:.3g})")
    assert moved > 1e-3 and diff <= 1e-5


@pytest.mark.slow
def test_only_rank_zero_writes_files(ddp):
    cfg_path, summary = ddp
    ws = Workspace(load_config(cfg_path).workspace_dir)
    assert [a.id for a in ws.list("model")] == [summary["model_id"]]
    assert [p.name for p in (ws.root / "artifacts" / "model").iterdir()] == [summary["model_id"]]
    assert list((ws.root / "tmp").iterdir()) == []  # no staging debris from a second exporter
    run_dir = Path(summary["run_dir"])
    assert [p.name for p in (ws.root / "runs").iterdir()] == [run_dir.name]
    assert [e["step"] for e in step_events(run_dir)] == list(range(1, SETTINGS["max_steps"] + 1))
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts and all(name.startswith("step-") for name in ckpts), ckpts  # no .tmp leftovers


@pytest.mark.slow
def test_sigkill_then_resume_under_two_processes_matches_an_uninterrupted_run(tmp_path):
    """Dropout on: every rank's RNG must come back, not only rank 0's."""
    extra = {"grad_accum": 1, "packing": False, "lora": {"dropout": 0.1}}
    straight = exported_summary(launch(project(tmp_path / "straight", **extra)))
    cfg_path = project(tmp_path / "killed", **extra)
    killed = launch(cfg_path, env={"TUNESMITH_TEST_KILL_AT_STEP": "3"})  # after the step-2 checkpoint
    assert killed.returncode != 0, killed.stdout[-2000:]
    run_dirs = list((load_config(cfg_path).workspace_dir / "runs").iterdir())
    assert [p.name for p in (run_dirs[0] / "checkpoints").iterdir()] == ["step-000002"]
    resumed = exported_summary(launch(cfg_path, "--resume"))
    assert resumed["metrics"]["steps"] == SETTINGS["max_steps"]
    wa, wb = weights_of(straight), weights_of(resumed)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize(("name", "kind"), [("ddp_cpu", "MULTI_GPU"), ("ddp_gpu", "MULTI_GPU"),
                                            ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_example_accelerate_configs_load(name, kind):
    """accelerate rejects unknown keys; a renamed option in a new release fails here first."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == WORLD
    assert config.mixed_precision == "no"  # train.precision decides, not the launcher
