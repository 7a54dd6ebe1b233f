"""The one test harness: the fake Stripe, server processes, tokens and webhook signing.

The test suite and the benchmarks (`bench/`) both use it; it imports nothing from `bench/`.
"""
