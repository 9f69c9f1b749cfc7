"""The ``tunesmith`` command: a thin typer shell over the stage functions.

Each command parses its options, calls one plain function, and prints a summary (a rich table,
or with ``--json`` one JSON object on stdout). User mistakes (TunesmithError) print a clear
message on stderr and exit with status 2, never a traceback. Any other exception prints one line
(what failed, in which stage, its message) and the log file that holds the full traceback; exit
status 1. ``tunesmith --debug COMMAND`` shows the traceback inline instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tunesmith import __version__, deps
from tunesmith.config import CONFIG_FILENAME, Config, config_schema
from tunesmith.config import load_config as _load_config
from tunesmith.errors import TunesmithError

app = typer.Typer(
    name="tunesmith",
    help="Turn raw domain records and a base LLM into a specialised model you can trust.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate the config.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to tunesmith.yaml (or its folder).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON summary on stdout.")]


class _Session:
    """What the error handler needs to know about the command that is running."""

    debug = False
    workspace: Path | None = None  # set once the config is loaded: error logs go there


def load_config(path: Path) -> Config:
    cfg = _load_config(path)
    _Session.workspace = cfg.workspace_dir
    return cfg


def _error_log(command: str, exc: BaseException) -> Path | None:
    """Write the full traceback to ``<workspace>/logs/`` (or the cache folder before a config
    is known); None if nothing could be written."""
    if _Session.workspace is not None:
        folder = _Session.workspace / "logs"
    else:
        from tunesmith.models.loading import CACHE_ENV

        folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tunesmith") / "logs"
    path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"tunesmith {__version__} {command}: {' '.join(sys.argv[1:])}\n\n"
                        + "".join(traceback.format_exception(exc)), encoding="utf-8")
    except OSError:
        return None
    return path


def _unexpected(command: str, exc: Exception) -> None:
    """One line: what failed, where, the exception's own message, and where the traceback is."""
    stage = getattr(exc, "tunesmith_stage", None)
    where = f"stage '{stage}' of `tunesmith {command}`" if stage else f"`tunesmith {command}`"
    hint = deps.hint_for(exc)
    if _Session.debug:
        err.print_exception()
    log = None if _Session.debug else _error_log(command, exc)
    tail = "" if log is None else f" (full traceback: {log}; `tunesmith --debug {command} ...` shows it here)"
    message = hint or f"{type(exc).__name__}: {exc}"
    err.print(f"[bold red]error:[/] {escape(where)} failed: {escape(message)}{escape(tail)}",
              highlight=False, soft_wrap=True)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TunesmithError into a clean message + exit code 2; anything else into one line,
    a log file with the traceback and exit code 1. Never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        command = fn.__name__.removesuffix("_command")
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TunesmithError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:
            _unexpected(command, exc)
            raise typer.Exit(1) from None

    return wrapper


def _emit_json(data: dict[str, Any]) -> None:
    if _is_secondary_rank():
        return  # under `accelerate launch` only rank 0 reports
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def _is_secondary_rank() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) != 0


class _RichProgress:
    """Adapter from the pipeline's Progress protocol to rich bars (one per stage)."""

    def __init__(self, console: Console):
        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("records"), TimeElapsedColumn(), console=console, transient=False,
        )
        self.task: Any = None

    def start(self, stage: str, total: int | None = None) -> None:
        if not self.bar.live.is_started:
            self.bar.start()
        self.task = self.bar.add_task(stage, total=total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def finish(self) -> None:
        task = self.bar.tasks[-1]
        self.bar.update(self.task, total=task.completed)

    def close(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    _Session.debug = debug
    if version:
        out.print(f"tunesmith {__version__}")
        raise typer.Exit()


# ---------------------------------------------------------------------------- init
@app.command()
@_user_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Project folder to create.")] = Path("."),
    template: Annotated[str | None, typer.Option(help="Sample project to generate (support-triage).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the generated sample data.")] = 7,
    force: Annotated[bool, typer.Option(help="Overwrite an existing tunesmith.yaml.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented tunesmith.yaml, or a whole sample project with --template."""
    target = directory / CONFIG_FILENAME
    if target.exists() and not force:
        raise TunesmithError(f"{target} already exists; use --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    if template:
        from tunesmith.sample import TEMPLATES

        if template not in TEMPLATES:
            raise TunesmithError(f"unknown template '{template}'; must be one of: {', '.join(TEMPLATES)}")
        summary = TEMPLATES[template](directory, seed=seed, overwrite=force)
    else:
        from importlib.resources import files

        target.write_text(files("tunesmith").joinpath("templates/tunesmith.yaml").read_text(encoding="utf-8"))
        summary = {"files": [str(target)]}
    if as_json:
        _emit_json({"config": str(target), **summary})
        return
    out.print(f"[green]wrote[/] {target}" + (f" and the '{template}' sample project" if template else ""))
    out.print(f"next: [bold]tunesmith prepare -c {target}[/]")


# ---------------------------------------------------------------------------- config
@config_app.command("schema")
def schema() -> None:
    """Print the JSON schema of tunesmith.yaml."""
    _emit_json(config_schema())


@config_app.command("check")
@_user_errors
def check(config: ConfigOpt = Path(CONFIG_FILENAME), as_json: JsonOpt = False) -> None:
    """Validate a config and print it fully resolved (defaults filled in)."""
    cfg = load_config(config)
    if as_json:
        _emit_json({"ok": True, "config_hash": cfg.hash(), "config": cfg.model_dump(mode="json")})
        return
    out.print(f"[green]ok[/] {config} (config hash {cfg.hash()})")


# ---------------------------------------------------------------------------- prepare
@app.command()
@_user_errors
def prepare(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Preview on the first records; write nothing.")] = False,
    sample: Annotated[int, typer.Option(help="Records read by --dry-run.")] = 500,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data).")] = "local",
    as_json: JsonOpt = False,
) -> None:
    """Ingest, clean, deduplicate, scrub PII and split into an immutable dataset snapshot."""
    from tunesmith.data.pipeline import prepare as run_prepare

    if executor not in ("local", "ray"):
        raise TunesmithError(f"--executor must be 'local' or 'ray', got '{executor}'")
    cfg = load_config(config)
    deps.preflight(cfg, ["prepare"], executor=executor)
    bars = _RichProgress(err if as_json else out)
    try:
        result = run_prepare(cfg, dry_run=dry_run, dry_run_records=sample, executor=executor, progress=bars)  # type: ignore[arg-type]
    finally:
        bars.close()
    counts = result.manifest["counts"]
    if as_json:
        _emit_json({
            "snapshot_id": result.snapshot_id, "path": str(result.path) if result.path else None,
            "reused": result.reused, "dry_run": dry_run, "counts": counts,
            "contamination": result.manifest["contamination"]["over_threshold"],
            **({"samples": result.samples} if dry_run else {}),
        })
        return
    _print_prepare_summary(result, dry_run)


def _print_prepare_summary(result: Any, dry_run: bool) -> None:
    counts = result.manifest["counts"]
    table = Table(title="prepare" + (" (dry run)" if dry_run else ""), show_header=True)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    table.add_row("read", str(counts["read"]))
    for split, n in counts["splits"].items():
        table.add_row(f"kept → {split}", str(n))
    for reason, n in counts["dropped_by_reason"].items():
        if n:
            table.add_row(f"dropped: {reason}", str(n))
    table.add_row("quarantined", str(counts["quarantined"]))
    out.print(table)
    if counts["pii"]:
        out.print("PII redacted: " + ", ".join(f"{k} {v}" for k, v in counts["pii"].items()))
    hits = result.manifest["contamination"]["over_threshold"]
    if hits:
        out.print(f"[yellow]contamination:[/] {hits} test examples overlap train above the threshold")
    if dry_run:
        for key, items in result.samples.items():
            out.print(f"[dim]{key}:[/] " + "; ".join(json.dumps(i)[:160] for i in items[:3]))
        out.print("[dim]dry run: nothing written[/]")
        return
    verb = "reused existing" if result.reused else "wrote"
    out.print(f"[green]{verb} snapshot[/] [bold]{result.snapshot_id}[/] → {result.path}")
    if not result.reused:
        out.print(f"report: {result.path / 'report.html'}")


# ---------------------------------------------------------------------------- train
def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _TrainProgress:
    """Renders the trainer's events: one bar with loss, tokens/s and ETA on a terminal (a plain
    line every ``every`` seconds when the output is a file or a pipe); eval lines."""

    def __init__(self, console: Console, quiet: bool, every: float = 30.0):
        self.console, self.quiet = console, quiet
        self.plain, self.every = not console.is_terminal, every
        self.started = self.last_line = 0.0
        self.first_step = 0  # the first step this process ran (a resumed run starts later)
        self.bar = Progress(
            SpinnerColumn(), TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console,
        )
        self.task: Any = None
        self.tokens, self.seconds = 0, 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            self.tokens += event["tokens"]
            self.seconds += event["seconds"]
            info = f"loss {event['loss']:.4f}  {self.tokens / max(self.seconds, 1e-9):,.0f} tok/s"
            if self.plain:
                self._plain_line(event, info)
                return
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task("train", total=event["total_steps"], info="",
                                              completed=event["step"] - 1)
            self.bar.update(self.task, completed=event["step"], total=event["total_steps"], info=info)
        elif kind == "budget":
            self.console.print(
                f"time budget {_duration(event['budget_seconds'])}: {event['seconds_per_step']:.2f} s per step "
                f"and {event['eval_seconds']:.0f} s per validation → {event['total_steps']} steps "
                f"(planned {event['planned_steps']})")
        elif kind == "eval":
            self.console.print(
                f"step {event['step']}: val loss {event['val_loss']:.4f}, token accuracy "
                f"{event['val_token_accuracy']:.3f}" + ("  [yellow](early stop)[/]" if event["stopped_early"] else "")
            )
        elif kind == "preflight" and not self.quiet:
            self.console.print(
                f"pre-flight {event['split']}: {event['examples']} examples, {event['tokens']:,} tokens, "
                f"{event['trainable_tokens']:,} trained, longest {event['longest']}"
            )
        elif kind == "model_ready":
            self.console.print(
                f"model ready in {event['seconds']} s: {event['trainable_params']:,} of "
                f"{event['total_params']:,} parameters train (precision {event['precision']})"
            )
        elif kind == "rehearsal" and not self.quiet:
            if event.get("kind") == "text":
                how = "cached" if event["cached"] else f"of {event['asked']} openings"
                self.console.print(f"rehearsal: the base model's own continuations of {event['examples']} "
                                   f"general prose openings ({how})")
            else:
                how = "cached" if event["cached"] else f"of {event['asked']} finished"
                self.console.print(f"rehearsal: the base model's own answers to {event['examples']} general "
                                   f"instructions ({how})")
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/] {escape(event['message'])}")
        elif kind == "resumed":
            run_dir = Path(event["checkpoint"]).parent.parent
            self.console.print(f"[yellow]resuming[/] the interrupted training run of this config from step "
                               f"{event['step']} ({escape(event['checkpoint'])}); to start over instead, "
                               f"delete {escape(str(run_dir))}")

    def _plain_line(self, event: dict[str, Any], info: str) -> None:
        """Without a terminal (CI logs, nohup, a pipe) rich draws no bar: say where we are."""
        now = time.perf_counter()
        if not self.started:
            self.started = self.last_line = now - event["seconds"]
            self.first_step = event["step"]
        step, total = event["step"], event["total_steps"]
        if now - self.last_line < self.every and step not in (self.first_step, total):
            return
        self.last_line = now
        elapsed = now - self.started
        done = max(step - self.first_step + 1, 1)
        eta = elapsed / done * (total - step)
        self.console.print(f"step {step}/{total}  {info}  elapsed {_duration(elapsed)}  ETA {_duration(eta)}",
                           highlight=False)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()


@app.command()
@_user_errors
def train(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id (or prefix); default the latest.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue this config's run from its last checkpoint.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune the base model on a dataset snapshot; registers a model version."""
    cfg = load_config(config)
    deps.preflight(cfg, ["train"])  # before torch is imported: a missing package fails in milliseconds
    from tunesmith.train.recipe import train as run_train

    progress = _TrainProgress(err if as_json else out, quiet=as_json)
    try:
        result = run_train(cfg, snapshot=snapshot, resume=resume, log=progress)
    finally:
        progress.close()
    if _is_secondary_rank():
        return
    if as_json:
        _emit_json({"model_id": result.model_id, "path": result.path, "run_dir": result.run_dir,
                    "interrupted": result.interrupted, "metrics": result.metrics})
        if result.interrupted:
            raise typer.Exit(130)
        return
    if result.interrupted:
        out.print(f"[yellow]interrupted[/]: checkpoint saved in {result.run_dir}; "
                  f"continue with `tunesmith train -c {config} --resume`")
        raise typer.Exit(130)
    m = result.metrics
    out.print(f"[green]model version[/] [bold]{result.model_id}[/] → {result.path}")
    out.print(f"steps {m['steps']}, best val loss {m['best_val_loss']} (step {m['best_step']}), "
              f"{m['tokens_per_second']:,} tokens/s, loss curve: {result.path / 'loss.png'}")


@app.command()
@_user_errors
def export(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    model: Annotated[str | None, typer.Option(help="Model version id (or prefix) or alias; default the latest.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Also copy the export to this folder (it is always published in the workspace).")] = None,
    gguf: Annotated[str, typer.Option(
        help="auto: also write a GGUF file where the architecture allows (Llama), say why not elsewhere; "
             "on: always (fails for other architectures); off: never.",
    )] = "auto",
    gguf_dtype: Annotated[str, typer.Option(help="f32, f16 or q8_0.")] = "f16",
    as_json: JsonOpt = False,
) -> None:
    """Merge a model version into a standalone HF model (+ GGUF), check they answer alike, and
    publish it in the workspace with its lineage (the same version and settings again: reused)."""
    from tunesmith.train.export import export_model
    from tunesmith.train.recipe import quiet_libraries
    from tunesmith.workspace import Workspace

    quiet_libraries()
    if gguf not in ("auto", "on", "off"):
        raise TunesmithError(f"--gguf must be auto, on or off, got '{gguf}'")
    if gguf_dtype not in ("f32", "f16", "q8_0"):
        raise TunesmithError(f"--gguf-dtype must be f32, f16 or q8_0, got '{gguf_dtype}'")
    cfg = load_config(config)
    ws = Workspace(cfg.workspace_dir)
    from tunesmith.registry import ModelRegistry

    version = ModelRegistry(ws, cfg.project).resolve(model) if model else ws.latest("model")  # id, prefix or alias
    if version is None:
        raise TunesmithError(f"no model version in {ws.root}; run `tunesmith train` first")
    console = err if as_json else out
    write_gguf = {"auto": "auto", "on": True, "off": False}[gguf]
    result = export_model(ws, version.id, out_dir=out_dir, gguf=write_gguf, gguf_dtype=gguf_dtype,  # type: ignore[arg-type]
                          log=lambda e: console.print(f"  {e['phase']}: {e['seconds']:.1f} s"))
    if as_json:
        _emit_json({"model_id": version.id, "export_id": result.export_id, "path": result.path,
                    "reused": result.reused, "copied_to": result.copied_to, "formats": result.formats,
                    "files": result.files, "merged": result.merged_dir, "gguf": result.gguf_path,
                    "gguf_skipped": result.gguf_skipped, "checks": result.checks})
        return
    out.print(f"[green]export[/] {result.export_id} of model version {version.id[:12]}"
              + (" (already published with these settings; reused)" if result.reused else ""))
    out.print(f"[green]merged[/] {result.merged_dir}")
    if result.gguf_path:
        out.print(f"[green]gguf[/] {result.gguf_path}")
    elif result.gguf_skipped:
        out.print(f"[yellow]no GGUF file[/]: {escape(result.gguf_skipped)}")
    out.print(f"equivalence checks passed: {result.report_path}")
    if result.copied_to:
        out.print(f"copied to {result.copied_to}")


# ---------------------------------------------------------------------------- eval
def _eval_progress(console: Console) -> Callable[[dict[str, Any]], None]:
    def log(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "eval_start":
            console.print(f"eval pack {event['pack']}: {event['cases']} cases × {len(event['rungs'])} rungs "
                          f"(model version {event['model'] or 'none'})")
        elif kind == "rung_start":
            console.print(f"  {event['rung']:<14} generating {event['cases']} answers …")
        elif kind == "rung_done":
            head = event["headline"]
            console.print(f"  {event['rung']:<14} done in {event['seconds']} s, headline "
                          f"{'n/a' if head is None else f'{head:.3f}'}")
        elif kind == "probes_start":
            console.print("  probes, forgetting check, test-split perplexity …")
        elif kind == "phase_done":
            console.print(f"  {event['phase'].replace('_', ' '):<14} done in {event['seconds']} s")

    return log


def _print_eval(result: Any) -> None:
    from rich import box

    from tunesmith.evaluate.report import compact_ladder_rows

    r = result.results
    header, rows = compact_ladder_rows(r)
    # no cell padding: SIMPLE_HEAD's column divider is the one space between columns (80 columns fit 8)
    table = Table(title=f"the ladder: {r.cases} cases, 95% CI on {r.headline}", box=box.SIMPLE_HEAD,
                  padding=(0, 0), pad_edge=False)
    for i, h in enumerate(header):
        width = max(len(h), *(len(row[i]) for row in rows))
        table.add_column(h, justify="left" if h == "rung" else "right", no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    def with_ci(c: Any) -> str:
        return f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"

    cmp = r.lead
    if cmp and cmp.diff is not None and cmp.low is not None:
        out.print(f"fine-tuned − {cmp.baseline}: {with_ci(cmp)}")
        for f, c in r.fields_vs_best_baseline.items():
            if c.diff is not None and c.low is not None:
                out.print(f"  {f:<14} {with_ci(c)}")
    out.print(f"[bold]recommendation:[/] {r.recommendation}")
    gate = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    failed = [c.name for c in result.checks if not c.passed]
    out.print(f"gate {gate}" + (f" ({', '.join(failed)})" if failed else ""))
    out.print(f"report: {result.path / 'report.html'}")


@app.command("eval")
@_user_errors
def eval_command(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    model: Annotated[str | None, typer.Option(help="Model version id (or prefix); default the latest.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Snapshot for the eval pack; default the latest.")] = None,
    gate: Annotated[bool, typer.Option("--gate", help="Exit non-zero when the gate fails (for CI).")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write the gate as JUnit XML here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write the report as Markdown here.")] = None,
    max_cases: Annotated[int | None, typer.Option(
        "--max-cases", min=1, help="Test cases in the eval pack (overrides eval.max_cases; more cases, tighter CIs).",
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare zero-shot, few-shot, RAG, fine-tuned and fine-tuned + RAG on one frozen eval pack."""
    import shutil

    cfg = load_config(config)
    deps.preflight(cfg, ["eval"])
    from tunesmith.evaluate.runner import evaluate

    if max_cases is not None:
        if cfg.eval.pack:
            raise TunesmithError(f"--max-cases builds a new eval pack, but eval.pack pins {cfg.eval.pack!r} "
                                 f"in {config}; drop one of them")
        cfg.eval.max_cases = max_cases
    result = evaluate(cfg, model=model, snapshot=snapshot, log=_eval_progress(err if as_json else out))
    if junit:
        shutil.copyfile(result.path / "gate.xml", junit)
    if markdown:
        shutil.copyfile(result.path / "report.md", markdown)
    if as_json:
        r = result.results
        _emit_json({"eval_id": result.eval_id, "path": result.path, "passed": result.passed,
                    "headline": r.headline, "recommendation": r.recommendation,
                    "ladder": r.headline_ladder(), "gate": r.gate.to_dict() if r.gate else None})
    else:
        _print_eval(result)
    if gate and not result.passed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- run / demo
def _run_and_report(cfg: Any, as_json: bool) -> Any:
    from tunesmith.run import run_loop

    console = err if as_json else out

    def stage(event: dict[str, Any]) -> None:
        if event["event"] == "stage_start":
            console.rule(f"[bold]{event['stage']}")
        elif event["reused"]:
            console.print(f"[dim]{event['stage']}: inputs unchanged, reused the existing result[/]")

    bars = _RichProgress(console)
    progress = _TrainProgress(console, quiet=as_json)
    try:
        summary = run_loop(cfg, prepare_progress=bars, train_log=progress, eval_log=_eval_progress(console),
                           stage_log=stage)
    finally:
        bars.close()
        progress.close()
    return summary


def _summary_json(summary: Any) -> dict[str, Any]:
    ev = summary.evaluation
    r = ev.results
    return {"snapshot_id": summary.snapshot.snapshot_id, "model_id": summary.model.model_id,
            "eval_id": ev.eval_id, "report": ev.path / "report.html", "passed": ev.passed,
            "headline": r.headline, "recommendation": r.recommendation, "ladder": r.headline_ladder(),
            "seconds": summary.seconds}


@app.command()
@_user_errors
def run(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    gate: Annotated[bool, typer.Option("--gate", help="Exit non-zero when the eval gate fails.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """prepare → train → eval in one command; unchanged stages are reused."""
    cfg = load_config(config)
    summary = _run_and_report(cfg, as_json)
    if as_json:
        _emit_json(_summary_json(summary))
    else:
        _print_eval(summary.evaluation)
    if gate and not summary.evaluation.passed:
        raise typer.Exit(1)


@app.command()
@_user_errors
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the sample project.")] = Path("tunesmith-demo"),
    seed: Annotated[int | None, typer.Option(
        help="Seed of the generated sample data (default 7); only used when the project is generated.",
    )] = None,
    operate: Annotated[bool, typer.Option(
        "--operate", help="Then simulate a second month: serve, replay month 1 and 2, review (simulated reviewer), "
        "monitor, export, retrain, shadow, canary, promote (docs/operate.md).",
    )] = False,
    requests: Annotated[int, typer.Option(
        "--requests", min=20, help="--operate: requests replayed per month (one monitor window).",
    )] = 500,
    as_json: JsonOpt = False,
) -> None:
    """The whole loop on the generated support-triage project with the starter model, offline."""
    from tunesmith.sample import TEMPLATES

    started = time.perf_counter()
    console = err if as_json else out
    if not (directory / CONFIG_FILENAME).exists():
        TEMPLATES["support-triage"](directory, seed=7 if seed is None else seed)
        console.print(f"generated the support-triage sample project in {directory}")
    else:
        console.print(f"using the existing project in {directory}" + (
            f" ([yellow]--seed {seed} is ignored[/]: it applies only when the project is generated; "
            f"choose a new folder or delete this one to regenerate it)" if seed is not None else ""))
    cfg = load_config(directory)
    summary = _run_and_report(cfg, as_json)
    total = round(time.perf_counter() - started, 1)
    if as_json:
        operated = _operate(cfg, requests, err).to_dict() if operate else None
        _emit_json({**_summary_json(summary), "total_seconds": total, "operate": operated})
        return
    _print_eval(summary.evaluation)
    out.print(f"demo finished in {total / 60:.1f} min "
              f"(prepare {summary.seconds['prepare']} s, train {summary.seconds['train']} s, "
              f"eval {summary.seconds['eval']} s)")
    if operate:
        _operate(cfg, requests, out)


def _operate(cfg: Any, requests: int, console: Any) -> Any:
    """``demo --operate``: the simulated second month (sample/operate.py), printed as it runs."""
    from tunesmith.sample.operate import OperatePlan, simulate
    from tunesmith.sample.operate_report import acceptance_lines, before_after_lines

    console.rule("[bold]operate: a simulated second month")
    plan = OperatePlan(month1=requests, month2=requests, window=requests, shadow=max(20, requests * 3 // 10),
                       canary=max(20, requests // 5))
    result = simulate(cfg, plan, say=lambda line: console.print(line, markup=False, highlight=False))
    for line in before_after_lines(result) + acceptance_lines(result):
        console.print(line, markup=False, highlight=False)
    return result


# ---------------------------------------------------------------------------- models / promote / rollback
models_app = typer.Typer(help="Model versions: list, lineage (show), model card (card).")
app.add_typer(models_app, name="models")

MaybeConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Path to tunesmith.yaml (or its folder); default ./tunesmith.yaml.")]
AliasOpt = Annotated[str, typer.Option("--alias", help="Alias to move (champion, challenger or any name).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who moves the alias; default the OS user.")]


def _registry(ctx: typer.Context | None, config: Path | None) -> Any:
    """The project's registry; ``-c`` may also come before the subcommand (`models -c P show ID`)."""
    from tunesmith.registry import ModelRegistry

    given = (ctx.obj or {}).get("config") if ctx is not None else None
    return ModelRegistry.from_config(load_config(config or given or Path(CONFIG_FILENAME)))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _ci_text(mean: float | None, low: float | None, high: float | None, fmt: str = ".3f") -> str:
    if mean is None:
        return "n/a"
    return format(mean, fmt) + ("" if low is None or high is None else f" ({low:{fmt}}–{high:{fmt}})")


@models_app.callback(invoke_without_command=True)
@_user_errors
def models(ctx: typer.Context, config: MaybeConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List every model version: base model, method, snapshot, headline with CI, gate, aliases."""
    ctx.obj = {"config": config, "json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    reg = _registry(None, config)
    versions = reg.versions()
    if as_json:
        _emit_json({"project": reg.project, "workspace": reg.ws.root, "gate_pack": reg.pinned_pack,
                    "aliases": reg.aliases(), "versions": [v.row() for v in versions]})
        return
    if not versions:
        out.print(f"no model version in {reg.ws.root}; run `tunesmith train` first")
        return
    _print_versions(reg, versions)


def _print_versions(reg: Any, versions: list[Any]) -> None:
    from rich import box

    gate = f"the pinned pack {reg.pinned_pack[:12]}" if reg.pinned_pack else "each version's latest eval"
    metrics = {v.eval.headline.metric for v in versions if v.eval and v.eval.headline}
    same = next(iter(metrics)) if len(metrics) == 1 else None  # one metric: named once, in the title
    bases = {v.base_model for v in versions}
    base = next(iter(bases)) if len(bases) == 1 else None
    title = (f"model versions of {reg.project}" + (f" (base {base})" if base else "")
             + f"; headline{' ' + same if same else ''} with 95% CI; gate: {gate}")
    # no cell padding: SIMPLE_HEAD's divider is the one space between columns (fits 80 columns)
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False, show_edge=False)
    columns = ["id", "created", *([] if base else ["base"]), "method", "snapshot", "pack", "headline", "gate",
               "aliases"]
    for name in columns:
        table.add_column(name, no_wrap=name not in ("base", "aliases"), overflow="fold")
    for v in versions:
        e = v.eval
        head = e.headline if e else None
        cells = {"id": v.id[:12], "created": time.strftime("%Y-%m-%d", time.localtime(v.created)),
                 "base": escape(v.base_model or "-"), "method": v.method or "-", "snapshot": (v.snapshot or "-")[:8],
                 "pack": e.pack[:8] if e else "-",
                 "headline": "-" if head is None else (
                     f"{_ci_text(head.mean, None, None, '.2f')} {_ci_text(head.low, None, None, '.2f')}–"
                     f"{_ci_text(head.high, None, None, '.2f')}" + ("" if same else f" {head.metric}")),
                 "gate": "-" if e is None else "[green]passed[/]" if e.passed else "[red]failed[/]",
                 "aliases": escape(", ".join(v.aliases))}
        table.add_row(*(cells[c] for c in columns))
    out.print(table)


def _print_lineage(d: Any) -> None:
    v, t, s = d.version, d.training, d.snapshot
    aliases = f"  [bold]{', '.join(v.aliases)}[/]" if v.aliases else ""
    out.print(f"[bold]model version {v.id}[/]{aliases}")
    out.print(f"  created {_when(v.created)}, base model {escape(str(v.base_model))} (fingerprint "
              f"{d.base_fingerprint}), method {v.method}; {d.path}", highlight=False)
    out.print("[bold]source files[/]")
    for f in s.sources if s else []:
        out.print(f"  {escape(f.path)}  sha256 {f.sha256[:16]}  {f.bytes or 0:,} bytes", highlight=False)
    if s is not None:
        c = s.counts
        splits = ", ".join(f"{k} {n}" for k, n in (c.get("splits") or {}).items())
        out.print(f"[bold]→ snapshot[/] {s.id} ({_when(s.created) if s.created else 'not in this workspace'}): "
                  f"read {c.get('read', '?')}, kept {c.get('kept', '?')} ({splits}), dropped "
                  f"{c.get('dropped', '?')}, quarantined {c.get('quarantined', '?')}", highlight=False)
    m = t.metrics
    out.print(f"[bold]→ training run[/] {t.run_dir}: config hash {t.config_hash}, seed {t.seed}, steps "
              f"{m.get('steps')}, best val loss {_ci_text(m.get('best_val_loss'), None, None, '.4f')} (step {m.get('best_step')}), "
              f"{m.get('tokens_per_second')} tokens/s, {m.get('seconds')} s"
              + (f"; MLflow run {t.mlflow_run_id}" if t.mlflow_run_id else ""), highlight=False)
    out.print(f"[bold]→ model version[/] {v.id}")
    out.print("[bold]→ evals[/]" + ("" if d.evals else " none yet (`tunesmith eval --model ...`)"))
    for pack, evals in d.evals.items():
        out.print(f"  pack {pack}" + ("  (gate pack)" if v.eval and v.eval.pack == pack else ""))
        for e in evals:
            head = e.headline
            cmp = e.vs_best_baseline
            failed = ", ".join(c.name for c in e.failed_checks)
            out.print(f"    {e.eval_id} {_when(e.created)}  "
                      + (f"{head.metric} {_ci_text(head.mean, head.low, head.high)} ({head.rung})" if head else "")
                      + (f", vs {cmp.baseline} {cmp.diff:+.3f} [{cmp.low:+.3f}, {cmp.high:+.3f}]"
                         if cmp and cmp.diff is not None and cmp.low is not None and cmp.high is not None else "")
                      + ", gate " + ("[green]passed[/]" if e.passed else f"[red]failed[/] ({failed})"),
                      highlight=False)
    out.print("[bold]→ exports[/]" + ("" if d.exports else " none (`tunesmith export --model ...`)"))
    for x in d.exports:
        size = sum(f.get("bytes") or 0 for f in x.files)
        out.print(f"  {x.export_id} {_when(x.created)}  {', '.join(x.formats)}, {len(x.files)} files, {size:,} bytes"
                  + (f"; no GGUF: {escape(x.gguf_skipped)}" if x.gguf_skipped else "") + f"; {x.path}", highlight=False)
    out.print("[bold]→ alias moves[/]" + ("" if d.alias_moves else " none"))
    for mv in d.alias_moves:
        gate = {True: "gate passed", False: "gate failed", None: "no gate"}[mv.gate_passed]
        out.print(f"  {_when(mv.at)}  {mv.alias}: {(mv.from_model or '(unset)')[:12]} → {mv.to_model[:12]}  "
                  f"{mv.action}{' (forced)' if mv.forced else ''} by {escape(mv.by)}, {gate}"
                  + (f"; reason: {escape(mv.reason)}" if mv.reason else ""), highlight=False)


@models_app.command("show")
@_user_errors
def models_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Version id (or prefix) or alias.")],
    config: MaybeConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The lineage of one version: source files → snapshot → training run → version → evals → alias moves."""
    from tunesmith.registry import to_json

    detail = _registry(ctx, config).show(ref)
    if as_json or (ctx.obj or {}).get("json"):
        _emit_json(to_json(detail))
        return
    _print_lineage(detail)


@models_app.command("card")
@_user_errors
def models_card(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Version id (or prefix) or alias.")],
    config: MaybeConfigOpt = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the Markdown here instead of stdout.")] = None,
) -> None:
    """Write the model card (Markdown): use, data provenance, training, eval ladder, limits, alias history."""
    from tunesmith.workspace import write_atomic

    card = _registry(ctx, config).card(ref)
    if out_file is None:
        sys.stdout.write(card)
        return
    write_atomic(out_file, card)
    out.print(f"[green]wrote[/] {out_file}")


def _print_change(change: Any, verb: str) -> None:
    if not change.changed:
        out.print(f"{change.alias} already points at {change.model_id[:12]}; nothing recorded")
        return
    was = change.previous[:12] if change.previous else "unset"
    out.print(f"[green]{escape(change.alias)}[/] → [bold]{change.model_id[:12]}[/] ({verb}; was {was}) "
              f"by {escape(change.move.by)}", highlight=False)
    g = change.gate
    if g is not None:
        where = (f"the pinned eval pack {g.pack} (eval.pack)" if g.pinned
                 else f"this version's latest eval (pack {g.pack})")
        verdict = "no eval" if g.eval_id is None else "passed" if g.passed else "failed"
        out.print(f"gate: {verdict} on {where}" + (f", eval {g.eval_id}" if g.eval_id else ""), highlight=False)
    if change.move.forced:
        out.print(f"[yellow]forced past the gate[/]; reason recorded: {escape(change.move.reason or '')}")
    m = change.mlflow
    if m is not None and m.error:
        err.print(f"[yellow]MLflow mirror failed[/] ({escape(m.error)}); the move is recorded in the workspace "
                  "and the next move retries the mirror")
    elif m is not None:
        out.print(f"MLflow: registered model '{escape(m.registered_model or '')}', "
                  + ", ".join(f"@{a} → version {n}" for a, n in sorted(m.aliases.items())), highlight=False)


@app.command()
@_user_errors
def promote(
    ref: Annotated[str, typer.Argument(metavar="ID", help="Version id (or prefix) or alias to promote.")],
    alias: AliasOpt = "champion",
    force: Annotated[bool, typer.Option("--force", help="Promote without a passed gate (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the alias ledger.")] = None,
    by: ByOpt = None,
    config: ConfigOpt = Path(CONFIG_FILENAME),
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version whose eval gate passed (pinned eval.pack, else its latest eval)."""
    from tunesmith.registry import to_json

    change = _registry(None, config).promote(ref, alias, force=force, reason=reason, by=by)
    if as_json:
        _emit_json({**to_json(change), "changed": change.changed})
        return
    _print_change(change, "promoted")


@app.command()
@_user_errors
def rollback(
    alias: AliasOpt = "champion",
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the alias ledger.")] = None,
    by: ByOpt = None,
    config: ConfigOpt = Path(CONFIG_FILENAME),
    as_json: JsonOpt = False,
) -> None:
    """Move an alias back to the version it pointed at before."""
    from tunesmith.registry import to_json

    change = _registry(None, config).rollback(alias, reason=reason, by=by)
    if as_json:
        _emit_json({**to_json(change), "changed": change.changed})
        return
    _print_change(change, "rolled back")


# ---------------------------------------------------------------------------- rollout
rollout_app = typer.Typer(help="Shadow and canary rollout of the challenger alias: status, set, promote, abort.",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
ReasonOpt = Annotated[str | None, typer.Option(help="Why; recorded in the rollout events.")]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _print_rollout(st: dict[str, Any]) -> None:
    src = st["settings_from"]
    where = "the config" if src == "config" else (
        f"event {src['seq']} ({src['event']} by {src['by']}, {_when(src['time'])}"
        + (f": {src['why']}" if src["why"] else "") + ")")
    out.print(f"[bold]rollout of {escape(st['project'])}[/]: mode {st['mode']}, canary share {st['share']:g}, "
              f"shadow share {st['shadow_share']:g} (from {escape(where)})", highlight=False, soft_wrap=True)
    out.print(f"champion {(st['champion'] or '-')[:12]}, {escape(st['challenger_alias'])} "
              f"{(st['challenger'] or '(alias not set)')[:12]}, promote after "
              f"{st['promote_after'] or 'off'}; windows: latest {st['window']} requests", highlight=False)
    table = Table("variant", "requests", "errors", "JSON valid", "p95 ms", box=None)
    for variant, w in st["windows"].items():
        json_cell = "-" if w["json_validity"] is None else f"{_pct(w['json_validity'])} of {w['json_requests']}"
        table.add_row(variant, str(w["requests"]), _pct(w["error_rate"]), json_cell,
                      "-" if w["p95_latency_ms"] is None else f"{w['p95_latency_ms']:.0f}")
    out.print(table)
    for variant, fields in st["agreement"].items():
        if not fields:
            continue
        how = "share equal to the champion's answer" if variant == "shadow" else "distance from the champion's labels"
        cells = [f"{escape(f)} " + (_pct(a["agreement"]) if variant == "shadow" else f"{a['distance']:.3f}")
                 + f" (n {a['answers']})" for f, a in fields.items()]
        out.print(f"agreement, {variant} ({how}): " + ", ".join(cells), highlight=False, soft_wrap=True)
    for variant, c in st["checks"].items():
        verdict = "[green]passed[/]" if c["passed"] else "[red]failed[/]: " + ", ".join(c["failed"]) + (
            f" ({', '.join(c['failed_fields'])})" if c["failed_fields"] else "")
        out.print(f"checks, {variant} vs champion: {verdict}", highlight=False)
    if st["events"]:
        out.print("[bold]latest events[/]")
    for e in st["events"]:
        reason = e["reason"] or {}
        why = reason.get("why") or ", ".join(reason.get("failed") or []) or reason.get("error") or ""
        out.print(f"  {e['seq']:>4} {_when(e['time'])} {e['event']:<15} share {e['share']:g}  "
                  f"{escape(str(why))[:100]}", highlight=False)


@rollout_app.command("status")
@_user_errors
def rollout_status(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    events: Annotated[int, typer.Option(help="How many of the latest events to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Mode, shares, per-variant window stats, agreement per label field, checks, latest events
    (from the workspace database: works while a server runs)."""
    from tunesmith.serve.rollout_admin import rollout_status as status

    st = status(load_config(config), events=events)
    if as_json:
        _emit_json(st)
        return
    _print_rollout(st)


@rollout_app.command("set")
@_user_errors
def rollout_set(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    mode: Annotated[str | None, typer.Option(help="off, canary or shadow.")] = None,
    share: Annotated[float | None, typer.Option(help="Canary share of routing keys, 0..1.")] = None,
    shadow_share: Annotated[float | None, typer.Option(help="Shadow: share of requests copied, 0..1.")] = None,
    reason: ReasonOpt = None,
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change the rollout; running servers apply it within a second (no restart)."""
    from tunesmith.serve.rollout_admin import set_rollout

    done = set_rollout(load_config(config), mode=mode, share=share, shadow_share=shadow_share, reason=reason, by=by)
    if as_json:
        _emit_json(done)
        return
    s = done["settings"]
    out.print(f"rollout set (event {done['event']['seq']}): mode {s['mode']}, canary share {s['share']:g}, "
              f"shadow share {s['shadow_share']:g}", highlight=False)


@rollout_app.command("promote")
@_user_errors
def rollout_promote(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option("--force", help="Promote without a passed gate (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the alias ledger.")] = None,
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote the challenger's version to champion (the eval gate rules of `tunesmith promote`)."""
    from tunesmith.registry import to_json
    from tunesmith.serve.rollout_admin import promote_challenger

    change, event = promote_challenger(load_config(config), force=force, reason=reason, by=by)
    if as_json:
        _emit_json({**to_json(change), "changed": change.changed, "event": event})
        return
    _print_change(change, "promoted from the challenger")


@rollout_app.command("abort")
@_user_errors
def rollout_abort(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    reason: Annotated[str, typer.Option(help="Why (required); recorded in the rollout events.")] = "",
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop all challenger traffic now (canary and shadow share 0); running servers apply it within a second."""
    from tunesmith.serve.rollout_admin import abort_rollout

    done = abort_rollout(load_config(config), reason=reason, by=by)
    if as_json:
        _emit_json(done)
        return
    out.print(f"rollout aborted (event {done['event']['seq']}): no traffic to the challenger; "
              f"`tunesmith rollout set --share ...` resumes it", highlight=False)


# ---------------------------------------------------------------------------- serve
UiKeyFileOpt = Annotated[Path | None, typer.Option(
    "--key-file", "--ui-key-file", help="UI keys: a `role key` or `role key name` line each (with $TUNESMITH_UI_KEYS); roles reviewer, admin.")]


@app.command()
@_user_errors
def serve(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    model: Annotated[str | None, typer.Option(
        help="Version the project name serves (id or prefix); default the champion alias, else the latest.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key_file: Annotated[Path | None, typer.Option(
        help="File with one API key per line (used with $TUNESMITH_API_KEYS).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without API keys (a trusted network only).")] = False,
    with_ui: Annotated[bool, typer.Option("--ui", help="Also serve the web UI at /ui (UI keys: $TUNESMITH_UI_KEYS).")] = False,
    ui_key_file: UiKeyFileOpt = None,
) -> None:
    """Serve every model version behind an OpenAI-compatible API until Ctrl-C."""
    cfg = load_config(config)
    deps.preflight(cfg, ["serve"])  # fastapi, uvicorn, torch...: before anything imports them
    from tunesmith.serve import launch
    from tunesmith.serve.auth import KEYS_ENV, ApiKeys
    from tunesmith.train.recipe import quiet_libraries

    keys = ApiKeys.disabled() if no_auth else ApiKeys.load(key_file=api_key_file)  # refuses without a key

    if with_ui:
        deps.preflight(cfg, ["ui"])
        from tunesmith.ui.auth import UiKeys

        ui_keys = UiKeys.load(key_file=ui_key_file)  # before the models load: a missing key fails fast

    quiet_libraries()
    loaded = launch.build_app(cfg, keys=keys, model=model)
    if with_ui:
        from tunesmith.ui import create_ui_app

        loaded.app.mount("/ui", create_ui_app(cfg, keys=ui_keys))
        out.print(f"web UI on http://{host}:{port}/ui/", highlight=False)
    for version, why in loaded.skipped.items():
        err.print(f"[yellow]not served[/] {version}: {escape(why)}", highlight=False)
    cat = loaded.catalog
    out.print(f"serving [bold]{escape(cat.deployment)}[/] → {cat.resolve(cat.deployment).version} "
              f"({len(cat.versions)} version(s) + base) on http://{host}:{port}/v1", highlight=False, soft_wrap=True)
    if no_auth:
        err.print("[yellow]auth is off[/] (--no-auth): anyone who can reach the port can use the models")
    else:
        out.print(f"auth: Authorization: Bearer <key> (keys from ${KEYS_ENV} / --api-key-file)", highlight=False,
                  soft_wrap=True)
    launch.run(loaded.app, host=host, port=port)


# ---------------------------------------------------------------------------- ui
@app.command()
@_user_errors
def ui(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the UI to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8500,
    key_file: UiKeyFileOpt = None,
) -> None:
    """The web UI (dashboard and review workbench) over the project's workspace, until Ctrl-C."""
    cfg = load_config(config)
    deps.preflight(cfg, ["ui"])
    import uvicorn

    from tunesmith.ui import create_ui_app
    from tunesmith.ui.auth import UiKeys

    app_ = create_ui_app(cfg, keys=UiKeys.load(key_file=key_file))  # refuses to start without a key
    out.print(f"tunesmith ui for [bold]{escape(cfg.project)}[/] on http://{host}:{port}/ (log in with a UI key)",
              highlight=False, soft_wrap=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


# ---------------------------------------------------------------------------- predict
@app.command()
@_user_errors
def predict(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    input_path: Annotated[Path, typer.Option("--input", help="Records to answer (any format prepare reads).")] = ...,  # type: ignore[assignment]
    output_path: Annotated[Path, typer.Option("--output", help="Answers: .jsonl, .csv or .parquet.")] = ...,  # type: ignore[assignment]
    model: Annotated[str | None, typer.Option(
        help="Version id, prefix or alias; `base` for the base model. Default: champion, else the latest.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch prediction: one answer per input record, resumable, logged like served requests."""
    cfg = load_config(config)
    deps.preflight(cfg, ["eval"])
    from tunesmith.serve.predict import predict as run_predict

    console = err if as_json else out
    bar = Progress(SpinnerColumn(), TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task: list[Any] = []

    def log(event: dict[str, Any]) -> None:
        if event["event"] == "predict_start":
            if event["resumed"]:
                console.print(f"resuming: {event['resumed']} of {event['records']} records already answered")
            bar.start()
            task.append(bar.add_task("predict", total=event["todo"]))
        elif event["event"] == "predict_progress":
            bar.update(task[0], completed=event["done"])

    try:
        result = run_predict(cfg, input_path, output_path, model=model, log=log)
    finally:
        if task:
            bar.stop()
    if as_json:
        _emit_json({"output": result.output, "model": result.model, "records": result.records,
                    "answered": result.answered, "failed": result.failed, "seconds": result.seconds})
        return
    out.print(f"[green]wrote[/] {result.records} answers by {result.model} → {escape(str(result.output))} "
              f"({result.answered} answered now, {result.failed} unreadable records, {result.seconds} s)")


# ---------------------------------------------------------------------------- monitor
@app.command()
@_user_errors
def monitor(
    config: ConfigOpt = Path(CONFIG_FILENAME),
    window: Annotated[int | None, typer.Option(help="Latest answered requests to test (default monitor.window).")] = None,
    reference: Annotated[str | None, typer.Option(
        help="snapshot: the champion's training data; previous: the window before the latest (default monitor.reference).")] = None,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with plots here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift and quality of logged traffic against a reference. Exit 1 on an alarm (recorded in
    the workspace as a retrain trigger), 2 when a window is too small to test."""
    cfg = load_config(config)
    deps.preflight(cfg, ["monitor"])
    from tunesmith.monitor import console, html
    from tunesmith.monitor.runner import run_monitor

    report = run_monitor(cfg, window=window, reference=reference)
    if html_path is not None:
        html.write(report, html_path)
    if as_json:
        _emit_json(report.to_json() | ({"html": str(html_path)} if html_path else {}))
    else:
        console.print_report(report, out)
        if html_path is not None:
            out.print(f"report → {escape(str(html_path))}", highlight=False)
    if report.alarm:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- review (tunesmith/review/cli.py)
from tunesmith.review.cli import review_app  # noqa: E402  (it imports this module's helpers)

app.add_typer(review_app, name="review")

# ---------------------------------------------------------------------------- retrain (tunesmith/retrain/cli.py)
from tunesmith.retrain.cli import retrain_command  # noqa: E402

app.command("retrain")(_user_errors(retrain_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
