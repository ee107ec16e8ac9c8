"""SpikeGLX ``.meta`` files -> recording and probe records (no database).

:func:`read_meta` reads any SpikeGLX meta (probe ``imec`` streams and NI-DAQ
``nidq`` ones): ``key=value`` lines, kept as text, keys as written (``~imroTbl``
keeps its ``~``). :func:`read_probe` gives a probe stream's geometry and
electrode configuration through probeinterface's ``read_spikeglx``, which
needs only the meta (no companion ``.bin``) and handles Neuropixels 3A
(``imProbeOpt``), 3B and 2.0 metas; a NI-DAQ meta is refused as "not a probe".
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .ephys_errors import EphysFormatError

__all__ = ["ProbeGeometry", "SpikeGLXMeta", "read_meta", "read_probe"]

# Probe type names as the original pipeline's lab.ProbeType. A 3A meta has
# imProbeOpt (and imProbeSN); later ones have imDatPrb_type: 0 (and 1, as the
# original's "<= 1") for Neuropixels 1.0 3B, 21 / 24 for 2.0 single / multi shank.
PROBE_3A = "neuropixels 1.0 - 3A"
PROBE_TYPES = {0: "neuropixels 1.0 - 3B", 1: "neuropixels 1.0 - 3B", 21: "neuropixels 2.0 - SS",
               24: "neuropixels 2.0 - MS"}

_BAND = re.compile(r"\.(ap|lf)\.meta$")
_ELECTRODE = re.compile(r"e(\d+)$")  # probeinterface contact ids: 'e12', or 's1e12' on multi-shank probes


@dataclass(frozen=True)
class SpikeGLXMeta:
    """One SpikeGLX meta file."""

    path: Path
    fields: dict[str, str] = field(repr=False)  # every key=value as text
    stream: str  # typeThis: imec (a probe) | nidq | obx; metas before typeThis: nidq when niSampRate
    band: str | None  # ap | lf for probe streams (from the name, else snsApLfSy), else None
    sample_rate: float  # (Hz) imSampRate (probe) or niSampRate (NI-DAQ)
    n_saved_channels: int | None  # nSavedChans
    probe_type: str | None  # PROBE_3A / PROBE_TYPES; None when not a probe
    probe_serial: str | None  # imProbeSN (3A) or imDatPrb_sn (3B and later)
    probe_option: int | None  # 3A imProbeOpt
    created: datetime | None  # fileCreateTime (local time of the recording computer)
    file_size: int | None  # (bytes) fileSizeBytes of the companion .bin
    file_sha1: str | None  # fileSHA1 of the companion .bin (hex)
    trigger_margin: float | None  # (s) trgTTLMarginS: recording kept before each trigger

    @property
    def is_probe(self) -> bool:
        return self.stream == "imec"


@dataclass(frozen=True)
class ProbeGeometry:
    """The electrodes a probe recording saved, one row per saved channel in file order (sync left out)."""

    meta_path: Path
    probe_type: str  # as SpikeGLXMeta.probe_type
    part_number: str | None  # probeinterface's part number (NP1010 for 3A)
    serial: str | None
    electrodes: np.ndarray  # (n_channels,) int64 electrode index on its shank (0-based)
    channels: np.ndarray  # (n_channels,) int64 readout channel (0-based)
    shanks: np.ndarray  # (n_channels,) int64 shank (0-based)
    positions: np.ndarray  # (n_channels, 2) float64 (um) x across, y along the probe
    banks: np.ndarray | None  # (n_channels,) int64 bank of each electrode, when the imro table says
    imro_table: str  # ~imroTbl: the electrode configuration as SpikeGLX wrote it
    channel_map: str  # ~snsChanMap ('' when absent)


def read_meta(path: str | os.PathLike[str]) -> SpikeGLXMeta:
    """Read a SpikeGLX meta file; raises EphysFormatError naming the file and the problem."""
    path = Path(path)
    fields = _parse_lines(path, _read_text(path))
    stream = fields.get("typeThis") or ("nidq" if "niSampRate" in fields else "")
    if stream not in ("imec", "nidq", "obx"):
        raise EphysFormatError(path, f"unknown SpikeGLX stream typeThis={stream!r}")
    rate_key = "imSampRate" if stream == "imec" else "obSampRate" if stream == "obx" else "niSampRate"
    return SpikeGLXMeta(
        path=path,
        fields=fields,
        stream=stream,
        band=_band(path, fields) if stream == "imec" else None,
        sample_rate=_number(path, fields, rate_key, float, required=True),
        n_saved_channels=_number(path, fields, "nSavedChans", int),
        probe_type=_probe_type(path, fields) if stream == "imec" else None,
        probe_serial=(fields.get("imProbeSN") or fields.get("imDatPrb_sn") or None) if stream == "imec" else None,
        probe_option=_number(path, fields, "imProbeOpt", int),
        created=_created(fields),
        file_size=_number(path, fields, "fileSizeBytes", int),
        file_sha1=fields.get("fileSHA1") or None,
        trigger_margin=_number(path, fields, "trgTTLMarginS", float),
    )


def read_probe(meta: SpikeGLXMeta | str | os.PathLike[str]) -> ProbeGeometry:
    """A probe meta's geometry and electrode configuration (probeinterface); NI-DAQ metas are refused."""
    if not isinstance(meta, SpikeGLXMeta):
        meta = read_meta(meta)
    if not meta.is_probe:
        raise EphysFormatError(meta.path, f"a {meta.stream} meta, not a probe: it has no probe geometry")
    if "~imroTbl" not in meta.fields:
        raise EphysFormatError(meta.path, "probe meta without ~imroTbl: no electrode configuration")
    probe = _probeinterface_probe(meta)
    ids = [_ELECTRODE.search(str(contact)) for contact in probe.contact_ids]
    if not all(ids):
        raise EphysFormatError(meta.path, f"unexpected probeinterface contact ids {list(probe.contact_ids[:3])}")
    annotations = probe.contact_annotations or {}
    n = probe.get_contact_count()
    return ProbeGeometry(
        meta_path=meta.path,
        probe_type=meta.probe_type or "",
        part_number=probe.annotations.get("part_number"),
        serial=meta.probe_serial,
        electrodes=np.array([int(found[1]) for found in ids], dtype=np.int64),
        channels=np.asarray(annotations.get("channel_ids", np.arange(n)), dtype=np.int64),
        shanks=_shanks(probe.shank_ids, n),
        positions=np.asarray(probe.contact_positions, dtype=np.float64)[:, :2],
        banks=np.asarray(annotations["banks"], dtype=np.int64) if "banks" in annotations else None,
        imro_table=meta.fields["~imroTbl"],
        channel_map=meta.fields.get("~snsChanMap", ""),
    )


def _shanks(shank_ids, n: int) -> np.ndarray:
    """probeinterface leaves shank ids unset ('' or None) on single-shank probes."""
    if shank_ids is None or any(str(s) == "" for s in shank_ids):
        return np.zeros(n, dtype=np.int64)
    return np.asarray(shank_ids).astype(np.int64)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EphysFormatError(path, "file not found", transient=True) from None
    except IsADirectoryError:
        raise EphysFormatError(path, "is a directory, not a meta file") from None
    except OSError as exc:
        raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None
    if not data.strip():
        raise EphysFormatError(path, "empty meta file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if b"\0" in data:
            raise EphysFormatError(path, "not a SpikeGLX meta (binary data)") from None
        return data.decode("latin-1")  # userNotes typed on a Windows machine


def _parse_lines(path: Path, text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # old metas have blank lines
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise EphysFormatError(path, f"line {number} is not key=value: {line[:60]!r}")
        fields[key.strip()] = value.strip()
    return fields


def _number(path: Path, fields: dict[str, str], key: str, kind: type, *, required: bool = False):
    text = fields.get(key, "")
    if text == "":
        if required:
            raise EphysFormatError(path, f"no {key}")
        return None
    try:
        return kind(text)
    except ValueError:
        raise EphysFormatError(path, f"{key}={text!r} is not a number") from None


def _band(path: Path, fields: dict[str, str]) -> str | None:
    found = _BAND.search(path.name)
    if found:
        return found[1]
    counts = fields.get("snsApLfSy", "").split(",")
    if len(counts) == 3 and counts[0].strip().isdigit():
        return "ap" if int(counts[0]) > 0 else "lf" if int(counts[1]) > 0 else None
    return None


def _probe_type(path: Path, fields: dict[str, str]) -> str:
    if "imProbeOpt" in fields:
        return PROBE_3A
    code = _number(path, fields, "imDatPrb_type", int)
    if code is None:
        raise EphysFormatError(path, "probe meta with neither imProbeOpt (3A) nor imDatPrb_type")
    return PROBE_TYPES.get(code, f"neuropixels type {code}")


def _created(fields: dict[str, str]) -> datetime | None:
    try:
        return datetime.strptime(fields.get("fileCreateTime", ""), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


def _probeinterface_probe(meta: SpikeGLXMeta):
    """probeinterface's Probe of this meta; its assertion and parsing errors become EphysFormatError."""
    import probeinterface

    try:
        if _numbered_after_ap(meta):
            with tempfile.TemporaryDirectory() as tmp:
                return probeinterface.read_spikeglx(_renumbered_copy(meta, Path(tmp)))
        return probeinterface.read_spikeglx(meta.path)
    except Exception as exc:  # probeinterface checks its input with assert
        version = getattr(probeinterface, "__version__", "?")
        raise EphysFormatError(
            meta.path, f"probeinterface {version} cannot read the probe geometry ({type(exc).__name__}: {exc})"
        ) from None


def _saved_channels(meta: SpikeGLXMeta) -> list[int] | None:
    text = meta.fields.get("snsSaveChanSubset", "all")
    if text == "all":
        return None
    channels: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        channels.extend(range(int(first), int(last or first) + 1))
    return channels


def _numbered_after_ap(meta: SpikeGLXMeta) -> bool:
    """A 3A LF meta numbers its saved channels after the 384 AP ones (384:768), which
    probeinterface reads as no channel at all; they are renumbered from 0 for it."""
    if meta.band != "lf":
        return False
    channels = _saved_channels(meta)
    n_ap = int(meta.fields.get("acqApLfSy", "0,0,0").split(",")[0] or 0)
    return bool(channels) and n_ap > 0 and min(channels) >= n_ap


def _renumbered_copy(meta: SpikeGLXMeta, folder: Path) -> Path:
    n_ap = int(meta.fields["acqApLfSy"].split(",")[0])
    channels = [c - n_ap for c in _saved_channels(meta) or [] if c - n_ap < n_ap]  # the sync channel is dropped
    fields = {**meta.fields, "snsSaveChanSubset": ",".join(map(str, channels))}
    copy = folder / meta.path.name
    copy.write_text("".join(f"{key}={value}\n" for key, value in fields.items()), encoding="utf-8")
    return copy
