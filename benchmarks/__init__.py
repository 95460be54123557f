"""Side-by-side speed and memory benchmarks: peftlab LoRA vs HF peft, the trainer vs a plain PyTorch loop, and the
inference latency each method adds to its base model. Run them with `python -m benchmarks.run_all`."""
