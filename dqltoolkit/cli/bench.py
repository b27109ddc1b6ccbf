"""`bench`: gradient steps per second against the reference step."""

from __future__ import annotations

import json
from typing import Optional

import click

from ..bench.throughput import format_table, run_benchmark, to_json_rows
from . import _fail, _failing, _threads, _threads_option, main


@main.command()
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--rows", default="reference,exact,exact_x5,approx,eval,reduced", show_default=True,
              help="Comma-separated subset of rows; 'recipes' (not in the default) times every shipped recipe's training step and its "
                   "predict for one observation, 'ensemble' Diffusion-QL with ten critics (-p critic=ensemble-q), 'export' the evaluation "
                   "policy exported to ONNX and run by onnxruntime (the export extra), 'samplers' predict with a T 50 head by ddpm, "
                   "dpm-solver++ and ddim and the edp recipe's step; 'reduced' repeats the chosen exact, exact_x5, eval and recipes rows "
                   "with reduced-precision products: TF32 on a GPU, bf16 on a CPU with bf16 units (-p matmul_precision).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Calls per timed block (eval rows at least 20, five-seed rows a fifth); default: blocks sized to fill --seconds.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget of the timed rounds when --steps is not given [90; with set-up and warm-up about two minutes].")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed blocks per row, taken round-robin across rows; each row reports the median block.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per row.")
@_threads_option
def bench(device: str, rows: str, steps: Optional[int], seconds: Optional[float], repeats: int, as_json: bool, threads: str) -> None:
    """Gradient steps/s at Hopper sizes: reference vs exact vs 5 seeds vs approx, and the evaluation path."""
    known = {"reference", "exact", "exact_x5", "approx", "eval", "reduced", "recipes", "ensemble", "export", "samplers"}
    wanted = [r.strip() for r in rows.split(",") if r.strip()]
    bad = [r for r in wanted if r not in known]
    if bad:
        _fail(ValueError(f"--rows: unknown row(s) {bad}; choose from {sorted(known)}"))
    with _failing(ValueError), _threads(threads, lambda m: click.echo(m, err=True)):
        result = run_benchmark(device, steps=steps, repeats=repeats, rows=wanted, seconds=seconds,
                               progress=lambda m: click.echo(m, err=True))
    if as_json:
        for r in to_json_rows(result):
            click.echo(json.dumps(r))
    else:
        click.echo(format_table(result))
