"""Evaluation: retrieval metrics (``retrieval``), trajectory errors with evo (``trajectory``),
all figures of one embedding set (``summary``), the report (``report``) and ``spartan-eval``
(``run``). Import-light: nothing is imported here; ``run`` is the only module that needs torch.
"""
