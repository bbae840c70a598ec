"""Sub-commands of the `avatar-bridge` CLI; each module exposes `register(subparsers)`."""
