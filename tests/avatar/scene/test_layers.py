"""The scene's building blocks on their own: premultiplied over (NumPy and torch give the same bytes, and the
bytes are the rounded maths), background sources (a picture covers the frame, a video loops with its
containers closed), framing (intrinsics that put the head where asked), and the config's forms."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from bridge.core.config import ConfigError, load_config
from drivers.avatar.scene.background import BackgroundError, ImageBackground, VideoBackground, open_background
from drivers.avatar.scene.composite import over_np, over_torch
from drivers.avatar.scene.framing import HeadFraming
from drivers.avatar.scene.layers import Composited, Layer, NumpyCompositor, TorchCompositor


def test_over_is_the_rounded_maths_and_the_same_on_numpy_and_torch() -> None:
    rng = np.random.default_rng(1)
    dst = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    alpha = rng.choice(np.array([0, 1, 64, 128, 200, 254, 255], np.uint8), (40, 50))
    src = (rng.random((40, 50, 3)) * alpha[..., None]).astype(np.uint8)
    src[alpha == 0] = 0
    dst_a = rng.integers(0, 256, (90, 160), dtype=np.uint8)
    a_np, a_t = dst.copy(), torch.from_numpy(dst.copy())
    al_np, al_t = dst_a.copy(), torch.from_numpy(dst_a.copy())
    over_np(a_np, al_np, src, alpha, 130, -10)  # partly outside the frame: clipped
    over_torch(a_t, al_t, torch.from_numpy(src), torch.from_numpy(alpha), 130, -10)
    assert np.array_equal(a_np, a_t.numpy()) and np.array_equal(al_np, al_t.numpy())
    region = (slice(0, 30), slice(130, 160))
    a = alpha[10:40, 0:30].astype(np.float64)
    want = np.clip(np.floor(src[10:40, 0:30] + dst[region] * (255 - a[..., None]) / 255 + 0.5), 0, 255)
    assert np.array_equal(a_np[region], want.astype(np.uint8))
    want_a = np.floor(a + dst_a[region] * (255 - a) / 255 + 0.5)
    assert np.array_equal(al_np[region], want_a.astype(np.uint8))
    untouched = np.ones((90, 160), bool)
    untouched[region] = False
    assert np.array_equal(a_np[untouched], dst[untouched])


def torch_gives_numpys_bytes(bg: np.ndarray, layers: list[Layer], width: int, height: int, with_alpha: bool,
                             device: str) -> Composited:
    """Both compositors on the same layers: the same colour, alpha and foreground bytes (alpha only when
    asked for); returns NumPy's result."""
    a = NumpyCompositor().compose(bg, layers, width, height, with_alpha)
    b = TorchCompositor(device).compose(bg, layers, width, height, with_alpha)
    assert np.array_equal(a.rgb, b.rgb)
    if with_alpha:
        assert a.alpha is not None and b.alpha is not None and a.foreground is not None
        assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.foreground, b.foreground)
    else:
        assert a.alpha is None and b.alpha is None
    return a


def test_compositors_agree_with_and_without_alpha() -> None:
    rng = np.random.default_rng(2)
    bg = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    alpha = np.zeros((30, 30), np.uint8)
    alpha[5:25, 5:25] = 255
    alpha[4, 4:26] = 100
    colour = (np.full((30, 30, 3), 200) * (alpha[..., None] / 255.0)).astype(np.uint8)
    layers = [Layer(colour, alpha, 50, 40), Layer(colour, alpha, 60, 30)]
    for with_alpha in (False, True):
        a = torch_gives_numpys_bytes(bg, layers, 128, 72, with_alpha, "cpu")
        if with_alpha:
            assert a.alpha is not None and a.alpha[0, 0] == 0 and a.alpha[45, 70] == 255
        # Still layers composited once, the moving one drawn over them each frame: the same bytes.
        for background in (bg, None):
            comp = NumpyCompositor()
            prepared = comp.prepare(background, layers[:1], 128, 72, ("still",))
            c = comp.compose_over(prepared, layers[1:], with_alpha)
            d = comp.compose(background, layers, 128, 72, with_alpha)
            assert np.array_equal(c.rgb, d.rgb) and not prepared.rgb.flags.writeable
            if with_alpha:
                assert c.alpha is not None and d.alpha is not None and c.foreground is not None
                assert np.array_equal(c.alpha, d.alpha) and np.array_equal(c.foreground, d.foreground)


def test_picture_covers_the_frame_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[:, :50] = (255, 0, 0)
    rgb[:, 50:] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "square.png")
    frame = ImageBackground(tmp_path / "square.png", 160, 90).frame(0.0)
    assert frame.shape == (90, 160, 3)  # scaled to 160 wide, rows cropped: no bars, no stretching
    assert tuple(frame[45, 10]) == (255, 0, 0) and tuple(frame[45, 150]) == (0, 0, 255)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(BackgroundError, match="cannot be read"):
        open_background(tmp_path / "bad.png", 64, 64)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BackgroundError, match="neither a picture"):
        open_background(tmp_path / "notes.txt", 64, 64)


def test_video_background_loops(tmp_path: Path) -> None:
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    path = tmp_path / "loop.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for i, c in enumerate(colours):
            image = np.empty((48, 64, 3), np.uint8)
            image[:] = c
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    source = VideoBackground(path, 32, 24)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 30
        t = 0.0
        order: list[int] = []
        while len(order) < 7:  # the media time runs on; the file comes round again
            assert time.monotonic() < deadline, f"the video did not loop (loops {source.loops}, shown {order})"
            image = source.frame(t)
            assert image.shape == (24, 32, 3)
            seen.append(int(np.argmax(image[12, 16])))
            order = [c for i, c in enumerate(seen) if i == 0 or c != seen[i - 1]]
            t += 0.05
            time.sleep(0.01)
        assert order == [0, 1, 2, 0, 1, 2, 0]  # in order, then from the start again
        assert source.loops >= 2
    finally:
        source.close()
    assert not source.decoding  # its thread ended, the last container closed


def test_framing_puts_the_head_where_asked() -> None:
    framing = HeadFraming(1280, 720, 0.3, 0.4, 0.25)
    placed = framing.camera(np.array([0.01, -0.02, 0.9]), 0.12)
    centre = placed.project(np.array([0.01, -0.02, 0.9]))
    assert np.allclose(centre, (0.25 * 1280, 0.4 * 720))
    top = placed.project(np.array([0.01, -0.14, 0.9]))
    assert abs((centre[1] - top[1]) * 2 - 0.3 * 720) < 1e-6  # the sphere's diameter is 30 % of the height
    roi = placed.roi
    assert roi.x0 <= centre[0] <= roi.x1 and roi.y0 <= centre[1] <= roi.y1 and roi.width * roi.height < 1280 * 720 / 4
    assert HeadFraming.preset("auto", 512, 512).head_height == pytest.approx(0.85)
    assert HeadFraming.preset("auto", 1280, 720).head_height == pytest.approx(0.30)


def test_config_forms(tmp_path: Path) -> None:
    (tmp_path / "wall.png").write_bytes(b"")
    cfg = load_config(None, overrides={"avatar": {"background": [0, 1, 0], "backgrounds": {
        "wall": str(tmp_path / "wall.png"), "green2": "#00ff00"}}, "video": {"framing": {"preset": "close",
                                                                                         "eye_line": 0.5}}},
                      environ={})
    assert cfg.avatar.background == (0.0, 1.0, 0.0)
    assert cfg.avatar.backgrounds == {"wall": tmp_path / "wall.png", "green2": (0.0, 1.0, 0.0)}
    assert (cfg.video.width, cfg.video.height, cfg.video.framing.preset) == (1280, 720, "close")
    with pytest.raises(ConfigError, match="name 'Bad Name'"):
        load_config(None, overrides={"avatar": {"backgrounds": {"Bad Name": "#000000"}}}, environ={})
    with pytest.raises(ConfigError, match="neither a hex colour"):
        load_config(None, overrides={"avatar": {"background": str(tmp_path / "missing.jpg")}}, environ={})
    with pytest.raises(ConfigError, match="eye_line"):
        load_config(None, overrides={"video": {"framing": {"eye_line": 1.5}}}, environ={})
    f = tmp_path / "c.toml"
    f.write_text('[avatar]\nbackground = "wall.png"\n')
    assert load_config(f, environ={}).avatar.background == tmp_path / "wall.png"  # relative to the file


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_compositor_gives_the_cpu_bytes() -> None:
    rng = np.random.default_rng(3)
    bg = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    bg.flags.writeable = False
    alpha = rng.choice(np.array([0, 30, 128, 255], np.uint8), (360, 290))
    colour = (rng.random((360, 290, 3)) * alpha[..., None]).astype(np.uint8)
    layers = [Layer(colour, alpha, 500, 400), Layer(colour, alpha, 495, 100)]
    for with_alpha in (False, True):
        torch_gives_numpys_bytes(bg, layers, 1280, 720, with_alpha, "cuda")
