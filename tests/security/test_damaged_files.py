"""Damaged model files are named, not used: a checkpoint whose floats were altered after it was written (its
zip checksums no longer match) and a pickle nested 200,000 levels deep are refused with one line that says
what is wrong — through the command line, as a user meets them — while malicious pickles are still refused
before any code runs and truncated files still get their one-line error."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from drivers.avatar.flashavatar.checkpoint import CheckpointError, load_checkpoint
from drivers.safe_load import DamagedFile, RefusedContent, load_pickle, load_torch, pickle_depth
from tests.avatar.flashavatar.test_checkpoint import _upstream_tuple as upstream_tuple
from tests.security.daemon import REPO

DEEP = 200_000


def flip_lowest_float_bits(path: Path) -> int:
    """Flip the lowest bit of every float32 stored in a torch archive, in place, leaving the zip's CRC-32s as
    they were (what a bad disk sector or a careless tool does). Returns how many floats changed."""
    raw = bytearray(path.read_bytes())
    flipped = 0
    with zipfile.ZipFile(path) as z:
        members = [i for i in z.infolist() if "/data/" in i.filename]
    for info in members:
        assert info.compress_type == zipfile.ZIP_STORED
        name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
        extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        for i in range(start, start + info.file_size - 3, 4):  # little-endian: the lowest bit is in byte 0
            raw[i] ^= 1
            flipped += 1
    path.write_bytes(bytes(raw))
    return flipped


def deep_pickle(depth: int = DEEP) -> bytes:
    """[[[[...]]]] `depth` levels deep, written opcode by opcode (pickle.dumps itself would refuse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("avatar-bridge: error:")]
    assert len(lines) == 1, run.stderr[-2000:]
    return lines[0]


def test_a_checkpoint_with_altered_floats_is_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "chkpnt150000.pth"
    torch.save(upstream_tuple(), path)
    assert load_checkpoint(path).num_gaussians > 0
    assert flip_lowest_float_bits(path) > 100_000
    with pytest.raises(CheckpointError, match="damaged file"):
        load_checkpoint(path)
    with pytest.raises(DamagedFile, match="CRC-32"):
        load_torch(path)
    line = one_line_error(cli("avatar", "info", str(path), cwd=tmp_path))
    assert "damaged file" in line and str(path) in line


def test_a_deeply_nested_pickle_is_named_before_it_is_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(deep_pickle())
    assert pickle_depth(path.read_bytes()) > 100
    with pytest.raises(DamagedFile, match="nested"):
        load_pickle(path, "FLAME model")
    config = tmp_path / "deep.toml"
    config.write_text(f'[avatar]\nkind = "flashavatar"\ncheckpoint = "chkpnt.pth"\nflame_model = "{path.name}"\n')
    torch.save(upstream_tuple(), tmp_path / "chkpnt.pth")
    for name in ("FLAME_masks.pkl", "FlameMesh.obj", "l_eyelid.npy"):
        (tmp_path / name).write_bytes(b"")
    line = one_line_error(cli("run", "--config", str(config), cwd=tmp_path))
    assert "damaged file" in line and "nested" in line and path.name in line, line


def test_a_cycle_in_a_pickle_is_refused_not_recursed(tmp_path: Path) -> None:
    path = tmp_path / "cycle.pkl"
    # A list that contains itself: EMPTY_LIST, MEMOIZE, then append memo[0] to it.
    path.write_bytes(b"\x80\x04]\x94h\x00a.")
    with pytest.raises(DamagedFile, match="nested"):
        load_pickle(path, "FLAME model")


def test_what_already_worked_still_works(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("code ran",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v_template": Payload()}, protocol=2))
    with pytest.raises(RefusedContent, match=r"print, which is not array data"):
        load_pickle(evil, "FLAME model")
    cut = tmp_path / "cut.pth"
    torch.save(upstream_tuple(), cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    line = one_line_error(cli("avatar", "info", str(cut), cwd=tmp_path))
    assert str(cut) in line
