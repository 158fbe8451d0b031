"""Benchmarks that answer kvstore design questions with figures; each module runs on its own."""
