"""The process-wide model cache: one load per key across threads, a changed file is a new model, failures are
not kept, and the cache is bounded."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bridge.core.models import ModelCache


def test_one_load_per_key_even_from_two_threads(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"1234")
    cache = ModelCache()
    entered, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def load() -> object:
        loads.append(1)
        entered.set()
        release.wait(10)
        return object()

    key = cache.key("m", [weights], "cpu")
    got: list[object] = []
    first = threading.Thread(target=lambda: got.append(cache.get(key, load)))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=lambda: got.append(cache.get(cache.key("m", [weights], "cpu"), load)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(got) == 2 and got[0] is got[1]
    assert len(loads) == 1 and cache.loads == 1


def test_an_edited_file_another_device_or_setting_is_another_model(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"1234")
    cache = ModelCache()
    a = cache.get(cache.key("m", [weights], "cpu"), object)
    assert cache.get(cache.key("m", [weights], "cuda:0"), object) is not a
    assert cache.get(cache.key("m", [weights], "cpu", ("fp16",)), object) is not a
    st = weights.stat()
    weights.write_bytes(b"12345")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.get(cache.key("m", [weights], "cpu"), object) is not a


def test_a_failed_load_is_reported_and_tried_again(tmp_path: Path) -> None:
    cache = ModelCache()
    key = cache.key("m", [tmp_path / "missing.bin"], "cpu")  # a missing file still makes a key

    def broken() -> object:
        raise FileNotFoundError("no weights")

    with pytest.raises(FileNotFoundError):
        cache.get(key, broken)
    assert cache.count() == 0
    assert cache.get(key, lambda: "loaded") == "loaded"


def test_the_least_recently_used_model_is_forgotten_beyond_capacity(tmp_path: Path) -> None:
    cache = ModelCache(capacity=2)
    a, b, c = (cache.key("m", [], "cpu", name) for name in "abc")
    first_a = cache.get(a, object)
    cache.get(b, object)
    assert cache.get(a, object) is first_a  # used again: b is now the oldest
    cache.get(c, object)
    assert cache.count() == 2
    assert cache.get(a, object) is first_a
    assert cache.loads == 3
