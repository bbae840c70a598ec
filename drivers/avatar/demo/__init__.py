"""The embedded demo head: geometry made in code (`head`), its rig (`rig`) and the avatar driver (`avatar`)."""
