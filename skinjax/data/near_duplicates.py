"""Near-duplicate images: the same photograph re-encoded, resized, shifted, zoomed,
flipped, turned by quarter turns or recoloured.

Byte hashes miss all of these, and dermoscopy collections are full of them (the ISIC
2020 subset in ../shared/data re-publishes HAM10000 and ISIC 2017 images under other
names). Every stage works on grey images, so colour changes matter little.

1. **Candidates.** A perceptual hash: the 8x8 lowest DCT frequencies of a 32x32 grey
   image (pHash's coefficients, DC dropped, kept as real numbers and compared by
   cosine). A flip or quarter turn only changes signs and transposes these
   coefficients, so all 8 orientations cost nothing; centre crops at 1.12x and 1.26x
   cover zoom. Each image keeps its ``TOP_K`` most similar others above
   ``CANDIDATE_THRESHOLD``, found in blocks of one matrix product: N^2 multiply-adds at
   BLAS speed (about 2 s for 10,000 images, 1 minute for 70,000 on 2 cores) and
   O(N * TOP_K) memory.
2. **Confirmation** by phase correlation (whitened cross-power spectrum), maximised
   over shifts up to 10% of the side and relative zooms up to 1.26x: 1 for the same
   picture, 0.1-0.3 for different lesions. Whitening weighs every frequency alike, so
   a lesion's overall blob shape, which distinct lesions share, does not decide it.
   First on 32x32 thumbnails kept in memory; the few pairs that pass are read again
   and compared at 96x96, where skin texture tells apart two small dark dots on plain
   skin, which look alike at 32 pixels.

`clusters` turns confirmed pairs into groups (union-find).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from scipy import fft

from skinjax.data import file_cache, images

HASH_SIDE = 32  # grey image the DCT hash is taken from
HASH_FREQUENCIES = 8  # lowest DCT frequencies kept per axis
ZOOMS = (1.0, 1.06, 1.12, 1.19, 1.26)  # centre crops each thumbnail is also kept at
HASH_ZOOMS = ZOOMS[::2]  # the hash tolerates the steps between
COARSE_SIDE, FINE_SIDE = 32, 96  # thumbnail sides of the two confirmation steps
BAND = (4.0, 30.0)  # spatial frequencies compared, in cycles per image side
MAX_SHIFT = 0.1  # of the image side
CANDIDATE_THRESHOLD = 0.85
COARSE_THRESHOLD = 0.3
CONFIRM_THRESHOLD = 0.35
TOP_K = 8
# What the results depend on, besides the files: the key of their caches (`file_cache`).
SETTINGS = (HASH_SIDE, HASH_FREQUENCIES, ZOOMS, COARSE_SIDE, FINE_SIDE, BAND, MAX_SHIFT)
SETTINGS += (CANDIDATE_THRESHOLD, COARSE_THRESHOLD, CONFIRM_THRESHOLD, TOP_K)


@dataclasses.dataclass(frozen=True)
class Fingerprints:
    """What the stages need of each image, aligned with ``paths``."""

    paths: tuple[str, ...]
    hashes: np.ndarray  # (N, len(HASH_ZOOMS), 8, 63) float32 unit vectors
    thumbs: np.ndarray  # (N, len(ZOOMS), COARSE_SIDE, COARSE_SIDE) uint8 grey

    def __len__(self) -> int:
        return len(self.paths)


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Candidate pairs: i < j within one set, i in the first and j in the second across."""

    i: np.ndarray
    j: np.ndarray
    orientation: np.ndarray  # turns image i to match image j (see `orient`)
    candidate: np.ndarray  # hash cosine similarity
    similarity: np.ndarray  # phase correlation (96 px where the 32 px one passed)

    def __len__(self) -> int:
        return len(self.i)

    def confirmed(self, threshold: float = CONFIRM_THRESHOLD) -> Pairs:
        keep = self.similarity >= threshold
        return Pairs(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """One of the 8 flips and quarter turns of the last two axes (0 = unchanged)."""
    if orientation & 4:
        image = np.swapaxes(image, -1, -2)
    if orientation & 2:
        image = image[..., ::-1, :]
    if orientation & 1:
        image = image[..., :, ::-1]
    return image


def _inverse(orientation: np.ndarray) -> np.ndarray:
    """The orientations that undo these: after a transpose, the two flips trade axes."""
    swapped = ((orientation & 1) << 1) | ((orientation & 2) >> 1)
    return np.where(orientation & 4, 4 | swapped, orientation)


def _orient_dct(coefficients: np.ndarray) -> np.ndarray:
    """(..., F, F) DCT coefficients -> (..., 8, F, F), those of `orient(image, o)` per o.

    Flipping an axis negates its odd frequencies; transposing transposes them.
    """
    sign = (-1.0) ** np.arange(coefficients.shape[-1])
    out = []
    for o in range(8):
        c = np.swapaxes(coefficients, -1, -2) if o & 4 else coefficients
        c = c * sign[:, None] if o & 2 else c
        out.append(c * sign[None, :] if o & 1 else c)
    return np.stack(out, axis=-3)


def _crops(grey: Image.Image, side: int, zooms: Sequence[float]) -> np.ndarray:
    """The centre 1/zoom of the image, resized to side x side, for each zoom."""
    w, h = grey.size
    out = []
    for z in zooms:
        box = (w * (1 - 1 / z) / 2, h * (1 - 1 / z) / 2, w * (1 + 1 / z) / 2, h * (1 + 1 / z) / 2)
        out.append(np.asarray(grey.resize((side, side), Image.BILINEAR, box=box)))
    return np.stack(out)


def _grey(path: str, side: int) -> Image.Image:
    rgb = images.decode(images.read_file(path), path, convert_to_rgb=True, min_size=side)
    return Image.fromarray(rgb).convert("L")


def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    grey = _grey(path, COARSE_SIDE)
    return _crops(grey, HASH_SIDE, HASH_ZOOMS), _crops(grey, COARSE_SIDE, ZOOMS)


def _fine_thumbs(paths: Sequence[str], num_threads: int) -> np.ndarray:
    return np.stack(
        _map(lambda p: _crops(_grey(p, FINE_SIDE), FINE_SIDE, ZOOMS), paths, num_threads)
    )


def _map(fn, paths: Sequence[str], num_threads: int) -> list:
    with ThreadPoolExecutor(num_threads) as pool:  # decoding releases the GIL
        return list(pool.map(fn, paths))


def fingerprint(paths: Sequence[str], *, num_threads: int = 4, cache_dir: str = "") -> Fingerprints:
    """Reads every image once (JPEGs decoded at a reduced DCT scale), or takes what
    ``cache_dir`` (`file_cache`; "" for none) holds for it."""
    cache = cache_dir and file_cache.cache_file(cache_dir, "fingerprint", SETTINGS)
    read = file_cache.cached_map(
        _read, paths, lambda fn, ps: _map(fn, ps, num_threads), cache or None
    )
    if not read:
        shape = (0, len(HASH_ZOOMS), 8, HASH_FREQUENCIES**2 - 1)
        empty = np.zeros((0, len(ZOOMS), COARSE_SIDE, COARSE_SIDE), np.uint8)
        return Fingerprints((), np.zeros(shape, np.float32), empty)
    small = np.stack([s for s, _ in read]).astype(np.float32)
    thumbs = np.stack([t for _, t in read])
    f = HASH_FREQUENCIES
    coefficients = fft.dctn(small, axes=(-2, -1), norm="ortho")[..., :f, :f]
    hashes = _orient_dct(coefficients).reshape(*small.shape[:2], 8, f * f)[..., 1:]
    hashes /= np.maximum(np.linalg.norm(hashes, axis=-1, keepdims=True), 1e-6)
    return Fingerprints(tuple(paths), hashes.astype(np.float32), thumbs)


def _nearest(
    query: Fingerprints, index: Fingerprints, within: bool, threshold: float, top_k: int
) -> tuple[np.ndarray, ...]:
    """(i, j, orientation, cosine): each query image's top_k look-alikes in ``index``."""
    base = index.hashes[:, 0, 0]  # unzoomed, unturned: (M, D)
    views = query.hashes.reshape(len(query), -1, base.shape[-1])  # zooms x orientations
    k = min(top_k, len(base) - within)
    found = [(np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float32),)]
    block = 256
    best = np.empty((block, len(base)), np.float32)
    for start in range(0, len(query) if k > 0 else 0, block):
        q = views[start : start + block]
        best = best[: len(q)]
        np.matmul(q[:, 0], base.T, out=best)
        for v in range(1, q.shape[1]):  # one view at a time: the block stays in cache
            np.maximum(best, q[:, v] @ base.T, out=best)
        if within:
            best[np.arange(len(q)), start + np.arange(len(q))] = -1.0
        top = np.argpartition(-best, k - 1, axis=1)[:, :k]
        score = np.take_along_axis(best, top, axis=1)
        r, c = np.nonzero(score >= threshold)
        i, j = start + r, top[r, c]
        view = np.einsum("nvd,nd->nv", views[i], base[j]).argmax(axis=1)
        found.append((i, j, view % 8, score[r, c]))
    return tuple(np.concatenate(x) for x in zip(*found, strict=True))


def candidates(
    first: Fingerprints,
    second: Fingerprints | None = None,
    *,
    threshold: float = CANDIDATE_THRESHOLD,
    top_k: int = TOP_K,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, orientation, cosine) of look-alike pairs, each pair once.

    Within ``first`` (i < j), or across (i in first, j in second). Each side queries
    the other, since the zoomed views are on the query side only.
    """
    if second is None:
        i, j, o, s = _nearest(first, first, True, threshold, top_k)
        o = np.where(i > j, _inverse(o), o)  # as (min, max)
        i, j = np.minimum(i, j), np.maximum(i, j)
    else:
        forward = _nearest(first, second, False, threshold, top_k)
        i2, j2, o2, s2 = _nearest(second, first, False, threshold, top_k)
        i, j, o, s = (
            np.concatenate(x) for x in zip(forward, (j2, i2, _inverse(o2), s2), strict=True)
        )
    order = np.lexsort((-s, j, i))  # the better score of a pair found twice comes first
    i, j, o, s = i[order], j[order], o[order], s[order]
    first_of_pair = np.r_[True, (i[1:] != i[:-1]) | (j[1:] != j[:-1])][: len(i)]  # none: []
    i, j, o, s = (x[first_of_pair] for x in (i, j, o, s))
    return i.astype(np.int64), j.astype(np.int64), o.astype(np.int64), s.astype(np.float32)


@functools.cache
def _window_and_band(side: int) -> tuple[np.ndarray, np.ndarray]:
    window = np.outer(np.hanning(side), np.hanning(side)).astype(np.float32)
    cycles = side * np.hypot(np.fft.fftfreq(side)[:, None], np.fft.rfftfreq(side)[None, :])
    band = (cycles > BAND[0]) & (cycles < BAND[1])
    return window, (band / np.sqrt(2 * band.sum())).astype(np.float32)


def _whitened_spectra(thumbs: np.ndarray) -> np.ndarray:
    """Unit-magnitude spectra of Hann-windowed thumbnails, zero outside BAND."""
    window, band = _window_and_band(thumbs.shape[-1])
    x = thumbs.astype(np.float32)
    x -= x.mean(axis=(-2, -1), keepdims=True)
    x *= window
    spectra = fft.rfft2(x, workers=-1)
    spectra *= band / np.maximum(np.abs(spectra), 1e-6)
    return spectra


def phase_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, len(ZOOMS), S, S) x 2 -> (P,): best phase correlation over shifts and zooms.

    One side is always the unzoomed image, so relative zooms 1/1.26 to 1.26 are covered.
    """
    fa, fb = _whitened_spectra(a), _whitened_spectra(b)
    cross = np.concatenate([fa[:, :1] * np.conj(fb), fa[:, 1:] * np.conj(fb[:, :1])], axis=1)
    side = a.shape[-1]
    surface = fft.irfft2(cross, s=(side, side), workers=-1) * side * side
    shift = round(MAX_SHIFT * side)
    near = np.r_[0 : shift + 1, side - shift : side]
    return surface[..., near, :][..., near].reshape(len(a), -1).max(axis=1)


def _correlate(
    first: np.ndarray,
    second: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    orientation: np.ndarray,
    chunk: int = 512,
) -> np.ndarray:
    out = [np.zeros(0, np.float32)]
    for s in range(0, len(i), chunk):
        part = slice(s, s + chunk)
        a = np.stack([orient(first[k], o) for k, o in zip(i[part], orientation[part], strict=True)])
        out.append(phase_correlation(a, second[j[part]]).astype(np.float32))
    return np.concatenate(out)


def confirm(
    first: Fingerprints,
    second: Fingerprints,
    i: np.ndarray,
    j: np.ndarray,
    orientation: np.ndarray,
    *,
    num_threads: int = 4,
) -> np.ndarray:
    """Phase correlation of each pair (first[i] turned by orientation, second[j]).

    At 32 px for all pairs; at 96 px (images read again) for those reaching
    COARSE_THRESHOLD at 32 px.
    """
    similarity = _correlate(first.thumbs, second.thumbs, i, j, orientation)
    close = np.flatnonzero(similarity >= COARSE_THRESHOLD)
    if len(close):
        a, a_index = np.unique(i[close], return_inverse=True)
        b, b_index = np.unique(j[close], return_inverse=True)
        similarity[close] = _correlate(
            _fine_thumbs([first.paths[k] for k in a], num_threads),
            _fine_thumbs([second.paths[k] for k in b], num_threads),
            a_index,
            b_index,
            orientation[close],
        )
    return similarity


def find(first: Fingerprints, second: Fingerprints | None = None) -> Pairs:
    """Candidate pairs within ``first`` (or across first x second), both stages scored."""
    i, j, o, s = candidates(first, second)
    return Pairs(i, j, o, s, confirm(first, first if second is None else second, i, j, o))


def shared(paths: Sequence[str], others: Sequence[str]) -> np.ndarray:
    """Indices of ``paths`` that have a copy or near-duplicate among ``others``."""
    return np.unique(find(fingerprint(paths), fingerprint(others)).confirmed().i)


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over pairs of 0..n-1: a group id per item (its group's smallest item)."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(x) for x in range(n)], dtype=np.int64)
