"""A Helm chart's own files, read as Helm reads them, for every controller that handles
charts (the HelmChart builder, the helm controller):

- ``metadata`` of a chart directory or ``.tgz`` archive: ``Chart.yaml`` (with a v1 chart's
  ``requirements.yaml``), its scalars kept as text as Go reads them into Helm's structs;
  an archive's entry names are checked the way Helm checks them when it unpacks one, and
  every file read is bounded (``Limits``: Flux's ``--helm-chart-max-size`` and
  ``--helm-chart-file-max-size``). Anything wrong is a ``MetadataError``.
- ``merge_maps``: Helm's deep merge of values (maps key by key, anything else replaces).

Blocking: callers run these in worker threads.
"""

from __future__ import annotations

import gzip
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_FILE = "Chart.yaml"
REQUIREMENTS_FILE = "requirements.yaml"
_DRIVE_PATH = re.compile(r"^[a-zA-Z]:/")


@dataclass(frozen=True)
class Limits:
    #: largest chart archive (Flux --helm-chart-max-size)
    chart_size: int = 10 << 20
    #: largest single file read from a chart (Flux --helm-chart-file-max-size)
    file_size: int = 5 << 20



class MetadataError(ValueError):
    """Chart metadata that cannot be read or does not validate."""



def _yaml_mapping(data: bytes, what: str) -> dict[str, Any]:
    """A metadata file's mapping, its scalars read as Go reads them into Helm's string
    fields (``version: 1.10`` is ``"1.10"``)."""
    try:
        doc = next(iter(yaml.load_all(data, Loader=_TextLoader)), None)
    except yaml.YAMLError as exc:
        raise MetadataError(f"cannot load '{what}': {yaml_problem(exc)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise MetadataError(f"cannot load '{what}': not a mapping")
    return doc



def metadata_from_dir(directory: Path, limits: Limits, *, shown: str = "") -> dict[str, Any]:
    """Chart.yaml (with a v1 chart's requirements.yaml) of a chart directory; ``shown``
    names the directory in errors. Blocks."""
    chart_file = directory / CHART_FILE
    try:
        data = chart_file.read_bytes()
    except OSError as exc:
        where = f"{shown}/{CHART_FILE}" if shown else CHART_FILE
        raise MetadataError(f"open {where}: {(exc.strerror or str(exc)).lower()}") from None
    meta = _yaml_mapping(data, CHART_FILE)
    meta.setdefault("apiVersion", "v1")
    requirements = directory / REQUIREMENTS_FILE
    if requirements.exists():
        if requirements.is_dir():
            raise MetadataError(f"'{REQUIREMENTS_FILE}' is a directory")
        if requirements.stat().st_size > limits.file_size:
            raise MetadataError(f"size of '{REQUIREMENTS_FILE}' exceeds '{limits.file_size}' "
                                "bytes limit")
        meta.update(_yaml_mapping(requirements.read_bytes(), REQUIREMENTS_FILE))
    return meta



def archive_files(archive: Path, limits: Limits, wanted: Callable[[str], bool]
                  ) -> dict[str, bytes]:
    """The regular files of a chart archive whose path inside the chart directory
    ``wanted`` accepts (``Chart.yaml``, ``crds/x.yaml``), read from the stream without
    unpacking anything; every entry name is checked the way Helm checks them when it
    unpacks a chart, each file read is at most ``limits.file_size`` and the archive's
    entries at most ten times ``limits.chart_size`` all told. Blocks."""
    if archive.is_dir():
        raise MetadataError(f"'{archive.name}' is a directory")
    if archive.stat().st_size > limits.chart_size:
        raise MetadataError(f"size of chart '{archive.name}' exceeds '{limits.chart_size}' "
                            "bytes limit")
    found: dict[str, bytes] = {}
    budget = limits.chart_size * 10
    try:
        with gzip.open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if member.isdir() or member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                    continue
                budget -= member.size
                if budget < 0:
                    raise MetadataError(f"chart '{archive.name}' unpacks to more than "
                                        f"{limits.chart_size * 10} bytes")
                delimiter = "\\" if "\\" in member.name else "/"
                parts = member.name.split(delimiter)
                name = "/".join(parts[1:])
                if name.startswith("/"):
                    raise MetadataError("chart illegally contains absolute paths")
                name = posixpath.normpath(name) if name else "."
                if name == ".":
                    raise MetadataError("chart illegally contains content outside the base "
                                        f"directory: {member.name}")
                if name.startswith(".."):
                    raise MetadataError("chart illegally references parent directory")
                if _DRIVE_PATH.match(name):
                    raise MetadataError("chart contains illegally named files")
                if not member.isfile() or not wanted(name):
                    continue
                if member.size > limits.file_size:
                    raise MetadataError(f"size of '{member.name}' exceeds "
                                        f"'{limits.file_size}' bytes limit")
                extracted = tar.extractfile(member)
                found[name] = extracted.read() if extracted is not None else b""
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise MetadataError(str(exc) or type(exc).__name__) from None
    return found


def metadata_from_archive(archive: Path, limits: Limits) -> dict[str, Any]:
    """Chart.yaml (with requirements.yaml) of a chart archive. Blocks."""
    files = archive_files(archive, limits, lambda name: name in (CHART_FILE,
                                                                 REQUIREMENTS_FILE))
    if CHART_FILE not in files:
        raise MetadataError(f"no '{CHART_FILE}' found")
    meta = _yaml_mapping(files[CHART_FILE], CHART_FILE)
    if REQUIREMENTS_FILE in files:
        meta.update(_yaml_mapping(files[REQUIREMENTS_FILE], REQUIREMENTS_FILE))
    meta.setdefault("apiVersion", "v1")
    return meta


def metadata(path: Path, limits: Limits, *, shown: str = "") -> dict[str, Any]:
    """The metadata of a chart directory or archive; ``shown`` names it in errors.
    Blocks."""
    if path.is_dir():
        return metadata_from_dir(path, limits, shown=shown)
    if not path.exists():
        raise MetadataError(f"stat {shown or path.name}: no such file or directory")
    return metadata_from_archive(path, limits)



class _TextLoader(yaml.CSafeLoader):
    """YAML read into Helm's metadata structs, whose fields are text, booleans, lists and
    maps: numbers and timestamps keep their text."""


_NUMBERS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBERS]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}



def load_yaml(data: bytes) -> Any:
    """The first YAML document of a metadata file (``Chart.lock``) as Go reads it into
    Helm's structs (None when empty). Blocks."""
    return next(iter(yaml.load_all(data, Loader=_TextLoader)), None)



def yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"yaml: line {exc.problem_mark.line + 1}: {exc.problem or exc.context}"
    return f"yaml: {exc}"



def merge_maps(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's (and Flux's ``transform.MergeMaps``) deep merge: maps merge key by key,
    anything else in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge_maps(current, value)
        else:
            out[key] = value
    return out


__all__ = ["CHART_FILE", "REQUIREMENTS_FILE", "Limits", "MetadataError", "archive_files",
           "load_yaml",
           "merge_maps", "metadata", "metadata_from_archive", "metadata_from_dir",
           "yaml_problem"]
