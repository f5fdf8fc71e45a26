"""The wordcount job, tested with threadsvc.testing: unit tests of the function with a fake
context, and runs through threadsvc's own runner and a real store."""

from __future__ import annotations

import pytest
from wordcount.jobs import PROGRESS_EVERY, wordcount

from threadsvc import Level, Status
from threadsvc.errors import BadParameter
from threadsvc.runner.context import JobCancelled
from threadsvc.testing import FakeContext, JobRunner, call, run_job

TEXT = b"The cat sat on the mat.\nThe dog did not.\n"


@pytest.mark.anyio
async def test_counts_with_a_fake_context() -> None:
    ctx = FakeContext.for_job(wordcount, files={"text": ("pets.txt", TEXT)}, top=2)
    await call(wordcount, ctx)
    assert ctx.json()["top"] == [{"word": "the", "count": 3}, {"word": "cat", "count": 1}]
    assert ctx.media_type == "application/json" and ctx.result_name == "words.json"
    assert ctx.progress_calls[-1] == (len(TEXT), len(TEXT))
    assert ctx.logs(Level.DEBUG, only=True) == ["8 distinct words in 2 lines"]
    assert ctx.thread.status is Status.INPROGRESS and ctx.thread.warnings == 0


@pytest.mark.anyio
async def test_a_cancelled_context_stops_the_count() -> None:
    ctx = FakeContext.for_job(wordcount, files={"text": b"word\n" * PROGRESS_EVERY})
    ctx.cancel()
    with pytest.raises(JobCancelled):
        await call(wordcount, ctx)
    assert ctx.result is None


def test_a_run_completes_with_a_json_result(job_runner: JobRunner) -> None:
    outcome = job_runner.run(wordcount, {"top": 1, "case": "keep"}, {"text": ("a.txt", TEXT)})
    assert outcome.status is Status.COMPLETED, outcome.logs()
    assert outcome.media_type == "application/json"
    assert outcome.json() == {
        "file": "a.txt", "lines": 2, "words": 10, "distinct": 9,
        "top": [{"word": "The", "count": 2}],
    }
    assert outcome.message == "10 words, 9 distinct"
    assert outcome.progress == (len(TEXT), len(TEXT))


def test_text_that_is_not_utf8_is_a_warning(job_runner: JobRunner) -> None:
    outcome = job_runner.run(wordcount, files={"text": b"caf\xe9 au lait\n\xff\n"})
    assert outcome.status is Status.COMPLETED
    assert outcome.warnings == 1
    assert outcome.logs(Level.WARN) == ["2 lines were not UTF-8; their bad bytes were replaced"]
    assert [item["word"] for item in outcome.json()["top"]] == ["caf", "au", "lait"]  # ties: first seen first


def test_an_empty_file_warns_and_still_completes() -> None:
    outcome = run_job("wordcount", files={"text": b""})  # by name: found by its entry point
    assert (outcome.status, outcome.warnings) == (Status.COMPLETED, 1)
    assert outcome.json()["words"] == 0


def test_bad_parameters_are_refused_before_a_thread_exists(job_runner: JobRunner) -> None:
    with pytest.raises(BadParameter, match="top"):
        job_runner.run(wordcount, {"top": 0}, {"text": TEXT})
    with pytest.raises(BadParameter, match="text"):
        job_runner.run(wordcount, {"top": 3})


def test_a_cancel_lands_at_the_next_check(job_runner: JobRunner) -> None:
    big = b"one two three four\n" * (PROGRESS_EVERY * 40)
    outcome = job_runner.run(
        wordcount, files={"text": big}, cancel_when=lambda t: (t.progress_current or 0) > 0
    )
    assert outcome.status is Status.CANCELLED
    assert outcome.result is None
    assert (outcome.progress[0] or 0) < len(big)
