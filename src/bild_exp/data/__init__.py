"""Datasets: the shipped German-English demo corpus and loaders for every task."""
