"""Training: the outer loop learns the projections, gates and attention through the inner memory updates.

The recipe is a curriculum of stages, each a mix of tasks at one history length.
Short stages backpropagate through the whole sequence; long stages stream the history: the prefix is consumed
without gradients (state carried: memory, conv and attention caches) and only the last `window` tokens, which hold
the question and the answer, are backpropagated. A stage ends after `steps` steps, or earlier once the running
teacher-forced exact match on answers reaches `advance_at` (stage by skill, not by time).

Loss: cross-entropy on the answer bytes (those of the expected value weighted `value_weight` times the answer's
other bytes), plus `lm_weight` times the mean next-byte loss elsewhere, plus
`write_penalty` times the mean write strength of the delta-rule memories (sparse writes: see `write_strengths`).
Checkpoints (model and optimizer, safetensors) are written every `save_every` steps; a run resumes from them.

Tokens are bytes, or the subwords of a BPE (`TrainConfig.tokenizer`, a file from `python -m
sleeptime.training.bpe`): the model's vocabulary is then the tokenizer's, the batch and the backpropagated `window`
count its tokens (history lengths stay in the generator's own unit, byte-tokenizer ids), and every saved model has
the tokenizer file beside it.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from sleeptime import SleeptimeError
from sleeptime.models import checkpoint, tokenizer
from sleeptime.models.memory import MemoryConfig, NeuralMemory
from sleeptime.models.titans import ModelConfig, TitansLM
from sleeptime.training.data import ANSWER_STYLES, encode_answer, make_sample

log = logging.getLogger(__name__)

MAX_BAD_STEPS = 20  # consecutive non-finite losses before a run gives up


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: dict[str, float]  # task -> share of the batch
    history_tokens: int | tuple[int, ...]  # several: each step draws one (a stage that keeps short lengths alive)
    batch: int
    steps: int
    window: int = 0  # backpropagated tokens at the end of each sequence; 0 = the whole sequence
    advance_at: float | None = None
    task_options: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    stages: tuple[Stage, ...]
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    lm_weight: float = 0.2
    value_weight: float = 1.0  # the value's bytes against the answer's wording around them
    write_penalty: float = 0.0
    prefix_segment: int = 2048  # tokens per no-grad call while streaming a long prefix
    save_every: int = 50
    seed: int = 0
    tokenizer: str = ""  # a BPE tokenizer file (bpe.py), or "" for bytes

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def _delta_model(dim: int, layers: int, variant: str, memory_heads: int, head_dim: int, window: int) -> ModelConfig:
    # forgetting starts near zero: a history of 2M tokens must survive (1 - alpha)^2M, so decay is learned from ~0 up
    memory = MemoryConfig(dim=dim, heads=memory_heads, head_dim=head_dim, kind="delta", chunk_size=64, alpha_init=1e-5)
    return ModelConfig(
        variant=variant, dim=dim, layers=layers, heads=max(1, dim // 64), mlp_hidden=2 * dim, window=window,
        memory=memory,
    )


PRESETS = (
    "tiny", "demo", "copy", "mix", "long", "sparse", "chat", "read", "restate", "echo", "wide", "echo-first",
    "chat-memory", "lookup", "lookup-gpu", "lookup-long", "gpu", "full", "lineage",
)
SHORT_CHAT = {"chat": {"n_facts": (1, 3), "update_prob": 0.3}}


def preset(name: str, variant: str | None = None) -> TrainConfig:
    """Named recipes. `variant` swaps the architecture (e.g. "swa" trains the memory-off baseline)."""
    if name == "tiny":
        model = _delta_model(dim=32, layers=2, variant="mal", memory_heads=2, head_dim=16, window=32)
        stages = (
            Stage("copy", {"passkey": 1.0}, history_tokens=96, batch=4, steps=6),
            Stage("stream", {"passkey": 0.5, "chat": 0.5}, history_tokens=400, batch=2, steps=4, window=160),
        )
        cfg = TrainConfig(model=model, stages=stages, save_every=5, warmup=2, prefix_segment=128)
    elif name == "demo":
        model = _delta_model(dim=128, layers=2, variant="mal", memory_heads=2, head_dim=64, window=128)
        # skills first: copy one value, then bind attributes to values, then go long
        stages = (
            Stage("copy", {"passkey": 1.0}, 448, batch=16, steps=800, advance_at=0.8),
            Stage("facts", {"passkey": 0.3, "chat": 0.5, "recall": 0.2}, 448, batch=12, steps=800, advance_at=0.6,
                  task_options=SHORT_CHAT),
            Stage("1k", {"passkey": 0.4, "chat": 0.4, "recall": 0.2}, 960, batch=8, steps=300, advance_at=0.6,
                  task_options=SHORT_CHAT),
            Stage("4k", {"passkey": 0.4, "chat": 0.6}, 4096, batch=8, steps=300, window=1024, advance_at=0.8),
            Stage("16k", {"passkey": 0.4, "chat": 0.6}, 16384, batch=8, steps=400, window=1024, advance_at=0.8),
            Stage("32k", {"passkey": 0.3, "chat": 0.7}, 32768, batch=8, steps=2000, window=1024),
        )
        # 1e-3: at 3e-3 a 2-layer byte model formed its copy (induction) circuit several times slower
        cfg = TrainConfig(model=model, stages=stages, lr=1e-3, min_lr=1e-4)
    elif name == "copy":
        # the demo recipe's copy stage alone, up to 3,000 steps: how long a model from scratch takes to copy a value
        # (it ends at a running value exact of 0.8), with and without --write-penalty (docs/research/experiments.md)
        cfg = preset("demo")
        cfg = replace(cfg, stages=(replace(cfg.stages[0], steps=3000),))
    elif name == "mix":
        # the demo model, trained on a mixture of lengths: after the 16K stage of "demo", recall at 1K and 4K had
        # collapsed (0.95 -> 0.0 and 0.75 -> 0.1) while 16K rose (0.075 -> 0.525); continue with --init-from
        cfg = preset("demo")
        mix = Stage("mix", {"passkey": 0.5, "chat": 0.5}, (1024, 4096, 16384), batch=8, steps=2000, window=1024)
        cfg = replace(cfg, stages=(mix,), warmup=10)
    elif name == "long":
        # "mix" with 64K histories in the mixture: it lifted 16K and 32K recall that were never trained at 32K
        # (0.075 -> 0.675, 0 -> 0.45), so longer draws should carry recall further; continue with --init-from.
        # 600 steps (about an hour on one CPU thread): the learning rate anneals within the run, and 40 steps that
        # annealed already lifted 16K passkey recall from 0.71 to 0.96 (docs/research/experiments.md)
        cfg = preset("demo")
        long = Stage(
            "long", {"passkey": 0.6, "chat": 0.4}, (1024, 4096, 16384, 65536), batch=8, steps=600, window=1024
        )
        cfg = replace(cfg, stages=(long,), warmup=10, save_every=25)
    elif name == "sparse":
        # "long" with a penalty on the memory's write strength (see write_strengths); continue with --init-from
        cfg = replace(preset("long"), write_penalty=0.5)
    elif name == "chat":
        # conversational facts: the shipped model reads only 9 of 40 held-out chat statements placed right before the
        # question, against 38 of 40 pass keys (docs/research/experiments.md, the reading ceiling), so the gap is reading, not
        # memory: chat-heavy batches at short and medium lengths, the pass key kept in the mix so it is not
        # forgotten; continue with --init-from and the shipped floors and write penalty
        cfg = preset("demo")
        chat = Stage(
            "chat", {"chat": 0.7, "passkey": 0.3}, (448, 1024, 4096), batch=8, steps=1200, window=1024,
            task_options=SHORT_CHAT,
        )
        cfg = replace(cfg, stages=(chat,), warmup=10, save_every=25)
    elif name == "read":
        # "chat" at short lengths only, half its values novel: asked right after the statement, the shipped model
        # answers held-out chat questions with near-copies ("657051" for 357051), made-up values of the right
        # shape, the pass key, or now and then a value of the training split ("sky blue"): it has not learned to
        # copy what it read, and a value of any shape can only be copied. Short histories give about four times as
        # many chat answers per CPU minute
        cfg = preset("demo")
        read = Stage(
            "read", {"chat": 0.8, "passkey": 0.2}, (256, 448), batch=16, steps=1200,
            task_options={"chat": {"n_facts": (1, 2), "update_prob": 0.3, "novel_values": 0.5}},
        )
        cfg = replace(cfg, stages=(read,), warmup=10, save_every=25)
    elif name == "restate":
        # "read" with answers that name the attribute right before the value ("Your locker code is 357051."): the
        # shipped model's misses copy all but the first bytes ("657051"), and the first byte is the one that must
        # be found by the attribute; an answer that restates it makes that a lookup of what followed the same words
        # in the statement, the lookup the model already does for the pass key
        cfg = preset("read")
        chat = {"n_facts": (1, 2), "update_prob": 0.3, "answer_style": "restate"}
        cfg = replace(cfg, stages=(replace(cfg.stages[0], name="restate", task_options={"chat": chat}),))
    elif name == "echo":
        # "restate" with a share of echo samples (a phrase of made-up words and codes asked back verbatim): the
        # restated answer makes a chat value a copy of what followed the attribute's words, and echo trains copying
        # any string byte after byte, which the chat misses ("35705" for 357051, a wrong first digit) lack
        cfg = preset("restate")
        stage = cfg.stages[0]
        cfg = replace(cfg, stages=(replace(stage, name="echo", tasks={"echo": 0.4, "chat": 0.4, "passkey": 0.2}),))
    elif name == "wide":
        # "echo" with memory keys that see 16 bytes instead of 4 (conv_width): the shipped model copies through its
        # memories, and block 0's keys are a function of the last four bytes, too few to tell one syllable-built word
        # from the chit-chat around it (docs/research/experiments.md). From the shipped weights the wider conv starts as theirs.
        cfg = preset("echo")
        cfg = replace(cfg, model=replace(cfg.model, memory=replace(cfg.model.memory, conv_width=16)))
    elif name == "echo-first":
        # the demo model from scratch, taught to copy any string before anything else: every copy the shipped model
        # makes goes through its memories and is of digits (docs/research/experiments.md), the pass key's alphabet, and no
        # fine-tune taught it letters. Echo samples (short histories, so the phrase is most of the text) give a
        # copy target on every answer byte, pass keys keep digits in the mix; then chat read right after the
        # statement, with a share of echo kept
        cfg = preset("demo")
        echo = {"echo": {"n_parts": (1, 3)}}
        stages = (
            Stage("echo", {"echo": 0.6, "passkey": 0.4}, 256, batch=16, steps=2500, advance_at=0.6,
                  task_options=echo),
            Stage("read", {"chat": 0.6, "echo": 0.2, "passkey": 0.2}, (256, 448), batch=16, steps=1200,
                  task_options=echo | {"chat": {"n_facts": (1, 2), "update_prob": 0.3, "novel_values": 0.5}}),
        )
        cfg = replace(cfg, stages=stages, save_every=25)
    elif name == "chat-memory":
        # chat as it is evaluated, through the memory: the echo-first model (checkpoints/echo-first) reads 24 of 40
        # held-out chat statements, yet teacher-forced through 1K histories (training/probe.py) it gets 6 of 40 values
        # of a lone fact and 1 of 40 of the evaluation's transcripts of 4-8 facts with updates, which no recipe before
        # trained on (they drew 1-3 facts).
        # Histories of 1K and 2K tokens are backpropagated whole, so the write of a fact learns as well as its read;
        # echo and pass keys stay in the mix so copying is not forgotten. Continue with --init-from
        cfg = preset("demo")
        stage = Stage(
            "chat-memory", {"chat": 0.6, "echo": 0.2, "passkey": 0.2}, (1024, 2048, 4096), batch=8, steps=1500,
            window=2048, task_options={"echo": {"n_parts": (1, 3)}, "chat": {"novel_values": 0.3}},
        )
        cfg = replace(cfg, stages=(stage,), warmup=10, save_every=25)
    elif name == "lookup":
        # a fact found by what it is about: after "chat-memory" the models copy a pass key's later bytes through the
        # memory at 1K (teacher-forced 0.99-1.00) and its first byte only when the answer names the pass key right
        # before it; a chat value's first byte, which the question must find, 4 of 40, and the first byte of a
        # multi-query recall value (key word -> code) 0 and 6 of 40 (docs/research/experiments.md). Lookup-heavy batches (recall
        # and chat), histories past the attention window backpropagated whole, the value's bytes weighted four
        # times the answer's wording; continue with --init-from
        cfg = preset("demo")
        stage = Stage(
            "lookup", {"recall": 0.4, "chat": 0.4, "echo": 0.1, "passkey": 0.1}, (448, 1024), batch=8, steps=1000,
            task_options={"echo": {"n_parts": (1, 3)}, "chat": {"novel_values": 0.3}},
        )
        cfg = replace(cfg, stages=(stage,), warmup=10, save_every=25, value_weight=4.0)
    elif name == "lookup-gpu":
        # "lookup" at the scale of a GPU lease: on the 2-core CPU, 926 steps of batch 8 raised a recall value's first
        # byte from 0 to 10-13 of 40 and its later bytes from 0.24 to 0.64, and were still climbing when the run
        # stopped; a lease trains about eight times the sequences in minutes. Batches of 32, 2K histories in the
        # mix, backpropagated whole; stop it with --max-minutes. Continue with --init-from
        cfg = preset("lookup")
        stage = replace(
            cfg.stages[0], name="lookup-gpu", tasks={"recall": 0.35, "chat": 0.45, "echo": 0.1, "passkey": 0.1},
            history_tokens=(448, 1024, 2048), batch=32, steps=8000,
        )
        cfg = replace(cfg, stages=(stage,), save_every=100)
    elif name == "lookup-long":
        # "lookup-gpu" with 4K histories in place of 448: a fact recalled at 1K must also outlast 4K of chat
        cfg = preset("lookup-gpu")
        cfg = replace(cfg, stages=(replace(cfg.stages[0], name="lookup-long", history_tokens=(1024, 2048, 4096)),))
    elif name == "gpu":
        # for a short GPU lease (benchmarks/gpu_session.sh): the demo model, 583K parameters, reads only 9 of 40
        # held-out chat statements right before the question, so twice its width and depth (4.2M parameters), the
        # same skills-first curriculum with chat in every stage after the copy, larger batches; stop it with
        # --max-minutes. The copy stage may run 2,000 steps and nothing penalises writes: on the 2-core CPU the demo
        # model from scratch formed its copy in ~1,250 steps without a write penalty and none in 3,000 with 0.5
        # (docs/research/experiments.md), and one GPU lease ended its 800 copy steps without a copy
        model = _delta_model(dim=256, layers=4, variant="mal", memory_heads=4, head_dim=64, window=256)
        stages = (
            Stage("copy", {"passkey": 1.0}, 448, batch=32, steps=2000, advance_at=0.8),
            Stage("facts", {"chat": 0.7, "passkey": 0.3}, 448, batch=32, steps=1500, advance_at=0.7,
                  task_options=SHORT_CHAT),
            Stage("mix", {"chat": 0.6, "passkey": 0.4}, (1024, 4096, 16384), batch=16, steps=3000, window=1024,
                  task_options=SHORT_CHAT),
        )
        cfg = TrainConfig(model=model, stages=stages, lr=1e-3, min_lr=1e-4)
    elif name == "full":
        # the full-attention baseline, where lengths allow: memory off and an attention window of 8K tokens, twice
        # the longest history trained (the demo curriculum up to its 4K stage); its copy stage may run 3,000 steps
        # instead of 800: two runs of 800 ended at exact 0, and a baseline that never formed its copy circuit
        # measures nothing
        cfg = preset("demo", variant="swa")
        copy, *rest = cfg.stages[:4]
        cfg = replace(cfg, model=replace(cfg.model, window=8192), stages=(replace(copy, steps=3000), *rest))
    elif name == "lineage":
        # the live lineage: every byte model before it copied a fact only when the bytes before the value came
        # again, because block 0's memory keys saw the last few bytes ("is "), the same for every fact
        # (docs/research/experiments.md). Here attention comes before every memory (attn_mem), so the key written at
        # a value can carry what the fact is about, over subword tokens (train it with --tokenizer). Three blocks of
        # width 256: with a 2K vocabulary about 4M parameters, whose fp32 weights and bf16 second moments fit the
        # 25 MB the tree allows.
        # Skills first, as every byte model learned (docs/research/experiments.md): 1,358 GPU steps of every length from 512 bytes to 16K
        # lowered the loss from 9.2 to 2.1 but copied no value, not even one inside the attention window (reading
        # 0 of 40), so "read" trains histories of 256 bytes to 1K, where a value is often in the window and a step is
        # cheap (a CPU thread can do it), with copy-heavy tasks, until the teacher-forced value exact reaches 0.5;
        # then "all" as before. The learning rate stays near its peak (a shipped model is an annealed branch)
        memory = MemoryConfig(dim=256, heads=4, head_dim=64, kind="delta", chunk_size=64, alpha_init=1e-5)
        model = ModelConfig(variant="attn_mem", dim=256, layers=3, heads=4, mlp_hidden=512, window=256, memory=memory)
        options = {"echo": {"n_parts": (1, 3)}, "chat": {"novel_values": 0.3}}
        stages = (
            Stage("read", {"chat": 0.35, "echo": 0.25, "passkey": 0.2, "recall": 0.2}, (256, 512, 1024), batch=32,
                  steps=20_000, advance_at=0.5, task_options=options),
            Stage("all", {"chat": 0.45, "recall": 0.2, "passkey": 0.2, "echo": 0.15},
                  (512, 1024, 2048, 4096, 8192, 16384), batch=32, steps=1_000_000, task_options=options),
        )
        cfg = TrainConfig(model=model, stages=stages, lr=2e-3, min_lr=2e-4, warmup=200, value_weight=4.0, save_every=25)
    else:
        raise ValueError(f"unknown preset {name!r}; expected {', '.join(PRESETS[:-1])} or {PRESETS[-1]}")
    if variant:
        cfg = replace(cfg, model=replace(cfg.model, variant=variant))
    return cfg


def with_overrides(
    cfg: TrainConfig, write_penalty: float | None = None, steps: int | None = None, write_floor: float | None = None,
    decay_floor: float | None = None, novel_values: float | None = None, window: int | None = None,
    conv_width: int | None = None, answer_style: str | None = None, value_weight: float | None = None,
    batch: int | None = None,
) -> TrainConfig:
    """A recipe with every stage's batch size (a CPU thread takes more, smaller steps than a GPU), its write penalty, the model's write and decay floors, its attention window, the width of its
    memories' key convolution, the share of novel chat values in every stage that has chat and, for a one-stage
    recipe, its number of steps replaced, every chat answer drawn in `answer_style`, and the weight of the value's
    bytes in the answer loss (None: kept)."""
    if write_penalty is not None:
        cfg = replace(cfg, write_penalty=write_penalty)
    if value_weight is not None:
        if value_weight <= 0:
            raise ValueError(f"value_weight must be > 0, got {value_weight}")
        cfg = replace(cfg, value_weight=value_weight)
    if novel_values is not None and not 0.0 <= novel_values <= 1.0:
        raise ValueError(f"novel_values must be within [0, 1], got {novel_values}")
    if answer_style is not None and answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {', '.join(ANSWER_STYLES)}, got {answer_style!r}")
    chat_options = {
        key: value for key, value in (("novel_values", novel_values), ("answer_style", answer_style))
        if value is not None
    }
    if chat_options:

        def with_chat_options(stage: Stage) -> Stage:
            if "chat" not in stage.tasks:
                return stage
            chat = stage.task_options.get("chat", {}) | chat_options
            return replace(stage, task_options=stage.task_options | {"chat": chat})

        cfg = replace(cfg, stages=tuple(with_chat_options(s) for s in cfg.stages))
    cfg = replace(cfg, model=replace(cfg.model, memory=cfg.model.memory.with_floors(write_floor, decay_floor)))
    if window is not None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        cfg = replace(cfg, model=replace(cfg.model, window=window))
    if conv_width is not None:
        if conv_width < 1:
            raise ValueError(f"conv_width must be >= 1, got {conv_width}")
        cfg = replace(cfg, model=replace(cfg.model, memory=replace(cfg.model.memory, conv_width=conv_width)))
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        cfg = replace(cfg, stages=tuple(replace(stage, batch=batch) for stage in cfg.stages))
    if steps is not None:
        if len(cfg.stages) != 1:
            raise ValueError(f"steps can only be set for a one-stage recipe; this one has {len(cfg.stages)} stages")
        cfg = replace(cfg, stages=(replace(cfg.stages[0], steps=steps),))
    return cfg


@functools.cache
def load_tokenizer(file: str) -> tokenizer.Tokenizer:
    """A run's tokenizer: the BPE in `file`, or bytes for "" (cached: batch workers load it once)."""
    return tokenizer.BPETokenizer.from_file(file) if file else tokenizer.BYTES


def with_tokenizer(cfg: TrainConfig, file: str | None) -> TrainConfig:
    """The recipe over the subwords of the BPE in `file` (None or "": unchanged): the model's vocabulary becomes
    the tokenizer's, rounded up to a multiple of 64. ValueError for a file that is not a tokenizer."""
    if not file:
        return cfg
    size = load_tokenizer(file).vocab_size
    return replace(cfg, tokenizer=file, model=replace(cfg.model, vocab_size=size + (-size % 64)))


def make_batch(
    stage: Stage, rng: random.Random, split: str = "train", tok: tokenizer.Tokenizer = tokenizer.BYTES,
    tasks_out: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, L] of `tok` and answer mask [B, L]: 1 where the token is an answer token, 2 where it carries
    part of the expected value inside the answer (what exact match scores); rows are left-padded with tok.pad.
    `tasks_out` receives each row's task."""
    tasks, weights = zip(*stage.tasks.items())
    lengths = stage.history_tokens if isinstance(stage.history_tokens, tuple) else (stage.history_tokens,)
    target = rng.choice(lengths)
    rows = []
    for _ in range(stage.batch):
        task = rng.choices(tasks, weights)[0]
        if tasks_out is not None:
            tasks_out.append(task)
        options = stage.task_options.get(task, {})
        sample = make_sample(task, rng.randrange(2**31), split=split, target_tokens=target, **options)
        history = tok.encode_messages(sample.history)
        prompt = tok.encode_prompt(sample.question)
        answer = encode_answer(sample.answer_text, tok)
        # the answer text states the value; the tokens that carry it are what recall is about
        start = sample.answer_text.find(sample.answer_value)
        end = start + len(sample.answer_value)
        inside = [i for i, (a, b) in enumerate(tok.char_spans(sample.answer_text)) if a < end and b > start]
        at, n = (inside[0], len(inside)) if start >= 0 and inside else (-1, 0)
        rows.append((history + prompt, answer, at, n))
    length = max(len(h) + len(a) for h, a, _, _ in rows)
    ids = torch.full((len(rows), length), tok.pad, dtype=torch.long)
    is_answer = torch.zeros(len(rows), length, dtype=torch.uint8)
    for r, (head, answer, at, n) in enumerate(rows):
        seq = head + answer
        ids[r, length - len(seq) :] = torch.tensor(seq)
        start = length - len(answer)
        is_answer[r, start:] = 1
        if at >= 0:
            is_answer[r, start + at : start + at + n] = 2
    return ids, is_answer


@contextmanager
def write_strengths(model: TitansLM) -> Iterator[list[torch.Tensor]]:
    """Collect the write strength b [B, H, T] of every delta-rule memory in the forwards run inside the block.

    Why penalise it: every write of the delta rule erases the old state along its key, so a value survives N later
    tokens only while the sum of b_t (k_t . k_value)^2 over them stays small. A model that writes its filler at
    b ~ 0.05 loses a pass key within tens of thousands of tokens (docs/research/experiments.md); 2M tokens need writes that are
    nearly all ~0, which the answer loss alone teaches slowly.
    """
    found: list[torch.Tensor] = []

    def record(memory: NeuralMemory, args: tuple) -> None:
        # the memory's own gates on the input it is about to write (one small extra projection)
        found.append(memory.gate_values(args[0])["beta"])

    handles = [
        module.register_forward_pre_hook(record)
        for module in model.modules()
        if isinstance(module, NeuralMemory) and "beta" in module.gate_names
    ]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def mean_write(writes: list[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """The mean write strength over the tokens that are text (`real` [B, T]), not the left padding of short rows,
    averaged over memories and heads: what the write penalty lowers."""
    weight = real[:, None, :].to(writes[0].dtype)
    per_memory = [(b * weight).sum() / (weight.sum() * b.shape[1]).clamp_min(1) for b in writes]
    return torch.stack(per_memory).mean()


def batch_loss(
    model: TitansLM,
    ids: torch.Tensor,
    is_answer: torch.Tensor,
    window: int,
    prefix_segment: int,
    lm_weight: float,
    write_penalty: float = 0.0,
    value_weight: float = 1.0,
    pad: int = tokenizer.PAD,
    tasks: Sequence[str] | None = None,
    per_task: dict | None = None,
) -> tuple[torch.Tensor, float]:
    """Loss over the backpropagated window and the teacher-forced exact match of the expected values; `pad` is
    the tokenizer's padding id. With each row's task in `tasks`, `per_task` receives, per task of the batch, its
    rows, their mean answer loss and their exact match: a mixed stage's one loss cannot tell a trade between
    tasks from drift."""
    B, L = ids.shape
    state = model.initial_state(B)
    start = 0 if window <= 0 or window >= L else L - window
    if start:
        with torch.no_grad():
            for a in range(0, start, prefix_segment):
                _, _, state = model(ids[:, a : min(start, a + prefix_segment)], state)
    inputs, targets = ids[:, start:-1], ids[:, start + 1 :]
    answer = is_answer[:, start + 1 :] > 0
    value = is_answer[:, start + 1 :] == 2
    with write_strengths(model) if write_penalty else nullcontext([]) as writes:
        logits, _, _ = model(inputs, state)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # [B, T]
    other = ~answer & (targets != pad)
    # the value's bytes decide exact match and are a few of the answer's; value_weight > 1 puts the loss on them
    weight = answer.float() + (value_weight - 1.0) * value.float()
    loss = (nll * weight).sum() / weight.sum().clamp_min(1) + lm_weight * (nll * other).sum() / other.sum().clamp_min(1)
    if write_penalty and writes:
        loss = loss + write_penalty * mean_write(writes, inputs != pad)
    with torch.no_grad():
        right = ((logits.argmax(-1) == targets) | ~value).all(dim=1)
        exact = right.float().mean().item()
        if tasks is not None and per_task is not None:
            row_loss = (nll * answer).sum(1) / answer.sum(1).clamp_min(1)
            for task in sorted(set(tasks)):
                rows = torch.tensor([t == task for t in tasks], device=ids.device)
                per_task[task] = {
                    "rows": int(rows.sum()),
                    "loss": round(row_loss[rows].mean().item(), 4),
                    "exact": round(right[rows].float().mean().item(), 3),
                }
    return loss, exact


def _draw_batch(stage: Stage, seed: str, tokenizer_file: str = "") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return _tasked_batch(stage, random.Random(seed), "train", load_tokenizer(tokenizer_file))


def _tasked_batch(
    stage: Stage, rng: random.Random, split: str, tok: tokenizer.Tokenizer
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """make_batch's ids and answer mask, and each row's task."""
    tasks: list[str] = []
    ids, is_answer = make_batch(stage, rng, split, tok, tasks)
    return ids, is_answer, tasks


class BatchSource:
    """Batches drawn ahead of the device. With no workers, one thread draws them in turn from the run's `rng` (the
    next batch while the device works on this one). With workers, that many processes keep 2 x workers batches in
    flight, the n-th of the run from its own seed: a GPU step outruns the pure-Python generator several times over."""

    def __init__(self, rng: random.Random, seed: str, workers: int = 0, tokenizer_file: str = ""):
        self.rng, self.seed, self.workers = rng, seed, workers
        # workers get the file, not the tokenizer object, and load it once each
        self.tokenizer_file = tokenizer_file
        # spawn, not fork: the parent may hold a CUDA context, which a forked child must not inherit
        self.pool: Executor = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers
            else ThreadPoolExecutor(1, thread_name_prefix="batches")
        )
        self.queue: collections.deque[tuple[int, Future]] = collections.deque()  # (stage index, batch)
        self.drawn = 0

    def get(self, stage_index: int, stage: Stage) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        while self.queue and self.queue[0][0] != stage_index:  # batches drawn for the stage before are dropped
            self.queue.popleft()[1].cancel()
        while len(self.queue) < max(2, 2 * self.workers):
            # one thread draws in order from the shared rng; processes draw each batch from its own seed
            job = (
                (_draw_batch, stage, f"{self.seed}-{self.drawn}", self.tokenizer_file) if self.workers
                else (_tasked_batch, stage, self.rng, "train", load_tokenizer(self.tokenizer_file))
            )
            self.queue.append((stage_index, self.pool.submit(*job)))
            self.drawn += 1
        return self.queue.popleft()[1].result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _lr(cfg: TrainConfig, step: int, clock: float = 0.0) -> float:
    """Linear warmup, then a cosine down to min_lr over the recipe's steps, or sooner: `clock` (0 to 1) is the share
    of a time-boxed run already spent, and the schedule follows whichever is further along."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max(clock, (step - cfg.warmup) / max(1, cfg.total_steps - cfg.warmup)))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def _save(
    out: Path, model: TitansLM, opt: torch.optim.Optimizer, progress: dict, compact: bool = False,
    tok: tokenizer.Tokenizer = tokenizer.BYTES,
) -> None:
    """The model and optimizer files of a run, and a BPE's file beside the model. compact: the optimizer as the tree
    keeps a live lineage's (25 MB in all): second moments in bf16, first moments left out (a resumed run rebuilds
    them within tens of steps)."""
    # the tmp model's name ends in .safetensors: save_model puts a tokenizer file beside it as model.tmp.tokenizer.json
    tmp_model, tmp_opt = out / "model.tmp.safetensors", out / "optimizer.safetensors.tmp"
    checkpoint.save_model(model, tmp_model, step=progress["step"], extra={"progress": progress}, tokenizer=tok)
    tensors = {}
    for i, (p, s) in enumerate((p, opt.state[p]) for g in opt.param_groups for p in g["params"]):
        for key, value in s.items():
            if compact and key == "exp_avg":
                continue
            value = torch.as_tensor(value).detach().cpu()
            if compact and key == "exp_avg_sq":
                value = value.to(torch.bfloat16)
            tensors[f"{i}.{key}"] = value.contiguous()
    save_file(tensors, str(tmp_opt), metadata={"progress": json.dumps(progress)})
    # rename last, so that a kill mid-save leaves the previous checkpoint whole (a run's tokenizer never changes, so
    # its file may go first)
    tmp_opt.replace(out / "optimizer.safetensors")
    if tok.digest is not None:
        tokenizer.tokenizer_path(tmp_model).replace(tokenizer.tokenizer_path(out / "model.safetensors"))
    tmp_model.replace(out / "model.safetensors")


class TokenizerMismatch(SleeptimeError, ValueError):
    """A run resumed, or started from weights, with another tokenizer than the weights were trained with."""


def check_tokenizer(path: Path, tok: tokenizer.Tokenizer, what: str) -> None:
    """TokenizerMismatch unless the model file at `path` was trained with `tok`."""
    from safetensors import safe_open

    # any weights file: one with no metadata (bare weights) was trained with bytes
    with safe_open(str(path), "pt") as f:
        theirs = (f.metadata() or {}).get("tokenizer")
    if theirs != tok.digest:
        said = {None: "bytes"}
        raise TokenizerMismatch(
            f"{what} {path} was trained with {said.get(theirs, 'the BPE ' + str(theirs)[:12])}, this run uses "
            f"{said.get(tok.digest, 'the BPE ' + str(tok.digest)[:12])}; pass the same --tokenizer"
        )


def _resume(
    out: Path, model: TitansLM, opt: torch.optim.Optimizer, tok: tokenizer.Tokenizer = tokenizer.BYTES
) -> dict | None:
    model_file, opt_file = out / "model.safetensors", out / "optimizer.safetensors"
    if not (model_file.exists() and opt_file.exists()):
        return None
    check_tokenizer(model_file, tok, "the run in")
    model.load_state_dict(load_file(str(model_file)))
    saved = load_file(str(opt_file))
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        keys = [k for k in saved if k.split(".", 1)[0] == str(i)]
        # moments on the parameter's device and in its dtype (a compact save holds them in bf16, or not at all: the
        # first moments then start from 0); AdamW keeps its step count on the CPU
        state = {k.split(".", 1)[1]: saved[k] for k in keys}
        state = {k: v if k == "step" else v.to(p.device, p.dtype) for k, v in state.items()}
        if "exp_avg_sq" in state:
            state.setdefault("exp_avg", torch.zeros_like(p))
        opt.state[p] = state
    return json.loads(checkpoint.read_model_metadata(model_file)["progress"])


def init_weights(model: TitansLM, path: Path) -> list[str]:
    """Load a model file's weights into `model`; returns the names of the file's weights it has no place for.

    Those are allowed so that a baseline with the memory switched off (variant swa, or the full-attention preset)
    can start from a memory model's attention, MLP and embedding weights; every weight the model has must be in the
    file, with its shape, but for a memory's causal conv, which may be wider in the model (`conv_width`): it then
    starts as the file's, computing the same function.
    """
    weights = load_file(str(path))
    own = model.state_dict()
    for name, param in own.items():
        # a wider causal conv starts as the file's narrower one: the taps further back are zero
        if name.endswith("memory.conv.weight") and name in weights and weights[name].shape[-1] < param.shape[-1]:
            narrow = weights[name]
            weights[name] = torch.cat([narrow.new_zeros(*narrow.shape[:-1], param.shape[-1] - narrow.shape[-1]), narrow], -1)
    missing = [name for name in own if name not in weights]
    wrong = [f"{n} {tuple(weights[n].shape)} != {tuple(p.shape)}" for n, p in own.items() if n in weights and weights[n].shape != p.shape]
    if missing or wrong:
        raise ValueError(f"{path} does not fit this model: missing {missing[:4]}, wrong shapes {wrong[:4]}")
    unused = sorted(set(weights) - set(own))
    if unused:
        log.warning("init from %s: %d weights this model has no place for, e.g. %s", path, len(unused), unused[0])
    model.load_state_dict({name: weights[name] for name in own})
    return unused


def check_run_options(
    cfg: TrainConfig, max_minutes: float | None, anneal_by_clock: bool, start_stage: str | None,
    recipe: str = "this recipe",
) -> None:
    """ValueError for options of `train` that cannot go together, before anything is written."""
    if anneal_by_clock and not max_minutes:
        raise ValueError("--anneal-by-clock needs --max-minutes")
    names = [stage.name for stage in cfg.stages]
    if start_stage is not None and start_stage not in names:
        raise ValueError(f"no stage {start_stage!r} in {recipe}; its stages are {', '.join(names)}")


def train(
    cfg: TrainConfig,
    out: Path,
    device: str = "cpu",
    max_minutes: float | None = None,
    on_step: Callable[[dict], None] | None = None,
    init_from: Path | None = None,
    anneal_by_clock: bool = False,
    start_stage: str | None = None,
    compact_optimizer: bool = False,
    data_workers: int = 0,
) -> dict:
    """Run (or resume) the curriculum; returns the final progress record. Writes out/model.safetensors.

    init_from: a model file whose weights start a new run (ignored when the run resumes).
    start_stage: a new run begins at this stage of the recipe (with init_from: weights that have passed the ones
    before it); the schedule still counts the skipped stages' steps.
    anneal_by_clock: the learning rate reaches min_lr when max_minutes run out rather than after the recipe's steps
    (a time-boxed run, e.g. a short GPU lease, that would otherwise stop with its learning rate still high); the
    minutes then count the whole run, so a resumed run goes on down the same schedule and stops when they are spent
    (without it, max_minutes bounds each invocation).
    compact_optimizer: every save keeps the optimizer compact (`_save`), as the tree keeps the live lineage.
    data_workers: processes that draw batches ahead (`BatchSource`); 0 draws them in one thread.
    A step whose loss is not finite is skipped (no update); MAX_BAD_STEPS of them in a row stop the run with an error.
    """
    check_run_options(cfg, max_minutes, anneal_by_clock, start_stage)
    tok = load_tokenizer(cfg.tokenizer)
    if tok.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} ids, the model only {cfg.model.vocab_size} (with_tokenizer)")
    names = [stage.name for stage in cfg.stages]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"model": cfg.model.to_dict(), "train": _describe(cfg)}, indent=1))
    torch.manual_seed(cfg.seed)
    model = TitansLM(cfg.model).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "init" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "init" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
    progress = _resume(out, model, opt, tok)
    if progress is None:
        first = names.index(start_stage) if start_stage else 0
        progress = {"step": 0, "stage": first, "stage_step": 0, "seconds": 0.0, "exact": 0.0}
        if init_from is not None:
            check_tokenizer(init_from, tok, "--init-from")
            init_weights(model, init_from)
    rng = random.Random(f"{cfg.seed}-{progress['step']}")
    started = time.monotonic()
    seconds_before = progress["seconds"]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    running = progress.get("exact", 0.0)
    bad_steps = 0
    batches = BatchSource(rng, f"{cfg.seed}-{progress['step']}", data_workers, cfg.tokenizer)
    try:
        while progress["stage"] < len(cfg.stages):
            stage = cfg.stages[progress["stage"]]
            # minutes of this invocation, or of the whole run when annealing by the clock
            spent = (time.monotonic() - started + (seconds_before if anneal_by_clock else 0.0)) / 60
            if max_minutes is not None and spent >= max_minutes:
                break
            ids, is_answer, tasks = batches.get(progress["stage"], stage)
            ids, is_answer = ids.to(device), is_answer.to(device)
            lr = _lr(cfg, progress["step"], spent / max_minutes if anneal_by_clock else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr
            per_task: dict = {}
            with amp:
                loss, exact = batch_loss(
                    model, ids, is_answer, stage.window, cfg.prefix_segment, cfg.lm_weight, cfg.write_penalty,
                    cfg.value_weight, tok.pad, tasks, per_task,
                )
            if not torch.isfinite(loss):
                bad_steps += 1
                progress["skipped"] = progress.get("skipped", 0) + 1
                log.warning("step %d: loss %s, skipped (%d in a row)", progress["step"], loss.item(), bad_steps)
                if bad_steps >= MAX_BAD_STEPS:
                    raise RuntimeError(f"{bad_steps} steps in a row had a loss that is not finite; the last checkpoint is kept")
                continue
            bad_steps = 0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            running = 0.9 * running + 0.1 * exact
            progress.update(
                step=progress["step"] + 1, stage_step=progress["stage_step"] + 1, loss=round(loss.item(), 4), lr=lr,
                exact=round(running, 3), seconds=round(seconds_before + time.monotonic() - started, 1),
            )
            done_by_skill = stage.advance_at is not None and running >= stage.advance_at and progress["stage_step"] >= 20
            if progress["stage_step"] >= stage.steps or done_by_skill:
                log.info("stage %s done after %d steps (exact %.2f)", stage.name, progress["stage_step"], running)
                progress.update(stage=progress["stage"] + 1, stage_step=0, exact=0.0)
                running = 0.0
            if on_step:
                # each task's rows of this batch apart (batch_loss): the log can sum them over many steps
                on_step(dict(progress, stage_name=stage.name, tasks=per_task))
            if progress["step"] % cfg.save_every == 0 or progress["stage"] >= len(cfg.stages):
                _save(out, model, opt, progress, compact_optimizer, tok)
    finally:
        batches.close()
    _save(out, model, opt, progress, compact_optimizer, tok)
    return progress


def saved_step(model_file: Path) -> int | None:
    """The step a run's checkpoint holds; None when there is none to resume (or it cannot be read: training says
    why when it tries)."""
    try:
        return json.loads(checkpoint.read_model_metadata(model_file)["progress"])["step"]
    except (OSError, KeyError, ValueError, checkpoint.CheckpointError):
        return None


def thin_log(path: Path, keep_last: int = 500, every: int = 10, saved_step: int | None = None) -> None:
    """Keep a run's step log small enough to commit with its lineage: the last `keep_last` lines whole, one line in
    `every` before them (each line is one step's record; the curve's shape survives, the file grows a tenth as fast).
    Lines past `saved_step`, the step the checkpoint holds, describe steps that a kill lost: a resumed run trains
    them again, so they go. Rewritten through a temporary file, so a kill leaves the old log or the new one."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if saved_step is not None:
        lines = [line for line in lines if json.loads(line).get("step", 0) <= saved_step]
    head, tail = lines[: max(0, len(lines) - keep_last)], lines[-keep_last:] if keep_last else []
    kept = [line for line in head if json.loads(line).get("step", 0) % every == 0] + tail
    if kept == path.read_text().splitlines(keepends=True):
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def _describe(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d.pop("model")
    return d
