"""Files are checked before they cost anything: a few kilobytes that promise gigabytes (a stride-0 tensor of
4e8 values, a 100000 x 100000 view, a NumPy header or `_reconstruct` call asking for more than the file holds,
a sparse matrix of absurd shape, a zip member that inflates a thousandfold) are refused with one line, in a
child process whose peak memory stays where loading a real file of the same kind leaves it."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from drivers.avatar.flame.files import FlameFileError, load_eyelids, load_flame_arrays
from drivers.avatar.flame.tracker import TrackerFrameError, load_tracker_frame
from drivers.face.diffposetalk.checkpoint import CheckpointError, load_stats, load_style
from drivers.safe_load import DamagedFile, check_numpy_file, load_pickle, unpickle
from tests.security.daemon import REPO
from tests.security.test_damaged_files import cli, one_line_error, upstream_tuple

RSS_HEADROOM_MB = 150  # a refused file may cost a little; the attacks promise 1.6 GB to 80 GB

LOAD_FRAME = """
import sys
from bridge.core.errors import UserError
from drivers.avatar.flame.tracker import load_tracker_frame
try:
    load_tracker_frame(sys.argv[1])
    print("loaded")
except UserError as exc:
    print(str(exc))
"""


def frame_dict(exp: object) -> dict[str, object]:
    """A metrical-tracker frame as upstream writes it (NumPy arrays), with `exp` as given."""
    return {"opencv": {"R": np.eye(3)[None], "t": np.array([[0.0, 0.0, 1.0]]),
                       "K": np.array([[[1000.0, 0, 256], [0, 1000.0, 256], [0, 0, 1]]])},
            "img_size": np.array([512, 512]), "flame": {"exp": exp, "shape": np.zeros((1, 300), np.float32)}}


def run_measured(*args: str) -> tuple[str, int]:
    """Run `python -c LOAD_FRAME args`; its output and its peak resident memory in MB (from wait4)."""
    proc = subprocess.Popen([sys.executable, "-c", LOAD_FRAME, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # small outputs: reading both in turn cannot block
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4
    assert "Traceback" not in err, err[-2000:]
    return out.strip(), usage.ru_maxrss // 1024


def rewrite_pickle(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes inside a torch archive's data.pkl, keeping the archive valid (checksums recomputed)."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info, data in members:
            if info.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            dst.writestr(info, data)


@pytest.mark.parametrize("exp", [torch.zeros(1).expand(400_000_000), torch.zeros(1).expand(100_000, 100_000)],
                         ids=["stride0-4e8", "view-1e5x1e5"])
def test_a_small_frame_with_a_huge_view_is_refused_without_growing(tmp_path: Path, exp: torch.Tensor) -> None:
    good, bad = tmp_path / "00000.frame", tmp_path / "00001.frame"
    torch.save(frame_dict(np.zeros((1, 100), np.float32)), good)
    torch.save(frame_dict(exp), bad)
    assert bad.stat().st_size < 5000
    out, calm_mb = run_measured(str(good))
    assert out == "loaded"
    out, attacked_mb = run_measured(str(bad))
    assert "\n" not in out and "flame.exp" in out and "view" in out and str(bad) in out, out
    assert attacked_mb < calm_mb + RSS_HEADROOM_MB, (attacked_mb, calm_mb)


def test_a_checkpoint_with_a_stride0_tensor_is_one_line_at_the_command_line(tmp_path: Path) -> None:
    ckpt = upstream_tuple()
    gauss = list(ckpt[1])
    gauss[1] = torch.zeros(1).expand(100_000, 100_000)
    path = tmp_path / "chkpnt150000.pth"
    torch.save((ckpt[0], tuple(gauss), ckpt[2]), path)
    line = one_line_error(cli("avatar", "info", str(path), cwd=tmp_path))
    assert "view" in line and str(path) in line, line


def test_a_pickled_numpy_array_may_not_ask_for_a_huge_first_shape(tmp_path: Path) -> None:
    path = tmp_path / "00000.frame"
    torch.save(frame_dict(np.zeros(7, np.float32)), path)
    # NumPy pickles `_reconstruct(ndarray, (0,), b'b')`; ask for (100000, 100000) instead (10 GB at once).
    rewrite_pickle(path, b"K\x00\x85", b"J\xa0\x86\x01\x00J\xa0\x86\x01\x00\x86")
    with pytest.raises(TrackerFrameError, match=r"initial shape \(100000, 100000\)"):
        load_tracker_frame(path)
    raw = pickle.dumps({"v": np.zeros(3)}, protocol=2).replace(b"K\x00\x85", b"J\x00\xe1\xf5\x05\x85")
    with pytest.raises(DamagedFile, match="initial shape"):
        unpickle(io.BytesIO(raw))


def test_a_real_frame_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "00000.frame"
    torch.save(frame_dict(np.arange(100, dtype=np.float32)[None]), path)
    frame = load_tracker_frame(path)
    assert frame.expr is not None and frame.expr[99] == 99.0


def promise_more(path: Path, shape: str) -> None:
    """Rewrite a .npy header's shape (the header keeps its length) so it promises more than the file holds."""
    raw = path.read_bytes()
    start = raw.index(b"'shape': (") + len(b"'shape': ")
    end = raw.index(b")", start) + 1
    new = shape.encode()
    assert len(new) <= end - start + raw[end:].index(b"\n") - 3
    head = raw[:start] + new + raw[end:].split(b"}", 1)[0] + b"}"
    header_end = raw.index(b"\n") + 1
    path.write_bytes(head.ljust(header_end - 1) + b"\n" + raw[header_end:])


def test_npy_headers_that_promise_more_than_the_file_holds_are_refused(tmp_path: Path) -> None:
    lids = tmp_path / "l_eyelid.npy"
    np.save(lids, np.zeros((5023, 3), np.float32))
    np.save(tmp_path / "r_eyelid.npy", np.zeros((5023, 3), np.float32))
    load_eyelids(tmp_path)
    promise_more(lids, "(100000, 100000)")
    with pytest.raises(FlameFileError, match=r"shape \(100000, 100000\) float32 \(40000000000 bytes\) over"):
        load_eyelids(tmp_path)

    style = tmp_path / "style.npy"
    np.save(style, np.zeros(128, np.float32))
    assert load_style(style).shape == (128,)
    promise_more(style, "(400000000,)")
    with pytest.raises(CheckpointError, match="over 512 bytes of data") as info:
        load_style(style)
    assert "\n" not in str(info.value)

    stats = tmp_path / "stats_train.npz"
    np.savez(stats, **{f"{n}_{k}": np.ones(s, np.float32) for n, s in (("shape", 100), ("exp", 50), ("pose", 6))
                       for k in ("mean", "std")})
    load_stats(stats)
    with zipfile.ZipFile(stats) as z:
        members = {name: z.read(name) for name in z.namelist()}
    member = tmp_path / "exp_std.npy"
    member.write_bytes(members["exp_std.npy"])
    promise_more(member, "(100000, 100000)")
    members["exp_std.npy"] = member.read_bytes()
    with zipfile.ZipFile(stats, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match="exp_std.npy has an array header"):
        load_stats(stats)


def test_a_zip_member_that_inflates_a_thousandfold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flame.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros(8_000_000, np.uint8))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("v_template.npy", buf.getvalue())
    assert path.stat().st_size < 50_000
    with pytest.raises(DamagedFile, match="inflates"):
        check_numpy_file(path)
    with pytest.raises(FlameFileError, match="inflates"):
        load_flame_arrays(path)


def test_a_sparse_matrix_of_absurd_shape_is_refused(tmp_path: Path) -> None:
    # scipy.sparse.csc_matrix as FLAME's J_regressor is pickled: a reduce to the class, then its state.
    raw = (b"\x80\x02}q\x00X\x0b\x00\x00\x00J_regressorq\x01cscipy.sparse.csc\ncsc_matrix\nq\x02)\x81q\x03}q\x04("
           b"X\x06\x00\x00\x00_shapeq\x05J\x00\xe1\xf5\x05J\x00\xe1\xf5\x05\x86X\x04\x00\x00\x00dataq\x06]"
           b"X\x07\x00\x00\x00indicesq\x07]X\x06\x00\x00\x00indptrq\x08]K\x00aub.")
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(raw)
    with pytest.raises(DamagedFile, match="no FLAME matrix is that large"):
        load_pickle(path, "FLAME model")
