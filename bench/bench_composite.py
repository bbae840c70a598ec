"""What the scene around the head costs: compositing background + torso + head, and the CPU demo's frame rate.

    python bench/bench_composite.py [--cpu-size 640x360] [--gpu-size 1280x720] [--frames 200]
                                    [--demo-seconds 20] [--demo-size 1280x720] [--skip-demo]

Three figures (the goals in brackets):
  cpu    NumPy compositing of a frame at --cpu-size (a background picture, a torso plate and the head's region
         as the framing puts them), median milliseconds, without and with alpha (the avatar alone beside the
         picture: what an output carrying alpha costs), drawing every layer and with the still ones (backdrop
         and torso at rest) prepared once, as the scene does [<= 6 ms at 640x360 on 2 cores]
  gpu    the same on CUDA at --gpu-size: background and torso resident, the head's region on the device (as
         FlashAvatar leaves it), one read-back of the result, timed to the host copy's end (CUDA only; skipped
         without it) [<= 2 ms at 1280x720]
  demo   the daemon with the demo head on the CPU at --demo-size for --demo-seconds of the demo speech in real
         time: frames rendered / frames due [>= 90 %]

The layers are the default config's (the studio backdrop, the demo's torso plate, a real render of the demo
head, reused), so they have the sizes and edges of the product's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import load_config
from bridge.core.face_params import FaceParams
from bridge.runtime import build
from drivers.avatar.scene.layers import DeviceRegion, Layer, NumpyCompositor, TorchCompositor
from drivers.avatar.scene.torso import TorsoPlate, cut_plate


def size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def shoulders(width: int, skin: tuple[int, int, int] = (210, 160, 140)) -> TorsoPlate:
    """A torso plate drawn in code: the bottom of a neck on a shirt that widens to the shoulders."""
    h, w = width, 2 * width
    y, x = np.mgrid[0:h, 0:w]
    neck = (np.abs(x - w / 2) < width * 0.12) & (y < h * 0.25)
    body = (y >= h * 0.25) & (np.abs(x - w / 2) <= width * 0.2 + (y - h * 0.25) * 1.4)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[body] = (60, 70, 160)
    rgb[neck] = skin
    alpha = ((neck | body) * 255).astype(np.uint8)
    return cut_plate(rgb, alpha, neck)


def layers_for(width: int, height: int) -> tuple[np.ndarray, list[Layer]]:
    """The default config's layers at this size: the studio backdrop, the demo's torso where the scene places
    it (moved a little, as a following torso is) and the head's region."""
    cfg = load_config(None, overrides={"video": {"width": width, "height": height},
                                       "avatar": {"renderer": "cpu", "device": "cpu"}}, environ={})
    scene = build.avatar(cfg, AlphaDemand())
    image = scene.head.render(FaceParams.neutral())
    assert image.alpha is not None and scene.torso is not None
    background = scene.background.frame(0.0)  # read-only: the GPU path keeps it resident
    return background, [scene.torso.layer(3.0, -2.0, 0.0),
                        Layer(image.rgb, image.alpha, image.origin[0], image.origin[1])]


def bench_cpu(width: int, height: int, frames: int) -> None:
    background, layers = layers_for(width, height)
    comp = NumpyCompositor()
    prepared = comp.prepare(background, layers[:1], width, height, ("still",))
    for with_alpha in (False, True):
        for label in ("all layers", "still ones prepared"):
            times = []
            for _ in range(frames):
                t0 = time.perf_counter()
                if label == "all layers":
                    comp.compose(background, layers, width, height, with_alpha)
                else:
                    comp.compose_over(prepared, layers[1:], with_alpha)
                times.append(time.perf_counter() - t0)
            print(f"cpu  {width}x{height} {'with alpha' if with_alpha else 'no alpha  '}, {label:19s}: median "
                  f"{statistics.median(times) * 1000:.2f} ms, p90 {sorted(times)[int(0.9 * len(times))] * 1000:.2f} "
                  "ms" + (" (goal <= 6 ms)" if (width, height) == (640, 360) else ""))


def bench_gpu(width: int, height: int, frames: int) -> None:
    if not torch.cuda.is_available():
        print("gpu  skipped: no CUDA device")
        return
    background, layers = layers_for(width, height)
    comp = TorchCompositor("cuda")
    torso, head = layers
    # The head's region as FlashAvatar leaves it on the device (render_on_device): no upload per frame.
    region = DeviceRegion(torch.from_numpy(head.rgb).cuda(), torch.from_numpy(head.alpha).cuda(), (head.x0, head.y0))
    for with_alpha in (False, True):
        for _ in range(10):
            comp.compose(background, [torso], width, height, with_alpha, on_device=region)
        torch.cuda.synchronize()
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            comp.compose(background, [torso], width, height, with_alpha, on_device=region)  # ends with the read-back
            times.append(time.perf_counter() - t0)
        print(f"gpu  {width}x{height} {'with alpha' if with_alpha else 'no alpha  '} on "
              f"{torch.cuda.get_device_name()}: median {statistics.median(times) * 1000:.2f} ms, p90 "
              f"{sorted(times)[int(0.9 * len(times))] * 1000:.2f} ms (background and torso resident, the head's region "
              "on the device, composite, one read-back; goal <= 2 ms at 1280x720)")


def bench_demo(width: int, height: int, seconds: float) -> None:
    from bridge.runtime.daemon import Daemon

    cfg = load_config(None, overrides={"video": {"width": width, "height": height}, "avatar": {"device": "cpu"},
                                       "http": {"enabled": False}, "osc": {"enabled": False},
                                       "vmc": {"enabled": False}, "midi": {"enabled": False},
                                       "audio": {"loop": True}}, environ={})
    daemon = Daemon(cfg, duration=seconds)
    asyncio.run(daemon.serve())
    due = int(seconds * cfg.video.fps)
    rendered = daemon.pipeline.frames_rendered
    render = daemon.stats.report().splitlines()
    print(f"demo {width}x{height} on the CPU, {seconds:.0f} s: {rendered} of {due} frames rendered "
          f"({100.0 * rendered / due:.1f} %; goal >= 90 %), head region {daemon.avatar.head.width}x"
          f"{daemon.avatar.head.height}")
    for line in render:
        if "render" in line:
            print("     " + line.strip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-size", type=size, default=(640, 360))
    p.add_argument("--gpu-size", type=size, default=(1280, 720))
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--demo-size", type=size, default=(1280, 720))
    p.add_argument("--demo-seconds", type=float, default=20.0)
    p.add_argument("--skip-demo", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    bench_cpu(*args.cpu_size, args.frames)
    bench_cpu(*args.gpu_size, args.frames // 2)
    bench_gpu(*args.gpu_size, args.frames)
    if not args.skip_demo:
        bench_demo(*args.demo_size, args.demo_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
