"""Avatar Bridge: the daemon that owns time, state and wiring between audio, face drivers, avatars and outputs."""

__version__ = "0.1.0"
