"""Every command a user can get wrong answers with a message and a non-zero exit, never a traceback: missing,
corrupt and foreign model files, a DiffPoseTalk config without its statistics, bad TOML, wrong shapes,
unreadable audio, broken presets and recording targets. The commands run in this process (as `main()` would
in the console script), so one wrong input costs a fraction of a second instead of a Python start-up; two
representative ones also run as real processes in tests/commands/test_cli.py."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.cli import main
from tests.conftest import write_audio_file
from tests.golden_files import golden_dir, require


def files(root: Path) -> dict[str, Path]:
    """Wrong inputs, made once: garbage, empty, foreign and wrongly shaped files."""
    rng = np.random.default_rng(0)
    f: dict[str, Path] = {}

    def put(name: str, data: bytes | str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        f[name] = path
        return path

    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("garbage.pt", "garbage.pth", "garbage.pkl", "garbage.wav", "garbage.npz", "garbage.frame",
                 "garbage.obj", "lids/l_eyelid.npy", "lids/r_eyelid.npy"):
        put(name, garbage)
    put("empty.pt", b"")
    put("speech.ogg", "this is text, not sound")
    put("bad_syntax.toml", "[video\nfps = 25\n")
    put("bad_value.toml", "[video]\nfps = 24\n")
    np.save(root / "wrong_shape.npy", np.zeros((7, 3), np.float32))
    f["wrong_shape.npy"] = root / "wrong_shape.npy"
    np.savez(root / "stats_missing_keys.npz", shape_mean=np.zeros(100, np.float32))
    f["stats_missing_keys.npz"] = root / "stats_missing_keys.npz"
    torch.save({"args": argparse.Namespace(), "model": {"x": torch.zeros(3)}, "iter": 1}, root / "foreign.pt")
    f["foreign.pt"] = root / "foreign.pt"
    torch.save({"something": torch.zeros(2)}, root / "foreign.pth")
    f["foreign.pth"] = root / "foreign.pth"
    write_audio_file(root / "tone.wav", np.sin(np.arange(16000) / 8).astype(np.float32) * 0.3, 16000)
    f["tone.wav"] = root / "tone.wav"
    np.savez(root / "params.npz", expr=np.zeros((3, 100), np.float32))
    f["params.npz"] = root / "params.npz"

    # Real model files with one tensor of the wrong shape (when the reference files are here).
    dpt, fa = golden_dir("diffposetalk"), golden_dir("flashavatar")
    if (dpt / "dpt_tiny_nohead.pt").is_file():
        ck = torch.load(dpt / "dpt_tiny_nohead.pt", map_location="cpu", weights_only=False)
        key = "audio_feature_map.weight"
        ck["model"][key] = ck["model"][key][:, :100].clone()
        torch.save(ck, root / "dpt_wrong_shape.pt")
        f["dpt_wrong_shape.pt"] = root / "dpt_wrong_shape.pt"
        f["dpt.pt"], f["dpt_stats.npz"] = dpt / "dpt_tiny_nohead.pt", dpt / "stats_nohead.npz"
    if (fa / "chkpnt_seed0.pth").is_file():
        (mlp, gaussians, iteration) = torch.load(fa / "chkpnt_seed0.pth", map_location="cpu", weights_only=False)
        gaussians = list(gaussians)
        gaussians[2] = gaussians[2][..., :2].clone()  # _features_dc (N, 1, 2) instead of (N, 1, 3)
        torch.save((mlp, tuple(gaussians), iteration), root / "fa_wrong_shape.pth")
        f["fa_wrong_shape.pth"] = root / "fa_wrong_shape.pth"
        f["flame.pkl"] = fa / "flame_synthetic.pkl"

    # Configs that point at those files.
    def config(name: str, text: str) -> None:
        put(name, "[http]\nenabled = false\n[osc]\nenabled = false\n[vmc]\nenabled = false\n"
                  "[midi]\nenabled = false\n" + text)

    config("dpt_no_stats.toml", f'[face]\ndriver = "diffposetalk"\n[face.diffposetalk]\ncheckpoint = "{f["garbage.pt"]}"\n')
    config("dpt_no_checkpoint.toml", '[face]\ndriver = "diffposetalk"\n')
    config("dpt_garbage.toml", f'[face]\ndriver = "diffposetalk"\n[face.diffposetalk]\ncheckpoint = "{f["garbage.pt"]}"\n'
                               f'stats = "{f["garbage.npz"]}"\n')
    config("dpt_missing.toml", f'[face]\ndriver = "diffposetalk"\n[face.diffposetalk]\ncheckpoint = "{root / "no.pt"}"\n'
                               f'stats = "{root / "no.npz"}"\n')
    config("fa_garbage.toml", f'[avatar]\nkind = "flashavatar"\ncheckpoint = "{f["garbage.pth"]}"\n'
                              f'flame_model = "{f["garbage.pkl"]}"\nflame_masks = "{f["garbage.pkl"]}"\n'
                              f'flame_mesh = "{f["garbage.obj"]}"\neyelids_dir = "{root / "lids"}"\n')
    config("fa_missing.toml", f'[avatar]\nkind = "flashavatar"\ncheckpoint = "{root / "no.pth"}"\n'
                              f'flame_model = "{root / "no.pkl"}"\n')
    if "flame.pkl" in f:
        real = f'flame_masks = "{fa / "FLAME_masks_synthetic.pkl"}"\nflame_mesh = "{fa / "FlameMesh.obj"}"\neyelids_dir = "{fa}"\n'
        config("fa_bad_flame.toml", f'[avatar]\nkind = "flashavatar"\ncheckpoint = "{fa / "chkpnt_seed0.pth"}"\n'
                                    f'flame_model = "{f["garbage.pkl"]}"\n{real}')
        config("fa_wrong_shape.toml", f'[avatar]\nkind = "flashavatar"\ncheckpoint = "{f["fa_wrong_shape.pth"]}"\n'
                                      f'flame_model = "{f["flame.pkl"]}"\n{real}')
    config("record_avi.toml", f'[outputs.record]\npath = "{root / "out.avi"}"\n')
    if "dpt.pt" in f:
        config("dpt_wrong_stats.toml", f'[face]\ndriver = "diffposetalk"\n[face.diffposetalk]\n'
                                       f'checkpoint = "{f["dpt.pt"]}"\nstats = "{f["stats_missing_keys.npz"]}"\n')
        config("dpt_wrong_shape.toml", f'[face]\ndriver = "diffposetalk"\n[face.diffposetalk]\n'
                                       f'checkpoint = "{f["dpt_wrong_shape.pt"]}"\nstats = "{f["dpt_stats.npz"]}"\n')
    broken_presets = root / "presets_broken"
    put("presets_broken/arkit_demo.toml", "[map.jawOpen]\njaw = 'wide open'\n")
    put("presets_broken/emotions.toml", "[happy\n")
    config("presets_broken.toml", f'[presets]\ndir = "{broken_presets}"\n')
    put("tracked/0001.frame", garbage)
    put("tracked/0002.frame", garbage)
    put("midi_bad.toml", "[[binding]]\ncc = 'seven'\n")
    return f


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return files(tmp_path_factory.mktemp("bad"))


# (case id, argv built from the files; None when a reference file it needs is absent)
Case = Callable[[dict[str, Path]], "list[str] | None"]


def needs(*names: str) -> Callable[[Case], Case]:
    def wrap(case: Case) -> Case:
        return lambda f: case(f) if all(n in f for n in names) else None
    return wrap


RUN = ["--duration", "1", "--no-http"]


def generate(f: dict[str, Path], checkpoint: str, stats: str, audio: str = "tone.wav") -> list[str]:
    """`face generate` with these files (the shape file is always the wrongly sized one)."""
    return ["face", "generate", "--checkpoint", str(f[checkpoint]), "--stats", str(f[stats]), "--audio",
            str(f[audio]), "--shape", str(f["wrong_shape.npy"]), "--out", str(f["tone.wav"].with_name("o.npz"))]
CASES: dict[str, Case] = {
    "run: bad TOML": lambda f: ["run", "--config", str(f["bad_syntax.toml"]), *RUN],
    "run: bad value": lambda f: ["run", "--config", str(f["bad_value.toml"]), *RUN],
    "run: missing config": lambda f: ["run", "--config", str(f["bad_syntax.toml"].with_name("none.toml")), *RUN],
    "run: DiffPoseTalk without stats": lambda f: ["run", "--config", str(f["dpt_no_stats.toml"]), *RUN],
    "run: DiffPoseTalk without checkpoint": lambda f: ["run", "--config", str(f["dpt_no_checkpoint.toml"]), *RUN],
    "run: corrupt DiffPoseTalk files": lambda f: ["run", "--config", str(f["dpt_garbage.toml"]), *RUN],
    "run: missing DiffPoseTalk files": lambda f: ["run", "--config", str(f["dpt_missing.toml"]), *RUN],
    "run: DiffPoseTalk stats lack keys": needs("dpt.pt")(
        lambda f: ["run", "--config", str(f["dpt_wrong_stats.toml"]), *RUN]),
    "run: DiffPoseTalk tensor of the wrong shape": needs("dpt.pt")(
        lambda f: ["run", "--config", str(f["dpt_wrong_shape.toml"]), *RUN]),
    "run: corrupt FlashAvatar files": lambda f: ["run", "--config", str(f["fa_garbage.toml"]), *RUN],
    "run: corrupt FLAME model": needs("flame.pkl")(lambda f: ["run", "--config", str(f["fa_bad_flame.toml"]), *RUN]),
    "run: FlashAvatar tensor of the wrong shape": needs("flame.pkl")(
        lambda f: ["run", "--config", str(f["fa_wrong_shape.toml"]), *RUN]),
    "run: missing FlashAvatar files": lambda f: ["run", "--config", str(f["fa_missing.toml"]), *RUN],
    "run: broken presets": lambda f: ["run", "--config", str(f["presets_broken.toml"]), *RUN],
    "run: recording format": lambda f: ["run", "--config", str(f["record_avi.toml"]), *RUN],
    "demo: unreadable audio": lambda f: ["demo", "--audio", str(f["garbage.wav"]), *RUN],
    "demo: text as audio": lambda f: ["demo", "--audio", str(f["speech.ogg"]), *RUN],
    "demo: recording folder": lambda f: ["demo", "--record", str(f["garbage.wav"].parent / "no" / "x.mp4"), *RUN],
    "demo: recording onto a folder": lambda f: ["demo", "--record", str(f["garbage.wav"].parent), *RUN],
    "avatar info: corrupt": lambda f: ["avatar", "info", str(f["garbage.pth"])],
    "avatar info: empty": lambda f: ["avatar", "info", str(f["empty.pt"])],
    "avatar info: foreign": lambda f: ["avatar", "info", str(f["foreign.pth"])],
    "avatar info: missing": lambda f: ["avatar", "info", str(f["garbage.pth"].with_name("none.pth"))],
    "avatar info: wrong shape": needs("fa_wrong_shape.pth")(lambda f: ["avatar", "info", str(f["fa_wrong_shape.pth"])]),
    "avatar render: corrupt FLAME": needs("fa_wrong_shape.pth")(lambda f: [
        "avatar", "render", "--checkpoint", str(f["fa_wrong_shape.pth"]), "--flame-model", str(f["garbage.pkl"]),
        "--params", str(f["params.npz"]), "--out", str(f["garbage.pkl"].with_name("r.mp4"))]),
    "avatar render: missing params": lambda f: [
        "avatar", "render", "--checkpoint", str(f["garbage.pth"]), "--flame-model", str(f["garbage.pkl"]),
        "--params", str(f["garbage.pkl"].with_name("none.npz")), "--out", str(f["garbage.pkl"].with_name("r.mp4"))],
    "avatar export-ply: corrupt": lambda f: [
        "avatar", "export-ply", "--checkpoint", str(f["garbage.pth"]), "--flame-model", str(f["garbage.pkl"]),
        "--out", str(f["garbage.pkl"].with_name("x.ply"))],
    "face generate: corrupt checkpoint": lambda f: generate(f, "garbage.pt", "garbage.npz"),
    "face generate: empty checkpoint": lambda f: generate(f, "empty.pt", "garbage.npz"),
    "face generate: foreign checkpoint": lambda f: generate(f, "foreign.pt", "garbage.npz"),
    "face generate: unreadable audio": lambda f: generate(f, "garbage.pt", "garbage.npz", audio="garbage.wav"),
    "face generate: stats lack keys": needs("dpt.pt")(lambda f: generate(f, "dpt.pt", "stats_missing_keys.npz")),
    "face generate: shape of the wrong size": needs("dpt.pt")(lambda f: generate(f, "dpt.pt", "dpt_stats.npz")),
    "face generate: tensor of the wrong shape": needs("dpt.pt")(
        lambda f: generate(f, "dpt_wrong_shape.pt", "dpt_stats.npz")),
    "calibrate: missing folder": lambda f: ["calibrate", "--tracked", str(f["garbage.pt"].with_name("none"))],
    "calibrate: corrupt frames": needs("flame.pkl")(
        lambda f: ["calibrate", "--tracked", str(f["garbage.pt"].with_name("tracked")), "--flame", str(f["flame.pkl"])]),
    "calibrate: corrupt FLAME": lambda f: [
        "calibrate", "--tracked", str(f["garbage.pt"].with_name("tracked")), "--flame", str(f["garbage.pkl"])],
    "presets check: broken files": lambda f: ["presets", "check", "--dir", str(f["garbage.pt"].with_name("presets_broken"))],
    "presets show: bad config": lambda f: ["presets", "show", "happy", "--config", str(f["bad_syntax.toml"])],
    "presets list: missing folder": lambda f: ["presets", "list", "--dir", str(f["garbage.pt"].with_name("none"))],
    "midi show: bad map": lambda f: ["midi", "show", str(f["midi_bad.toml"])],
    "midi show: corrupt map": lambda f: ["midi", "show", str(f["garbage.pt"])],
    "doctor: missing model files": lambda f: ["doctor", "--config", str(f["fa_missing.toml"])],
    "doctor: corrupt model files": lambda f: ["doctor", "--config", str(f["dpt_garbage.toml"])],
    "doctor: bad TOML": lambda f: ["doctor", "--config", str(f["bad_syntax.toml"])],
    "bench: bad TOML": lambda f: ["bench", "render", "--config", str(f["bad_syntax.toml"])],
    "bench: bad size": lambda f: ["bench", "render", "--size", "256"],
    "bench: corrupt face driver": lambda f: ["bench", "face", "--config", str(f["dpt_garbage.toml"]), "--seconds", "0.1"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_input_gets_a_message_not_a_traceback(case: str, bad: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    argv = CASES[case](bad)
    if argv is None:  # a reference file it needs is missing: fails in CI, skips elsewhere
        require("diffposetalk", "dpt_tiny_nohead.pt", "stats_nohead.npz")
        require("flashavatar", "chkpnt_seed0.pth", "flame_synthetic.pkl")
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code not in (0, None), f"{case}: exit code {code}\n{out}"
    assert "Traceback" not in out
    assert not [r for r in caplog.records if r.exc_info], f"{case}: a traceback was logged"
    said = [line for line in out.splitlines()  # the CLI's error line, doctor's FAIL lines or presets' report
            if line.startswith(("avatar-bridge: error:", "usage:", "[FAIL]")) or str(bad["garbage.pt"].parent) in line]
    assert said, f"{case}: no error line in\n{out}"
