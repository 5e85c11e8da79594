"""Hydra configs; a package so an installed bild_exp finds them (pkg://bild_exp.conf)."""
