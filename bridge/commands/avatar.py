"""`avatar-bridge avatar ...`: train a FlashAvatar on a tracked video (and make a synthetic dataset to test that),
inspect a checkpoint, render a FLAME parameter sequence offline, and export the posed Gaussians of a frame to a
3DGS `.ply`.

Heavy imports (torch, PyAV, the config) happen inside the commands so `avatar-bridge --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.commands import avatar_create, avatar_scene
from bridge.core.errors import UserError

if TYPE_CHECKING:
    from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths

_FILE_OPTS = ("checkpoint", "flame_model", "flame_masks", "flame_mesh", "eyelids_dir", "tracker_frame", "shape")


def register(sub: Any) -> None:
    parser = sub.add_parser("avatar", help="FlashAvatar tools: train, info, offline render, .ply export")
    avsub = parser.add_subparsers(dest="avatar_command", metavar="ACTION")

    info = avsub.add_parser("info", help="what a FlashAvatar checkpoint contains and which FLAME files it needs")
    info.add_argument("checkpoint", type=Path, help="chkpnt*.pth from FlashAvatar's training")
    info.set_defaults(func=cmd_info)

    render = avsub.add_parser("render", help="render a FLAME parameter sequence to a video file")
    _avatar_args(render)
    render.add_argument("--params", type=Path, required=True,
                        help=".npz with expr/jaw_pose/eyes_pose/eyelids per frame (tracker or DiffPoseTalk output), "
                        "'params' (F,120) FaceParams vectors, or a folder of metrical-tracker .frame files")
    render.add_argument("--out", type=Path, required=True, help="output video (.mp4)")
    render.add_argument("--fps", type=int, default=25)
    render.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    render.add_argument("--camera", choices=("tracker", "default"), default="tracker",
                        help="per-frame tracker cameras when the parameters carry them, else the fixed framing")
    render.add_argument("--batch", type=int, default=8,
                        help="frames deformed and rasterised together (1: one frame at a time)")
    render.set_defaults(func=cmd_render)

    ply = avsub.add_parser("export-ply", help="write the posed Gaussians of one frame as a standard 3DGS .ply")
    _avatar_args(ply)
    ply.add_argument("--params", type=Path, help="parameter sequence as for 'render' (default: neutral face)")
    ply.add_argument("--frame", type=int, default=0, help="frame index in --params")
    ply.add_argument("--out", type=Path, required=True)
    ply.add_argument("--world", action="store_true",
                     help="keep FLAME coordinates (default: apply the frame's head motion, if any)")
    ply.set_defaults(func=cmd_export_ply)

    train = avsub.add_parser("train", help="train a FlashAvatar on a tracked video (upstream's dataset layout)",
                             description="Train a FlashAvatar from DATASET (imgs/, alpha/, parsing/ and "
                             "metrical-tracker .frame files; see install/models.md) into --out: chkpnt<N>.pth "
                             "checkpoints, avatar.toml, previews and held-out metrics. Ctrl-C saves and stops; "
                             "--resume continues.")
    train.add_argument("dataset", type=Path, help="the dataset folder (upstream's dataset/<id>)")
    train.add_argument("--out", type=Path, required=True, help="output folder, e.g. models/me")
    train.add_argument("--tracking", type=Path,
                       help="metrical-tracker's output/<id> (or its checkpoint/) folder, if not inside DATASET")
    train.add_argument("--frame-offset", type=int, default=1,
                       help="image number of tracker frame 0 (upstream: 1, the tracker starts on the 2nd frame)")
    _flame_args(train)
    train.add_argument("--iterations", type=int, default=150_000, help="upstream: 150000; ~10000 is usable")
    train.add_argument("--size", type=int, default=512, help="training image height in pixels (upstream: 512)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="cuda for real training; cpu only for tiny test runs")
    train.add_argument("--resume", action="store_true",
                       help="continue from the latest checkpoint in --out (trained on this dataset and FLAME files)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the avatar already in --out (its checkpoints are removed)")
    train.add_argument("--checkpoint-every", type=int, default=5000)
    train.add_argument("--preview-every", type=int, default=500)
    train.add_argument("--eval-every", type=int, default=0,
                       help="held-out PSNR/SSIM every N iterations (0: with each checkpoint)")
    train.add_argument("--test-frames", type=int, default=None,
                       help="held-out frames at the end (default: upstream's 500, a tenth below 1000 frames)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-lpips", action="store_true", help="leave out the LPIPS(VGG) loss after 15k iterations")
    train.add_argument("--white-background", action="store_true", help="train against white instead of green")
    train.add_argument("--mlp-width", type=int, default=256,
                       help="deformation MLP width (upstream: 256; other sizes are read by this project only)")
    train.add_argument("--mlp-layers", type=int, default=6, help="deformation MLP hidden layers (upstream: 6)")
    train.add_argument("--mlp-init", choices=("upstream", "zero"), default="upstream",
                       help="zero: the deformation starts at none, the Gaussians on the mesh (upstream's init "
                       "shifts them by centimetres at first, a small MLP's by decimetres)")
    train.add_argument("--log-every", type=int, default=100, help="loss read-back and CSV row every N iterations")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CSVs only)")
    train.set_defaults(func=cmd_train)

    syn = avsub.add_parser("make-synthetic", help="render a teacher avatar into a training dataset with known "
                           "answers (for testing training)")
    syn.add_argument("out", type=Path, help="dataset folder to write")
    _flame_args(syn)
    syn.add_argument("--shape", type=Path, help=".npy/.npz/.frame with the teacher's 300 shape coefficients")
    syn.add_argument("--mlp-from", type=Path, help="a checkpoint whose deformation MLP the teacher reuses")
    syn.add_argument("--mlp-width", type=int, default=256, help="the teacher MLP's width without --mlp-from")
    syn.add_argument("--mlp-layers", type=int, default=6, help="the teacher MLP's hidden layers without --mlp-from")
    syn.add_argument("--frames", type=int, default=300)
    syn.add_argument("--size", type=int, default=512, help="image size (square)")
    syn.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=cmd_make_synthetic)
    avatar_create.register(avsub, _flame_args, _subject_paths)  # `avatar create` and `avatar prepare`
    avatar_scene.register(avsub)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _flame_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config TOML whose [avatar] section names the FLAME files")
    p.add_argument("--flame-model", type=Path, help="FLAME 2020 generic_model.pkl (the one the tracker used)")
    p.add_argument("--flame-masks", type=Path, help="FLAME_masks.pkl (default: next to the FLAME model)")
    p.add_argument("--flame-mesh", type=Path, help="FlashAvatar's FlameMesh.obj (default: next to the FLAME model)")
    p.add_argument("--eyelids-dir", type=Path, help="folder with l_eyelid.npy and r_eyelid.npy")


def _subject_paths(args: argparse.Namespace) -> SubjectFilePaths:
    """The FLAME-side files from the options, a config's [avatar] section, or beside the FLAME model."""
    from drivers.avatar.flashavatar.avatar import find_flame_files
    from drivers.avatar.flashavatar.train.outputs import SubjectFilePaths

    keys = ("flame_model", "flame_masks", "flame_mesh", "eyelids_dir")
    kw: dict[str, Any] = {}
    if args.config is not None:
        from bridge.core.config import load_config

        cfg = load_config(args.config).avatar
        kw = {k: getattr(cfg, k) for k in keys}
    kw.update({k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    if kw.get("flame_model") is None:
        raise UserError("give --flame-model (FLAME 2020 generic_model.pkl, the model the tracker used) or --config "
                        "with avatar.flame_model")
    flame = Path(kw["flame_model"]).expanduser()
    if not flame.is_file():
        raise UserError(f"--flame-model {flame} does not exist")
    masks, mesh, lids = find_flame_files(flame, kw.get("flame_masks"), kw.get("flame_mesh"), kw.get("eyelids_dir"),
                                         cli=True)
    return SubjectFilePaths(flame_model=flame, flame_masks=masks, flame_mesh=mesh, eyelids_dir=lids)


def cmd_train(args: argparse.Namespace) -> int:
    from drivers.avatar.flashavatar.train.trainer import Trainer, TrainOptions

    opts = TrainOptions(
        iterations=args.iterations, size=args.size, device=args.device, checkpoint_every=args.checkpoint_every,
        preview_every=args.preview_every, eval_every=args.eval_every, log_every=args.log_every, seed=args.seed,
        test_frames=args.test_frames, frame_offset=args.frame_offset, lpips=not args.no_lpips,
        hidden_dim=args.mlp_width, hidden_layers=args.mlp_layers, zero_head=args.mlp_init == "zero",
        white_background=args.white_background,
        resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
    )
    trainer = Trainer(args.dataset, args.out, _subject_paths(args), opts, tracking=args.tracking)
    result = trainer.run()
    state = "stopped" if result.interrupted else "finished"
    print(f"{state} at iteration {result.iteration} after {result.seconds:.0f} s ({result.its_per_s:.1f} it/s)")
    sc = result.scores
    assert sc is not None
    print(f"held-out PSNR {sc.psnr:.2f} dB ({sc.psnr_head:.2f} dB on the head), SSIM {sc.ssim:.4f} on the last "
          f"{result.test_frames} frames (metrics.csv)")
    print(f"checkpoint: {result.checkpoint}")
    print(f"avatar:     {result.avatar_toml}  ->  avatar-bridge run --config {result.avatar_toml}")
    if result.interrupted:
        print(f"continue with: avatar-bridge avatar train {args.dataset} --out {args.out} --resume")
        return 130
    return 0


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from drivers.avatar.flashavatar.avatar import load_shape
    from drivers.avatar.flashavatar.train.synthetic import make_dataset
    from drivers.avatar.splat.select import resolve_device

    if args.frames < 2 or args.size < 16:
        raise UserError("give --frames 2 or more and --size 16 or more")
    files = _subject_paths(args)
    shape = load_shape(args.shape) if args.shape is not None else np.zeros(300, np.float32)
    res = make_dataset(args.out, files, shape, frames=args.frames, size=args.size,
                       device=resolve_device(args.device), mlp_from=args.mlp_from, seed=args.seed,
                       hidden_dim=args.mlp_width, hidden_layers=args.mlp_layers)
    print(f"wrote {res.frames} frames to {res.dataset} (tracking in {res.tracking}, teacher {res.teacher})")
    return 0


def _avatar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="daemon config TOML whose [avatar] section names the files")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--flame-model", type=Path, help="FLAME 2020 generic_model.pkl (or a converted .npz)")
    p.add_argument("--flame-masks", type=Path, help="FLAME_masks.pkl")
    p.add_argument("--flame-mesh", type=Path, help="FlashAvatar's FlameMesh.obj")
    p.add_argument("--eyelids-dir", type=Path, help="folder with l_eyelid.npy and r_eyelid.npy")
    p.add_argument("--tracker-frame", type=Path, help="metrical-tracker .frame for shape and camera")
    p.add_argument("--shape", type=Path, help=".npy/.npz with the 300 shape coefficients")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--zoom", type=float, default=1.0)
    p.add_argument("--background", default="#00ff00", help="hex colour (FlashAvatar trains on green)")
    p.add_argument("--renderer", choices=("auto", "cpu", "tiles", "reference", "gsplat"), default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _hex(text: str) -> tuple[float, float, float]:
    t = text.strip().lstrip("#")
    if len(t) != 6:
        raise UserError(f"--background {text!r}: use a hex colour like '#00ff00'")
    try:
        return (int(t[0:2], 16) / 255.0, int(t[2:4], 16) / 255.0, int(t[4:6], 16) / 255.0)
    except ValueError:
        raise UserError(f"--background {text!r}: use a hex colour like '#00ff00'") from None


def _avatar_config(args: argparse.Namespace) -> Any:
    """The daemon's `Config` for these options: the --config file (if given) with the command line's files,
    size, framing, renderer and device on top. Missing files are reported by the config's own check."""
    from bridge.core.config import load_config

    files = {k: str(getattr(args, k)) for k in _FILE_OPTS if getattr(args, k) is not None}
    avatar = {"kind": "flashavatar", **files, "zoom": args.zoom, "background": _hex(args.background),
              "renderer": args.renderer, "device": args.device}
    return load_config(args.config, overrides={"avatar": avatar, "video": {"width": args.width, "height": args.height}})


def _make_avatar(args: argparse.Namespace) -> Any:
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    return FlashAvatarAvatar.from_config(_avatar_config(args))  # its setup errors are UserErrors


def cmd_info(args: argparse.Namespace) -> int:
    from drivers.avatar.flashavatar.checkpoint import PE_DIM, load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    layers = " → ".join([str(ck.input_dim)] + [str(ck.hidden_dim)] * ck.hidden_layers + [str(ck.output_dim)])
    print(f"checkpoint:     {args.checkpoint}")
    print(f"iteration:      {ck.iteration}")
    print(f"Gaussians:      {ck.num_gaussians}")
    print(f"SH degree:      {ck.active_sh_degree} (stored coefficients: {ck.features_rest.shape[1] + 1})")
    print(f"deformation MLP: {layers} (ReLU, tanh head), {ck.num_mlp_params:,} parameters; "
          f"input = PE({PE_DIM}) + expr 100 + jaw 6 + eyes 12 + eyelids 2")
    scale = np.exp(ck.scaling_base.numpy())
    print(f"base scales:    median {np.median(scale) * 1000:.2f} mm")
    print("needs:          FLAME 2020 generic_model.pkl (the model the tracker used), FLAME_masks.pkl "
          "('boundary'), FlashAvatar's FlameMesh.obj (UV layout, 128x128 raster), l_eyelid.npy / r_eyelid.npy, "
          "and the subject's shape (tracker .frame or --shape)")
    if ck.num_gaussians == 13453:
        print("                13453 Gaussians = the released FLAME 2020 masks + FlameMesh.obj at UV 128")
    return 0


def load_sequence(path: Path) -> dict[str, np.ndarray]:
    """Parameter sequence → dict with expr (F,100), jaw6 (F,6), eyes12 (F,12), eyelids (F,2), head/neck/
    translation (F,3) axis-angle, and optionally per-frame tracker cameras R (F,3,3), t (F,3)."""
    from bridge.core.rotations import axis_angle_to_rotation_6d

    if path.is_dir():
        from drivers.avatar.flame.tracker import load_tracker_frame

        files = sorted(path.glob("*.frame"))
        if not files:
            raise UserError(f"{path} has no .frame files")
        frames = [load_tracker_frame(f) for f in files]
        eye6 = np.array([1, 0, 0, 0, 1, 0], np.float32)

        def col(name: str, n: int, default: np.ndarray) -> np.ndarray:
            return np.stack([getattr(f, name) if getattr(f, name) is not None else default for f in frames])

        return {"expr": col("expr", 100, np.zeros(100, np.float32)), "jaw6": col("jaw6", 6, eye6),
                "eyes12": col("eyes12", 12, np.tile(eye6, 2)), "eyelids": col("eyelids", 2, np.zeros(2, np.float32)),
                "R": np.stack([f.R for f in frames]), "t": np.stack([f.t for f in frames])}
    if not path.is_file():
        raise UserError(f"parameter file {path} does not exist")
    from drivers.safe_load import check_numpy_file

    try:
        check_numpy_file(path)
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc})") from None
    keys = set(z.files)
    if "params" in keys:
        v = np.asarray(z["params"], np.float32).reshape(-1, 120)
        jaw, eyes = v[:, 100:103], v[:, 103:109].reshape(-1, 2, 3)
        return {"expr": v[:, :100], "jaw6": axis_angle_to_rotation_6d(jaw).astype(np.float32),
                "eyes12": axis_angle_to_rotation_6d(eyes).reshape(-1, 12).astype(np.float32),
                "eyelids": v[:, 109:111], "neck": v[:, 111:114], "head": v[:, 114:117], "translation": v[:, 117:120]}
    ekey = next((k for k in ("expr", "exp", "expression") if k in keys), None)
    if ekey is None:
        raise UserError(f"{path} has none of expr/exp/expression or params (keys: {sorted(keys)})")
    expr = np.asarray(z[ekey], np.float32)
    expr = expr.reshape(expr.shape[0], -1)
    n = expr.shape[0]
    if expr.shape[1] < 100:
        expr = np.concatenate([expr, np.zeros((n, 100 - expr.shape[1]), np.float32)], axis=1)

    def rot6(key_options: tuple[str, ...], joints: int) -> np.ndarray:
        k = next((k for k in key_options if k in keys), None)
        if k is None:
            return np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (n, joints))
        a = np.asarray(z[k], np.float32).reshape(n, -1)
        if a.shape[1] == joints * 6:
            return a
        if a.shape[1] == joints * 3:
            return axis_angle_to_rotation_6d(a.reshape(n, joints, 3)).reshape(n, joints * 6).astype(np.float32)
        raise UserError(f"{path}: {k} has {a.shape[1]} values per frame; expected {joints * 3} or {joints * 6}")

    out = {"expr": expr[:, :100], "jaw6": rot6(("jaw_pose", "jaw"), 1), "eyes12": rot6(("eyes_pose", "eyes"), 2),
           "eyelids": np.asarray(z["eyelids"], np.float32).reshape(n, 2) if "eyelids" in keys
           else np.zeros((n, 2), np.float32)}
    for name, opts in (("head", ("head", "global_pose", "rot")), ("neck", ("neck", "neck_pose"))):
        k = next((k for k in opts if k in keys), None)
        if k is not None:
            a = np.asarray(z[k], np.float32).reshape(n, -1)
            if a.shape[1] != 3:
                raise UserError(f"{path}: {k} must be axis-angle (F,3)")
            out[name] = a
    return out


def _face_params(seq: dict[str, np.ndarray], i: int) -> Any:
    from bridge.core.face_params import FaceParams

    p = FaceParams.from_6d(seq["expr"][i], seq["jaw6"][i], seq["eyes12"][i], seq["eyelids"][i])
    changes = {k: seq[k][i] for k in ("head", "neck", "translation") if k in seq}
    return p.copy(**changes) if changes else p


def _tracker_views(seq: dict[str, np.ndarray], idx: range) -> np.ndarray:
    """World→camera matrices (B,4,4) of the tracker's per-frame cameras."""
    views = np.tile(np.eye(4, dtype=np.float32), (len(idx), 1, 1))
    views[:, :3, :3], views[:, :3, 3] = seq["R"][idx.start:idx.stop], seq["t"][idx.start:idx.stop]
    return views


def cmd_render(args: argparse.Namespace) -> int:
    import time

    from drivers.avatar.flashavatar.offline import render_batch

    seq = load_sequence(args.params)
    avatar = _make_avatar(args)
    n = len(seq["expr"]) if args.max_frames <= 0 else min(args.max_frames, len(seq["expr"]))
    try:
        import av
    except ImportError:
        raise UserError("writing video needs PyAV (pip install av)") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    per_frame_cam = args.camera == "tracker" and "R" in seq
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: give 1 or more frames per batch")
    t0 = time.perf_counter()
    with av.open(str(args.out), "w") as container:
        stream = container.add_stream("libx264", rate=args.fps)
        stream.width, stream.height, stream.pix_fmt = avatar.width, avatar.height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for start in range(0, n, args.batch):
            idx = range(start, min(start + args.batch, n))
            views = _tracker_views(seq, idx) if per_frame_cam else None
            for img in render_batch(avatar, [_face_params(seq, i) for i in idx], views=views):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img.rgb), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    dt = time.perf_counter() - t0
    print(f"wrote {n} frames to {args.out} ({n / max(dt, 1e-9):.1f} frames/s, {avatar.info()['renderer']} renderer)")
    avatar.close()
    return 0


def cmd_export_ply(args: argparse.Namespace) -> int:
    from bridge.core.face_params import FaceParams
    from drivers.avatar.flashavatar.offline import world_gaussians
    from drivers.avatar.flashavatar.ply_export import write_ply

    avatar = _make_avatar(args)
    params = FaceParams.neutral()
    if args.params is not None:
        seq = load_sequence(args.params)
        if not 0 <= args.frame < len(seq["expr"]):
            raise UserError(f"--frame {args.frame} is outside the {len(seq['expr'])} frames of {args.params}")
        params = _face_params(seq, args.frame)
    g = world_gaussians(avatar, params, apply_head_motion=not args.world)
    write_ply(g, args.out)
    print(f"wrote {len(g)} Gaussians (SH degree {g.sh_degree}) to {args.out}")
    avatar.close()
    return 0
