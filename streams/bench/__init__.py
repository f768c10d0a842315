"""Benchmarks that print figures: pipeline throughput and latency, inference cost."""
