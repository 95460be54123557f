"""Adapters in other tools' formats (HF peft)."""
