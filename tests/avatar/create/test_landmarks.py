"""mediapipe's face detector and 478-point face mesh, from the wheel's own models: the astronaut's face is
found where it is, the mesh lands on it (irises on the eyes), the largest of two faces comes first, and without
the extra installed the user gets one line with the pip command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from drivers.avatar.flashavatar.create.correspondence import LIPS_INNER
from drivers.avatar.flashavatar.create.landmarks import N_POINTS, FaceFinder, FaceMesher
from tests.avatar.create.clips import astronaut

REPO = Path(__file__).resolve().parents[3]
FACE = (174, 68, 278, 172)  # x0, y0, x1, y1 of the astronaut's face in the 512² photo


def test_face_detector_finds_the_face_and_puts_the_largest_first() -> None:
    img = astronaut()
    finder = FaceFinder()
    boxes = finder.find(img)
    assert len(boxes) == 1
    cx, cy = boxes[0].center
    assert FACE[0] < cx < FACE[2] and FACE[1] < cy < FACE[3]
    # two faces side by side, one smaller: the big one first
    from PIL import Image

    small = np.asarray(Image.fromarray(img).resize((352, 352)))
    two = np.full((512, 864, 3), 90, np.uint8)
    two[:, :512] = img
    two[:352, 512:] = small
    both = finder.find(two)
    finder.close()
    assert len(both) == 2
    assert both[0].size > 1.5 * both[1].size and both[0].center[0] < 512


def test_face_mesh_lands_on_the_face() -> None:
    img = astronaut()
    mesher = FaceMesher()
    pts = mesher.points(img)
    assert mesher.points(np.full((512, 512, 3), 128, np.uint8)) is None  # no face, no points
    mesher.close()
    assert pts is not None and pts.shape == (N_POINTS, 2) and pts.dtype == np.float32
    assert FACE[0] - 20 < pts[:, 0].min() < pts[:, 0].max() < FACE[2] + 20
    assert FACE[1] - 40 < pts[:, 1].min() < pts[:, 1].max() < FACE[3] + 20
    iris_l, iris_r = pts[468], pts[473]  # the iris centres sit inside the eye corners
    assert pts[33, 0] < iris_l[0] < pts[133, 0] or pts[133, 0] < iris_l[0] < pts[33, 0]
    assert pts[362, 0] < iris_r[0] < pts[263, 0] or pts[263, 0] < iris_r[0] < pts[362, 0]
    lips = pts[list(LIPS_INNER)]
    assert lips[:, 1].min() > iris_l[1]  # the mouth is below the eyes
    assert 1.0 < mesher.ms_per_frame < 1000


def test_missing_extra_is_one_line_with_the_install_command() -> None:
    code = ("import sys; sys.modules['mediapipe'] = None\n"
            "from bridge.cli import main\n"
            "sys.exit(main(['avatar', 'prepare', 'x.mp4', '--out', 'ds', '--flame-model', 'none.pkl']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "pip install" in r.stderr + r.stdout and "mediapipe" in r.stderr + r.stdout
