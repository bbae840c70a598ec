"""Avatar Bridge: the daemon that owns time, state and wiring between audio, face drivers, avatars and outputs.

The code stands on floors; a module imports only from its own floor or the floors below it, never from one
above, and no modules import each other in a circle (`tests/test_floors.py` walks every import to hold this):

    UI        bridge.http, bridge.commands, bridge.cli     what people and programs talk to
    runtime   bridge.runtime                               registry, build, pipeline, sinks, the daemon
    drivers   drivers                                      one package per device or model
    controls  bridge.controls                              the control grammar, presets, idle life, the mixer
    core      bridge.core                                  interfaces, FaceParams, rotations, clock, config

Drivers meet the daemon only through `bridge.core.interfaces` (`MediaHub` for outputs), so a driver can be
read, tested and replaced without the runtime above it.
"""

__version__ = "0.1.0"
