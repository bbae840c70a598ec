#!/bin/sh
# One Stream Deck key = one command, for any Stream Deck software that runs a command per key
# (e.g. a "System: Open"/"Run" action, StreamController, streamdeck-ui) when no OSC plugin is installed.
# Usage: send.sh /avatar/preset/happy            (fade the happy expression in)
#        send.sh /avatar/blend/jawOpen f 0.7     (typed arguments: f float, i int, s string)
# Needs liblo's oscsend (Debian/Ubuntu: apt install liblo-tools). Host and port follow the daemon's defaults.
exec oscsend "${AVATAR_OSC_HOST:-127.0.0.1}" "${AVATAR_OSC_PORT:-9000}" "$@"
