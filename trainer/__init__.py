"""Adversarial training and robust evaluation of one architecture (torch only, never ray).

    from trainer import fit, Recipe, evaluate, dataset_spec
    from space_defs import wrn
    arch = wrn(16, 4, **dataset_spec("digits").arch_fields())
    result = fit(arch, Recipe(method="trades", epochs=15), "digits", checkpoint_dir="runs/x")
    evaluate(result.best_model_path, attacks=("clean", "pgd20", "cw", "autoattack"))

CLIs: ``python -m trainer.fit``, ``python -m trainer.evaluate``, ``python -m trainer.bench``.
"""

import warnings

# ``python -m trainer.evaluate`` runs a module this package has already imported (for the
# ``evaluate`` function below); runpy's warning about that is harmless here.
warnings.filterwarnings("ignore", message=r"'trainer\.evaluate' found in sys\.modules", category=RuntimeWarning)

from .data import DATASETS, dataset_spec  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .loop import EpochReport, FitResult, fit  # noqa: E402
from .models import build_model  # noqa: E402
from .recipe import Recipe  # noqa: E402

__all__ = ["fit", "FitResult", "EpochReport", "Recipe", "evaluate", "build_model", "DATASETS",
           "dataset_spec"]
