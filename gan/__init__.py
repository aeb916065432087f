"""gan: experiment-tracked, distributed GAN training with Accelerate."""
