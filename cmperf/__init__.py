"""cmperf: first-principles performance model of DeepSeek-R1-class MoE serving on rack-scale systems."""

__version__ = "0.1.0"
