"""Train a student on a run's dataset with TRL (the recipe's optional `train:` section)."""
