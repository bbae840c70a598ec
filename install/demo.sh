#!/usr/bin/env bash
# One command from a fresh clone to a talking avatar: set up, then run the daemon on the embedded demo head
# and demo speech, recording it to avatar-demo.mp4 (DURATION seconds, default 15). While it runs, the panel
# and viewer are at http://127.0.0.1:8080/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/setup.sh
. .venv/bin/activate
out=${OUT:-avatar-demo.mp4}
avatar-bridge demo --duration "${DURATION:-15}" --record "$out" "$@"
echo "demo: wrote $out"
