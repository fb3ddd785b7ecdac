"""Detection metrics, the Detections type and the detector judge, on hand-made boxes (no models)."""

from __future__ import annotations

import pytest
import torch

from onlymine.detection import Detections, DetectorJudge, score_detections
from onlymine.detection.detections import limit_side, nms_detections
from onlymine.detection.metrics import match, mean_average_precision, score_image

NAMES = ("person", "dog")


def dets(boxes, scores, labels) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32), scores, labels, NAMES)


CLEAN = dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.3], [0, 1, 0])


def test_identical_detections_all_survive_and_map_is_one() -> None:
    s = score_image(CLEAN, CLEAN, threshold=0.5)
    assert (s.n_clean, s.n_survived, s.new_false) == (2, 2, 0)
    m, m50 = mean_average_precision([CLEAN], [CLEAN], 0.5)
    assert m == pytest.approx(1.0) and m50 == pytest.approx(1.0)


def test_moved_box_wrong_class_and_new_box_are_counted() -> None:
    prot = dets([[0, 0, 10, 10], [30, 30, 50, 50], [20, 20, 40, 40], [70, 70, 90, 90]],
                [0.95, 0.9, 0.9, 0.7], [0, 1, 0, 1])
    # box 1 moved (IoU 1/7 < 0.5); the box at its old place has the wrong class; one box is new.
    s = score_image(CLEAN, prot, threshold=0.5)
    assert (s.n_clean, s.n_survived, s.n_protected, s.new_false) == (2, 1, 4, 3)
    assert s.survival == pytest.approx(0.5)
    total, rows = score_detections([CLEAN, CLEAN], [prot, CLEAN], 0.5)
    assert total.n_clean == 4 and total.n_survived == 3 and total.survival == pytest.approx(0.75)
    assert total.new_false_per_image == pytest.approx(1.5)
    assert total.map_50 is not None and total.map_50 < 1.0
    assert [r.n_survived for r in rows] == [1, 2]


def test_matching_is_one_to_one() -> None:
    clean = dets([[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.8], [0, 0])
    prot = dets([[0, 0, 10, 10]], [0.9], [0])
    assert match(clean, prot) == ([0], [0])
    assert score_image(clean, prot, 0.5).n_survived == 1


def test_low_scores_do_not_count_and_empty_inputs_work() -> None:
    weak = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.4, 0.4], [0, 1])
    assert score_image(CLEAN, weak, 0.5).n_survived == 0
    empty = Detections.empty(NAMES)
    assert score_image(empty, empty, 0.5).survival is None
    assert mean_average_precision([empty], [CLEAN], 0.5) == (None, None)


def test_dict_round_trip_and_judge_protocol() -> None:
    from onlymine.judges import Judge

    class Fake:
        name, task, names = "fake", "object", NAMES

        def detect(self, images):
            return [CLEAN for _ in images]

    judge = DetectorJudge(Fake(), threshold=0.5)
    assert isinstance(judge, Judge)
    pred = judge.predict([torch.zeros(3, 8, 8)])[0]
    back = judge.detections(pred)
    assert torch.allclose(back.boxes, CLEAN.boxes) and back.label_names() == ["person", "dog", "person"]
    assert judge.kept(pred, pred) is True
    assert judge.kept(pred, Detections.empty(NAMES).to_dict()) is False
    assert judge.correct(pred, "person;dog") is True
    assert judge.correct(pred, "person;cat") is True  # tags the detector does not know are ignored
    assert judge.correct(pred, "cat") is None
    assert judge.correct(Detections.empty(NAMES).to_dict(), "dog") is False
    assert judge.correct(pred, None) is None


def test_nms_clips_and_suppresses_per_class() -> None:
    boxes = torch.tensor([[-5.0, -5, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    d = nms_detections(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]), 0.5, (40, 40), NAMES)
    assert d.boxes.min() >= 0 and d.boxes.max() <= 40
    assert sorted(d.labels.tolist()) == [0, 1]  # same-class duplicate suppressed, out-of-image box dropped


def test_limit_side_scales_long_side() -> None:
    small, s = limit_side(torch.rand(3, 100, 400), 200)
    assert small.shape == (3, 50, 200) and s == pytest.approx(0.5)
    same, s1 = limit_side(torch.rand(3, 10, 20), 200)
    assert same.shape == (3, 10, 20) and s1 == 1.0
