"""Measurements shared by the trainer's callbacks, the benchmarks and the reports: one definition of each cost."""

from peftlab.measure.params import ParamCounts, count_parameters
from peftlab.measure.timing import (StepTimer, Timing, autocast, batch_size_and_tokens, compare_calls, compare_latency,
                                    latency, random_tokens, summarize, sync, time_calls)
from peftlab.measure.memory import current_memory, peak_memory, reset_peak_memory
from peftlab.measure.storage import file_bytes, save_safetensors

__all__ = [
    "ParamCounts", "count_parameters", "StepTimer", "Timing", "autocast", "batch_size_and_tokens", "compare_calls",
    "compare_latency", "latency", "random_tokens", "summarize", "sync", "time_calls",
    "current_memory", "peak_memory", "reset_peak_memory", "file_bytes", "save_safetensors",
]
