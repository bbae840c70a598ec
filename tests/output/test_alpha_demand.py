"""Alpha on demand with the default config (avatar.transparent off): frames carry no alpha until a WHEP viewer
asks for packed alpha, carry it (and the avatar alone over black beside the picture with its background) while
it watches, and stop when it leaves; a plain viewer does not ask."""

from __future__ import annotations

import aiohttp

from tests.output.conftest import base_url, hub_of, running_daemon, wait_until, watch


async def test_alpha_comes_while_a_viewer_wants_it() -> None:
    async with running_daemon(avatar={"background": "#2040ff"}) as daemon:
        url = base_url(daemon)
        await wait_until(lambda: daemon.pipeline.last_frame is not None, 30, "a first frame")
        assert daemon.pipeline.last_frame.alpha is None and not daemon.alpha_demand.wanted
        plain = await watch(url, mode="whep", alpha=False)
        try:
            await wait_until(lambda: plain.media.video, 60, "the plain viewer's first frame")
            assert not daemon.alpha_demand.wanted and daemon.pipeline.last_frame.alpha is None
            packed = await watch(url, mode="whep", alpha=True)
            await wait_until(lambda: daemon.pipeline.last_frame.alpha is not None, 30, "frames with alpha")
            frame = daemon.pipeline.last_frame
            assert daemon.alpha_demand.holders() == {"webrtc": 1}
            assert frame.foreground is not None and frame.alpha is not None
            assert tuple(frame.rgb[1, 1]) == (32, 64, 255)  # the picture keeps its background ...
            assert frame.alpha[1, 1] == 0 and tuple(frame.foreground[1, 1]) == (0, 0, 0)  # ... the avatar alone not
            assert frame.alpha.max() == 255
            async with aiohttp.ClientSession() as http, http.delete(url + str(packed.location)) as r:
                assert r.status in (200, 204)
            await packed.close()
            await wait_until(lambda: hub_of(daemon).count == 1, 20, "the packed viewer gone")
            await wait_until(lambda: daemon.pipeline.last_frame.alpha is None, 30, "frames without alpha again")
            assert not daemon.alpha_demand.wanted
        finally:
            await plain.close()
