"""How many bytes of tensors an object holds beyond the ones it shares: the cost of one more session.

The weights of a shared model are paid once per process; what each avatar or face driver adds (render
buffers, its engine's state, pinned blocks) is paid per session. `tensor_bytes` walks an object's attributes
and containers and sums the storages of the tensors it reaches, each storage once; storages also reachable from
`shared` are left out. On CUDA the bench reads the device's allocator instead (CUDA graphs' pools are not
reachable as tensors); this count is what the CPU can check.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

import torch

_OPAQUE = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType, str, bytes,
           int, float, bool, complex)
MAX_OBJECTS = 200_000  # a bound on the walk (an object graph this large is not a driver's)


def _storages(roots: Iterable[Any]) -> dict[int, int]:
    """data pointer → bytes of every tensor storage reachable from `roots`."""
    seen: set[int] = set()
    found: dict[int, int] = {}
    stack = list(roots)
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return found


def tensor_bytes(obj: Any, shared: Iterable[Any] = ()) -> int:
    """Bytes of the tensor storages reachable from `obj` and not from any of `shared`."""
    common = _storages(shared)
    return sum(n for ptr, n in _storages([obj]).items() if ptr not in common)
