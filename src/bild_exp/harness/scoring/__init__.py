"""Quality: the texts that are scored, the metrics, and running model-written code."""
