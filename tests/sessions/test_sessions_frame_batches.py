"""Sessions showing one FlashAvatar checkpoint render their frames together once `sessions.batch_frames_from`
(here 2) of them run: through the daemon as a user runs it (its scene, head framing and torso, the procedural face
driver, real-time speech), on the CPU renderer at a small size. The frames come from the shared batcher, every
session keeps rendering, and ending sessions below the threshold returns them to rendering alone; a session
that fails to build leaves the batcher its avatar joined."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from tests.golden_files import require
from tests.http.conftest import running_daemon
from tests.sessions.test_sessions_api import Api, rendered


def _avatar(tmp: Path) -> dict[str, str]:
    ckpt, flame, masks, mesh, golden = require("flashavatar", "chkpnt_seed0.pth", "flame_synthetic.pkl",
                                              "FLAME_masks_synthetic.pkl", "FlameMesh.obj", "golden_seed0.npz")
    shape = tmp / "shape.npy"
    np.save(shape, np.load(golden)["shape"])
    return {"kind": "flashavatar", "device": "cpu", "renderer": "cpu", "checkpoint": str(ckpt),
            "flame_model": str(flame), "flame_masks": str(masks), "flame_mesh": str(mesh),
            "eyelids_dir": str(ckpt.parent), "shape": str(shape)}


async def test_sessions_of_one_avatar_render_their_frames_together(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AVATAR_BRIDGE_CACHE", str(tmp_path / "cache"))
    async with running_daemon(demo_head=True, video={"width": 64, "height": 64, "fps": 25},
                              avatar=_avatar(tmp_path), face={"driver": "procedural"},
                              audio={"source": "file", "loop": True, "realtime": True},
                              sessions={"max": 3, "batch_frames_from": 2}) as daemon, \
            aiohttp.ClientSession() as http:
        api = Api(daemon, http)
        head = daemon.session.avatar.head
        batcher = head.frame_batcher
        assert batcher is not None and not batcher.batching  # one session: each frame alone
        status, body, _ = await api.call("POST", "/api/sessions", {"face": "diffposetalk"})  # no checkpoint set
        assert status == 400 and "checkpoint" in body["error"], body
        assert batcher.members == 1  # the session that failed to build left the batcher its avatar had joined
        names = ["default", await api.create(), await api.create()]
        assert batcher.members == 3 and batcher.batching  # (from 2 on)
        for name in names[1:]:
            assert daemon.sessions.get(name).avatar.head.frame_batcher is batcher  # one model, one batcher
        before = {name: rendered(daemon, name) for name in names}
        await asyncio.sleep(3.0)
        assert all(rendered(daemon, name) > before[name] + 5 for name in names), "a session stopped rendering"
        assert batcher.history and batcher.frames_batched > 0
        assert max(r.size for r in batcher.history) > 1  # frames of several sessions in one batch
        for name in names[1:]:
            status, _, _ = await api.call("DELETE", f"/api/sessions/{name}")
            assert status == 200
        assert batcher.members == 1 and not batcher.batching
        await asyncio.sleep(0.5)  # a batch that was running when they ended finishes
        count = len(batcher.history)
        mark = rendered(daemon, "default")
        await asyncio.sleep(1.0)
        assert rendered(daemon, "default") > mark and len(batcher.history) == count  # alone again
