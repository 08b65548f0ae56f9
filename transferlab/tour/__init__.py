"""`transferlab tour`: the chapter on transfer learning and generalization, run on this machine.

It sits above the studies (like ``sweep/``): every section runs studies through the registry, at the presets of
one scale (``mini``; ``micro`` in tests), reusing what the store already holds, and one offline page reads like
the chapter. The sections are one declaration, :data:`transferlab.tour.sections.SECTIONS`.

    from transferlab.tour import run_tour
    out = run_tour("runs", sections=["grok", "w2s"], scale="mini")   # {"page", "wall_s", "sections", ...}
"""

from transferlab.tour.run import run_tour
from transferlab.tour.sections import SECTIONS, scales, section_names

__all__ = ["SECTIONS", "run_tour", "scales", "section_names"]
