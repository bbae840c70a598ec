"""3D Gaussian splatting: the shared types (`gaussians`), spherical harmonics, cameras, the torch reference
rasteriser, the compiled CPU tile rasteriser (`tiles`, kernels in `tile_kernels`), the gsplat backend with its
whole-frame CUDA graph, and the choice between them (`select`)."""
