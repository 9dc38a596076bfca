"""DANDI-valid names for the files nwb-subspace derives from a source.

A new file is written when the source cannot be changed (read-only, remote) and by
``nwb-subspace batch``. Its name follows the DANDI/BIDS layout so that ``dandi validate``
and ``dandi upload`` accept it next to its source:

- a source named like a DANDI asset, ``sub-<label>[_ses-<label>][_<key>-<label>...]
  [_<modality>].nwb`` (``sub-01_ses-2_ecephys.nwb``, ``sub-A_ses-B_behavior+ecephys.nwb``),
  gets a ``desc-subspace`` entity after its other entities:
  ``sub-01_ses-2_desc-subspace_ecephys.nwb``. A source that has a ``desc-<label>`` already
  keeps it in place, with ``Subspace`` appended to the label
  (``sub-01_desc-raw_ecephys.nwb`` -> ``sub-01_desc-rawSubspace_ecephys.nwb``);
- any other name gets ``_desc-subspace`` appended to its stem (``session.nwb`` ->
  ``session_desc-subspace.nwb``).

A batch adds its per-source key to the label (``desc-subspace1a2b3c4d``): DANDI and BIDS
labels may not hold ``_`` (the entity separator), and BIDS labels are alphanumeric, so the
key is joined without a separator. The extension is ``.nwb``, or ``.nwb.zarr`` for a Zarr
source (``.zarr`` / ``.nwb.zarr``); ``.h5`` / ``.hdf5`` sources get ``.nwb``.

The label and modality rules are those of ``dandi validate`` (``dandi/organize.py`` of the
``dandi`` client, 0.81: labels are any characters but ``_ * \\ / < > : | " ' ? % @ ; .``;
the modality suffix is lower-case letters joined by ``+``). ``dandi validate`` additionally
requires that a file sits in a ``sub-<label>/`` folder of the dandiset named after its
subject, which holds for an output written next to its source.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import PurePath
from urllib.parse import unquote, urlparse

from nwb_subspace.io.dandi_address import is_dandi_address, parse_dandi_address

__all__ = ["DESC_LABEL", "derived_output_name", "is_dandi_like", "source_file_name"]

DESC_LABEL = "subspace"
"""The ``desc`` label of a derived output (with a batch key appended in a batch)."""

_LABEL = r"[^_*\\/<>:|\"'?%@;.]+"
_SUB = re.compile(rf"sub-{_LABEL}")
_ENTITY = re.compile(rf"(?P<key>[A-Za-z0-9]+)-(?P<label>{_LABEL})")
_MODALITY = re.compile(r"[a-z]+(\+[a-z]+)*")
_KEY = re.compile(r"[A-Za-z0-9]+")
_EXTENSIONS = {
    ".nwb.zarr": ".nwb.zarr",
    ".nwb.h5": ".nwb",
    ".nwb.hdf5": ".nwb",
    ".nwb": ".nwb",
    ".zarr": ".nwb.zarr",
    ".hdf5": ".nwb",
    ".h5": ".nwb",
}
_OUT_EXTENSIONS = (".nwb", ".nwb.zarr")


def source_file_name(source: str | os.PathLike) -> str:
    """The file name a source is known by.

    A local path's name; for an HTTP(S) URL the last part of its path (percent-decoded);
    for a DANDI address naming an asset by path, the asset's file name, and for one naming
    an asset by ID, the ID. ``remote.nwb`` when a URL or DANDI address names no file.
    """
    text = os.fspath(source)
    if isinstance(text, bytes):
        raise TypeError("give the source as str or path-like, not bytes")
    remote = not isinstance(source, os.PathLike) and (
        is_dandi_address(text) or text.lower().startswith(("http://", "https://"))
    )
    if remote:
        try:
            address = parse_dandi_address(text, client=False)
        except ValueError:  # a form only the client parses (its name is then unknown here)
            address = None
        if address is not None and address.file_name:
            return address.file_name
        if address is not None and address.asset_id:
            return address.asset_id
    if remote and not text.lower().startswith(("http://", "https://")):
        return "remote.nwb"  # a DANDI address of a dandiset, folder or a client-only form
    if remote:
        name = unquote(posixpath.basename(urlparse(text).path.rstrip("/")))
        return name or "remote.nwb"
    return PurePath(text.rstrip("/\\") or text).name


def _split_extension(name: str) -> tuple[str, str]:
    """(stem, output extension) of a file name."""
    low = name.lower()
    for ext, out in _EXTENSIONS.items():
        if low.endswith(ext):
            return name[: -len(ext)], out
    return name, ".nwb"


def _bids_parts(stem: str) -> list[str] | None:
    """The ``_``-separated parts of a DANDI/BIDS-like stem, or None if it is not one."""
    parts = stem.split("_")
    if not _SUB.fullmatch(parts[0]):
        return None
    for i, part in enumerate(parts[1:], start=1):
        last = i == len(parts) - 1
        if not (_ENTITY.fullmatch(part) or (last and _MODALITY.fullmatch(part))):
            return None
    return parts


def is_dandi_like(name: str) -> bool:
    """Whether a file name follows the DANDI layout ``sub-<label>[_<key>-<label>...]
    [_<modality>].nwb`` (extension ``.nwb``, ``.nwb.zarr``, ``.h5`` or ``.zarr``)."""
    stem, _ = _split_extension(PurePath(name).name)
    return _bids_parts(stem) is not None


def derived_output_name(
    source: str | os.PathLike, *, key: str | None = None, extension: str | None = None
) -> str:
    """The file name of a new file derived from ``source`` (DANDI-valid when the source's is).

    Parameters
    ----------
    source : str or path-like
        A local path, HTTP(S) URL or DANDI address (named by :func:`source_file_name`).
    key : str, optional
        Letters and digits appended to the ``desc`` label (``desc-subspace<key>``), e.g. a
        batch's per-source key.
    extension : str, optional
        ``".nwb"`` or ``".nwb.zarr"``; default: ``.nwb.zarr`` for a Zarr source, else ``.nwb``.

    Returns
    -------
    str
        ``sub-01_ses-2_desc-subspace_ecephys.nwb`` for ``sub-01_ses-2_ecephys.nwb``;
        ``<stem>_desc-subspace.nwb`` for a name that is not DANDI-like (see the module
        docstring for the rules).

    Raises
    ------
    ValueError
        A ``key`` that is not alphanumeric, or an unknown ``extension``.
    """
    if key is not None and not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise ValueError(f"key must be letters and digits only (a DANDI label); got {key!r}")
    if extension is not None and extension not in _OUT_EXTENSIONS:
        raise ValueError(f"extension must be one of {_OUT_EXTENSIONS}; got {extension!r}")
    stem, ext = _split_extension(source_file_name(source))
    stem = stem or "session"
    label = DESC_LABEL + (key or "")
    parts = _bids_parts(stem)
    if parts is None:
        new_stem = f"{stem}_desc-{label}"
    else:
        desc = next((i for i, p in enumerate(parts) if p.startswith("desc-")), None)
        if desc is not None:
            parts[desc] = f"{parts[desc]}{label[0].upper()}{label[1:]}"
        elif len(parts) > 1 and _MODALITY.fullmatch(parts[-1]):
            parts.insert(len(parts) - 1, f"desc-{label}")
        else:
            parts.append(f"desc-{label}")
        new_stem = "_".join(parts)
    return new_stem + (extension or ext)
