#!/usr/bin/env bash
# One short GPU lease, prepared in advance (a lease is about 15 minutes and one command at most 10):
#   1. the Triton kernels (Titans memory and delta rule, the latter's backward too) checked against the reference
#      and timed (benchmarks/gpu_kernels.py);
#   2. the shipped model's consolidation throughput on the GPU (`sleeptime bench model --device cuda`), fed 512
#      tokens a call as the daemon does and 8192;
#   3. the `gpu` preset trained from scratch for TRAIN_MINUTES (through the delta rule's Triton kernels if step 1
#      passed, else the reference), its learning rate annealed by the clock, then its reading ceiling and its recall
#      on the held-out split (`sleeptime eval`).
# With BUDGET_S set, TRAIN_MINUTES is what is left of BUDGET_S seconds after steps 1-2, less EVAL_RESERVE_S for the
# evaluation: the session then ends near BUDGET_S whatever the kernels' compile and the bench took.
# TRAIN_ARGS_B trains a second run side by side on the same device (the same preset and minutes, these arguments),
# which comes back as model_b.safetensors and train_b.log.jsonl: one small model leaves most of the GPU idle, so two
# recipes cost a lease little more than one. EVAL_N=0 leaves the evaluation to another machine (the models come back).
# Everything lands in OUT (at most 8 files, none over 16 MiB: what a lease sends back). A failed step is logged
# and the next one still runs; the exit status is 1 if any step failed.
#
#   OUT=results/gpu BUDGET_S=560 bash benchmarks/gpu_session.sh   # on a GPU: about 9.5 minutes
#   ... PRESET=lookup-gpu TRAIN_ARGS="--init-from checkpoints/echo-first/model.safetensors" \
#       TRAIN_ARGS_B="--init-from checkpoints/echo-first/model.safetensors --conv-width 16" EVAL_N=0 BENCH_SEGMENTS=
#   ... TRAIN_ARGS="--init-from checkpoints/lookup-gpu/model.safetensors --conv-width 16 --answer-style restate"
#       # on from the last lease's model (docs/research/experiments.md, "A GPU run")
#   ... PRESET=lineage RESUME=checkpoints/lineage DATA_WORKERS=12 WHEELS=.whl KERNEL_ARGS="--delta-only ..." \
#       EVAL_N=0 BENCH_SEGMENTS=   # the live lineage, resumed in place; its files come back to be committed
#   OUT=/tmp/s DEVICE=cpu PRESET=tiny KERNELS=0 TRAIN_MINUTES=0.1 EVAL_N=2 EVAL_LENGTHS=1024 \
#       BENCH_TOKENS=4096 bash benchmarks/gpu_session.sh  # smoke test on the CPU (tests/benchmarks)
#
# Only the source is needed: it runs as `python3 -m sleeptime` with torch, triton, typer, rich, safetensors and
# numpy, no database packages. The working tree that travels must stay under 64 MiB: leave new run folders in
# checkpoints/ out of it.
set -uo pipefail

OUT=${OUT:?set OUT to the results folder}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-gpu}
KERNELS=${KERNELS:-1}
TRAIN_MINUTES=${TRAIN_MINUTES:-4}
BUDGET_S=${BUDGET_S:-}
EVAL_RESERVE_S=${EVAL_RESERVE_S:-200}  # the trainer's start and save (~20 s), reading (60 s at most), recall (the rest)
EVAL_N=${EVAL_N:-40}
EVAL_LENGTHS=${EVAL_LENGTHS:-1024,4096,32768}
BENCH_TOKENS=${BENCH_TOKENS:-65536,1048576}
BENCH_SEGMENTS=${BENCH_SEGMENTS-512 8192}  # empty: no bench
# the full tables were taken once (docs/gpu_kernels.md): a lease now checks the kernels at chunk 64 and times them
# on 16K tokens without torch.compile, and leaves the time to training (KERNEL_ARGS= gives the full tables)
KERNEL_ARGS=${KERNEL_ARGS---no-compile --chunks 64 --tokens 16384}
TRAIN_ARGS=${TRAIN_ARGS:-}  # e.g. "--init-from sleeptime/models/shipped/demo.safetensors --write-floor 0.05"
TRAIN_ARGS_B=${TRAIN_ARGS_B:-}  # a second run side by side; empty: none
PYTHON=${PYTHON:-python3}
RUN=${RUN:-$(mktemp -d)/run}  # optimizer state stays here: only the model comes back
# a run folder to resume in place (the live lineage, checkpoints/lineage): it trains there with a compact optimizer,
# and its model, tokenizer, optimizer and config come back beside the log, to be committed
RESUME=${RESUME:-}
DATA_WORKERS=${DATA_WORKERS:-0}  # processes drawing batches (train --data-workers): a GPU outruns one thread
WHEELS=${WHEELS:-}  # a folder of wheels to install first (fla-core: nothing can be downloaded on a lease)
[ -z "$RESUME" ] || RUN=$RESUME

OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
failed=0
say() { echo "== $*" | tee -a "$OUT/session.log" >&2; }  # stderr: a step's stdout may be its result file
status=0
step() {  # step NAME COMMAND...: run it with its stderr in the log, remember a failure (and its exit status)
    local name=$1; shift
    say "$name: $*"
    local start=$SECONDS
    status=0
    "$@" 2>>"$OUT/session.log" || { status=$?; say "$name FAILED (exit $status)"; failed=1; }
    say "$name took $((SECONDS - start)) s"
}

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/session.log" 2>&1
fi
if [ -n "$WHEELS" ]; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        >>"$OUT/session.log" 2>&1 && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    >>"$OUT/session.log" 2>&1

train_kernels=auto  # on CUDA: the delta rule's Triton forward and backward (kernels/ops.py)
if [ "$KERNELS" = 1 ]; then
    step kernels timeout 200 "$PYTHON" benchmarks/gpu_kernels.py --out "$OUT/gpu_kernels.md" $KERNEL_ARGS
    # a delta-rule kernel that failed its check (or to compile) must not train the model: the reference does.
    # Exit 3 says only the Titans memory's kernel failed, which the trained model does not use
    [ "$status" = 0 ] || [ "$status" = 3 ] || { train_kernels=torch; say "training on the torch reference"; }
fi
for segment in $BENCH_SEGMENTS; do  # the daemon feeds 512 tokens a call; longer calls launch fewer kernels
    step bench timeout 120 "$PYTHON" -m sleeptime bench model --device "$DEVICE" --tokens "$BENCH_TOKENS" \
        --segment "$segment" --threads 4 --json >>"$OUT/bench_model.jsonl"
done
if [ -n "$BUDGET_S" ]; then
    TRAIN_MINUTES=$("$PYTHON" -c "print(round(max(0.5, ($BUDGET_S - $SECONDS - $EVAL_RESERVE_S) / 60), 2))")
    say "training for $TRAIN_MINUTES minutes ($SECONDS s of $BUDGET_S spent)"
fi
# a time-boxed run anneals by the clock; the lineage keeps its schedule's steps (long, so its rate stays near the
# peak: a shipped model is a short annealed branch of it), and saves a compact optimizer
options="--anneal-by-clock"
[ -z "$RESUME" ] || options="--compact-optimizer"
train() {  # train RUN_FOLDER EXTRA_ARGS: the preset for TRAIN_MINUTES on DEVICE
    env SLEEPTIME_KERNELS="$train_kernels" "$PYTHON" -m sleeptime train --preset "$PRESET" --device "$DEVICE" \
        --max-minutes "$TRAIN_MINUTES" --data-workers "$DATA_WORKERS" $options --out "$1" $2 >/dev/null  # unquoted
}
runs=("$RUN")
if [ -n "$TRAIN_ARGS_B" ]; then
    runs+=("${RUN}_b")
    say "train_b (side by side): $TRAIN_ARGS_B"
    train "${RUN}_b" "$TRAIN_ARGS_B" 2>>"$OUT/session.log" &
    train_b=$!
fi
step train train "$RUN" "$TRAIN_ARGS"
if [ -n "$TRAIN_ARGS_B" ]; then
    if wait "$train_b"; then say "train_b done"; else say "train_b FAILED (exit $?)"; failed=1; fi
fi
for run in "${runs[@]}"; do
    suffix=${run#"$RUN"}  # "" or "_b"
    cp "$run/model.safetensors" "$OUT/model$suffix.safetensors" 2>>"$OUT/session.log" || failed=1
    cp "$run/train.log.jsonl" "$OUT/train$suffix.log.jsonl" 2>>"$OUT/session.log" || failed=1
    if [ -n "$RESUME" ] && [ -z "$suffix" ]; then  # the lineage's other files, to be committed
        cp "$run/optimizer.safetensors" "$run/config.json" "$OUT/" 2>>"$OUT/session.log" || failed=1
        [ ! -e "$run/model.tokenizer.json" ] || cp "$run/model.tokenizer.json" "$OUT/"
    fi
    [ "$EVAL_N" -gt 0 ] || continue
    step reading timeout 60 "$PYTHON" -m sleeptime eval --model "$OUT/model$suffix.safetensors" --device "$DEVICE" \
        --reading --tasks chat,passkey --lengths 1024 --n "$EVAL_N" --json >>"$OUT/reading.jsonl"
    step recall timeout $((EVAL_RESERVE_S - 80)) "$PYTHON" -m sleeptime eval --model "$OUT/model$suffix.safetensors" \
        --device "$DEVICE" --tasks chat,passkey --lengths "$EVAL_LENGTHS" --n "$EVAL_N" --batch "$EVAL_N" --json \
        >>"$OUT/recall.jsonl"
    tail -n 3 "$run/train.log.jsonl" 2>/dev/null | cut -c1-400
done
cat "$OUT"/gpu_kernels.md "$OUT"/bench_model.jsonl "$OUT"/reading.jsonl "$OUT"/recall.jsonl 2>/dev/null | cut -c1-400
exit $failed
