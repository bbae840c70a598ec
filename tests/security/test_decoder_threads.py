"""A file played in a loop (the demo speech in `avatar-bridge demo`) keeps the process's thread count flat:
every round's decoder and resampler are closed with it and start no threads of their own, so nothing waits for
a garbage collection to be freed (the daemon keeps its collections short, and here they are off)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from drivers.audio.decode import demo_clip_path, iter_decoded
from drivers.audio.file import FileAudioSource

ROUNDS = 6


def threads() -> int:
    """Every thread of this process, FFmpeg's native ones included."""
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def no_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_looping_the_demo_clip_keeps_the_thread_count_flat(no_collection: None) -> None:
    clip = sum(block.size for block in iter_decoded(demo_clip_path()))
    source = FileAudioSource(loop=True, realtime=False)
    source.start(lambda: 0.0)
    counts = []
    try:
        read = 0
        for _ in range(ROUNDS):
            while read < (len(counts) + 1) * clip:
                chunk = source.read(timeout=10.0)
                assert chunk is not None, "the looping source stopped"
                read += chunk.samples.size
            counts.append(threads())
    finally:
        source.stop()
    assert counts[-1] <= counts[0], f"threads over {ROUNDS} rounds of the clip: {counts}"


def test_opening_and_abandoning_files_keeps_the_thread_count_flat(no_collection: None) -> None:
    """A source made and dropped (a switch of the audio input), and a decode stopped half way."""
    before = threads()
    for _ in range(ROUNDS):
        FileAudioSource(loop=True)
        blocks = iter_decoded(demo_clip_path())
        next(blocks)
        blocks.close()
    assert threads() <= before, f"{threads()} threads after {ROUNDS} rounds, {before} before"
