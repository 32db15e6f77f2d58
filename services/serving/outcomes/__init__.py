"""A/B outcomes: impressions issued with signed feedback tokens, and the Feedback call."""
