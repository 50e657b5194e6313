"""`synthkd experiment`: train the same student several ways at one training budget and compare
them on held-out prompts (see `run`)."""
