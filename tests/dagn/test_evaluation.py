from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from dagn import jpeg, metrics
from dagn.evaluation import evaluate, summarize


@pytest.fixture(scope="module")
def images():
    return [("astronaut", data.astronaut()[::4, ::4].copy()), ("camera", data.camera()[::4, ::4].copy())]


def test_identity_restore_has_no_gain_and_matches_the_metrics(images):
    result = evaluate(lambda x: x, images, [10, 50], dataset="t")
    assert len(result.scores) == 4
    for s in result.scores:
        assert s.psnr == s.jpeg_psnr and s.ssim == s.jpeg_ssim and s.psnr_b == s.jpeg_psnr_b
    truth = dict(images)["astronaut"]
    first = result.scores[0]
    assert first.jpeg_psnr == pytest.approx(metrics.psnr(jpeg.roundtrip(truth, 10), truth))
    summary = result.summary
    assert list(summary) == [10, 50]
    assert summary[10]["jpeg_psnr"] < summary[50]["jpeg_psnr"]
    assert summary[10]["images"] == 2


def test_gray_images_stay_gray_and_bad_restorers_are_caught(images):
    seen = []
    evaluate(lambda x: seen.append(x.shape) or x, images[1:], [30])
    assert seen == [images[1][1].shape]
    with pytest.raises(ValueError, match="restore returned"):
        evaluate(lambda x: x[:-1], images, [30])


def test_summary_means():
    from dagn.evaluation import ImageScore

    scores = [ImageScore("a", 10, 1, 0.1, 1, 2, 0.2, 2), ImageScore("b", 10, 3, 0.3, 3, 4, 0.4, 4)]
    assert summarize(scores)[10]["psnr"] == 3.0
    assert np.isclose(summarize(scores)[10]["jpeg_ssim"], 0.2)
