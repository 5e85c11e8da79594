"""What the records say: statistics (``stats``), one summary row per configuration
(``summary``), the one comparison with vanilla large (``comparison``), Pareto frontiers and
the one operating-point chooser (``operating_points``), the per-length view
(``by_length``), tables and files (``report``), figures (``plots``) and the W&B run
(``wandb_log``). Shared by the sweep, the bench and ``bild_exp.paper``; decodes nothing."""
