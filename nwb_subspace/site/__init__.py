"""Site and group statistics: what the units recorded together share.

- :mod:`~nwb_subspace.site.step`: the per-session site step (units grouped into sites, each
  site analysed, tables built);
- :mod:`~nwb_subspace.site.subspace`: a site's shared dSTRF subspace, per-unit variance
  fractions and pairwise similarity, against nulls;
- :mod:`~nwb_subspace.site.tiling`: how the units' high-activity regions tile the site plane;
- :mod:`~nwb_subspace.site.groups`: narrow vs broad units, layers and sites compared;
- :mod:`~nwb_subspace.site.tables`: the tidy per-unit / per-site / statistics tables.
"""
