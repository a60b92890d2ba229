"""Torch networks (perception nets, driving policy), datasets read from bags, training loops, checkpoints and manifests."""
