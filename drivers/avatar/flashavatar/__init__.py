"""FlashAvatar: checkpoints (`checkpoint`), the deformation model (`model`), the live avatar driver (`avatar`),
batched offline rendering (`offline`) and PLY export."""
