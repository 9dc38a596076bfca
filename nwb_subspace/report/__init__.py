"""The HTML report of a stored run and its figures.

- :mod:`~nwb_subspace.report.html`: :func:`make_report` (reads a stored run, writes
  ``report.html`` and ``figures/``);
- :mod:`~nwb_subspace.report.figures`, :mod:`~nwb_subspace.report.plots`,
  :mod:`~nwb_subspace.report.plots_site`: the figures.
"""

from nwb_subspace.report.html import make_report

__all__ = ["make_report"]
