"""The `sleeptime` command line (typer + rich). Commands are thin: they parse, call the library, and print.

User errors (SleeptimeError and friends) print one line on stderr and exit 1; usage errors exit 2 (typer).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sleeptime import SleeptimeError, __version__

if TYPE_CHECKING:
    from sleeptime.app import App

app = typer.Typer(
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    help="sleeptime: sleep-time memory consolidation with a Titans neural long-term memory per context.",
)
bench_app = typer.Typer(help="Measure speed.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


def _version(value: bool):
    if value:
        console.print(f"sleeptime {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details to stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    db: Annotated[str | None, typer.Option("--db", envvar="SLEEPTIME_DB", help="SQLAlchemy database URL.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", envvar="SLEEPTIME_MODEL", help="Shipped model name or model file.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", envvar="SLEEPTIME_DEVICE", help="auto, cpu or cuda.")
    ] = None,
):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # the remaining settings come from SLEEPTIME_* variables; flags win over them
    ctx.obj = {"db": db, "model": model, "device": device}


def _plain(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if is_dataclass(obj):
        return asdict(obj)
    return str(obj)


def print_json(obj) -> None:
    # plain print: rich would wrap long lines and break the JSON for machines
    print(json.dumps(_plain(obj) if is_dataclass(obj) else obj, default=_plain))


def open_app(ctx: typer.Context, *, schema: bool = True) -> App:
    """The App for this invocation, closed when the command ends; `schema` requires an initialised database."""
    from sleeptime.app import App
    from sleeptime.settings import load_settings

    instance = App(load_settings(**(ctx.obj or {})))
    ctx.call_on_close(instance.close)
    if schema:
        instance.require_schema()
    return instance


def note(message: str) -> None:
    """Human-readable remarks go to stderr, so stdout carries only the data."""
    err_console.print(message, highlight=False, soft_wrap=True)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@bench_app.command("memory")
def bench_memory(
    tokens: Annotated[str, typer.Option(help="Comma-separated history lengths.")] = "8192,65536,2097152",
    modes: Annotated[str, typer.Option(help="one-call and/or segments.")] = "one-call,segments",
    segment: Annotated[int, typer.Option(help="Segment length for the segments mode.")] = 512,
    threads: Annotated[int, typer.Option(help="torch threads per run.")] = 2,
    compare: Annotated[bool, typer.Option(help="Also run titans-pytorch when installed.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per run.")] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run on stdout.")] = False,
):
    """Consolidation throughput of one memory layer at config A (width 256, 4 heads of 64, depth 2, chunk 64)."""
    from sleeptime import bench

    lengths = [int(t) for t in tokens.split(",") if t]
    impls = ["sleeptime"] + (["titans-pytorch"] if compare and bench.titans_pytorch_available() else [])
    results = []
    for mode in [m for m in modes.split(",") if m]:
        for n in lengths:
            row = {}
            for impl in impls:
                if mode == "one-call" and n > bench.ONE_CALL_LIMIT:
                    # the input tensor alone is n x 256 fp32: 2 GB at 2M tokens; consolidation streams instead
                    result = {"impl": impl, "mode": mode, "tokens": n, "skipped": "input larger than one call allows"}
                else:
                    result = bench.run_memory_subprocess(impl, n, mode, segment, threads, timeout)
                row[impl] = result
                results.append(result)
                if as_json:
                    print_json(result)
            theirs = row.get("titans-pytorch", {}).get("tokens_per_s")
            ours = row["sleeptime"].get("tokens_per_s")
            if ours and theirs:
                ratio = {"mode": mode, "tokens": n, "ratio_vs_titans_pytorch": round(ours / theirs, 2)}
                results.append(ratio)
                if as_json:
                    print_json(ratio)
    if not as_json:
        table = Table(title="memory consolidation throughput (config A, no grad)")
        for col in ("impl", "mode", "tokens", "tokens/s", "peak RSS MB", "note"):
            table.add_column(col)
        for r in results:
            if "impl" in r:
                table.add_row(
                    r["impl"], r["mode"], str(r["tokens"]), str(r.get("tokens_per_s", "-")),
                    str(r.get("peak_rss_mb", "-")), r.get("error", r.get("skipped", "")),
                )
            else:
                table.add_row("ratio", r["mode"], str(r["tokens"]), f"{r['ratio_vs_titans_pytorch']}x", "", "")
        console.print(table)


@bench_app.command("model")
def bench_model(
    model: Annotated[str, typer.Option(envvar="SLEEPTIME_MODEL", help="Shipped model name or model file.")] = "demo",
    tokens: Annotated[str, typer.Option(help="Comma-separated history lengths.")] = "65536,1048576",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    batch: Annotated[int, typer.Option(help="Contexts consolidated together.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    segment: Annotated[int, typer.Option(min=1, help="Tokens fed per call (the daemon feeds 512).")] = 512,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per run.")] = 1800.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run on stdout.")] = False,
):
    """Consolidation throughput of a whole model (every layer, memory updates included)."""
    from sleeptime import bench

    if device not in ("cpu", "cuda"):
        raise SleeptimeError(f"device must be cpu or cuda, got {device!r}")
    table = Table(title=f"model consolidation throughput ({device}, no grad)")
    for col in ("model", "tokens", "batch", "segment", "tokens/s", "peak RSS MB", "note"):
        table.add_column(col)
    for n in [int(t) for t in tokens.split(",") if t]:
        r = bench.run_model_subprocess(model, n, threads, batch, timeout, device, segment)
        if as_json:
            print_json(r)
        table.add_row(
            str(r.get("model", model)), str(r["tokens"]), str(r.get("batch", batch)), str(segment),
            str(r.get("tokens_per_s", "-")), str(r.get("peak_rss_mb", "-")), r.get("error", ""),
        )
    if not as_json:
        console.print(table)


@app.command("train")
def train_cmd(
    out: Annotated[str, typer.Option(help="Run folder: checkpoints, config and log; an existing run resumes.")],
    preset: Annotated[str, typer.Option(help="Recipe: tiny, demo, copy, mix, long, sparse, chat, read, restate, echo, wide, echo-first, chat-memory, lookup, lookup-gpu, lookup-long, gpu, full or lineage.")] = "demo",
    variant: Annotated[str | None, typer.Option(help="Override the architecture (lmm, mac, mag, mal, attn_mem, swa).")] = None,
    device: Annotated[str, typer.Option(envvar="SLEEPTIME_DEVICE", help="auto, cpu or cuda.")] = "auto",
    max_minutes: Annotated[float | None, typer.Option(help="Stop (resumably) after this long.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (CPU).")] = None,
    init_from: Annotated[str | None, typer.Option(help="Start a new run from this model file's weights.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Train over the subwords of this BPE file (python -m sleeptime.training.bpe); "
                                 "default bytes. A resumed run or --init-from must have the same.")
    ] = None,
    write_penalty: Annotated[
        float | None, typer.Option(min=0, help="Override the recipe's penalty on the memory's write strength.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Override the steps of a one-stage recipe (its schedule anneals over them).")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Override every stage's batch size (one CPU thread: smaller, more steps).")
    ] = None,
    write_floor: Annotated[
        float | None, typer.Option(min=0, max=0.99, help="Delta-rule writes weaker than this are dropped to 0.")
    ] = None,
    decay_floor: Annotated[
        float | None, typer.Option(min=0, max=0.99, help="Delta-rule forget rates below this are dropped to 0.")
    ] = None,
    novel_values: Annotated[
        float | None, typer.Option(min=0, max=1, help="Share of chat values drawn in a random shape (copy, not recall a list).")
    ] = None,
    window: Annotated[
        int | None, typer.Option(min=1, help="Override the attention window (tokens; weights of another window fit).")
    ] = None,
    conv_width: Annotated[
        int | None, typer.Option(min=1, help="Override how many bytes the memories' key convolution sees.")
    ] = None,
    value_weight: Annotated[
        float | None, typer.Option(help="Weight of the expected value's bytes against the answer's other bytes (1: alike).")
    ] = None,
    answer_style: Annotated[
        str | None, typer.Option(help="Chat answers: any, or restate (the attribute named right before the value).")
    ] = None,
    start_stage: Annotated[
        str | None, typer.Option(help="A new run begins at this stage of the recipe (e.g. with --init-from).")
    ] = None,
    anneal_by_clock: Annotated[
        bool, typer.Option(help="Anneal the learning rate to its floor by --max-minutes (of the whole run, resumes included) instead of over the steps.")
    ] = False,
    compact_optimizer: Annotated[
        bool, typer.Option(help="Save the optimizer as the tree keeps a live lineage: second moments in bf16, no first moments.")
    ] = False,
    data_workers: Annotated[
        int, typer.Option(min=0, help="Processes drawing batches ahead (a GPU outruns one); 0: a thread.")
    ] = 0,
):
    """Train a memory model through its inner updates (curriculum of streamed histories); resumable."""
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sleeptime.models.engine import pick_device
    from sleeptime.runtime import tune_process
    from sleeptime.training.train import check_run_options, saved_step, thin_log, train, with_overrides, with_tokenizer
    from sleeptime.training.train import preset as make_preset

    tune_process(threads)
    try:
        cfg = with_overrides(
            make_preset(preset, variant), write_penalty=write_penalty, steps=steps, write_floor=write_floor,
            decay_floor=decay_floor, novel_values=novel_values, window=window,
            conv_width=conv_width, answer_style=answer_style, value_weight=value_weight, batch=batch,
        )
        cfg = with_tokenizer(cfg, tokenizer)
        dev = pick_device(device)
        check_run_options(cfg, max_minutes, anneal_by_clock, start_stage, recipe=f"preset {preset}")
    except ValueError as exc:
        raise SleeptimeError(str(exc)) from None
    log_path = Path(out) / "train.log.jsonl"
    Path(out).mkdir(parents=True, exist_ok=True)
    thin_log(log_path, saved_step=saved_step(Path(out) / "model.safetensors"))
    with Progress(
        TextColumn("[bold]{task.fields[stage]}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]} exact {task.fields[exact]}"), TimeElapsedColumn(), console=console,
    ) as bar, log_path.open("a") as log_file:
        task = bar.add_task("train", total=cfg.total_steps, stage="", loss="-", exact="-")

        def on_step(p: dict) -> None:
            log_file.write(json.dumps(p) + "\n")
            log_file.flush()
            bar.update(task, completed=p["step"], stage=p["stage_name"], loss=p.get("loss"), exact=p.get("exact"))

        progress = train(
            cfg, Path(out), device=dev, max_minutes=max_minutes, on_step=on_step,
            init_from=Path(init_from) if init_from else None, anneal_by_clock=anneal_by_clock,
            start_stage=start_stage, compact_optimizer=compact_optimizer, data_workers=data_workers,
        )
    console.print(f"model written to {Path(out) / 'model.safetensors'} after {progress['step']} steps")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(envvar="SLEEPTIME_MODEL", help="Shipped model name or model file.")] = "demo",
    tasks: Annotated[
        str, typer.Option(help="Comma-separated: passkey, chat, recall, echo, everyday (the hand-written chats; "
                          "length 0 asks them bare).")
    ] = "passkey,chat",
    lengths: Annotated[
        str, typer.Option(help="Comma-separated history lengths in tokens.")
    ] = "4096,32768,262144,1048576,2097152",
    n: Annotated[int, typer.Option(help="Held-out samples per cell.")] = 20,
    batch: Annotated[int, typer.Option(help="Histories consolidated together.")] = 8,
    device: Annotated[str, typer.Option(envvar="SLEEPTIME_DEVICE", help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(envvar="SLEEPTIME_THREADS", min=1, help="torch threads.")] = None,
    plot: Annotated[str | None, typer.Option(help="Write a PNG plot here.")] = None,
    replay: Annotated[int, typer.Option(min=0, help="Sleep replay: re-feed this many most surprising spans.")] = 0,
    rehearse_after: Annotated[
        int, typer.Option(min=0, help="Measure rehearsal instead: ask again after this many later tokens.")
    ] = 0,
    first: Annotated[
        int, typer.Option(min=0, help="Index of the first held-out sample (split a cell across processes).")
    ] = 0,
    reading: Annotated[
        bool, typer.Option(help="Measure the reading ceiling instead: each question right after the message that "
                           "answers it, nothing recalled.")
    ] = False,
    split: Annotated[
        str, typer.Option(help="heldout, or train with --reading: does the model read its training samples only?")
    ] = "heldout",
    novelty: Annotated[
        str, typer.Option(help="Comma-separated attribute, phrasing, value: one cell per kind of held-out sample "
                          "(only that part new, the rest from training; for passkey, attribute is the wording).")
    ] = "",
    wordings: Annotated[
        str, typer.Option(help="Pass-key wordings, comma-separated, or 'all': one passkey cell per wording.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per cell.")] = False,
):
    """Recall accuracy against history length, through consolidation and answering, on held-out data."""
    from sleeptime.models.engine import MemoryEngine
    from sleeptime.runtime import tune_process
    from sleeptime.training.data import NOVELTIES, all_wordings
    from sleeptime.training.evaluate import evaluate, evaluate_rehearsal
    from sleeptime.training.evaluate import plot as plot_cells

    novelty_list = [x for x in novelty.split(",") if x]
    wording_list = list(all_wordings()) if wordings == "all" else [w.strip() for w in wordings.split(",") if w.strip()]
    if set(novelty_list) - set(NOVELTIES):
        raise SleeptimeError(f"--novelty takes some of {', '.join(NOVELTIES)}, got {novelty!r}")
    if (novelty_list or wording_list) and (rehearse_after or split != "heldout"):
        raise SleeptimeError("--novelty and --wordings draw held-out samples for recall or --reading only")

    if reading and (rehearse_after or replay):
        raise SleeptimeError("--reading asks without consolidating a history: it takes no --rehearse-after or --replay")
    if split not in ("heldout", "train"):
        raise SleeptimeError(f"split must be heldout or train, got {split!r}")
    if split == "train" and not reading:
        raise SleeptimeError("--split train applies to --reading only: recall is measured on held-out data")
    tune_process(threads)
    try:
        engine = MemoryEngine.load(model, device)
    except (FileNotFoundError, ValueError) as exc:
        raise SleeptimeError(str(exc)) from None
    task_list, length_list = [t for t in tasks.split(",") if t], [int(x) for x in lengths.split(",") if x]
    if rehearse_after:
        table = Table(title=f"recall {rehearse_after} tokens after the pass, model {engine.model_id}")
        for col in ("task", "history tokens", "n", "precomputed", "no rehearsal", "rehearsal", "seconds"):
            table.add_column(col)
        for task in task_list:
            for tokens in length_list:
                cell = evaluate_rehearsal(engine, task, tokens, rehearse_after, n, first).to_dict()
                if as_json:
                    print_json(cell)
                rates = [f"{cell[k]:.3f}" for k in ("precomputed", "plain", "rehearsed")]
                table.add_row(task, str(tokens), str(n), *rates, f"{cell['seconds']:.0f}")
        if not as_json:
            console.print(table)
        return
    what = "reading ceiling" if reading else "recall"
    data = "training" if split == "train" else "held-out"
    table = Table(title=f"{what} on {data} data, model {engine.model_id}")
    for col in ("task", "history tokens", "n", "accuracy", "updated", "not updated", "seconds"):
        table.add_column(col)

    def on_cell(cell) -> None:
        if as_json:
            print_json(cell.to_dict())
        label = f"{cell.task} [{cell.variant}]" if cell.variant else cell.task
        apart = [f"{hits}/{count}" for hits, count in (cell.updated, cell.not_updated)]
        table.add_row(label, str(cell.tokens), str(cell.n), f"{cell.accuracy:.2f}", *apart, f"{cell.seconds:.0f}")

    cells = evaluate(
        engine, task_list, length_list, n, batch, on_cell, replay=replay, first=first, reading=reading, split=split,
        novelties=novelty_list, wordings=wording_list,
    )
    if plot:
        plot_cells({engine.model_id: [c.to_dict() for c in cells]}, plot)
    if not as_json:
        console.print(table)


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise SleeptimeError(f"cannot read {source}: {exc.strerror}") from None


@app.command("init")
def init_cmd(ctx: typer.Context, as_json: JsonFlag = False):
    """Create or upgrade the database (Alembic)."""
    instance = open_app(ctx, schema=False)
    revision = instance.init()
    url = instance.store.url.render_as_string(hide_password=True)
    if as_json:
        print_json({"db": url, "revision": revision})
    else:
        note(f"database ready at {url} (schema {revision})")


@app.command("ingest")
def ingest_cmd(
    ctx: typer.Context,
    context: Annotated[str, typer.Argument(help="Context name (created on first use).")],
    source: Annotated[
        str,
        typer.Argument(
            metavar="[FILE|-]", help="JSONL {role, content} per line, or plain text as one user message; - is stdin."
        ),
    ] = "-",
    as_json: JsonFlag = False,
):
    """Append messages to a context: all of them, or none when one is bad."""
    from sleeptime.app import parse_transcript

    instance = open_app(ctx)
    seqs = instance.ingest(context, parse_transcript(_read_input(source)))
    result = {"context": context, "messages": len(seqs), "first_seq": seqs[0], "last_seq": seqs[-1]}
    if as_json:
        print_json(result)
    else:
        note(f"{len(seqs)} message(s) added to {context} (seq {seqs[0]}..{seqs[-1]})")


@app.command("consolidate")
def consolidate_cmd(
    ctx: typer.Context,
    context: str,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Rebuild the memory from every message with the loaded model, on top of the head: the way out for "
            "a context whose head another model wrote.",
        ),
    ] = False,
    as_json: JsonFlag = False,
):
    """Run a consolidation pass now: feed the new messages through the memory, precompute answers, publish. A pass
    already running on the context (the daemon's, another command's) is waited for: one pass at a time per context.
    SIGTERM stops the pass before it publishes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    instance = open_app(ctx)
    total = instance.store.pending(context, after=0 if fresh else None).tokens
    columns = (TextColumn("consolidating"), BarColumn(), TextColumn("{task.completed}/{task.total} tokens"))
    # no bar off a terminal: logs and pipes get the one summary line
    quiet = as_json or total == 0 or not err_console.is_terminal
    bar = Progress(*columns, TimeElapsedColumn(), console=err_console, disable=quiet)
    with _stop_on_sigterm() as abort, bar:
        task = bar.add_task("consolidate", total=total)
        result = instance.consolidate(
            context, progress=lambda done, of: bar.update(task, completed=done, total=of), abort=abort, fresh=fresh
        )
    if as_json:
        print_json({"published": result.published, "checkpoint": result.checkpoint, "answered": result.answered})
    elif result.published:
        info = result.checkpoint
        note(
            f"published checkpoint {info.version} of {context}: cursor {info.cursor_seq}, "
            f"{result.tokens} tokens, {info.meta['seconds']} s"
        )
    elif result.answered:
        note(f"no new message in {context}: {result.answered} new questions answered for checkpoint {result.checkpoint.version}")
    else:
        note(f"nothing to consolidate in {context}: no message after the head")


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM while the block runs: the pass stops before publishing and closes its run record."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command("forget")
def forget_cmd(
    ctx: typer.Context,
    context: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    as_json: JsonFlag = False,
):
    """Delete everything held about a context: messages, checkpoints, answers, questions, query log, runs, jobs.
    On SQLite no byte of it stays in the database files; on PostgreSQL see docs/deploy.md. A pass running on it
    cannot publish. The name can then be used again, for a new, empty context."""
    if not yes:
        raise typer.BadParameter("forgetting cannot be undone: add --yes to confirm", param_hint="--yes")
    deleted = open_app(ctx).forget(context)
    if as_json:
        print_json({"context": context, "deleted": deleted})
    else:
        note(f"forgot {context}: {deleted.get('messages', 0)} message(s), {deleted.get('checkpoints', 0)} checkpoint(s)")


def _shown_confidence(confidence: float | None) -> str:
    return "confidence unknown" if confidence is None else f"confidence {confidence:.1%}"


@app.command("query")
def query_cmd(
    ctx: typer.Context,
    context: str,
    question: str,
    show_guess: Annotated[
        bool, typer.Option("--show-guess", help="When the answer is withheld as too unsure, print the guess too.")
    ] = False,
    as_json: JsonFlag = False,
):
    """Answer a question from the context's memory: a precomputed answer when there is one, else online. An answer
    the model is less sure of than SLEEPTIME_MIN_CONFIDENCE is withheld ("I don't know that yet.")."""
    result = open_app(ctx).query(context, question)
    if as_json:
        print_json(result.to_dict())
        return
    print(result.answer)
    if show_guess and result.abstained:
        print(f"guess: {result.guess}")
    withheld = ", withheld" if result.abstained else ""
    note(
        f"[dim]{result.source}, checkpoint {result.checkpoint}, {_shown_confidence(result.confidence)}{withheld}, "
        f"{result.latency_ms:.1f} ms[/dim]"
    )


@app.command("anticipate")
def anticipate_cmd(
    ctx: typer.Context,
    context: str,
    questions: Annotated[list[str], typer.Argument(help="Questions to precompute answers for.")],
    as_json: JsonFlag = False,
):
    """Register standing questions: each consolidation precomputes their answers."""
    added = open_app(ctx).anticipate(context, questions)
    if as_json:
        print_json({"context": context, "added": added})
    else:
        note(f"{added} new question(s) registered for {context}")


def _ago(when: datetime) -> str:
    seconds = int((datetime.now(when.tzinfo) - when).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    return f"{seconds // 60}m ago" if seconds < 7200 else f"{when:%Y-%m-%d %H:%M}"


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    context: Annotated[str | None, typer.Argument(help="One context; all when omitted.")] = None,
    as_json: JsonFlag = False,
):
    """Contexts with their head version, cursor, pending messages and tokens, and last run."""
    rows = open_app(ctx).status(context)
    if as_json:
        return print_json([asdict(row) for row in rows])
    table = Table("context", "head", "cursor", "last seq", "pending", "last run", "active")
    for r in rows:
        head = "-" if r.head_version is None else str(r.head_version)
        run = "-" if r.last_run is None else f"{r.last_run.status} {_ago(r.last_run.started_at)}"
        pending = f"{r.pending_messages} msgs, {r.pending_tokens} tokens"
        table.add_row(r.name, head, str(r.cursor_seq), str(r.last_seq), pending, run, _ago(r.last_activity_at))
    console.print(table)


def _checkpoint_row(info, head: int | None) -> list[str]:
    marker = " (head)" if info.version == head else ""
    parent = "-" if info.parent_version is None else str(info.parent_version)
    tokens = str(info.meta.get("tokens", "-"))
    created = f"{info.created_at:%Y-%m-%d %H:%M:%S}"
    size = str(info.size_bytes)
    return [f"{info.version}{marker}", parent, str(info.cursor_seq), tokens, size, info.sha256[:12], created]


@app.command("checkpoints")
def checkpoints_cmd(ctx: typer.Context, context: str, as_json: JsonFlag = False):
    """List a context's checkpoint versions, newest first."""
    instance = open_app(ctx)
    versions, head = instance.checkpoints(context), instance.store.get_context(context).head_version
    if as_json:
        return print_json([asdict(info) | {"head": info.version == head} for info in versions])
    table = Table("version", "parent", "cursor", "tokens", "bytes", "sha256", "created")
    for info in versions:
        table.add_row(*_checkpoint_row(info, head))
    console.print(table)


@app.command("rollback")
def rollback_cmd(ctx: typer.Context, context: str, version: int, as_json: JsonFlag = False):
    """Move the head back to an earlier version (later versions are kept)."""
    info = open_app(ctx).rollback(context, version)
    if as_json:
        print_json(info)
    else:
        note(f"head of {context} is now checkpoint {info.version} (cursor {info.cursor_seq})")


@app.command("daemon")
def daemon_cmd(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(min=1, help="Worker threads running queued jobs.")] = 1,
):
    """The background daemon alone: idle sweep, queue workers, checkpoint GC. JSON logs on stderr."""
    from sleeptime.daemon import configure_logging, run_daemon

    instance = open_app(ctx)
    configure_logging(instance.settings.log_level)
    raise typer.Exit(run_daemon(instance, workers=workers))


@app.command("worker")
def worker_cmd(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once (keep 1 per GPU).")] = 1,
):
    """A worker on the PostgreSQL queue (SLEEPTIME_QUEUE=procrastinate): run one per GPU, on any number of machines
    sharing the database. Creates procrastinate's tables when missing. JSON logs on stderr."""
    from sleeptime.daemon import configure_logging, run_daemon

    instance = open_app(ctx)
    if instance.settings.queue != "procrastinate":
        raise SleeptimeError(
            "sleeptime worker runs the PostgreSQL queue: set SLEEPTIME_QUEUE=procrastinate (and SLEEPTIME_DB to the "
            "PostgreSQL URL) for the workers and the front end alike; on one machine, `sleeptime daemon` is enough"
        )
    configure_logging(instance.settings.log_level)
    instance.pg_queue.apply_schema()
    raise typer.Exit(run_daemon(instance, workers=concurrency))


keys_app = typer.Typer(
    help="Manage API keys: once one has been created, every /v1 HTTP call needs a valid X-API-Key, even after every "
    "key is revoked.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
HostOption = Annotated[str | None, typer.Option(envvar="SLEEPTIME_HOST", help="Address to listen on.")]
PortOption = Annotated[int | None, typer.Option(envvar="SLEEPTIME_PORT", help="Port to listen on.")]


def _serve(ctx: typer.Context, host: str | None, port: int | None, *, daemon: bool, workers: int = 1) -> None:
    from sleeptime.daemon import configure_logging
    from sleeptime.frontend.server import run

    ctx.obj = {**(ctx.obj or {}), "host": host, "port": port}
    # `up` is the first command on a fresh machine: it creates (or upgrades) the database itself
    instance = open_app(ctx, schema=not daemon)
    if daemon:
        instance.init()
    configure_logging(instance.settings.log_level)
    raise typer.Exit(run(instance, with_daemon=daemon, workers=workers))


@app.command("serve")
def serve_cmd(ctx: typer.Context, host: HostOption = None, port: PortOption = None):
    """The HTTP front end alone (uvicorn); the API is described at /docs. JSON logs on stderr."""
    _serve(ctx, host, port, daemon=False)


@app.command("up")
def up_cmd(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker threads running queued jobs.")] = 1,
):
    """The daemon and the HTTP front end in one process (embedded SQLite, shipped demo model by default): the main
    command. Creates or upgrades the database first; SIGTERM or Ctrl-C drains both, a second one aborts."""
    _serve(ctx, host, port, daemon=True, workers=workers)


@keys_app.command("create")
def keys_create_cmd(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="A label for the key.")], as_json: JsonFlag = False
):
    """Create an API key and print it: the only time it is shown (only its hash is stored)."""
    key = open_app(ctx).store.create_api_key(name)
    if as_json:
        print_json({"name": name, "key": key})
    else:
        print(key)
        note(f"API key {name!r} created; it cannot be shown again. Send it as the X-API-Key header.")


@keys_app.command("list")
def keys_list_cmd(ctx: typer.Context, as_json: JsonFlag = False):
    """List API keys (name, first characters, created, revoked); never the keys themselves."""
    keys = open_app(ctx).store.list_api_keys()
    if as_json:
        return print_json([asdict(key) for key in keys])
    table = Table("name", "prefix", "created", "revoked")
    for key in keys:
        revoked = "-" if key.revoked_at is None else f"{key.revoked_at:%Y-%m-%d %H:%M:%S}"
        table.add_row(key.name, f"{key.prefix}...", f"{key.created_at:%Y-%m-%d %H:%M:%S}", revoked)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke_cmd(ctx: typer.Context, name: str, as_json: JsonFlag = False):
    """Revoke an API key by name: calls with it get 401 from now on. Revoking the last key does not open the API:
    calls without a valid key keep getting 401."""
    open_app(ctx).store.revoke_api_key(name)
    if as_json:
        print_json({"name": name, "revoked": True})
    else:
        note(f"API key {name!r} revoked")


def main() -> None:
    from rich.markup import escape

    try:
        app()
    except SleeptimeError as exc:
        # soft_wrap: the error stays on one line whatever the terminal width
        message = " ".join(str(exc).splitlines())
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
