"""The suite's teeth: every test in tests/security/ and the floors test fails when the protection it checks is
removed.

Each row of TEETH names a test, the change to the code under test that removes its protection (usually one
line), and what that protection is. For each selected row this script applies the change in a copy of the
repository (its tracked and untracked files, never the working tree), runs the test there with pytest, checks
that it fails by an assertion or an error of the code under test (not by a broken change: a syntax or import
error), and puts the file back. First it runs the selected tests unchanged in the copy: a test that fails
without the change proves nothing. It prints a table: test, change, result, the first failure line seen.

    nice -n 10 python tests/tools/teeth.py --only http_policy,floors      # a few rows
    nice -n 10 python tests/tools/teeth.py --list                          # the rows, and tests with none

Adding a row: the test's pytest id (without parameters: all of them run), the file, the exact text to
replace (it must occur once in that file; give more lines for context when needed) and its replacement.
Tests in tests/security/ with no row are listed at the end ("not covered").
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECURITY = "tests/security"
BROKEN = re.compile(r"\b(SyntaxError|IndentationError|ImportError|ModuleNotFoundError|NameError|"
                    r"ERROR collecting|fixture '\w+' not found)\b")


@dataclass(frozen=True)
class Change:
    """Replace `old` (which occurs exactly once in `path`) by `new`; `old` None creates `path` with `new`."""

    path: str
    old: str | None
    new: str


@dataclass(frozen=True)
class Tooth:
    test: str  # pytest id, relative to the repository
    protection: str  # what the change removes, in words
    changes: tuple[Change, ...]


def tooth(test: str, protection: str, path: str, old: str | None, new: str) -> Tooth:
    return Tooth(test, protection, (Change(path, old, new),))


P = "tests/security/"
POLICY = "bridge/http/policy.py"
# Changes that more than one test is shown against.
NO_HOST_CHECK = Change(POLICY, "        if host is not None and not settings.hosts.accepts(host, port):", "        if False:")
NO_MEDIA_TYPE_CHECK = Change(POLICY, '            if (request.body_exists or method != "DELETE") and (given is None or '
                                     "request.content_type != want):", "            if False:")
NO_ORIGIN_CHECK = Change(POLICY, "            if origin is not None and not settings.origin_allowed(origin, port):",
                         "            if False:")
CORS_FOR_ANY_ORIGIN = Change(POLICY, "        cors = origin is not None and is_cors_path(request.path) and "
                                     "settings.origin_allowed(origin, port)",
                             "        cors = origin is not None and is_cors_path(request.path)")
ARKIT_AS_SENT = Change("bridge/controls/commands.py", '        return f"blend/{name}"', '        return f"blend/{parts[0]}"')
NO_MANUAL_CAP = Change("bridge/controls/mixer.py",
                       "        if m is None and len(self._manual) >= self.settings.max_manual:", "        if False:")
ONE_BUDGET_FOR_ALL = Change("drivers/control/osc.py", "        sender = (host, addr[1] if len(addr) > 1 else 0)",
                            '        sender = ("everyone", 0)')
VIEWS_ALLOWED = Change("drivers/safe_load.py", "        if obj.numel() > stored:", "        if False:")
SHAPE_CHECK = "    if not all(isinstance(n, int) and n >= 0 for n in sizes) or math.prod(sizes) > 1:"
LOOPBACK_APART = Change("bridge/core/http_names.py", "    if ip.is_loopback:", "    if False:")
ONE_READ = Change("bridge/http/bodies.py", "            while size <= limit:", "            for _ in range(1):")
RESAMPLER_THREADS = Change("drivers/audio/decode.py", "rate=rate, threads=1)", "rate=rate, threads=0)")
ICE_SERVERS = "        pc = new_peer_connection(configuration=rtc_configuration(self.config.ice_servers))"
TEETH: tuple[Tooth, ...] = (
    # ---- the HTTP request policy -----------------------------------------------------------------------------
    Tooth(P + "test_http_policy.py::test_rebinding_hosts_are_refused_for_reads_and_writes", "the Host check",
          (NO_HOST_CHECK,)),
    Tooth(P + "test_http_policy.py::test_bodies_a_page_can_send_without_asking_are_refused", "the media-type check",
          (NO_MEDIA_TYPE_CHECK,)),
    Tooth(P + "test_http_policy.py::test_foreign_and_opaque_origins_are_refused_even_with_json", "the Origin check",
          (NO_ORIGIN_CHECK,)),
    Tooth(P + "test_http_policy.py::test_cors_only_for_allowed_origins_on_whep_and_the_viewer_api",
          "CORS only for allowed origins", (CORS_FOR_ANY_ORIGIN,)),
    tooth(P + "test_http_policy.py::test_requests_that_never_finish_their_headers_are_closed",
          "the idle timeout of HTTP connections", "bridge/runtime/daemon.py",
          "keepalive_timeout=self._config.http.idle_timeout_s)", "keepalive_timeout=3600.0)"),
    tooth(P + "test_http_policy.py::test_oversized_bodies_are_refused", "the JSON body size bound",
          "bridge/http/bodies.py", "MAX_JSON_BYTES = 64 * 1024", "MAX_JSON_BYTES = 64 * 1024 * 1024"),
    tooth(P + "test_http_policy.py::test_refusals_do_not_echo_the_request", "refusals that do not echo the Host",
          POLICY, '"the Host header does not name this daemon",',
          'f"the Host header {host} does not name this daemon",'),
    # ---- browsers ----------------------------------------------------------------------------------------------
    # A page's requests carry its Origin, and those without one are of a type a page sends unasked: either check
    # alone stops the page, so both go.
    Tooth(P + "test_browser_attacks.py::test_a_cross_site_page_cannot_change_anything",
          "the Origin and media-type checks (two lines)", (NO_ORIGIN_CHECK, NO_MEDIA_TYPE_CHECK)),
    Tooth(P + "test_browser_attacks.py::test_a_rebinding_page_cannot_read_or_write", "the Host check", (NO_HOST_CHECK,)),
    Tooth(P + "test_browser_attacks.py::test_a_third_party_whep_player_needs_its_origin_allowed",
          "CORS only for allowed origins", (CORS_FOR_ANY_ORIGIN,)),
    # ---- what an outsider can make the daemon store ---------------------------------------------------------
    Tooth(P + "test_bounded_state.py::test_case_variants_land_on_canonical_names_and_unknown_names_are_not_stored",
          "ARKit names stored in their canonical spelling", (ARKIT_AS_SENT,)),
    Tooth(P + "test_bounded_state.py::test_manual_controls_have_a_hard_cap", "mixer.max_manual", (NO_MANUAL_CAP,)),
    tooth(P + "test_bounded_state.py::test_preset_names_and_count_are_bounded", "the preset name check",
          "bridge/controls/presets.py", "    if not name or len(name) > MAX_NAME or not NAME_CHARS.issuperset(name):",
          "    if not name:"),
    tooth(P + "test_bounded_state.py::test_a_huge_presets_file_neither_stalls_the_loop_nor_the_picture",
          "the presets file size bound", "bridge/controls/presets.py",
          "MAX_FILE_BYTES = 256 * 1024", "MAX_FILE_BYTES = 256 * 1024 * 1024"),
    # With the size bound in place the capture reads 256 KiB at most, so on the loop it is quick: a 3 s sleep
    # stands in for a slow disk, which is what keeping file work off the loop is for. The answers stay right;
    # only the /health probe can see this.
    tooth(P + "test_bounded_state.py::test_a_huge_presets_file_neither_stalls_the_loop_nor_the_picture",
          "preset files read off the event loop (a slow disk)", "bridge/http/api_controls.py",
          "        path = await asyncio.to_thread(session_of(request).mixer.capture, name)",
          "        path = (__import__(\"time\").sleep(3), session_of(request).mixer.capture(name))[1]"),
    tooth(P + "test_bounded_state.py::test_json_bombs_are_400_with_a_fix", "refusing non-finite numbers",
          "bridge/http/bodies.py", "    if not math.isfinite(value):", "    if False:"),
    # ---- fuzzing ---------------------------------------------------------------------------------------------
    tooth(P + "test_fuzz_http.py::test_json_handlers_never_fail", "bodies that are not UTF-8 refused",
          "bridge/http/bodies.py", '        text = raw.decode("utf-8")\n    except UnicodeDecodeError as exc:',
          '        text = raw.decode("utf-8")\n    except LookupError as exc:'),
    tooth(P + "test_fuzz_http.py::test_sdp_intake_never_fails", "offers checked before aiortc parses them",
          "drivers/output/webrtc/peers.py", "            check_offer(sdp)", "            pass"),
    Tooth(P + "test_fuzz_parsers.py::test_the_control_grammar_refuses_or_yields_canonical_commands",
          "ARKit names stored in their canonical spelling", (ARKIT_AS_SENT,)),
    Tooth(P + "test_fuzz_parsers.py::test_the_mixer_stores_only_canonical_names_and_stays_under_its_cap",
          "mixer.max_manual", (NO_MANUAL_CAP,)),
    tooth(P + "test_fuzz_parsers.py::test_the_offer_intake_refuses_or_passes_nothing_else",
          "the bound on media sections", "drivers/output/webrtc/offers.py",
          "    if sections > MAX_MEDIA_SECTIONS:", "    if False:"),
    # ---- damaged files -----------------------------------------------------------------------------------------
    tooth(P + "test_damaged_files.py::test_a_checkpoint_with_altered_floats_is_a_damaged_file",
          "the zip CRC-32 check", "drivers/safe_load.py", "            bad = archive.testzip()",
          "            bad = None"),
    tooth(P + "test_damaged_files.py::test_a_deeply_nested_pickle_is_named_before_it_is_unpickled",
          "the nesting scan before unpickling", "drivers/safe_load.py",
          "    depth = pickle_depth(bytes(stream.getbuffer()[stream.tell() :]))",
          "    depth = 0"),
    tooth(P + "test_damaged_files.py::test_a_cycle_in_a_pickle_is_refused_not_recursed",
          "the depth bound while converting", "drivers/safe_load.py",
          '    deeper than any model file (or one that contains itself) is damaged."""\n'
          "    if depth > MAX_PICKLE_DEPTH:",
          '    deeper than any model file (or one that contains itself) is damaged."""\n'
          "    if False:"),
    tooth(P + "test_damaged_files.py::test_what_already_worked_still_works", "the unpickler's allow-list",
          "drivers/safe_load.py", "        target = SafeUnpickler._table.get((module, name))",
          "        target = SafeUnpickler._table.get((module, name)) or super().find_class(module, name)"),
    # ---- array headers and sizes checked before allocation -----------------------------------------------------
    Tooth(P + "test_array_headers.py::test_a_small_frame_with_a_huge_view_is_refused_without_growing",
          "refusing views larger than their storage", (VIEWS_ALLOWED,)),
    Tooth(P + "test_array_headers.py::test_a_checkpoint_with_a_stride0_tensor_is_one_line_at_the_command_line",
          "refusing views larger than their storage", (VIEWS_ALLOWED,)),
    tooth(P + "test_array_headers.py::test_a_pickled_numpy_array_may_not_ask_for_a_huge_first_shape",
          "the initial shape of a pickled array", "drivers/safe_load.py", SHAPE_CHECK, "    if False:"),
    tooth(P + "test_array_headers.py::test_a_real_frame_still_loads", "no false refusals (every array refused)",
          "drivers/safe_load.py", SHAPE_CHECK, "    if True:"),
    tooth(P + "test_array_headers.py::test_npy_headers_that_promise_more_than_the_file_holds_are_refused",
          "the .npy header against the bytes held", "drivers/safe_load.py", "    if promised > held:",
          "    if False:"),
    tooth(P + "test_array_headers.py::test_a_zip_member_that_inflates_a_thousandfold_is_refused",
          "the inflation bound of zip members", "drivers/safe_load.py",
          "        if info.file_size > MAX_INFLATION * info.compress_size + INFLATION_SLACK:", "        if False:"),
    tooth(P + "test_array_headers.py::test_a_sparse_matrix_of_absurd_shape_is_refused",
          "the size bound of sparse matrices", "drivers/safe_load.py",
          "    if len(shape) != 2 or min(shape) < 0 or math.prod(shape) > MAX_DENSE_VALUES:",
          "    if len(shape) != 2 or min(shape) < 0:"),
    # ---- control ports ---------------------------------------------------------------------------------------
    Tooth(P + "test_network_limits.py::test_an_osc_flood_does_not_starve_another_sender",
          "a budget per sender (one budget for all)", (ONE_BUDGET_FOR_ALL,)),
    Tooth(P + "test_network_limits.py::test_a_vmc_flood_does_not_starve_another_sender",
          "a budget per sender (one budget for all)", (ONE_BUDGET_FOR_ALL,)),
    tooth(P + "test_network_limits.py::test_idle_tcp_connections_are_capped_per_source_and_time_out",
          "the per-source TCP cap", "drivers/control/osc.py",
          "        if from_source >= self.tcp_max_per_source or len(self._tcp_clients) >= TCP_MAX_CONNECTIONS:",
          "        if len(self._tcp_clients) >= TCP_MAX_CONNECTIONS:"),
    tooth(P + "test_network_limits.py::test_the_table_of_senders_is_bounded", "the bound on the senders table",
          "drivers/control/budget.py", "            if len(self._table) >= self.max_senders:", "            if False:"),
    # ---- tokens ------------------------------------------------------------------------------------------------
    tooth(P + "test_tokens.py::test_a_blank_token_bound_wide_is_refused_with_a_fix", "the token validator",
          "bridge/core/config.py", "    def _token_when_wide(self) -> HttpConfig:\n",
          "    def _token_when_wide(self) -> HttpConfig:\n        return self\n"),
    tooth(P + "test_tokens.py::test_weak_tokens_are_refused_when_bound_wide", "the token strength check",
          "bridge/core/config.py", "            problem = _token_problem(self.token)", "            problem = None"),
    tooth(P + "test_tokens.py::test_a_strong_token_is_accepted_and_loopback_needs_none",
          "no token needed on loopback", "bridge/core/config.py",
          "        if self.enabled and self.host not in LOOPBACK_HOSTS:", "        if self.enabled:"),
    tooth(P + "test_tokens.py::test_the_token_guards_the_api_and_never_leaks", "comparing the whole token",
          POLICY, "            if not hmac.compare_digest(_digest(supplied), token_digest):",
          "            if not supplied:"),
    tooth(P + "test_tokens.py::test_a_configured_stun_server_is_used", "webrtc.ice_servers given to each peer",
          "drivers/output/webrtc/peers.py", ICE_SERVERS,
          "        pc = new_peer_connection(configuration=rtc_configuration(()))"),
    # ---- WebRTC sessions ---------------------------------------------------------------------------------------
    tooth(P + "test_webrtc_sessions.py::test_session_ids_are_capabilities", "random session ids",
          "drivers/output/webrtc/peers.py", "id=secrets.token_urlsafe(SESSION_ID_BYTES)", "id=str(len(self.peers))"),
    tooth(P + "test_webrtc_sessions.py::test_vanished_offers_are_reaped_and_a_real_viewer_gets_in",
          "reaping sessions that never connect", "drivers/output/webrtc/peers.py",
          "call_later(self.config.connect_timeout_s, self._reap, peer.id)",
          "call_later(3600.0, self._reap, peer.id)"),
    tooth(P + "test_webrtc_sessions.py::test_every_kind_of_session_counts_against_the_caps",
          "talk-back sessions counted per address", "drivers/output/webrtc/peers.py",
          "        if sum(1 for p in self.peers.values() if address_group(p.address) == group) >= per_address:",
          "        if sum(1 for p in self.peers.values() if address_group(p.address) == group"
          ' and p.kind != "talk") >= per_address:'),
    tooth(P + "test_webrtc_sessions.py::test_offers_are_bounded_before_they_are_parsed",
          "the bound on ICE candidates", "drivers/output/webrtc/offers.py",
          "    if candidates > MAX_CANDIDATES:", "    if False:"),
    tooth(P + "test_webrtc_sessions.py::test_no_stun_server_unless_configured",
          "an empty ICE server list (aiortc's default asks Google's STUN server)", "drivers/output/webrtc/peers.py",
          ICE_SERVERS, "        pc = new_peer_connection(configuration=None)"),
    Tooth(P + "test_webrtc_sessions.py::test_abandoned_offers_from_many_loopback_addresses_take_one_clients_places",
          "the loopback range counted as one client", (LOOPBACK_APART,)),
    Tooth(P + "test_webrtc_sessions.py::test_the_per_address_cap_counts_clients_not_addresses",
          "the loopback range counted as one client", (LOOPBACK_APART,)),
    tooth(P + "test_webrtc_sessions.py::test_one_cap_over_every_client", "webrtc.max_viewers over every client",
          "drivers/output/webrtc/peers.py", "        if self.sessions >= cap:", "        if False:"),
    # ---- whole request bodies ----------------------------------------------------------------------------------
    tooth(P + "test_whole_bodies.py::test_every_body_route_is_covered", "every body route in the test's list "
          "(a new route)", "bridge/http/api_controls.py", '    add_route(app, "POST", "/api/presets/capture", capture)\n',
          '    add_route(app, "POST", "/api/presets/capture", capture)\n'
          '    add_route(app, "POST", "/api/presets/capture2", capture)\n'),
    Tooth(P + "test_whole_bodies.py::test_json_bodies_byte_by_byte_answer_as_whole", "reading a body to its end",
          (ONE_READ,)),
    Tooth(P + "test_whole_bodies.py::test_offers_byte_by_byte_keep_their_audio", "reading a body to its end",
          (ONE_READ,)),
    tooth(P + "test_whole_bodies.py::test_a_body_that_stops_coming_is_refused_in_time", "the body read deadline",
          "bridge/http/bodies.py", "        async with asyncio.timeout(READ_TIMEOUT):",
          "        async with asyncio.timeout(None):"),
    # ---- bounded outputs and stops ------------------------------------------------------------------------------
    tooth(P + "test_bounded_outputs.py::test_a_record_path_that_is_not_a_regular_file_is_refused_up_front",
          "the record path checked before the start", "drivers/output/recorder.py",
          "        if not stat.S_ISREG(mode):\n            raise UserError(f\"cannot record to {path}: it is {_kind(mode)}; {fix}\")",
          "        if False:\n            raise UserError(f\"cannot record to {path}: it is {_kind(mode)}; {fix}\")"),
    tooth(P + "test_bounded_outputs.py::test_a_path_that_became_a_fifo_is_refused_when_opened_not_waited_on",
          "only a regular file opened", "drivers/output/recorder.py",
          "        if not stat.S_ISREG(mode):\n            raise UserError(f\"cannot record to {path}: it is {_kind(mode)}; give",
          "        if False:\n            raise UserError(f\"cannot record to {path}: it is {_kind(mode)}; give"),
    tooth(P + "test_bounded_outputs.py::test_a_second_daemon_leaves_the_first_daemons_microphone_alone",
          "a running owner's microphone left alone", "drivers/output/virtual_mic.py",
          "        running = [owner for _, owner in ours if owner is not None and owner_alive(owner)]",
          "        running = []"),
    tooth(P + "test_bounded_outputs.py::test_a_hung_sound_server_is_named_and_cannot_hold_the_stop",
          "the short wait for a hung server at the stop", "drivers/output/virtual_mic.py",
          "REMOVE_WAIT_S = 0.6", "REMOVE_WAIT_S = 10.0"),
    tooth(P + "test_bounded_outputs.py::test_a_stop_while_the_daemon_waits_on_a_hung_server_at_start_is_obeyed",
          "the microphone made off the event loop", "bridge/runtime/session.py",
          "                await loop.run_in_executor(None, self._create_virtual_mic)",
          "                self._create_virtual_mic()"),
    tooth(P + "test_bounded_outputs.py::test_a_janus_that_stops_answering_is_named_and_cannot_hold_the_stop",
          "the bound on a keepalive's answer", "drivers/output/webrtc/janus.py",
          'await self._request("keepalive", timeout=KEEPALIVE_REPLY)', 'await self._request("keepalive", timeout=3600.0)'),
    tooth(P + "test_bounded_outputs.py::test_a_janus_that_stops_answering_is_named_and_cannot_hold_the_stop",
          "the bound on stopping the publishers", "bridge/runtime/session.py",
          "            bounded(webrtc(), 1.5),", "            bounded(webrtc(), 3600.0),"),
    tooth(P + "test_bounded_outputs.py::test_a_virtual_camera_hung_in_a_send_is_named_and_cannot_hold_the_stop",
          "progress only when a send completes", "drivers/output/virtualcam.py",
          "        return self._sent_at, None", "        return time.monotonic(), None"),
    tooth(P + "test_bounded_outputs.py::test_a_virtual_camera_hung_in_a_send_is_named_and_cannot_hold_the_stop",
          "the bound on waiting for the sending thread", "drivers/output/virtualcam.py",
          "            self._thread.join(1.0)", "            self._thread.join()"),
    # ---- decoder threads ---------------------------------------------------------------------------------------
    Tooth(P + "test_decoder_threads.py::test_looping_the_demo_clip_keeps_the_thread_count_flat",
          "resampling on the calling thread", (RESAMPLER_THREADS,)),
    Tooth(P + "test_decoder_threads.py::test_opening_and_abandoning_files_keeps_the_thread_count_flat",
          "resampling on the calling thread", (RESAMPLER_THREADS,)),
    # ---- floors ------------------------------------------------------------------------------------------------
    tooth("tests/test_floors.py::test_every_module_sits_on_a_floor", "every module on a named floor (a new module no floor names)",
          "bridge/anything_new.py", None, '"""A module that no floor of bridge/__init__.py names."""\n'),
    tooth("tests/test_floors.py::test_no_import_goes_up_a_floor", "imports only down (a core module importing "
          "the runtime)", "bridge/core/uplink.py", None,
          '"""A core module that reaches up a floor."""\n\nimport bridge.runtime.daemon  # noqa: F401\n'),
    tooth("tests/test_floors.py::test_no_import_cycles", "no import circles (two drivers import each other)",
          "drivers/safe_load.py", "from __future__ import annotations\n",
          "from __future__ import annotations\n\nimport drivers.avatar.flashavatar.checkpoint  # noqa: F401\n"),
)


# ---- running ---------------------------------------------------------------------------------------------------
def copy_repository(dest: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, without .git."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def environment(copy: Path) -> dict[str, str]:
    """The copy's code first on the path; the reference files where the working tree finds them."""
    sys.path.insert(0, str(REPO))
    from tests.golden_files import DIRS, golden_dir

    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({var: str(golden_dir(model)) for model, var in DIRS.items()})
    return env


def run_pytest(copy: Path, env: dict[str, str], tests: list[str], timeout: float, first: bool = True) -> tuple[int, str]:
    """pytest on `tests` in the copy (stopping at the first failure when `first`): exit code and output."""
    argv = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--timeout", str(int(timeout)),
            *(["-x"] if first else []), *tests]
    try:
        done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout + 60)
    except subprocess.TimeoutExpired as exc:
        return 124, f"E   timed out after {timeout + 60:.0f} s\n{exc.stdout or ''}"
    return done.returncode, done.stdout + done.stderr


def first_failure(output: str) -> str:
    """The first `E   ` line pytest printed (what the failing assertion or error said)."""
    for line in output.splitlines():
        if line.startswith("E   ") and line[4:].strip():
            return " ".join(line[4:].split())[:110]
    tail = [ln for ln in output.splitlines() if ln.strip()]
    return tail[-1][:110] if tail else "(no output)"


def apply(copy: Path, change: Change) -> str | None:
    """Apply `change` in the copy; a reason when it cannot (the row is stale), else None."""
    target = copy / change.path
    if change.old is None:
        if target.exists():
            return f"{change.path} exists already"
        target.write_text(change.new)
        return None
    text = target.read_text() if target.is_file() else ""
    if text.count(change.old) != 1:
        return f"{change.path}: the text to change occurs {text.count(change.old)} times (the code moved)"
    target.write_text(text.replace(change.old, change.new))
    return None


def check(row: Tooth, copy: Path, env: dict[str, str], timeout: float) -> tuple[str, str]:
    """(result, what was seen) for one row: its change applied in the copy, the test run, the files put back."""
    saved = {c.path: (copy / c.path).read_bytes() if (copy / c.path).is_file() else None for c in row.changes}
    try:
        for change in row.changes:
            problem = apply(copy, change)
            if problem is not None:
                return "STALE", problem
        code, output = run_pytest(copy, env, [row.test], timeout)
    finally:
        for path, data in saved.items():
            if data is None:
                (copy / path).unlink(missing_ok=True)
            else:
                (copy / path).write_bytes(data)
    if code == 0:
        return "PASSES (no teeth)", "the test passed without the protection"
    seen = first_failure(output)
    if code == 5 or BROKEN.search(seen):
        return "BROKEN CHANGE", seen
    return "fails", seen


def change_text(row: Tooth) -> str:
    parts = []
    for c in row.changes:
        if c.old is None:
            parts.append(f"{c.path}: + new file")
            continue
        old = next((ln.strip() for ln in c.old.splitlines()[::-1] if ln.strip()), "")
        new = next((ln.strip() for ln in c.new.splitlines()[::-1] if ln.strip()), "")
        parts.append(f"{c.path}: {old[:70]} -> {new[:70]}")
    return "; ".join(parts)


def security_tests() -> list[str]:
    """Every test function in tests/security/ as a pytest id."""
    found = []
    for path in sorted((REPO / SECURITY).glob("test_*.py")):
        tree = ast.parse(path.read_text())
        found += [f"{SECURITY}/{path.name}::{node.name}" for node in tree.body
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated parts of test ids: run only those rows")
    parser.add_argument("--list", action="store_true", help="print the rows and the uncovered tests, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests unchanged first")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one pytest run may take")
    args = parser.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    rows = [r for r in TEETH if not wanted or any(w in r.test for w in wanted)]
    covered = {r.test for r in TEETH}
    missing = [t for t in security_tests() if t not in covered]
    if args.list:
        for r in rows:
            stale = [c.path for c in r.changes if c.old is not None and (REPO / c.path).is_file()
                     and (REPO / c.path).read_text().count(c.old) != 1]
            print(f"{r.test}\n    removes {r.protection}: {change_text(r)}" + (f"  STALE: {stale}" if stale else ""))
        print("\nnot covered:", *(missing or ["none"]), sep="\n  ")
        return 0
    results: list[tuple[Tooth, str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="teeth-") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        copy_repository(copy)
        env = environment(copy)
        baseline_failed: set[str] = set()
        if not args.no_baseline:  # all selected tests unchanged, in one run (the session's daemons shared)
            tests = list(dict.fromkeys(r.test for r in rows))
            code, output = run_pytest(copy, env, tests, args.timeout * len(tests), first=False)
            failed = {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+?)(?:\[.*?\])?(?: |$)", output, re.M)}
            baseline_failed = {t for t in tests if t in failed}
            if code not in (0, 1) or (code == 1 and not baseline_failed):
                print(f"baseline run ended with {code}: {first_failure(output)}", flush=True)
                return 2
            for test in sorted(baseline_failed):
                print(f"baseline: {test} fails unchanged", flush=True)
        for row in rows:
            start = time.monotonic()
            if row.test in baseline_failed:
                result, seen = "BASELINE FAILS", "the test fails without any change"
            else:
                result, seen = check(row, copy, env, args.timeout)
            results.append((row, result, seen, time.monotonic() - start))
            print(f"[{result}] {row.test} ({time.monotonic() - start:.0f} s): {seen}", flush=True)
    print("\n| test | protection removed (change) | result | failure seen |\n|---|---|---|---|")
    for row, result, seen, _ in results:
        name = row.test.removeprefix("tests/")
        print(f"| {name} | {row.protection}: `{change_text(row)}` | {result} | {seen.replace('|', '/')} |")
    if missing:
        print("\nnot covered (no row in TEETH):", *missing, sep="\n  ")
    bad = [r for r in results if r[1] != "fails"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
