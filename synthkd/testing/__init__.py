"""Tools for testing recipes and synthkd itself without a paid API."""
