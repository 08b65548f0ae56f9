"""Layer 5: figures assembled into one self-contained HTML page (works offline), PNG for papers."""

from transferlab.report.html import Page

__all__ = ["Page"]
