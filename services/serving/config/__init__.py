"""Configuration: serving's settings, the experiment config and user bucketing (the lowest room)."""
