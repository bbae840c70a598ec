"""WHEP with an independent client (raw HTTP + its own aiortc peer), and 50 viewer connect/disconnect cycles
that leave no tasks, peers or file descriptors behind."""

from __future__ import annotations

import asyncio
import gc
import os

import aiohttp

from tests.output.conftest import base_url, hub_of, running_daemon, wait_until, watch


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


async def test_whep_offer_answer_location_and_delete() -> None:
    async with running_daemon() as daemon:
        url = base_url(daemon)
        async with aiohttp.ClientSession() as http, http.options(url + "/whep") as r:
            assert r.status == 204 and "application/sdp" in r.headers["Accept-Post"]
        viewer = await watch(url, mode="whep")
        try:
            assert viewer.location is not None and viewer.location.startswith("/whep/")
            await wait_until(lambda: len(viewer.media.video) >= 10 and len(viewer.media.audio) >= 10, 20,
                             "WHEP media")
            assert viewer.media.last_image.width == 128
            async with aiohttp.ClientSession() as http:
                async with http.patch(url + viewer.location, data="a=candidate",
                                  headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as r:
                    assert r.status == 405 and "trickle" in (await r.json())["error"]
                async with http.get(url + "/api/webrtc/viewers") as r:
                    listing = await r.json()
                    assert listing["count"] == 1 and listing["viewers"][0]["kind"] == "whep"
                async with http.delete(url + viewer.location) as r:
                    assert r.status == 200
                async with http.delete(url + viewer.location) as r:
                    assert r.status == 404  # already ended
            assert hub_of(daemon).count == 0
            # The server closed its end: the client's connection ends too.
            await wait_until(lambda: viewer.pc.connectionState in ("closed", "failed") or
                             all(t.done() for t in viewer.tasks), 20, "client notices the end")
        finally:
            await viewer.close()


async def test_whep_requires_the_token_when_set() -> None:
    async with running_daemon(http={"token": "s3cret"}) as daemon, aiohttp.ClientSession() as http:
        url = base_url(daemon)
        async with http.post(url + "/whep", data="v=0", headers={"Content-Type": "application/sdp"}) as r:
            assert r.status == 401
        viewer = await watch(url, mode="whep", headers={"Authorization": "Bearer s3cret"})
        await viewer.close()


async def test_fifty_viewer_cycles_leak_nothing() -> None:
    async with running_daemon() as daemon:
        url = base_url(daemon)
        hub = hub_of(daemon)

        async def cycle(mode: str) -> None:
            viewer = await watch(url, mode=mode)
            try:
                await wait_until(lambda: len(viewer.media.video) >= 1, 20, "a first frame")
            finally:
                if mode == "whep":
                    async with aiohttp.ClientSession() as http, http.delete(url + str(viewer.location)) as r:
                        assert r.status == 200
                await viewer.close()

        for i in range(5):  # warm-up: codecs, thread pools, caches
            await cycle("whep" if i % 2 else "json")
        await wait_until(lambda: hub.count == 0, 20, "warm-up viewers closed")
        gc.collect()
        tasks_before, fds_before = len(asyncio.all_tasks()), open_fds()
        subs_before = daemon.frames.subscriber_count
        for i in range(50):
            await cycle("whep" if i % 2 else "json")
        await wait_until(lambda: hub.count == 0 and not hub.peers, 20, "all viewers closed")
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, 20,
                         f"tasks back to {tasks_before} (now {len(asyncio.all_tasks())})")
        gc.collect()
        await wait_until(lambda: open_fds() <= fds_before + 2, 20, f"fds back to {fds_before} (now {open_fds()})")
        assert daemon.frames.subscriber_count == subs_before
        assert daemon.audio_out.subscriber_count <= subs_before + 1
        # The daemon still serves after the churn.
        viewer = await watch(url)
        try:
            await wait_until(lambda: len(viewer.media.video) >= 3, 20, "frames after churn")
        finally:
            await viewer.close()
