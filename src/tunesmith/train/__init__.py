"""Training: loss masks and pre-flight checks (masks), leak-free packing and length-grouped
batching (packing). The trainer loop, methods and checkpoints build on these."""
