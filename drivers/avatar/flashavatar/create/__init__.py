"""Avatar creation: a phone video to a FlashAvatar dataset (frames, landmarks, FLAME tracking, masks)."""
