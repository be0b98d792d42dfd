"""Headers that let kernels/*.cu compile for the CPU (cuda-emu)."""
