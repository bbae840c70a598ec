"""The control grammar and its state: the vocabulary, ARKit maps, presets, idle life and the mixer."""
