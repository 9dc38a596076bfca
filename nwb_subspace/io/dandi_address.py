"""DANDI addresses: the resource identifiers of the ``dandi`` client, parsed without network.

With the ``dandi`` client installed (``pip install "nwb-subspace[dandi]"``) an address is
parsed by :func:`dandi.dandiarchive.parse_dandi_url` itself, so nwb-subspace accepts what
``dandi download`` accepts. Without it, :func:`parse_dandi_address` parses the same forms
for the public DANDI archive (instance ``dandi``) and its sandbox (``dandi-sandbox``) with
regular expressions that copy the client's (``dandi`` 0.81, ``dandi/dandiarchive.py``):

- ``DANDI:<dandiset id>[/<version>]`` (also ``DANDI-SANDBOX:``; upper case, as the client)
- ``dandi://<instance>/<dandiset id>[@<version>][/<path>]`` (``<path>`` ending in ``/``: a
  folder; else one asset)
- ``https://dandiarchive.org/[#/]dandiset/<dandiset id>[/<version>][/files[?location=<path>]]``
  (``location`` names a folder)
- ``https://api.dandiarchive.org/api/dandisets/<dandiset id>[/versions[/<version>]]``
- ``https://api.dandiarchive.org/api/dandisets/<dandiset id>/versions/<version>/assets/``
  ``?path=<path prefix>`` or ``?glob=<pattern>``
- ``https://api.dandiarchive.org/api/[dandisets/<id>/versions/<version>/]assets/<asset id>``
  ``[/download]``

(``https://sandbox.dandiarchive.org/`` and ``https://api.sandbox.dandiarchive.org/api/`` for
the sandbox). ``<dandiset id>`` is six digits, ``<version>`` is ``draft`` or a published
version ``X.Y.Z``. The client's other forms (``https://gui.dandiarchive.org/...``,
``https://identifiers.org/DANDI:...``, other archive instances, any other URL it resolves by
following redirects) need the client: :class:`DandiClientMissing` says so.

The forms of nwb-subspace 0.x that the client rejects (``dandi://000123/PATH``,
``DANDI:000123/PATH``, ``DANDI:000123@draft``, lower-case ``dandi:000123``) are refused with
the address to write instead.

Nothing here contacts the archive (the client's own parser asks the archive's ``/info/``
endpoint which server version it runs and falls back to its built-in URLs when offline).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = [
    "DANDI_KINDS",
    "DandiAddress",
    "DandiClientMissing",
    "dandi_client_installed",
    "is_dandi_address",
    "parse_dandi_address",
]

INSTALL_HINT = 'pip install "nwb-subspace[dandi]" (or pip install dandi)'

DANDI_KINDS = ("dandiset", "asset", "folder", "prefix", "glob", "asset_id")
"""What an address names: a whole dandiset, one asset by path, a folder (path ending in
``/``), assets by path prefix, assets by glob pattern, or one asset by its ID."""

_ID = r"(?P<id>[0-9]{6})"
_VERSION = r"(?P<version>[0-9]+\.[0-9]+\.[0-9]+|draft)"
_SERVERS = {
    "https://dandiarchive.org/": "dandi",
    "https://api.dandiarchive.org/api/": "dandi",
    "https://sandbox.dandiarchive.org/": "dandi-sandbox",
    "https://api.sandbox.dandiarchive.org/api/": "dandi-sandbox",
}
_SERVER = "(?P<server>" + "|".join(re.escape(s) for s in _SERVERS) + ")"
_ASSETS = rf"{_SERVER}dandisets/{_ID}/versions/{_VERSION}/assets/"
_FORMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?P<inst>DANDI|DANDI-SANDBOX):{_ID}(/{_VERSION})?"), "id"),
    (
        re.compile(
            rf"{_SERVER}(#/)?dandiset/{_ID}(/{_VERSION})?"
            r"(/(files(\?location=(?P<folder>.*)?)?)?)?"
        ),
        "gui",
    ),
    (re.compile(rf"{_SERVER}dandisets/{_ID}(/(versions(/{_VERSION})?/?)?)?"), "api"),
    (re.compile(rf"{_SERVER}assets/(?P<asset>[^?/]+)(/(download/?)?)?"), "api"),
    (re.compile(rf"{_ASSETS}(?P<asset>[^?/]+)(/(download/?)?)?"), "api"),
    (re.compile(rf"{_ASSETS}\?path=(?P<path>[^&]+)"), "api"),
    (re.compile(rf"{_ASSETS}\?glob=(?P<glob>[^&]+)"), "api"),
    (
        re.compile(rf"dandi://(?P<inst>[-\w._]+)/{_ID}(@{_VERSION})?(/(?P<location>.*)?)?"),
        "dandi",
    ),
]
_INSTANCES = {"dandi", "dandi-sandbox"}
_LEGACY = re.compile(
    r"(?:dandi://|dandi:)(?P<id>\d{6})(?:@(?P<version>[\w.\-]+))?(?:/(?P<path>.*))?",
    re.IGNORECASE,
)
_ID_FORM = re.compile(r"[A-Z][A-Z0-9-]*:[0-9]{6}([/@].*)?")
_OTHER_INSTANCE_ID = re.compile(r"[A-Z][A-Z0-9-]*:[0-9]{6}(/([0-9]+\.[0-9]+\.[0-9]+|draft))?")
_ZARR = (".zarr", ".ngff")


class DandiClientMissing(ImportError, ValueError):
    """A DANDI address that only the optional ``dandi`` client can handle (resolving any
    address, or parsing a form that needs the network), and the client is not installed."""


@dataclass(frozen=True)
class DandiAddress:
    """A parsed DANDI address.

    Attributes
    ----------
    kind : str
        One of :data:`DANDI_KINDS`.
    instance : str
        The archive instance (``"dandi"``, ``"dandi-sandbox"``, ...).
    dandiset_id : str or None
        Six digits; None only for an asset ID URL without the dandiset
        (``https://api.dandiarchive.org/api/assets/<id>/``).
    version : str or None
        ``"draft"`` or a published version; None: the client's default (the latest
        published version if there is one, else the draft).
    path : str or None
        The asset path (``kind == "asset"``), folder (ends in ``/``), path prefix or glob
        pattern; None for a dandiset or an asset ID.
    asset_id : str or None
        The asset's ID (``kind == "asset_id"``).
    """

    kind: str
    instance: str
    dandiset_id: str | None
    version: str | None = None
    path: str | None = None
    asset_id: str | None = None

    @property
    def single_asset(self) -> bool:
        """Whether the address names one asset (by path or ID) rather than several."""
        return self.kind in ("asset", "asset_id")

    @property
    def file_name(self) -> str | None:
        """The asset's file name (an asset by path), else None."""
        return posixpath.basename(self.path) if self.kind == "asset" and self.path else None


def dandi_client_installed() -> bool:
    """Whether the optional ``dandi`` client can be imported."""
    try:
        import dandi.dandiarchive  # noqa: F401
    except ImportError:
        return False
    return True


def is_dandi_address(text: Any) -> bool:
    """Whether ``text`` is meant as a DANDI address (not whether it is a valid one).

    True for ``dandi://...``, ``DANDI:...`` (any case) and other ``<INSTANCE>:<6 digits>``
    identifiers, and for ``https://`` URLs on ``dandiarchive.org`` hosts,
    ``identifiers.org/DANDI:...`` and the archive's netlify previews, except the direct
    download links ``.../assets/<asset id>/download/``: those are plain file URLs that
    work without the client.
    """
    if not isinstance(text, str):
        return False
    low = text.strip().lower()
    if low.startswith(("dandi://", "dandi:")) or _ID_FORM.fullmatch(text.strip()):
        return True
    if not low.startswith(("http://", "https://")):
        return False
    parsed = urlparse(low)
    host = parsed.hostname or ""
    if host == "identifiers.org":
        return parsed.path.startswith("/dandi:")
    if host.endswith("dandiarchive-org.netlify.app"):
        return True
    if host != "dandiarchive.org" and not host.endswith(".dandiarchive.org"):
        return False
    return not re.search(r"/assets/[^/?]+/download/?$", parsed.path)


def parse_dandi_address(text: str, *, client: bool | None = None) -> DandiAddress:
    """Parse a DANDI address, with the ``dandi`` client when it is installed.

    Parameters
    ----------
    text : str
        The address (see the module docstring for the accepted forms).
    client : bool, optional
        Force (True) or avoid (False) the ``dandi`` client; default: use it when installed.

    Raises
    ------
    ValueError
        Not an address the client accepts (for an old nwb-subspace form, the message gives
        the address to write instead).
    DandiClientMissing
        A form only the client parses (it follows redirects), and it is not installed.
    """
    if not isinstance(text, str):
        raise TypeError(f"a DANDI address is a string; got {type(text).__name__}")
    text = text.strip()
    use_client = dandi_client_installed() if client is None else client
    if use_client:
        return _parse_with_client(text)
    return _parse_without_client(text)


def _refuse(text: str, known: str) -> ValueError:
    legacy = _LEGACY.fullmatch(text)
    if legacy is not None:
        ident, version, path = legacy["id"], legacy["version"], legacy["path"]
        if path:
            at = f"@{version}" if version else ""
            fix = f"dandi://dandi/{ident}{at}/{path}"
        else:
            fix = f"DANDI:{ident}" + (f"/{version}" if version else "")
        return ValueError(f"{text!r} is not a DANDI address the dandi client accepts; write {fix}")
    return ValueError(f"{text!r} is not a DANDI address; {known}")


_KNOWN = (
    "use DANDI:<dandiset id>[/<version>], dandi://dandi/<dandiset id>[@<version>]/<path> or "
    "https://dandiarchive.org/dandiset/<dandiset id>[/<version>] (version: draft or X.Y.Z)"
)


def _parse_without_client(text: str) -> DandiAddress:
    for regex, form in _FORMS:
        m = regex.fullmatch(text)
        if m is None:
            continue
        groups = m.groupdict()
        if form == "dandi":
            instance = groups["inst"].lower()
            if instance not in _INSTANCES:
                raise DandiClientMissing(
                    f"{text!r}: the archive instance {groups['inst']!r} is known only to the "
                    f"dandi client; {INSTALL_HINT}"
                )
        elif form == "id":
            instance = groups["inst"].lower()
        else:
            instance = _SERVERS[groups["server"]]
        return _address(text, instance, groups)
    if _needs_client(text):
        raise DandiClientMissing(
            f"{text!r}: this form of DANDI address is resolved by the dandi client (it follows "
            f"the archive's redirects, or knows the archive instance); {INSTALL_HINT}"
        )
    raise _refuse(text, _KNOWN)


def _needs_client(text: str) -> bool:
    """A form the client accepts through the network (redirects) or other instances."""
    if _OTHER_INSTANCE_ID.fullmatch(text):
        return not text.startswith(("DANDI:", "DANDI-SANDBOX:"))
    return text.lower().startswith(("http://", "https://")) and is_dandi_address(text)


def _address(text: str, instance: str, groups: dict[str, Any]) -> DandiAddress:
    ident, version = groups.get("id"), groups.get("version")
    if groups.get("asset"):
        return DandiAddress("asset_id", instance, ident, version, asset_id=groups["asset"])
    if groups.get("path"):
        return DandiAddress("prefix", instance, ident, version, path=groups["path"])
    if groups.get("glob"):
        return DandiAddress("glob", instance, ident, version, path=groups["glob"])
    if groups.get("folder") is not None:
        location = unquote(groups["folder"])
        location = location if location.endswith("/") else location + "/"
    else:
        location = unquote(groups.get("location") or "")
    location = location.lstrip("/")
    if not location:
        return DandiAddress("dandiset", instance, ident, version)
    if location.endswith("/"):
        return DandiAddress("folder", instance, ident, version, path=location)
    _refuse_zarr_entry(text, location)
    return DandiAddress("asset", instance, ident, version, path=location)


def _refuse_zarr_entry(text: str, location: str) -> None:
    parts = [p for p in location.split("/") if p]
    for i, part in enumerate(parts[:-1]):
        if part.endswith(_ZARR):
            raise ValueError(
                f"{text!r} points inside the Zarr asset {'/'.join(parts[: i + 1])}; give the "
                "asset itself"
            )


def _parse_with_client(text: str) -> DandiAddress:
    from dandi import dandiarchive as da
    from dandi.exceptions import UnknownURLError

    try:
        parsed = da.parse_dandi_url(text)
    except UnknownURLError:
        raise _refuse(text, _KNOWN) from None
    kinds = [
        (da.DandisetURL, "dandiset"),
        (da.AssetItemURL, "asset"),
        (da.AssetFolderURL, "folder"),
        (da.AssetPathPrefixURL, "prefix"),
        (da.AssetGlobURL, "glob"),
        (da.AssetIDURL, "asset_id"),
        (da.BaseAssetIDURL, "asset_id"),
    ]
    kind = next((k for cls, k in kinds if type(parsed) is cls), None)
    if kind is None:  # AssetZarrEntryURL, or a type of a newer client
        raise ValueError(
            f"{text!r} names a {type(parsed).__name__}, not an NWB asset or a set of them"
        )
    return DandiAddress(
        kind,
        parsed.instance.name,
        parsed.dandiset_id,
        parsed.version_id,
        path=getattr(parsed, "path", None),
        asset_id=getattr(parsed, "asset_id", None),
    )
