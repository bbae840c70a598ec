#!/usr/bin/env bash
# Linux system setup for avatar-bridge as a webcam and microphone in calls and streams:
#   1. v4l2loopback virtual camera (exclusive_caps=1, card label "Avatar Bridge"), loaded now and at boot;
#   2. a PipeWire/PulseAudio null sink "avatar_bridge" + a virtual microphone fed by it (the delayed speech),
#      loaded now and on every login;
#   3. a systemd user service running the daemon, restarted on failure.
# Safe to run again: every step checks first and changes only what differs.
#
# usage: install/linux.sh [--dry-run] [--no-camera] [--no-audio] [--no-service] [--start]
#                         [--config FILE] [--exec PATH] [--label "Avatar Bridge"] [--video-nr 10]
set -euo pipefail

DRY_RUN=0; DO_CAMERA=1; DO_AUDIO=1; DO_SERVICE=1; START=0
LABEL="Avatar Bridge"; VIDEO_NR=10
CONFIG="${XDG_CONFIG_HOME:-$HOME/.config}/avatar-bridge/config.toml"
EXEC=""
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SINK=avatar_bridge
MIC=avatar_bridge_mic

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --no-camera) DO_CAMERA=0 ;;
    --no-audio) DO_AUDIO=0 ;;
    --no-service) DO_SERVICE=0 ;;
    --start) START=1 ;;
    --config) CONFIG="$2"; shift ;;
    --exec) EXEC="$2"; shift ;;
    --label) LABEL="$2"; shift ;;
    --video-nr) VIDEO_NR="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "linux.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
run() {  # run a command, or print it under --dry-run
  if [[ $DRY_RUN == 1 ]]; then printf '    would run: %s\n' "$*"; else "$@"; fi
}
SUDO=""
if [[ $(id -u) != 0 ]]; then SUDO=sudo; fi

# write_file PATH CONTENT [root]: write only when the content differs (idempotent).
write_file() {
  local path="$1" content="$2" root="${3:-}"
  if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
    note "unchanged: $path"; return 0
  fi
  if [[ $DRY_RUN == 1 ]]; then
    printf '    would write %s:\n' "$path"; printf '%s\n' "$content" | sed 's/^/      | /'; return 0
  fi
  if [[ -n "$root" ]]; then
    $SUDO mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" | $SUDO tee "$path" >/dev/null
  else
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" > "$path"
  fi
  note "wrote $path"
}

# ------------------------------------------------------------------ 1. virtual camera
setup_camera() {
  say "virtual camera (v4l2loopback, label \"$LABEL\", /dev/video$VIDEO_NR)"
  if ! modinfo v4l2loopback >/dev/null 2>&1; then
    if command -v apt-get >/dev/null; then
      note "v4l2loopback is not installed; installing the DKMS module (needs the kernel headers)"
      run $SUDO apt-get install -y v4l2loopback-dkms v4l-utils "linux-headers-$(uname -r)"
    elif command -v dnf >/dev/null; then
      run $SUDO dnf install -y v4l2loopback kmod-v4l2loopback v4l-utils
    elif command -v pacman >/dev/null; then
      run $SUDO pacman -S --needed --noconfirm v4l2loopback-dkms v4l-utils linux-headers
    else
      echo "linux.sh: install the v4l2loopback kernel module with your package manager, then run me again" >&2
      exit 1
    fi
  else
    note "v4l2loopback module present"
  fi
  local options="options v4l2loopback devices=1 video_nr=$VIDEO_NR exclusive_caps=1 card_label=\"$LABEL\""
  write_file /etc/modules-load.d/avatar-bridge.conf "# loaded at boot for avatar-bridge
v4l2loopback" root
  write_file /etc/modprobe.d/avatar-bridge.conf "# avatar-bridge virtual camera; exclusive_caps=1 lets Chrome/Zoom/Teams see it
$options" root
  local current=""
  if [[ -r /sys/devices/virtual/video4linux/video$VIDEO_NR/name ]]; then
    current="$(cat "/sys/devices/virtual/video4linux/video$VIDEO_NR/name")"
  fi
  if [[ "$current" == "$LABEL" ]]; then
    note "loaded: /dev/video$VIDEO_NR ($current)"
  elif [[ -d /sys/module/v4l2loopback ]]; then
    note "v4l2loopback is loaded with other options; reloading (close apps that use a virtual camera first)"
    run $SUDO modprobe -r v4l2loopback
    run $SUDO modprobe v4l2loopback
  else
    run $SUDO modprobe v4l2loopback
  fi
}

# ------------------------------------------------------------------ 2. virtual microphone
setup_audio() {
  say "virtual microphone (null sink \"$SINK\" → source \"$MIC\")"
  if ! command -v pactl >/dev/null; then
    if [[ $DRY_RUN == 0 ]]; then
      echo "linux.sh: pactl not found; install pipewire-pulse (or pulseaudio-utils) and run me again" >&2
      exit 1
    fi
    note "pactl not found (install pipewire-pulse or pulseaudio-utils); showing the PipeWire steps"
    pactl() { if [[ "$1" == info ]]; then echo "Server Name: PulseAudio (on PipeWire)"; fi; }
  fi
  local null_args="module-null-sink sink_name=$SINK sink_properties=device.description=Avatar-Bridge-Speech"
  local mic_args="module-remap-source master=$SINK.monitor source_name=$MIC source_properties=device.description=Avatar-Bridge-Microphone"
  local server
  server="$(pactl info 2>/dev/null | sed -n 's/^Server Name: //p')"
  if [[ "$server" == *PipeWire* ]]; then
    note "sound server: $server"
    write_file "${XDG_CONFIG_HOME:-$HOME/.config}/pipewire/pipewire-pulse.conf.d/avatar-bridge.conf" \
"# avatar-bridge: a null sink for the delayed speech and a microphone that apps can pick
pulse.cmd = [
    { cmd = \"load-module\" args = \"$null_args\" flags = [ ] }
    { cmd = \"load-module\" args = \"$mic_args\" flags = [ ] }
]"
  else
    note "sound server: ${server:-PulseAudio (not running?)}"
    local pa="${XDG_CONFIG_HOME:-$HOME/.config}/pulse/default.pa"
    if [[ -f "$pa" ]] && grep -q "sink_name=$SINK" "$pa"; then
      note "unchanged: $pa"
    elif [[ -f "$pa" ]]; then
      if [[ $DRY_RUN == 1 ]]; then note "would append the two load-module lines to $pa"
      else printf '\n# avatar-bridge\nload-module %s\nload-module %s\n' "$null_args" "$mic_args" >> "$pa"; note "appended to $pa"; fi
    else
      write_file "$pa" ".include /etc/pulse/default.pa
# avatar-bridge
load-module $null_args
load-module $mic_args"
    fi
  fi
  if pactl list short sinks 2>/dev/null | awk '{print $2}' | grep -qx "$SINK"; then
    note "null sink $SINK is loaded"
  else
    run pactl load-module $null_args
  fi
  if pactl list short sources 2>/dev/null | awk '{print $2}' | grep -qx "$MIC"; then
    note "virtual microphone $MIC is loaded"
  else
    run pactl load-module $mic_args
  fi
  note "in your call app pick the microphone \"Avatar-Bridge-Microphone\""
}

# ------------------------------------------------------------------ 3. service
setup_service() {
  say "systemd user service"
  if [[ -z "$EXEC" ]]; then
    EXEC="$(command -v avatar-bridge || true)"
    if [[ -z "$EXEC" && -x "$HERE/../.venv/bin/avatar-bridge" ]]; then EXEC="$(cd "$HERE/.." && pwd)/.venv/bin/avatar-bridge"; fi
  fi
  if [[ -z "$EXEC" ]]; then
    echo "linux.sh: avatar-bridge is not installed (run install/setup.sh first, or pass --exec PATH)" >&2
    exit 1
  fi
  if [[ ! -f "$CONFIG" ]]; then
    write_file "$CONFIG" "# avatar-bridge configuration (every setting has a default; see README)
[outputs.virtualcam]
enabled = true
device = \"/dev/video$VIDEO_NR\"

[outputs.passthrough]
enabled = true   # the delayed speech, to the null sink behind the virtual microphone (PULSE_SINK)

[audio]
source = \"microphone\"

[http]
port = 8080"
  else
    note "keeping your config $CONFIG"
  fi
  local unit="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/avatar-bridge.service"
  local body
  body="$(sed -e "1,/^\[Unit\]/{/^#/d}" -e "s#@EXEC@#$EXEC#g" -e "s#@CONFIG@#$CONFIG#g" -e "s#@DOCS@#$(cd "$HERE/.." && pwd)/README.md#g" \
    "$HERE/avatar-bridge.service")"
  write_file "$unit" "$body"
  if command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
    run systemctl --user daemon-reload
    run systemctl --user enable avatar-bridge.service
    if [[ $START == 1 ]]; then run systemctl --user restart avatar-bridge.service; fi
    note "start: systemctl --user start avatar-bridge   logs: journalctl --user -u avatar-bridge -f"
    note "run without a login session too: sudo loginctl enable-linger $USER"
  else
    note "no systemd user session here; start it by hand: $EXEC run --config $CONFIG"
  fi
}

[[ $DRY_RUN == 1 ]] && say "dry run: nothing is changed"
[[ $DO_CAMERA == 1 ]] && setup_camera
[[ $DO_AUDIO == 1 ]] && setup_audio
[[ $DO_SERVICE == 1 ]] && setup_service
say "done; check with: avatar-bridge doctor --config $CONFIG"
