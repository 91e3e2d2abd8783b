"""spartan_train: the desk and training side of spartan_ros (model, trainer, evaluation, exporter,
synthetic drives, desk bag tools). It builds on the torch-free vehicle library ``spartan_ros``."""
