"""DiffPoseTalk (speech → FLAME expression, jaw and head pose by diffusion): checkpoint-compatible inference,
whole-clip generation as upstream does it, and a low-latency streaming face driver.

Submodules are imported on use; this package imports nothing heavy.
"""
