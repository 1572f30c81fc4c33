"""Layer 3: the network. Backbones, the model artifact and its card, the runtime (device, threads, AMP,
layout), temperature calibration and the pieces of the training loop."""
