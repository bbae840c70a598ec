"""How well the torso plate meets the rendered neck over a talking clip with ordinary head motion, and pictures.

    python bench/bench_seam.py [--avatar demo|golden] [--golden DIR] [--size 640x360] [--seconds 8]
                               [--pictures docs/scene]

The clip: the procedural lip sync of the demo speech, with head turns (yaw ±0.3 rad), nods (±0.12), tilts
(±0.08) and a little neck motion, at 25 fps. Each frame is rendered by the scene (background, a torso plate,
the head) with alpha, and measured across the seam - the torso's neck line, following the neck - over the
neck's middle half of columns:

  gap      fraction of seam pixels where the background shows (alpha < 200 in the rows around the line)
  step     colour discontinuity across the line (mean |row below - row above|, 8-bit levels) beyond the rest
           pose's: what head motion adds to the collar's own edge (a seam opening, the neck sliding off the
           plate's neck)

The demo head uses its own plate (the shoulders it ships with); the golden FlashAvatar a plate drawn in code (a
shirt and the bottom of a neck) with the neck's colour taken from the rendered neck at rest, as a plate cut
from the user's own video has the same skin.
and prints mean, p95 and max over the clip. With --pictures it writes the frame with the largest step, the
rest pose and a 3x zoom of the seam as PNGs. `--avatar golden` uses the golden FlashAvatar (the synthetic
teacher in /work/shared/golden/flashavatar) on the CPU renderer instead of the demo head.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_composite import shoulders, size

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.face_params import FaceParams
from bridge.core.interfaces import Avatar
from drivers.audio.decode import decode_audio, demo_clip_path
from drivers.avatar.demo.torso import demo_torso
from drivers.avatar.scene.avatar import SceneAvatar
from drivers.avatar.scene.background import ColourBackground
from drivers.avatar.scene.framing import HeadFraming

FPS = 25
WALL = (0.78, 0.80, 0.83)


def clip(seconds: float) -> list[FaceParams]:
    from bridge.core.interfaces import AudioChunk
    from drivers.face.procedural import ProceduralFaceDriver

    audio = decode_audio(demo_clip_path())
    driver = ProceduralFaceDriver(fps=FPS)
    driver.reset(0.0)
    frames = driver.push(AudioChunk(audio[: int(seconds * 16_000)], 0.0)) + driver.flush()
    out = []
    for k, p in enumerate(frames[: int(seconds * FPS)]):
        t = k / FPS
        p.head = np.array([0.12 * np.sin(2 * np.pi * 0.4 * t), 0.3 * np.sin(2 * np.pi * 0.23 * t),
                           0.08 * np.sin(2 * np.pi * 0.31 * t)], np.float32)
        p.neck = np.array([0.04 * np.sin(2 * np.pi * 0.17 * t), 0.05 * np.sin(2 * np.pi * 0.13 * t), 0.0],
                          np.float32)
        out.append(p)
    return out


def head_for(kind: str, framing: HeadFraming, golden: Path) -> Avatar:
    if kind == "demo":
        from drivers.avatar.demo.avatar import DemoAvatar

        return DemoAvatar(framing.width, framing.height, renderer="cpu", device="cpu", framing=framing)
    from _avatar_common import golden_flame_model

    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar

    z = np.load(golden / "golden_seed0.npz")
    return FlashAvatarAvatar(checkpoint=golden / "chkpnt_seed0.pth", flame_model=golden_flame_model(golden),
                             flame_masks=golden / "FLAME_masks_synthetic.pkl", flame_mesh=golden / "FlameMesh.obj",
                             eyelids_dir=golden, shape=z["shape"], width=framing.width, height=framing.height,
                             device="cpu", renderer="cpu", framing=framing)


def seam(scene: SceneAvatar, image_rgb: np.ndarray, alpha: np.ndarray, neck_at: tuple[float, float]
         ) -> tuple[float, float]:
    """(gap, step) at the torso's neck line."""
    torso = scene.torso
    assert torso is not None
    x, y = round(neck_at[0]), round(neck_at[1])
    half = max(2, round(torso.neck_width / 4))
    cols = slice(x - half, x + half + 1)
    band = alpha[y - 3 : y + 4, cols]
    gap = float(np.mean(band < 200))
    rgb = image_rgb.astype(np.float32)
    return gap, float(np.abs(rgb[y + 2, cols] - rgb[y - 2, cols]).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", choices=("demo", "golden"), default="demo")
    p.add_argument("--golden", type=Path, default=Path("/work/shared/golden/flashavatar"))
    p.add_argument("--size", type=size, default=(640, 360))
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--pictures", type=Path, default=None)
    args = p.parse_args()
    w, h = args.size
    framing = HeadFraming.preset("webcam", w, h)
    head = head_for(args.avatar, framing, args.golden)
    demand = AlphaDemand()
    demand.claim("bench")
    rest_head = head.render(FaceParams.neutral())
    assert rest_head.alpha is not None
    ys, xs = np.nonzero(rest_head.alpha >= 250)
    low = ys > ys.max() - 0.05 * rest_head.alpha.shape[0]  # the neck just above its end
    skin = rest_head.rgb[ys[low], xs[low]].mean(axis=0)
    # The demo ships its own shoulders; another head gets a plate with its neck's skin, as one cut from video.
    plate = demo_torso() if args.avatar == "demo" else shoulders(200, (int(skin[0]), int(skin[1]), int(skin[2])))
    scene = SceneAvatar(head, framing, ColourBackground(WALL, w, h), demand, torso=plate)
    torso = scene.torso
    assert torso is not None
    rest = scene.render(FaceParams.neutral())
    assert rest.alpha is not None
    _, rest_step = seam(scene, rest.rgb, rest.alpha, torso.at)
    gaps, steps, worst = [], [], None
    params = clip(args.seconds)
    for k, fp in enumerate(params):
        image = scene.render(fp)
        assert image.alpha is not None
        dx, dy, _ = scene.neck_motion(image.neck)
        gap, step = seam(scene, image.rgb, image.alpha, (torso.at[0] + dx, torso.at[1] + dy))
        gaps.append(gap)
        step -= rest_step
        steps.append(step)
        if worst is None or step > worst[0]:
            worst = (step, k, image.rgb)
    def stats(v: list[float]) -> str:
        s = sorted(v)
        return f"mean {statistics.mean(v):.3f}  p95 {s[int(0.95 * (len(s) - 1))]:.3f}  max {s[-1]:.3f}"
    print(f"seam of the torso plate under the {args.avatar} head, {w}x{h}, {len(params)} frames of talking with "
          "head turns")
    print(f"  gap  (fraction of seam pixels showing the background): {stats(gaps)}")
    print(f"  step (colour discontinuity across the line beyond the rest pose's {rest_step:.1f}, 8-bit levels): "
          f"{stats(steps)}")
    if args.pictures is not None and worst is not None:
        args.pictures.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rest.rgb).save(args.pictures / f"seam_{args.avatar}_rest.png", optimize=True)
        Image.fromarray(worst[2]).save(args.pictures / f"seam_{args.avatar}_worst.png", optimize=True)
        x, y = (round(v) for v in torso.at)
        r = round(torso.neck_width)
        zoom = worst[2][max(0, y - 2 * r) : y + 2 * r, max(0, x - 2 * r) : x + 2 * r]
        Image.fromarray(zoom).resize((zoom.shape[1] * 3, zoom.shape[0] * 3), Image.Resampling.NEAREST).save(
            args.pictures / f"seam_{args.avatar}_worst_zoom.png", optimize=True)
        print(f"  pictures: {args.pictures}/seam_{args.avatar}_{{rest,worst,worst_zoom}}.png (worst: frame {worst[1]})")
    scene.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
