"""A run's results: reading them by kind, the summary, the plots, and ``validate`` against AC power flow."""
