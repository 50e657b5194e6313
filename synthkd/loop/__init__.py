"""Iterative distillation with the student in the loop (`loop:`, `synthkd loop RECIPE`)."""
