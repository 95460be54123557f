"""Measurements shared by the trainer's callbacks, the benchmarks and the reports: one definition of each cost."""

from peftlab.measure.params import ParamCounts, count_parameters
from peftlab.measure.timing import Timing, latency, summarize, time_calls
from peftlab.measure.memory import peak_memory, reset_peak_memory
from peftlab.measure.storage import file_bytes, save_safetensors

__all__ = [
    "ParamCounts", "count_parameters", "Timing", "latency", "summarize", "time_calls",
    "peak_memory", "reset_peak_memory", "file_bytes", "save_safetensors",
]
