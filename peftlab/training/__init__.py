"""The one LightningModule every method trains with, and the callbacks that measure and guard each run."""
