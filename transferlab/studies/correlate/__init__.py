"""Cross-stage correlations (pretraining -> SFT), after "The Magic Correlations" (arXiv 2602.11217).

    from transferlab.studies import correlate
    result = correlate.run(correlate.CorrelateConfig(path="evals/"))
"""

from transferlab.studies.correlate.analysis import DEFAULT_CATEGORIES, category_of, correlations
from transferlab.studies.correlate.config import PRESETS, CorrelateConfig
from transferlab.studies.correlate.harness import CrossStageData
from transferlab.studies.correlate.run import analyze, load, run

__all__ = ["CorrelateConfig", "CrossStageData", "DEFAULT_CATEGORIES", "PRESETS", "analyze", "category_of",
           "correlations", "load", "run"]
