"""The gallery: enrolled, labelled reference embeddings, saved as one ``.npz`` file.

Each reference is a window embedding with three labels (style/genre, routine, group) plus the
reference video it came from (Tong's video level), its eight-count index within the routine
and, where a teacher rated it, a performance score. The gallery also records which encoder
produced the embeddings (edges with another encoder are refused) and the fitted parameters
of the classifier (calibration temperature) and of the Gaussian score head.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from cloud.index import VectorIndex, build_index, normalize
from cloud.records import Reference
from dancewire.errors import BadInputError

log = logging.getLogger(__name__)

FORMAT = "dancewire-gallery/1"
_REF_FIELDS = [f.name for f in fields(Reference)]


def input_of(ref_id: str) -> str:
    """The input a reference came from: its id up to the last '#' (enrolment writes
    ``video|folder/stem#dancer@t0``; a video or folder name may hold a '#' itself)."""
    return ref_id.rsplit("#", 1)[0]


def legacy_input(source: str) -> str:
    """What a gallery enrolled before ids named the folder called the input ``video|folder/stem``:
    the video alone when it was the stem, else ``video/stem``."""
    video, _, path = source.rpartition("|")
    stem = path.rsplit("/", 1)[-1]
    return video if video == stem else f"{video}/{stem}"


@dataclass
class RoutineTable:
    """One routine's eight-counts: mean embedding per phrase and the two reference cosines.

    ``self_cos[p]``: mean cosine between the teacher's windows of phrase p and that phrase's
    mean (1.0 with a single window) - how close "doing it like the teacher" gets.
    ``other_cos[p]``: mean cosine between phrase p's mean and the teacher's windows of the
    routine's other phrases - how close "doing a different part of the routine" gets.
    Both are window-to-mean cosines, the kind a live window's cosine to a phrase mean is
    (a mean-to-mean cosine is higher: averaging removes each window's own variation).
    """
    name: str
    phrases: np.ndarray          # (P,) phrase indices
    means: np.ndarray            # (P, D) L2-normalised
    self_cos: np.ndarray         # (P,)
    other_cos: np.ndarray        # (P,)


@dataclass
class Gallery:
    embeddings: np.ndarray                       # (N, D) float32, L2-normalised
    refs: list[Reference]
    encoder: dict = field(default_factory=dict)  # {"model_id": ..., "hash": ..., "dim": D}
    params: dict = field(default_factory=dict)   # fitted: {"temperature": T, "gaussian": {...}, "calibration": {...}}

    def __post_init__(self):
        if len(self.refs):
            e = np.asarray(self.embeddings, np.float32)
            if e.ndim != 2 or len(e) != len(self.refs):
                raise BadInputError(f"gallery: {len(e) if e.ndim else 0} embedding rows (shape {e.shape}) for "
                                    f"{len(self.refs)} references")
            if not np.isfinite(e).all():
                raise BadInputError("gallery: embeddings contain NaN or infinity")
            dim = int(self.encoder.get("dim", 0) or 0)
            if dim and e.shape[1] != dim:
                raise BadInputError(f"gallery: embeddings of dim {e.shape[1]}, its encoder says {dim}")
            e = np.ascontiguousarray(e)
            norms = np.linalg.norm(e, axis=1)
            self.embeddings = e if np.allclose(norms, 1.0, atol=1e-5) else normalize(e)
        else:
            self.embeddings = np.zeros((0, int(self.encoder.get("dim", 0) or 0)), np.float32)
        self._derive()

    # ----- derived arrays -------------------------------------------------------------------
    def _derive(self) -> None:
        self.styles = sorted({r.style for r in self.refs})
        code = {s: i for i, s in enumerate(self.styles)}
        self.style_idx = np.array([code[r.style] for r in self.refs], np.int64)
        self.videos = np.array([r.video or r.ref_id for r in self.refs], dtype=object)
        self.groups = np.array([r.group for r in self.refs], dtype=object)
        self.routines = np.array([r.routine for r in self.refs], dtype=object)
        self.video_group = {v: g for v, g in zip(self.videos, self.groups)}
        self.video_routine = {v: r for v, r in zip(self.videos, self.routines)}
        d = self.dim
        self.prototypes = np.zeros((len(self.styles), d), np.float32)
        self.counts = np.bincount(self.style_idx, minlength=len(self.styles)) if len(self.refs) else np.zeros(0, int)
        if len(self.refs):
            np.add.at(self.prototypes, self.style_idx, self.embeddings)
            self.prototypes = normalize(self.prototypes)
        self.routine_tables = self._routine_tables()
        self._index: VectorIndex | None = None

    def _routine_tables(self) -> dict[str, RoutineTable]:
        tables = {}
        for name in sorted({r for r in self.routines if r}):
            rows = [i for i, r in enumerate(self.refs) if r.routine == name and r.phrase >= 0]
            if not rows:
                continue
            phrases = np.array(sorted({self.refs[i].phrase for i in rows}))
            of = np.array([self.refs[i].phrase for i in rows])
            e_all = self.embeddings[rows]
            # "another eight-count": the routine's others, or, for a one-eight-count routine, the rest
            # of the gallery (0 when there is none)
            outside = self.embeddings[[i for i, r in enumerate(self.refs) if r.routine != name]]
            means, self_cos, other = [], [], []
            for p in phrases:
                e = e_all[of == p]
                m = normalize(e.mean(0))
                means.append(m)
                # leave-one-out: each repetition against the mean of the others (with itself in the mean,
                # the teacher's own spread looked smaller the fewer the repetitions); None for just one
                total = e.sum(0)
                self_cos.append(float(np.mean([normalize(total - x) @ x for x in e])) if len(e) > 1 else None)
                rest = e_all[of != p] if len(phrases) > 1 else outside
                other.append(float((rest @ m).mean()) if len(rest) else 0.0)
            known = [c for c in self_cos if c is not None]
            # an eight-count enrolled once: the routine's typical repetition spread (1.0 if none is known)
            self_cos = [c if c is not None else (float(np.mean(known)) if known else 1.0) for c in self_cos]
            tables[name] = RoutineTable(name, phrases, np.stack(means).astype(np.float32),
                                        np.array(self_cos, np.float32), np.array(other, np.float32))
        return tables

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 and self.embeddings.shape[1] else \
            int(self.encoder.get("dim", 0) or 0)

    def __len__(self) -> int:
        return len(self.refs)

    def index(self, *, exact_max: int = 20000, m: int = 16, ef_construction: int = 100, ef: int = 64,
              kind: str = "auto", cache: Path | None = None) -> VectorIndex:
        if self._index is None or (kind != "auto" and self._index.kind != kind):
            self._index = build_index(self.embeddings, exact_max=exact_max, m=m,
                                      ef_construction=ef_construction, ef=ef, kind=kind, cache=cache)
        return self._index

    def summary(self) -> dict:
        return {
            "references": len(self.refs), "dim": self.dim, "encoder": self.encoder,
            "styles": {s: int(c) for s, c in zip(self.styles, self.counts)},
            "routines": sorted({r for r in self.routines if r}),
            "groups": sorted({g for g in self.groups if g}),
            "videos": len(set(self.videos)),
            "scored": int(sum(1 for r in self.refs if math.isfinite(r.score))),
            "temperature": self.params.get("temperature", 1.0),
            "calibration": self.params.get("calibration"),
            "gaussian": bool(self.params.get("gaussian")),
        }

    # ----- editing ----------------------------------------------------------------------------
    def merged(self, refs: list[Reference], embeddings: np.ndarray, encoder: dict | None = None) -> "Gallery":
        """A new gallery with `refs` added. References from the same input (``input_of`` their id)
        replace that input's old ones, so a re-enrolled file never keeps stale windows beside new ones;
        so do that input's references in a gallery enrolled before ids named the folder
        (``legacy_input``). Embeddings of another encoder are refused, and so is either side naming
        no encoder while the other names one: there is nothing to say they are comparable."""
        if not refs:
            return Gallery(self.embeddings, list(self.refs), dict(self.encoder), dict(self.params))
        embeddings = np.asarray(embeddings, np.float32).reshape(len(refs), -1)
        if self.refs:
            mine, theirs = self.encoder.get("hash"), (encoder or {}).get("hash")
            if mine != theirs and (mine or theirs):
                raise BadInputError(f"encoder {(theirs or 'unnamed')[:12]} differs from the gallery's "
                                    f"{(mine or 'unnamed')[:12]}: embeddings of an unknown encoder cannot be "
                                    "compared with these; re-enrol everything with one encoder")
        if len(self.refs) and embeddings.shape[1] != self.dim:
            raise BadInputError(f"embedding dim {embeddings.shape[1]} != gallery dim {self.dim}")
        sources = {input_of(r.ref_id) for r in refs}
        sources |= {legacy_input(s) for s in sources if "|" in s}
        keep = [i for i, r in enumerate(self.refs) if input_of(r.ref_id) not in sources]
        all_refs = [self.refs[i] for i in keep] + list(refs)
        all_emb = np.concatenate([self.embeddings[keep], embeddings]) if len(keep) else embeddings
        enc = dict(self.encoder) if self.encoder else {}
        enc.update({k: v for k, v in (encoder or {}).items() if v})
        enc["dim"] = int(all_emb.shape[1]) if len(all_emb) else enc.get("dim", 0)
        return Gallery(all_emb, all_refs, enc, {})

    # ----- files ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = {name: [getattr(r, name) for r in self.refs] for name in _REF_FIELDS}
        cols["score"] = [None if not math.isfinite(s) else s for s in cols["score"]]
        meta = {"format": FORMAT, "encoder": self.encoder, "params": self.params, "refs": cols}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, embeddings=self.embeddings, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                emb = z["embeddings"]
                meta = json.loads(z["meta"].tobytes().decode())
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise BadInputError(f"cannot read gallery {path}: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BadInputError(f"{path} is not a {FORMAT} file")
        try:
            cols = meta["refs"]
            refs = []
            for i in range(len(cols["ref_id"])):
                kw = {name: cols[name][i] for name in _REF_FIELDS if name in cols}
                kw["score"] = math.nan if kw.get("score") is None else float(kw["score"])
                refs.append(Reference(**kw))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BadInputError(f"gallery {path}: its reference table is damaged ({type(exc).__name__}: {exc})") from None
        return cls(emb, refs, meta.get("encoder", {}), meta.get("params", {}))

    @classmethod
    def empty(cls, dim: int = 0) -> "Gallery":
        return cls(np.zeros((0, dim), np.float32), [], {"dim": dim}, {})

    @classmethod
    def load_or_empty(cls, path: Path) -> "Gallery":
        return cls.load(path) if Path(path).exists() else cls.empty()

