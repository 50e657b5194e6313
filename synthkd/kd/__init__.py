"""Offline knowledge distillation from stored teacher log-probabilities."""
