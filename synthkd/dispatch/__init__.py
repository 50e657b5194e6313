"""Sending many requests to a teacher: concurrency, rate limits, retries, cache."""
