"""The pictures in docs/scene/: what the virtual camera sends and what the /obs page shows, made by the real parts.

    python bench/scene_pictures.py [--out docs/scene]

virtualcam.png  what the virtual camera sends with the default config (nothing set): the demo head at 1280x720
                in the webcam framing, with its shoulders, over the studio backdrop (stored at half size)
obs.png         headless Chromium showing /obs of a daemon with the default config (demo head, 1280x720) over a
                transparent page: alpha 0 around the avatar (stored at half size, with its alpha)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.core.alpha_demand import AlphaDemand
from bridge.core.config import load_config
from bridge.core.face_params import FaceParams
from bridge.runtime import build

W, H = 1280, 720


def virtualcam(out: Path) -> None:
    """The default config's frame: nothing set, so the demo head with its shoulders over the studio backdrop."""
    scene = build.avatar(load_config(None, overrides={}, environ={}), AlphaDemand())
    frame = scene.render(FaceParams(jaw=np.array([0.12, 0, 0], np.float32),
                                    expression=np.array([0.5, 0, 0, 0, 0] + [0.0] * 95, np.float32)))
    scene.close()
    Image.fromarray(frame.rgb).resize((W // 2, H // 2), Image.Resampling.LANCZOS).save(out / "virtualcam.png",
                                                                                          optimize=True)


async def obs(out: Path) -> None:
    from bridge.http.app import build_app
    from bridge.runtime.daemon import Daemon
    from tests.http.cdp import Browser

    cfg = load_config(None, overrides={"http": {"port": 0}, "osc": {"enabled": False}, "vmc": {"enabled": False},
                                       "midi": {"enabled": False}, "audio": {"loop": True}}, environ={})
    daemon = Daemon(cfg, http_app=build_app)
    ready = asyncio.Event()
    task = asyncio.get_running_loop().create_task(daemon.serve(ready=lambda _d: ready.set()))
    await ready.wait()
    browser = Browser()
    await browser.start()
    try:
        page = await browser.open("about:blank")
        await page.send("Emulation.setDeviceMetricsOverride", {"width": W // 2, "height": H // 2,
                                                                "deviceScaleFactor": 1, "mobile": False})
        await page.send("Emulation.setDefaultBackgroundColorOverride", {"color": {"r": 0, "g": 0, "b": 0, "a": 0}})
        await page.send("Page.navigate", {"url": f"http://127.0.0.1:{daemon.http_port}/obs"})
        await page.wait_for("window.obs && window.obs.frames > 10", timeout=120)
        shot = await page.send("Page.captureScreenshot", {"format": "png"})
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
        image.save(out / "obs.png", optimize=True)
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        print(f"obs.png: alpha {alpha.min()}..{alpha.max()}, {np.mean(alpha == 0) * 100:.0f} % transparent")
    finally:
        await browser.close()
        daemon.request_stop()
        await task


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "scene")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    virtualcam(args.out)
    asyncio.run(obs(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
