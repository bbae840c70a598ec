"""`avatar-bridge calibrate --tracked DIR`: fit the ARKit expression map of a FLAME avatar on its tracked frames.

Reads metrical-tracker `.frame` files (the avatar's own training data), FLAME and its landmark embedding,
fits each ARKit expression name (see `drivers.avatar.flame.arkit_fit`) and writes
`calibrated/arkit_<avatar>.toml` in your presets folder, which the mixer overlays on the generic FLAME map for
that avatar.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from bridge.core.errors import UserError

DEFAULT_AVATAR = "flashavatar"  # the daemon's FlashAvatar avatar name


def tracked_files(folder: Path) -> list[Path]:
    """The `.frame` files of a tracker output folder (or its `checkpoint/` subfolder), in frame order."""
    if not folder.exists():
        raise UserError(f"tracked folder {folder} does not exist; pass metrical-tracker's output/<id>/checkpoint")
    if not folder.is_dir():
        raise UserError(f"{folder} is a file; --tracked takes the folder holding the tracker's .frame files")
    sub = folder / "checkpoint"
    if sub.is_dir() and not any(folder.glob("*.frame")):
        folder = sub
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise UserError(f"tracked folder {folder} is empty; run metrical-tracker on the avatar's video first")
    frames = [p for p in entries if p.suffix == ".frame" and p.is_file()]
    if not frames:
        shown = ", ".join(p.name for p in entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise UserError(f"no .frame files in {folder} (found: {shown}); point --tracked at metrical-tracker's "
                        "output/<id>/checkpoint folder")
    return frames


def load_tracked(files: list[Path], max_frames: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Expression codes (N,100), the shape of the first good frame (300,) and one line per skipped file."""
    from drivers.avatar.flame.tracker import TrackerFrameError, load_tracker_frame

    if len(files) > max_frames:
        files = [files[i] for i in np.linspace(0, len(files) - 1, max_frames).round().astype(int)]
    codes: list[np.ndarray] = []
    shape: np.ndarray | None = None
    skipped: list[str] = []
    for f in files:
        try:
            fr = load_tracker_frame(f)
        except TrackerFrameError as exc:
            skipped.append(str(exc))
            continue
        if fr.expr is None or not np.all(np.isfinite(fr.expr)):
            skipped.append(f"{f}: no finite flame.exp (100 values)")
            continue
        codes.append(fr.expr.astype(np.float64))
        if shape is None and fr.shape is not None:
            shape = fr.shape.astype(np.float64)
    if not codes:
        first = skipped[0] if skipped else "no frames"
        raise UserError(f"none of the {len(files)} .frame files is a usable tracked frame ({first}); "
                        "pass the checkpoint folder of a metrical-tracker run")
    if len(codes) < 2:
        raise UserError("only one usable tracked frame: calibration needs the avatar's frames with varied "
                        "expressions (a few hundred are typical)")
    return np.stack(codes), (shape if shape is not None else np.zeros(300)), skipped


def landmark_setup(flame_path: Path, landmarks: Path | None, shape: np.ndarray) -> tuple[Any, np.ndarray]:
    """(embedding, (L*3,100) Jacobian) for the subject's shape at a neutral pose."""
    import torch

    from drivers.avatar.flame.arkit_fit import landmark_jacobian
    from drivers.avatar.flame.files import load_flame_arrays
    from drivers.avatar.flame.landmarks import find_embedding, load_landmark_embedding
    from drivers.avatar.flame.model import FlameModel

    if landmarks is None:
        landmarks = find_embedding([flame_path.parent, flame_path.parent / "flame"])
        if landmarks is None:
            raise UserError(f"no landmark embedding beside {flame_path} (landmark_embedding.npy or "
                            "flame_static_embedding.pkl); pass one with --landmarks")
    emb = load_landmark_embedding(landmarks)
    flame = FlameModel(load_flame_arrays(flame_path, cache=False), dtype=torch.float64)
    faces = flame.faces.cpu().numpy()
    emb.check_faces(int(faces.shape[0]))
    with torch.no_grad():
        s = torch.as_tensor(shape, dtype=torch.float64).reshape(1, -1)
        neutral = flame(shape=s)[0].numpy()
        units = flame(shape=s.expand(100, -1), expression=torch.eye(100, dtype=torch.float64)).numpy()
    return emb, landmark_jacobian(emb.points(neutral, faces), emb.points(units, faces))


def write_map(path: Path, avatar: str, source: Path, frames: int, results: list[Any]) -> int:
    """Write the fitted entries as an ARKit map file; returns how many were written."""
    lines = [
        f"# ARKit expression entries fitted by `avatar-bridge calibrate` on {frames} tracked frames of {source}.",
        "# Weight 1.0 of each name = a strong expression of this person (95th percentile of the tracked motion).",
        "# Names not listed here keep the generic entries of presets/arkit_flame.toml.",
        "",
        "[meta]",
        f'avatar = "{avatar}"',
        "",
    ]
    written = 0
    for r in results:
        if r.expression is None:
            continue
        values = ", ".join(f"{v:.6g}" for v in r.expression.tolist())
        lines += [f"[map.{r.name}]  # {r.reason}", f"expression = [{values}]", ""]
        written += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return written


def cmd_calibrate(args: argparse.Namespace) -> int:
    from bridge.controls.arkit_maps import calibration_file, load_map
    from drivers.avatar.flame.arkit_fit import fit_targets

    config = None
    if args.config:
        from bridge.core.config import load_config

        config = load_config(args.config)
    flame_path = Path(args.flame) if args.flame else (config.avatar.flame_model if config else None)
    if flame_path is None:
        raise UserError("calibration needs the FLAME model the avatar was trained with: pass --flame "
                        "generic_model.pkl (or --config with avatar.flame_model set)")
    presets_dir = Path(args.presets) if args.presets else (config.presets.dir if config else None)
    out = Path(args.out) if args.out else calibration_file(args.avatar, presets_dir)
    files = tracked_files(Path(args.tracked))
    codes, shape, skipped = load_tracked(files, args.max_frames)
    for line in skipped[:5]:
        print(f"skipped: {line}")
    if len(skipped) > 5:
        print(f"skipped {len(skipped) - 5} more unusable files")
    emb, jac = landmark_setup(flame_path, Path(args.landmarks) if args.landmarks else None, shape)
    results = fit_targets(jac, codes, emb)
    for r in results:
        print(f"  {r.name:20s} {'fitted' if r.expression is not None else 'kept generic'}: {r.reason}")
    n = write_map(out, args.avatar, Path(args.tracked), codes.shape[0], results)
    load_map(out)  # the file must read back as a valid map
    print(f"wrote {n} fitted ARKit entries from {codes.shape[0]} frames to {out}")
    return 0 if n else 1


def register(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit a FLAME avatar's ARKit expression map on its tracked frames",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracked", required=True, metavar="DIR", help="metrical-tracker output (the .frame files)")
    p.add_argument("--flame", metavar="PKL", help="FLAME 2020 generic_model.pkl (default: avatar.flame_model)")
    p.add_argument("--landmarks", metavar="FILE", help="landmark_embedding.npy (default: beside the FLAME file)")
    p.add_argument("--avatar", default=DEFAULT_AVATAR, help=f"avatar name for the map file (default {DEFAULT_AVATAR})")
    p.add_argument("--out", metavar="TOML", help="output file (default calibrated/arkit_<avatar>.toml in your presets folder)")
    p.add_argument("--presets", metavar="DIR", help="presets folder (default: the config's presets.dir)")
    p.add_argument("--config", metavar="TOML", help="daemon config, for avatar.flame_model and presets.dir")
    p.add_argument("--max-frames", type=int, default=2000, help="use at most this many frames, evenly spaced")
    p.set_defaults(func=cmd_calibrate)
