"""Training: tokenizer, fine-tuning and prediction alignment (paper Section 3.5.1)."""
