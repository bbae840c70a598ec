"""Training a FlashAvatar from a tracked video, with upstream's recipe, on the project's differentiable
rasterisers (gsplat on CUDA, the torch reference elsewhere); it writes what the avatar driver loads."""
