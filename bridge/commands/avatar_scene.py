"""`avatar-bridge avatar torso DATASET --video VIDEO --out FILE`: keep the body below the neck from the user's
own video as a torso plate the daemon draws under the head (`avatar.torso`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bridge.core.errors import UserError


def register(avsub: Any) -> None:
    p = avsub.add_parser("torso", help="cut a torso plate (the body below the neck) from a prepared dataset's video",
                         description=__doc__)
    p.add_argument("dataset", type=Path, help="the prepared dataset (imgs/, alpha/, parsing/, crops.csv, tracking)")
    p.add_argument("--video", type=Path, required=True, help="the video the dataset was prepared from")
    p.add_argument("--out", type=Path, required=True, help="the plate to write (.npz), e.g. models/me/torso.npz")
    p.set_defaults(func=cmd_torso)


def cmd_torso(args: argparse.Namespace) -> int:
    from drivers.avatar.scene.torso_source import make_plate

    out: Path = args.out
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it or choose another path")
    if not args.video.is_file():
        raise UserError(f"--video {args.video} does not exist; give the video the dataset was prepared from")
    plate, frame, crop = make_plate(args.dataset, args.video)
    plate.save(out)
    h, w = plate.rgba.shape[:2]
    print(f"torso plate {out}: {w}x{h} from {frame.image.name} (video time {crop.time_s:.2f} s), neck "
          f"{plate.neck_width:.0f} px wide at ({plate.anchor[0]:.0f}, {plate.anchor[1]:.0f}); use it with "
          f"avatar.torso = \"{out}\"")
    return 0
