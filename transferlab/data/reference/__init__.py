"""Reference data shipped with transferlab, with the published results to check fits against.

``chinchilla_svg_extracted.csv``: the 245 (model size, training FLOP, final loss) points that
Epoch AI extracted from Figure 4 of Hoffmann et al. 2022 for "Chinchilla Scaling: A replication
attempt" (Besiroglu et al. 2024; repository epoch-research/analyzing-chinchilla, file
data/svg_extracted_data.csv). Columns used: ``Model Size`` = N, ``Training FLOP`` = C, ``loss``;
tokens D = C / (6 N). Epoch's fits leave out the 5 highest-loss points.
"""

from __future__ import annotations

from pathlib import Path

CHINCHILLA_CSV = Path(__file__).with_name("chinchilla_svg_extracted.csv")

# Epoch AI's Huber fit (delta 1e-3, summed, L-BFGS from their grid), 5 highest-loss points dropped.
EPOCH_HUBER_FIT = {"A": 477.8, "B": 2143.9, "E": 1.817, "alpha": 0.3473, "beta": 0.3672}
# Epoch AI's 95% bootstrap intervals (4000 resamples) of their final fit.
EPOCH_CI95 = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415), "E": (1.769, 1.871)}
EPOCH_DROPPED = 5
