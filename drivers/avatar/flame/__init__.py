"""FLAME, the head model the avatars are rigged on: its LBS and head motion (`model`), its file formats
(`files`, `obj`), UV sampling, landmarks and ARKit fitting (calibration), metrical-tracker frames."""
