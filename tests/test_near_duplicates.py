import io
import itertools
import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy import fft

from skinjax.data import near_duplicates as nd
from skinjax.data import synthetic


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _copies(image: Image.Image) -> dict[str, bytes]:
    """The edits a re-published dermoscopy image goes through, alone and together."""
    w, h = image.size
    shifted = image.crop((int(0.05 * w), int(0.05 * h), w, h)).resize((w, h))
    jitter = ImageEnhance.Color(
        ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.25)).enhance(0.75)
    ).enhance(1.4)
    combined = ImageEnhance.Color(
        image.crop((int(0.05 * w), 0, w, int(0.95 * h)))
        .resize((w // 2, h // 2))
        .transpose(Image.FLIP_TOP_BOTTOM)
    ).enhance(0.7)
    return {
        "quality40": _jpeg(image, 40),
        "resized": _jpeg(image.resize((w * 3 // 5, h * 3 // 5))),
        "shifted5": _jpeg(shifted),
        "flipped": _jpeg(image.transpose(Image.FLIP_LEFT_RIGHT)),
        "turned": _jpeg(image.transpose(Image.ROTATE_90)),
        "jittered": _jpeg(jitter),
        "all": _jpeg(combined, 40),
    }


@pytest.fixture(scope="module")
def sources(ham10000) -> list[str]:
    """30 distinct lesions: HAM10000 as staged here has one image per lesion."""
    folder = ham10000 / "images"
    return [str(folder / f) for f in sorted(os.listdir(folder))[:30]]


def test_edited_copies_cluster_with_their_source_and_nothing_else(sources, tmp_path):
    paths, origin = list(sources), list(range(len(sources)))
    for k, path in enumerate(sources[:8]):
        with Image.open(path) as image:
            for name, data in _copies(image.convert("RGB")).items():
                (tmp_path / f"{k}_{name}.jpg").write_bytes(data)
                paths.append(str(tmp_path / f"{k}_{name}.jpg"))
                origin.append(k)
    pairs = nd.find(nd.fingerprint(paths)).confirmed()
    groups = nd.clusters(len(paths), pairs.i, pairs.j)
    origin = np.array(origin)
    for k in range(8):
        copies = np.flatnonzero(origin == k)
        missed = [paths[c] for c in copies if groups[c] != groups[k]]
        assert not missed, missed
    # No group holds two different lesions: the 30 sources are all apart.
    assert len(set(groups[: len(sources)])) == len(sources)


def test_distinct_lesions_are_not_confirmed(sources):
    """Every pair of 30 lesions (435 pairs), confirmed without the candidate filter."""
    f = nd.fingerprint(sources)
    i, j = (np.array(x) for x in zip(*itertools.combinations(range(len(f)), 2), strict=True))
    best = np.max([nd.confirm(f, f, i, j, np.full(len(i), o)) for o in range(8)], axis=0)
    assert best.max() < nd.CONFIRM_THRESHOLD, best.max()


def test_orientations_of_the_hash_are_those_of_the_turned_image():
    image = np.random.default_rng(0).random((16, 16))
    coefficients = nd._orient_dct(fft.dctn(image, norm="ortho"))
    for o in range(8):
        turned = nd.orient(image, o)
        np.testing.assert_allclose(coefficients[o], fft.dctn(turned, norm="ortho"), atol=1e-12)
        undone = nd.orient(turned, int(nd._inverse(np.array(o))))
        np.testing.assert_array_equal(undone, image)


def test_clusters_are_transitive():
    groups = nd.clusters(6, np.array([0, 3, 4]), np.array([3, 4, 1]))
    assert groups.tolist() == [0, 0, 2, 0, 0, 5]


def test_shared_finds_the_copies_in_another_collection(sources, tmp_path):
    with Image.open(sources[3]) as image:
        (tmp_path / "copy.jpg").write_bytes(_copies(image.convert("RGB"))["all"])
    test = [sources[0], str(tmp_path / "copy.jpg"), sources[1]]
    assert nd.shared(test, sources[2:]).tolist() == [1]


def test_collections_with_no_look_alike_share_nothing(tmp_path):
    """No candidate pair at all (distinct synthetic lesions) is an empty answer, not an error."""
    synthetic.write(str(tmp_path), per_class=2)
    benign, malignant = (sorted(map(str, (tmp_path / c).iterdir())) for c in synthetic.CLASSES)
    assert len(nd.candidates(nd.fingerprint(benign), nd.fingerprint(malignant))[0]) == 0
    assert nd.shared(benign, malignant).tolist() == []
