"""FLAME in torch: linear blend skinning with shape, expression, neck, jaw, eyes, eyelids and translation.

The arithmetic follows FLAME's reference formulation (as used by metrical-tracker and FlashAvatar): blend
shapes on the template, joints regressed from the blended template, pose correctives from (R - I) of the
four non-root joints, LBS over five joints, eyelid blendshapes added after skinning, translation last.
Rotations may be given as axis-angle (..., 3) or in PyTorch3D's 6D form (..., 6); both end up as matrices.

For live rendering the subject's shape is fixed, so `FlameModel.bind_shape` folds it into the template once;
the per-frame work is then two small matmuls and a (V,5)x(5,16) skinning product, all on the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from bridge.core.rotations_torch import axis_angle_to_matrix, rotation_6d_to_matrix
from drivers.avatar.flame.files import N_JOINTS, FlameFileError, load_flame_arrays

N_SHAPE = 300
N_EXPR = 100


def to_matrix(pose: torch.Tensor, joints: int) -> torch.Tensor:
    """(B, joints*3 | joints*6 | joints,3 | joints,6) → (B, joints, 3, 3); the form is told by its size."""
    b = pose.shape[0]
    flat = pose.reshape(b, -1)
    if flat.shape[1] == joints * 6:
        return rotation_6d_to_matrix(flat.reshape(b, joints, 6))
    if flat.shape[1] == joints * 3:
        return axis_angle_to_matrix(flat.reshape(b, joints, 3))
    raise ValueError(f"a pose for {joints} joint(s) needs {joints * 3} (axis-angle) or {joints * 6} (6D) values, "
                     f"got {flat.shape[1]}")


def batch_rigid_transform(rot: torch.Tensor, joints: torch.Tensor, parents: list[int],
                          parent_idx: torch.Tensor | None = None) -> torch.Tensor:
    """World transforms of each joint relative to its rest position, (B,J,4,4). `parent_idx` (device tensor of
    parents[1:]) avoids a host→device index upload per call, which CUDA graph capture forbids."""
    b, j = joints.shape[:2]
    if parent_idx is None:
        parent_idx = torch.tensor(parents[1:], device=joints.device)
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints.index_select(1, parent_idx)
    local = torch.zeros(b, j, 4, 4, dtype=rot.dtype, device=rot.device)
    local[..., :3, :3] = rot
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[parents[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)
    posed_joints = world[..., :3, 3]
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    world = world.clone()
    world[..., :3, 3] = posed_joints - offset
    return world


class FlameModel:
    """FLAME 2020 / 2023 (5023 vertices, 300 shape + 100 expression components) on one device."""

    def __init__(
        self,
        arrays: Mapping[str, NDArray[Any]],
        l_eyelid: NDArray[np.floating] | None = None,
        r_eyelid: NDArray[np.floating] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype

        def t(a: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device).to(dtype)

        self.v_template = t(arrays["v_template"])  # (V,3)
        sd = np.asarray(arrays["shapedirs"])
        self.shapedirs = t(np.concatenate([sd[:, :, :N_SHAPE], sd[:, :, 300 : 300 + N_EXPR]], axis=2))  # (V,3,400)
        pd = np.asarray(arrays["posedirs"])
        self.posedirs = t(pd.reshape(-1, pd.shape[-1]).T)  # (36, V*3)
        self.J_regressor = t(arrays["J_regressor"])  # (5,V)
        self.weights = t(arrays["weights"])  # (V,5)
        parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64).copy()
        parents[0] = -1
        self.parents = [int(p) for p in parents]
        if any(not (-1 <= p < i) for i, p in enumerate(self.parents)):
            raise FlameFileError(f"kintree_table parents {self.parents} are not a valid tree ordered root first")
        self._parent_idx = torch.tensor(self.parents[1:], dtype=torch.long, device=self.device)
        self.faces = torch.as_tensor(np.asarray(arrays["f"], dtype=np.int64), device=self.device)
        self.l_eyelid = None if l_eyelid is None else t(l_eyelid)
        self.r_eyelid = None if r_eyelid is None else t(r_eyelid)
        # Joints are linear in the blend weights: regress the blend shapes once.
        self._j_template = self.J_regressor @ self.v_template  # (5,3)
        self._j_dirs = torch.einsum("jv,vkl->jkl", self.J_regressor, self.shapedirs)  # (5,3,400)
        self._eye3 = torch.eye(3, dtype=dtype, device=self.device)

    @classmethod
    def from_files(
        cls,
        flame_model: Path | str,
        eyelids_dir: Path | str | None = None,
        device: torch.device | str = "cpu",
    ) -> FlameModel:
        from drivers.avatar.flame.files import load_eyelids

        arrays = load_flame_arrays(flame_model)
        lid_l = lid_r = None
        if eyelids_dir is not None:
            lid_l, lid_r = load_eyelids(eyelids_dir)
        return cls(arrays, lid_l, lid_r, device=device)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _batch(self, x: torch.Tensor | None, b: int, n: int, name: str) -> torch.Tensor:
        if x is None:
            return torch.zeros(b, n, dtype=self.dtype, device=self.device)
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device).reshape(b, -1)
        if x.shape[1] < n:  # fewer components fill the first ones
            x = F.pad(x, (0, n - x.shape[1]))
        if x.shape[1] != n:
            raise ValueError(f"{name} has {x.shape[1]} values per frame; FLAME takes {n}")
        return x

    def _rot(self, pose: torch.Tensor | None, b: int, joints: int) -> torch.Tensor:
        if pose is None:
            return self._eye3.expand(b, joints, 3, 3)
        return to_matrix(torch.as_tensor(pose, dtype=self.dtype, device=self.device), joints)

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        jaw: torch.Tensor | None = None,
        eyes: torch.Tensor | None = None,
        eyelids: torch.Tensor | None = None,
        neck: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Posed vertices (B,V,3). Every argument is batched (B, ...); None means neutral/zero."""
        batch = next((x.shape[0] for x in (shape, expression, jaw, eyes, eyelids, neck, rotation, translation)
                      if x is not None), 1)
        betas = torch.cat([self._batch(shape, batch, N_SHAPE, "shape"),
                           self._batch(expression, batch, N_EXPR, "expression")], dim=1)
        rots = torch.cat([self._rot(rotation, batch, 1), self._rot(neck, batch, 1), self._rot(jaw, batch, 1),
                          self._rot(eyes, batch, 2)], dim=1)  # (B,5,3,3)
        v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        joints = self._j_template + torch.einsum("bl,jkl->bjk", betas, self._j_dirs)
        verts = self._skin(v_shaped, joints, rots)
        if eyelids is not None and self.l_eyelid is not None and self.r_eyelid is not None:
            lids = self._batch(eyelids, batch, 2, "eyelids")
            verts = verts + self.r_eyelid * lids[:, 1:2, None] + self.l_eyelid * lids[:, 0:1, None]
        if translation is not None:
            verts = verts + self._batch(translation, batch, 3, "translation")[:, None, :]
        return verts

    __call__ = forward

    def _skin(self, v_shaped: torch.Tensor, joints: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
        b = v_shaped.shape[0]
        pose_feature = (rots[:, 1:] - self._eye3).reshape(b, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(b, -1, 3)
        world = batch_rigid_transform(rots, joints, self.parents, self._parent_idx)  # (B,J,4,4)
        skin = (self.weights @ world.reshape(b, N_JOINTS, 16)).reshape(b, -1, 4, 4)
        return (skin[..., :3, :3] @ v_posed[..., None])[..., 0] + skin[..., :3, 3]

    def bind_shape(self, shape: torch.Tensor) -> BoundFlame:
        """Fold a fixed shape code into the template for fast per-frame evaluation."""
        return BoundFlame(self, torch.as_tensor(shape, dtype=self.dtype, device=self.device).reshape(1, -1))


class BoundFlame:
    """FLAME with the subject's shape folded in: per frame only expression, poses, eyelids, translation."""

    def __init__(self, flame: FlameModel, shape: torch.Tensor) -> None:
        self.flame = flame
        shape = flame._batch(shape, 1, N_SHAPE, "shape")
        sd = flame.shapedirs
        self.v_shaped0 = flame.v_template + torch.einsum("l,mkl->mk", shape[0], sd[:, :, :N_SHAPE])
        self.expr_dirs = sd[:, :, N_SHAPE:].reshape(-1, N_EXPR).T.contiguous()  # (100, V*3)
        self.j0 = flame._j_template + torch.einsum("l,jkl->jk", shape[0], flame._j_dirs[:, :, :N_SHAPE])
        self.j_expr = flame._j_dirs[:, :, N_SHAPE:].reshape(-1, N_EXPR).T.contiguous()  # (100, 15)

    def forward(
        self,
        expression: torch.Tensor,
        rots: torch.Tensor,
        eyelids: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """expression (B,100), rots (B,5,3,3) for (root, neck, jaw, left eye, right eye) → (B,V,3)."""
        f = self.flame
        b = expression.shape[0]
        v_shaped = self.v_shaped0 + (expression @ self.expr_dirs).reshape(b, -1, 3)
        joints = self.j0 + (expression @ self.j_expr).reshape(b, N_JOINTS, 3)
        verts = f._skin(v_shaped, joints, rots)
        if eyelids is not None and f.l_eyelid is not None and f.r_eyelid is not None:
            verts = verts + f.r_eyelid * eyelids[:, 1:2, None] + f.l_eyelid * eyelids[:, 0:1, None]
        if translation is not None:
            verts = verts + translation[:, None, :]
        return verts

    __call__ = forward


# Head motion. FlashAvatar keeps FLAME's global rotation, neck and translation at identity and carries head
# motion in the camera: a head or neck rotation from a face driver or a control becomes this rigid motion,
# and the avatar moves the camera by its inverse, so the image is the one FLAME's global (root-joint) and neck
# rotation would give if the whole head turned rigidly, including view-dependent colour.
def head_motion_batch(head_rot: torch.Tensor, neck_rot: torch.Tensor, translation: torch.Tensor,
                      joints: torch.Tensor) -> torch.Tensor:
    """4x4 rigid motions: neck rotation about joint 1, then FLAME's global rotation about the root joint 0, then
    translation. For the root this is exactly what FLAME's LBS does (every vertex follows the root); the neck
    is applied rigidly to the whole head (FLAME blends it into the neck base; FlashAvatar never bends it).

    Rotation matrices (B,3,3) and translations (B,3) → (B,4,4) in their dtype, on their device, with no host
    round trip (it runs inside the avatar's CUDA graphs)."""
    j0, j1 = joints[0].to(head_rot), joints[1].to(head_rot)
    rot = head_rot @ neck_rot
    shift = (j0 - head_rot @ j0) + (head_rot @ (j1 - neck_rot @ j1)[..., None])[..., 0] + translation
    top = torch.cat([rot, shift[..., None]], dim=-1)
    b = top.shape[0]
    bottom = torch.cat([top.new_zeros(b, 1, 3), top.new_ones(b, 1, 1)], dim=-1)  # made on the device: capturable
    return torch.cat([top, bottom], dim=-2)


def head_motion(head_aa: np.ndarray, neck_aa: np.ndarray, translation: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """`head_motion_batch` for one frame of axis-angle poses, in float64 NumPy (the CPU-side callers)."""
    rots = axis_angle_to_matrix(torch.as_tensor(np.stack([head_aa, neck_aa]), dtype=torch.float64).reshape(2, 3))
    move = torch.as_tensor(np.asarray(translation, np.float64).reshape(1, 3))
    return head_motion_batch(rots[:1], rots[1:], move, torch.as_tensor(np.asarray(joints, np.float64)))[0].numpy()
