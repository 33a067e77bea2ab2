"""The `sleeptime` command line (typer + rich). Commands are thin: they parse, call the library, and print.

User errors (SleeptimeError and friends) print one line on stderr and exit 1; usage errors exit 2 (typer).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sleeptime import SleeptimeError, __version__

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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details to stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def print_json(obj) -> None:
    # plain print: rich would wrap long lines and break the JSON for machines
    print(json.dumps(obj, default=str))


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


@app.command("train")
def train_cmd(
    out: Annotated[str, typer.Option(help="Run folder: checkpoints, config and log; an existing run resumes.")],
    preset: Annotated[str, typer.Option(help="Recipe: tiny or demo.")] = "demo",
    variant: Annotated[str | None, typer.Option(help="Override the architecture (lmm, mac, mag, mal, swa).")] = None,
    device: Annotated[str, typer.Option(envvar="SLEEPTIME_DEVICE", help="auto, cpu or cuda.")] = "auto",
    max_minutes: Annotated[float | None, typer.Option(help="Stop (resumably) after this long.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (CPU).")] = None,
):
    """Train a memory model through its inner updates (curriculum of streamed histories); resumable."""
    from pathlib import Path

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sleeptime.models.engine import pick_device
    from sleeptime.training.train import preset as make_preset
    from sleeptime.training.train import train

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        cfg = make_preset(preset, variant)
        dev = pick_device(device)
    except ValueError as exc:
        raise SleeptimeError(str(exc)) from None
    log_path = Path(out) / "train.log.jsonl"
    Path(out).mkdir(parents=True, exist_ok=True)
    with Progress(
        TextColumn("[bold]{task.fields[stage]}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]} exact {task.fields[exact]}"), TimeElapsedColumn(), console=console,
    ) as bar, log_path.open("a") as log_file:
        task = bar.add_task("train", total=cfg.total_steps, stage="", loss="-", exact="-")

        def on_step(p: dict) -> None:
            log_file.write(json.dumps(p) + "\n")
            log_file.flush()
            bar.update(task, completed=p["step"], stage=p["stage_name"], loss=p.get("loss"), exact=p.get("exact"))

        progress = train(cfg, Path(out), device=dev, max_minutes=max_minutes, on_step=on_step)
    console.print(f"model written to {Path(out) / 'model.safetensors'} after {progress['step']} steps")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(envvar="SLEEPTIME_MODEL", help="Shipped model name or model file.")] = "demo",
    tasks: Annotated[str, typer.Option(help="Comma-separated: passkey, chat, recall.")] = "passkey,chat",
    lengths: Annotated[str, typer.Option(help="Comma-separated history lengths in tokens.")] = "4096,32768,262144,1048576,2097152",
    n: Annotated[int, typer.Option(help="Held-out samples per cell.")] = 20,
    batch: Annotated[int, typer.Option(help="Histories consolidated together.")] = 8,
    device: Annotated[str, typer.Option(envvar="SLEEPTIME_DEVICE", help="auto, cpu or cuda.")] = "auto",
    plot: Annotated[str | None, typer.Option(help="Write a PNG plot here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per cell.")] = False,
):
    """Recall accuracy against history length, through consolidation and answering, on held-out data."""
    import torch

    from sleeptime.models.engine import MemoryEngine
    from sleeptime.training.evaluate import evaluate
    from sleeptime.training.evaluate import plot as plot_cells

    torch.set_flush_denormal(True)
    try:
        engine = MemoryEngine.load(model, device)
    except (FileNotFoundError, ValueError) as exc:
        raise SleeptimeError(str(exc)) from None
    table = Table(title=f"recall on held-out data, model {engine.model_id}")
    for col in ("task", "history tokens", "n", "accuracy", "seconds"):
        table.add_column(col)

    def on_cell(cell) -> None:
        if as_json:
            print_json(cell.to_dict())
        table.add_row(cell.task, str(cell.tokens), str(cell.n), f"{cell.accuracy:.2f}", f"{cell.seconds:.0f}")

    cells = evaluate(
        engine, [t for t in tasks.split(",") if t], [int(x) for x in lengths.split(",") if x], n, batch, on_cell
    )
    if plot:
        plot_cells({engine.model_id: [c.to_dict() for c in cells]}, plot)
    if not as_json:
        console.print(table)


def main() -> None:
    try:
        app()
    except SleeptimeError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
