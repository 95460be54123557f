"""Datasets (packaged, local files, HF datasets) and the Lightning datamodules that batch them."""

from peftlab.data.datamodule import DataConfig, TextDataModule

__all__ = ["DataConfig", "TextDataModule"]
