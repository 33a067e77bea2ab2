"""Train the byte-level BPE that a subword model reads with, and measure vocabulary sizes.

The text is the generator's own, from the TRAIN split only: the messages, questions and answers of samples of every
task, at a mix of history lengths. Nothing held out is seen: `--measure` reports bytes per token on held-out
samples (and on the hand-written everyday chats, which are never trained on), for several vocabulary sizes.

    python -m sleeptime.training.bpe --vocab 2048 --samples 2000 --out bpe-2048.json
    python -m sleeptime.training.bpe --measure --samples 2000 --sizes 512,1024,2048,4096,8192 [--json]

`sleeptime train --tokenizer FILE` then trains a model over it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sleeptime.models.tokenizer import BPETokenizer
from sleeptime.training.data import TASKS, make_sample

# history lengths drawn for the corpus (generator units): short samples weigh questions, answers and statements
# as training's early stages do; long ones bring the chit-chat and filler that fill the long stages
LENGTHS = (256, 512, 1024, 2048, 4096)
EVERYDAY = Path("tests/data/everyday_chats.jsonl")


def sample_texts(samples: int, split: str, seed: int = 0) -> Iterator[str]:
    """The texts of `samples` generated samples of `split`, the tasks in turn: every message, then the question and
    its answer."""
    rng = random.Random(f"bpe:{split}:{seed}")
    for i in range(samples):
        task = TASKS[i % len(TASKS)]
        sample = make_sample(task, rng.randrange(2**31), split=split, target_tokens=rng.choice(LENGTHS))
        for message in sample.history:
            yield message["content"]
        for query in sample.queries:
            yield query.question
            yield query.answer_text


def everyday_texts(path: Path = EVERYDAY) -> list[str]:
    """The hand-written everyday chats' messages and questions (never trained on); [] without the file."""
    if not path.is_file():
        return []
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            chat = json.loads(line)
            texts += [m["content"] for m in chat["messages"]] + [q["question"] for q in chat.get("questions", ())]
    return texts


def train_bpe(vocab: int, samples: int, seed: int = 0) -> BPETokenizer:
    """A BPE of `vocab` ids in all (structure ids included) on the train split's text."""
    return BPETokenizer.train(sample_texts(samples, "train", seed), vocab)


def bytes_per_token(tokenizer: BPETokenizer, texts: Iterable[str]) -> float:
    """UTF-8 bytes over subword tokens, the texts encoded one by one as messages are."""
    size = tokens = 0
    for text in texts:
        size += len(text.encode("utf-8"))
        tokens += len(tokenizer.encode_text(text))
    return size / tokens if tokens else 0.0


@dataclass
class Measure:
    vocab: int
    heldout: float  # bytes per token on held-out generated samples
    everyday: float | None  # on the everyday chats, when the file is there
    seconds: float  # training time


def measure(
    sizes: Sequence[int], samples: int, heldout_samples: int = 400, seed: int = 0, everyday: Path = EVERYDAY
) -> list[Measure]:
    heldout = list(sample_texts(heldout_samples, "heldout", seed))
    chats = everyday_texts(everyday)
    rows = []
    for size in sizes:
        started = time.monotonic()
        tokenizer = train_bpe(size, samples, seed)
        seconds = time.monotonic() - started
        rows.append(Measure(
            size, round(bytes_per_token(tokenizer, heldout), 3),
            round(bytes_per_token(tokenizer, chats), 3) if chats else None, round(seconds, 1),
        ))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=2048, help="ids in all, the 8 structure ids included")
    parser.add_argument("--samples", type=int, default=2000, help="generated train-split samples, the tasks in turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the tokenizer file here")
    parser.add_argument("--measure", action="store_true", help="bytes per token for each of --sizes instead")
    parser.add_argument("--sizes", default="512,1024,2048,4096,8192", help="vocabulary sizes --measure trains")
    parser.add_argument("--heldout-samples", type=int, default=400, help="held-out samples --measure encodes")
    parser.add_argument("--everyday", type=Path, default=EVERYDAY, help="the hand-written chats --measure encodes")
    parser.add_argument("--json", action="store_true", help="--measure: one JSON object per size")
    args = parser.parse_args(argv)
    if args.measure:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        rows = measure(sizes, args.samples, args.heldout_samples, args.seed, args.everyday)
        if args.json:
            for row in rows:
                print(json.dumps(asdict(row)))
            return
        print("| vocabulary | bytes/token, held-out samples | bytes/token, everyday chats | training s |")
        print("|---|---|---|---|")
        for row in rows:
            print(f"| {row.vocab} | {row.heldout:.2f} | {'-' if row.everyday is None else f'{row.everyday:.2f}'} "
                  f"| {row.seconds:.0f} |")
        return
    if not args.out:
        parser.error("--out is required (or --measure)")
    tokenizer = train_bpe(args.vocab, args.samples, args.seed)
    tokenizer.save(args.out)
    print(f"{args.out}: {tokenizer.vocab_size} ids, sha256 {tokenizer.digest[:12]}")


if __name__ == "__main__":
    main()
