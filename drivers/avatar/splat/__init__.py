"""3D Gaussian splatting: the shared types (`gaussians`), spherical harmonics, cameras, the torch reference
rasteriser, the gsplat backend with its whole-frame CUDA graph, and the choice between them (`select`)."""
