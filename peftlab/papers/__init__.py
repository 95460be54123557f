"""Reproductions of published tables (LoRA Tables 1-6, Houlsby's adapters vs full fine-tuning) next to the papers' figures.

The published numbers live in experiments/papers/*.csv; each module prints ours beside them and says where they differ.
"""
