"""Reading model files without running code: restricted pickles and weights-only torch checkpoints.

Model files are pickles at heart, and unpickling runs whatever the file names. Every loader of the project
goes through this module instead:

- `unpickle` maps exactly the globals FLAME-era files contain (NumPy arrays, chumpy `Ch`, scipy sparse
  matrices, Python-2 builtins) to inert stand-ins and refuses every other global; `to_arrays` then turns the
  stand-ins into plain NumPy arrays. With `torch_placeholders`, pickled torch tensors inside such a file (the
  contour tables of a landmark embedding) become placeholders that are never rebuilt.
- `load_torch` is `torch.load(weights_only=True)` with an explicit allow-list of extra classes
  (`NUMPY_ARRAYS` for metrical-tracker frames, `ARGPARSE_PATHS` for DiffPoseTalk's pickled arguments).

Before either runs, a damaged file is named instead of used: torch's reader ignores the CRC-32 checksums of
its zip archives, so `load_torch` checks them first (a checkpoint whose bytes changed after it was written
would otherwise load and render garbage), and `pickle_depth` reads a pickle's opcodes to refuse one that nests
containers deeper than any model file does (a 200,000-deep file would otherwise end in a RecursionError).

Arrays are checked before they cost memory: a header is only a promise, and a 5 KB file can promise gigabytes.
`load_torch` refuses a tensor that is a view holding more values than its storage (stride 0, overlapping
strides: converting it would materialise every value) and a zip member that inflates far beyond its stored
bytes; NumPy's pickled `_reconstruct` may only make the empty array NumPy itself writes; a sparse matrix's
shape is bounded; and `check_numpy_file` reads every `.npy` header (also inside `.npz`) and refuses one that
promises more bytes than the file holds, before `numpy.load` allocates them.

Failures are `RefusedContent` (the file holds something outside the allow-list: tampered or foreign) or
`DamagedFile` (damaged, truncated or not this format); callers phrase them for their file kind.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib
import io
import math
import pathlib
import pickle
import pickletools
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.core.errors import UserError


class SafeLoadError(UserError, ValueError):
    """A file the safe loaders refuse or cannot read; `reason` is the short cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefusedContent(SafeLoadError):
    """The file references code or objects outside the allow-list."""


class DamagedFile(SafeLoadError):
    """The file is truncated, empty or not of the expected format."""


BROKEN_PICKLE_ERRORS = (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
                        AttributeError, UnicodeDecodeError, MemoryError, OverflowError)
"""What unpickling a truncated or foreign file raises; each becomes a clear file error."""


MAX_PICKLE_DEPTH = 100  # model files nest containers a few levels deep; far more is damage or a trap
MAX_DENSE_VALUES = 1 << 25  # a sparse matrix made dense: FLAME's largest is 5 x 5023; 33 M values is 256 MB
MAX_INFLATION = 64  # a zip member may expand this much over its stored bytes (torch and NumPy store, not deflate)
INFLATION_SLACK = 1 << 20  # small members may compress better than MAX_INFLATION


# ------------------------------------------------------------------------------------------------ damaged files
_ATOMS = frozenset({"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
                    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE",
                    "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "GLOBAL",
                    "EXT1", "EXT2", "EXT4", "PERSID", "NEXT_BUFFER"})
_EMPTY = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET"})
_FROM_MARK = frozenset({"LIST", "TUPLE", "DICT", "FROZENSET", "INST", "OBJ"})
_INTO_BELOW_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_UNCHANGED = frozenset({"PROTO", "FRAME", "STOP", "READONLY_BUFFER"})


class _TooDeep(Exception):
    pass


class _DepthStack:
    """The unpickler's stack with only how deeply each item nests, not the item."""

    def __init__(self, limit: int) -> None:
        self.items: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[Any, int] = {}
        self.limit = limit
        self.deepest = 0

    def push(self, depth: int) -> None:
        self.deepest = max(self.deepest, depth)
        if self.deepest > self.limit:
            raise _TooDeep
        self.items.append(depth)

    def pop(self, n: int) -> list[int]:
        taken = self.items[len(self.items) - n :] if n else []
        del self.items[len(self.items) - n :]
        return taken

    def to_mark(self) -> list[int]:
        start = self.marks.pop() if self.marks else 0
        taken = self.items[start:]
        del self.items[start:]
        return taken

    def into_top(self, depth: int) -> None:
        """Items added into the container on top of the stack (append, setitem, build)."""
        self.push(max(self.items.pop() if self.items else 0, depth))

    def top(self) -> int:
        return self.items[-1] if self.items else 0

    def step(self, name: str, arg: Any) -> None:
        if name in _UNCHANGED:
            return
        if name == "MARK":
            self.marks.append(len(self.items))
        elif name in _ATOMS:
            self.push(0)
        elif name in _EMPTY:
            self.push(1)
        elif name in _FROM_MARK:
            self.push(1 + max(self.to_mark(), default=0))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            self.push(1 + max(self.pop(int(name[-1])), default=0))
        elif name in _INTO_BELOW_MARK:
            self.into_top(1 + max(self.to_mark(), default=0))
        elif name in ("APPEND", "BUILD"):
            self.into_top(1 + max(self.pop(1), default=0))
        elif name == "SETITEM":
            self.into_top(1 + max(self.pop(2), default=0))
        elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):  # the callable or class does not nest; its arguments do
            self.push(1 + max(self.pop(3 if name == "NEWOBJ_EX" else 2)[1:], default=0))
        elif name in ("STACK_GLOBAL", "BINPERSID"):
            self.pop(2 if name == "STACK_GLOBAL" else 1)
            self.push(0)
        elif name == "DUP":
            self.push(self.top())
        elif name == "POP":
            self.pop(1)
        elif name == "POP_MARK":
            self.to_mark()
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.push(self.memo.get(arg, 0))
        else:  # an opcode this scan does not model: count one more level, never fewer
            self.push(1 + self.top())


def pickle_depth(data: bytes, limit: int = MAX_PICKLE_DEPTH) -> int:
    """How deeply the containers of a pickle nest, read from its opcodes without building anything; counting
    stops past `limit`. A malformed stream ends the count where it breaks (the unpickler then names it)."""
    stack = _DepthStack(limit)
    with contextlib.suppress(_TooDeep, ValueError, IndexError, EOFError):
        for op, arg, _pos in pickletools.genops(data):
            stack.step(op.name, arg)
    return stack.deepest


def _too_deep(depth: int) -> DamagedFile:
    return DamagedFile(f"damaged file: its data is nested more than {MAX_PICKLE_DEPTH} levels deep ({depth}+), "
                       "which no model file is")


def check_torch_file(path: Path) -> None:
    """A torch file is a zip archive or a legacy pickle; anything else (truncated, another format) is named here
    rather than by whatever torch's reader trips over."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DamagedFile(f"cannot read the file ({exc.strerror or exc})") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise DamagedFile("neither a zip archive nor a pickle: truncated, or another kind of file")


def check_archive(path: Path) -> None:
    """A torch zip archive's CRC-32s and the nesting of its pickle; raises `DamagedFile` naming what is wrong.
    Files that are not zip archives (legacy torch pickles) are left to the loader."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            check_inflation(archive)
            bad = archive.testzip()
            if bad is not None:
                raise DamagedFile(f"damaged file: {bad} inside the archive does not match its CRC-32 checksum "
                                  "(the file changed after it was written)")
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            for name in pickles:
                if (depth := pickle_depth(archive.read(name))) > MAX_PICKLE_DEPTH:
                    raise _too_deep(depth)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, SafeLoadError):
            raise
        raise DamagedFile(f"damaged file: the zip archive cannot be read ({str(exc)[:160]})") from None


def check_inflation(archive: zipfile.ZipFile) -> None:
    """Refuse a zip member that inflates far beyond its stored bytes (a zip bomb) before anything reads it."""
    for info in archive.infolist():
        if info.file_size > MAX_INFLATION * info.compress_size + INFLATION_SLACK:
            raise DamagedFile(f"{info.filename} inside the archive inflates {info.compress_size} stored bytes to "
                              f"{info.file_size}; no model file is compressed like that")


# ------------------------------------------------------------------------------------------- array headers
def _header_problem(stream: Any, available: int) -> str | None:
    """What is wrong with the `.npy` header at the start of `stream` whose data may be `available` bytes long
    (header included), or None; reads only the header."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            return f"a .npy format version {version} that model files never use"
    except (ValueError, EOFError, OSError) as exc:
        return f"a damaged .npy header ({str(exc)[:120]})"
    if dtype.hasobject:
        return None  # pickled payload: numpy.load refuses it (allow_pickle=False) or the restricted unpickler reads it
    promised = math.prod(shape) * dtype.itemsize
    held = available - stream.tell()
    if promised > held:
        return f"an array header of shape {tuple(shape)} {dtype} ({promised} bytes) over {max(held, 0)} bytes of data"
    return None


def _check_npz(archive: zipfile.ZipFile) -> None:
    check_inflation(archive)
    for info in archive.infolist():
        with archive.open(info) as member:
            if (problem := _header_problem(member, info.file_size)) is not None:
                raise DamagedFile(f"{info.filename} has {problem}; the file is damaged or crafted")


def check_numpy_file(path: Path | str | bytes) -> None:
    """Read the header of a `.npy`, or of every `.npy` inside an `.npz` (a path, or the file's bytes), and
    refuse (`DamagedFile`) one that promises more data than the file holds, before `numpy.load` allocates it."""
    try:
        with io.BytesIO(path) if isinstance(path, bytes) else Path(path).open("rb") as stream:
            if zipfile.is_zipfile(stream):
                with zipfile.ZipFile(stream) as archive:
                    _check_npz(archive)
                return
            size = stream.seek(0, io.SEEK_END)
            stream.seek(0)
            problem = _header_problem(stream, size)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, SafeLoadError):
            raise
        raise DamagedFile(f"cannot read the file ({str(exc)[:160]})") from None
    if problem is not None:
        raise DamagedFile(f"it has {problem}; the file is damaged or crafted")


def check_views(obj: Any, key: str = "", depth: int = 0) -> None:
    """Refuse (`DamagedFile`) a loaded tensor that is a view holding more values than its storage: stride 0 or
    overlapping strides make a few stored bytes stand for gigabytes, which any conversion would allocate."""
    import torch

    if depth > MAX_PICKLE_DEPTH:
        raise _too_deep(depth)
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.device.type == "meta":
            return
        stored = obj.untyped_storage().nbytes() // max(obj.element_size(), 1)
        if obj.numel() > stored:
            raise DamagedFile(f"{key or 'a tensor'} is a view of shape {tuple(obj.shape)} (strides {obj.stride()}) "
                              f"over {stored} stored values: stride-0 or overlapping views are not model data")
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            check_views(v, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_views(v, f"{key}[{i}]", depth + 1)
    elif isinstance(obj, argparse.Namespace):
        check_views(vars(obj), key, depth + 1)


# ------------------------------------------------------------------------------------------ restricted pickles
class Opaque:
    """Stand-in for a pickled object whose state is only read (chumpy arrays, scipy sparse matrices)."""

    kind = "object"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class ChumpyArray(Opaque):
    kind = "chumpy"


class SparseMatrix(Opaque):
    kind = "sparse"
    fmt = "csc"


class TorchPlaceholder(Opaque):
    """Stands in for a torch tensor (or its storage/hooks) inside a restricted pickle; never rebuilt."""

    kind = "torch"

    def __call__(self, *args: Any, **kwargs: Any) -> TorchPlaceholder:
        return TorchPlaceholder()


def _sparse_class(fmt: str) -> type[SparseMatrix]:
    return type(f"SparseMatrix_{fmt}", (SparseMatrix,), {"fmt": fmt})


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """copyreg._reconstructor for protocol 0/1 pickles, restricted to the stand-ins."""
    if isinstance(cls, type) and issubclass(cls, Opaque):
        return cls()
    raise RefusedContent(f"refusing to reconstruct {cls!r}: not array data")


def _multiarray() -> Any:
    """NumPy's multiarray module under its 2.x name, or its 1.x name on old NumPy (no deprecation warning)."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # NumPy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _np_scalar(dtype: np.dtype, data: bytes | str | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedContent("refusing a NumPy object scalar: not array data")
    return _multiarray().scalar(dtype, data)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """NumPy's `_reconstruct`, which allocates `shape` at once, limited to the empty array NumPy's own pickles
    ask for (the data arrives afterwards, checked against the shape by `ndarray.__setstate__`)."""
    sizes = shape if isinstance(shape, tuple) else (shape,)
    if not all(isinstance(n, int) and n >= 0 for n in sizes) or math.prod(sizes) > 1:
        raise DamagedFile(f"a pickled NumPy array asks for an initial shape {str(shape)[:80]}; NumPy writes (0,)")
    return _multiarray()._reconstruct(subtype, shape, dtype)


def _allowed() -> dict[tuple[str, str], Any]:
    recon = _reconstruct
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): recon,
        ("numpy._core.multiarray", "_reconstruct"): recon,
        ("numpy.core.multiarray", "scalar"): _np_scalar,
        ("numpy._core.multiarray", "scalar"): _np_scalar,
        ("_codecs", "encode"): codecs.encode,
        ("__builtin__", "set"): set,
        ("builtins", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "object"): object,
        ("builtins", "object"): object,
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("chumpy.ch", "Ch"): ChumpyArray,
        ("chumpy", "Ch"): ChumpyArray,
    }
    for fmt in ("csc", "csr", "coo"):
        cls = _sparse_class(fmt)
        for mod in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse"):
            table[(mod, f"{fmt}_matrix")] = cls
            table[(mod, f"{fmt}_array")] = cls
    return table


class SafeUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, chumpy arrays and scipy sparse matrices, nothing else."""

    _table: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if SafeUnpickler._table is None:
            SafeUnpickler._table = _allowed()
        target = SafeUnpickler._table.get((module, name))
        if target is None:
            raise RefusedContent(
                f"refusing to load: the file references {module}.{name}, which is not array data (only NumPy "
                "arrays, chumpy arrays and scipy sparse matrices are allowed)"
            )
        return target


class _PlaceholderUnpickler(SafeUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch.") or (module, name) == ("collections", "OrderedDict"):
            return TorchPlaceholder()
        return super().find_class(module, name)


def unpickle(stream: io.BytesIO, torch_placeholders: bool = False) -> Any:
    """The object in `stream` (Python-2 strings read as latin1), stand-ins left in place; raises
    `RefusedContent`, `DamagedFile` (nested too deeply), or one of `BROKEN_PICKLE_ERRORS` for a damaged stream."""
    depth = pickle_depth(bytes(stream.getbuffer()[stream.tell() :]))
    if depth > MAX_PICKLE_DEPTH:
        raise _too_deep(depth)
    cls = _PlaceholderUnpickler if torch_placeholders else SafeUnpickler
    return cls(stream, encoding="latin1").load()


def to_arrays(obj: Any, key: str = "", depth: int = 0) -> Any:
    """Turn stand-ins into NumPy arrays, recursively; raises `DamagedFile` or `RefusedContent`. A structure
    deeper than any model file (or one that contains itself) is damaged."""
    if depth > MAX_PICKLE_DEPTH:
        raise _too_deep(depth)
    if isinstance(obj, ChumpyArray):
        state = obj.state if isinstance(obj.state, Mapping) else {}
        if "x" not in state:
            raise DamagedFile(f"the chumpy array {key!r} has no data ('x'); the file looks damaged")
        return np.asarray(to_arrays(state["x"], key, depth + 1))
    if isinstance(obj, SparseMatrix):
        return _dense(obj, key)
    if isinstance(obj, Opaque):
        raise RefusedContent(f"unexpected object in {key!r}")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise RefusedContent(f"{key!r} is an object array, not numeric data")
        return obj
    if isinstance(obj, dict):
        return {str(k): to_arrays(v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_arrays(v, key, depth + 1) for v in obj)
    return obj


def _dense(obj: SparseMatrix, key: str) -> NDArray[np.float64]:
    state = obj.state if isinstance(obj.state, Mapping) else {}
    try:
        shape = tuple(int(s) for s in state["_shape"])
        data = np.asarray(state["data"], dtype=np.float64)
        if obj.fmt == "coo":
            rows = np.asarray(state["row"], dtype=np.int64)
            cols = np.asarray(state["col"], dtype=np.int64)
        else:
            indices = np.asarray(state["indices"], dtype=np.int64)
            indptr = np.asarray(state["indptr"], dtype=np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if obj.fmt == "csc" else (major, indices)
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedFile(f"the sparse matrix {key!r} is incomplete ({exc}); the file looks damaged") from None
    if len(shape) != 2 or min(shape) < 0 or math.prod(shape) > MAX_DENSE_VALUES:
        raise DamagedFile(f"the sparse matrix {key!r} has shape {shape}; no FLAME matrix is that large")
    if rows.shape != data.shape or cols.shape != data.shape:
        raise DamagedFile(f"the sparse matrix {key!r} is inconsistent; the file looks damaged")
    if data.size and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]):
        raise DamagedFile(f"the sparse matrix {key!r} has out-of-range indices; the file looks damaged")
    out = np.zeros(shape, dtype=np.float64)
    np.add.at(out, (rows, cols), data)
    return out


def load_pickle(path: Path | str, what: str) -> Any:
    """A restricted pickle file as plain arrays; errors name `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFile(f"{what} {path} does not exist; check the path in your config")
    raw = path.read_bytes()
    if not raw:
        raise DamagedFile(f"{what} {path} is empty; download it again")
    if raw[:2] == b"PK":
        raise DamagedFile(f"{what} {path} is a zip/torch archive, not a pickle; did you swap two paths?")
    try:
        obj = unpickle(io.BytesIO(raw))
    except SafeLoadError as exc:
        raise type(exc)(f"{what} {path}: {exc}") from None
    except BROKEN_PICKLE_ERRORS as exc:
        raise DamagedFile(
            f"{what} {path} is truncated or not a pickle ({type(exc).__name__}: {exc}); download it again"
        ) from None
    return to_arrays(obj)


# ------------------------------------------------------------------------------------- weights-only torch files
def _numpy_arrays() -> list[Any]:
    """What torch's weights-only unpickler must additionally accept to rebuild plain NumPy arrays."""
    allowed: list[Any] = [np.ndarray, np.dtype]
    mod = _multiarray()
    allowed += [(_reconstruct, f"{name}._reconstruct") for name in ("numpy.core.multiarray", "numpy._core.multiarray")]
    allowed.append(mod.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for attr in dir(dtypes):
            cls = getattr(dtypes, attr)
            if isinstance(cls, type) and attr.endswith("DType") and attr not in ("ObjectDType", "VoidDType"):
                allowed.append(cls)
    return allowed


def _argparse_paths() -> list[Any]:
    """argparse.Namespace and the pathlib classes, also under the names older Pythons write."""
    entries: list[Any] = [argparse.Namespace]
    for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path", "PurePath"):
        cls = getattr(pathlib, name)
        entries.append(cls)
        if cls.__module__ != "pathlib":  # Python >= 3.13 moved them to pathlib._local
            entries.append((cls, f"pathlib.{name}"))
    return entries


NUMPY_ARRAYS: tuple[Any, ...] = tuple(_numpy_arrays())
ARGPARSE_PATHS: tuple[Any, ...] = tuple(_argparse_paths())


def unpickling_reason(exc: BaseException) -> str:
    """The informative line of torch's weights-only refusal (the global it met), not its generic advice."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), None)
    return (hit or (lines[0] if lines else type(exc).__name__))[:200]


@contextlib.contextmanager
def _allowing(entries: Sequence[Any]) -> Iterator[None]:
    import torch

    plain = [e for e in entries if not isinstance(e, tuple)]
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # an older torch: a process-wide allow-list
        if plain:
            torch.serialization.add_safe_globals(plain)
        yield
        return
    try:
        ctx = safe_globals(list(entries))
    except (TypeError, AttributeError):  # a torch without (cls, name) tuples
        ctx = safe_globals(plain)
    with ctx:
        yield


def load_torch(path: Path | str, allow: Sequence[Any] = ()) -> Any:
    """`torch.load(weights_only=True)` on the CPU, accepting the extra classes in `allow`; raises
    `RefusedContent` (reason: the global torch refused) or `DamagedFile` (reason: the error torch met)."""
    import torch

    check_torch_file(Path(path))
    check_archive(Path(path))
    try:
        with _allowing(allow):
            loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
        check_views(loaded)
        return loaded
    except SafeLoadError:
        raise
    except pickle.UnpicklingError as exc:
        raise RefusedContent(unpickling_reason(exc)) from None
    except Exception as exc:  # torch raises many types for damaged files (IndexError, RuntimeError, ...)
        raise DamagedFile(f"{type(exc).__name__}: {str(exc)[:200]}") from None
