"""The `wordcount` job: counts the words of an uploaded text file and gives the most frequent
ones as a JSON result.

Threat model: the file is the caller's and may be anything (binary, huge, not UTF-8). It is
read line by line (memory is bounded by the longest line and the number of distinct words, at
most MAX_DISTINCT of them), bytes that are not UTF-8 are replaced and reported as a warning,
and nothing of it is ever used as a path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from threadsvc import Context, Level, Role, Scope, job
from threadsvc.runner.params import Choice, File, Integer

WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
PROGRESS_EVERY = 10_000  # lines between progress reports (and cancel checks)
MAX_DISTINCT = 1_000_000  # distinct words kept; beyond it, new words are not counted


@job(
    "wordcount",
    scope=Scope.GROUP,
    role=Role.CONTRIBUTOR,
    title="Word count",
    params={
        "text": File(required=True, doc="The text to count (UTF-8)"),
        "top": Integer(default=10, minimum=1, maximum=1000, doc="How many words to list"),
        "case": Choice(default="fold", choices=("fold", "keep"), doc="Fold case or keep it"),
    },
)
async def wordcount(ctx: Context) -> None:
    """Count the words of a text file; the result lists the most frequent ones."""
    (text,) = ctx.files("text")
    await ctx.message(f"Counting the words of {text.name} ({text.size} bytes)")
    # Reading and counting block and use the CPU: a worker thread keeps the server answering.
    counts, lines, undecodable = await ctx.run_sync(count, ctx, text.path, ctx.params["case"])
    if undecodable:
        await ctx.warning(f"{undecodable} lines were not UTF-8; their bad bytes were replaced")
    if not counts:
        await ctx.warning("The text holds no words")
    top = counts.most_common(ctx.params["top"])
    await ctx.log(f"{len(counts)} distinct words in {lines} lines", Level.DEBUG)
    result = {
        "file": text.name,
        "lines": lines,
        "words": sum(counts.values()),
        "distinct": len(counts),
        "top": [{"word": word, "count": n} for word, n in top],
    }
    await ctx.set_result(json.dumps(result, ensure_ascii=False), "application/json", "words.json")
    await ctx.message(f"{result['words']} words, {result['distinct']} distinct")


def count(ctx: Context, path: Path, case: str) -> tuple[Counter[str], int, int]:
    """In a worker thread: report through `ctx.sync`, and stop at `check_cancelled` once the
    thread is cancelled (a cancel cannot interrupt this code any other way)."""
    counts: Counter[str] = Counter()
    lines = undecodable = done = 0
    total = path.stat().st_size  # progress counts bytes: known before the first line
    with path.open("rb") as source:
        for raw in source:
            lines += 1
            done += len(raw)
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                undecodable += 1
                line = raw.decode(errors="replace")
            for word in WORD.findall(line if case == "keep" else line.casefold()):
                if word in counts or len(counts) < MAX_DISTINCT:
                    counts[word] += 1
            if lines % PROGRESS_EVERY == 0:
                ctx.check_cancelled()
                ctx.sync.progress(done, total)
    ctx.sync.progress(done, total)
    return counts, lines, undecodable
