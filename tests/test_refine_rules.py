"""The coarse + prediction rule on hand-made 1-4 class arrays with known answers."""
import numpy as np
import pytest

from segcal.refine.rules import RefineRule, confident_pixels, propose, refine_mask, rule_text

IGN = 255


def binary_probs(p_fg: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - p_fg, p_fg]).astype(np.float32)


@pytest.fixture
def one_box():
    """A 3x3 coarse box in a 5x5 image; the model is sure about a plus shape, and about a corner outside."""
    coarse = np.zeros((5, 5), dtype=np.int64)
    coarse[1:4, 1:4] = 1
    p = np.full((5, 5), 0.1)
    p[2, 1:4] = 0.95
    p[1:4, 2] = 0.95
    p[0, 0] = 0.99  # outside the box
    p[1, 1] = 0.6  # inside, above threshold but not confident
    return coarse, binary_probs(p)


def test_restricted_to_coarse_region(one_box):
    coarse, probs = one_box
    hybrid, stats = refine_mask(coarse, probs, RefineRule())
    expected = np.zeros((5, 5), dtype=np.int64)
    expected[2, 1:4] = 1
    expected[1:4, 2] = 1
    expected[1, 1] = 1
    assert np.array_equal(hybrid, expected)
    assert stats == {"pixels": 25, "coarse_foreground": 9, "foreground": 6, "changed": 3, "uncertain": 0,
                     "components": 1, "fallback_components": 0, "unknown": 0}


def test_unrestricted_trusts_model_everywhere(one_box):
    coarse, probs = one_box
    hybrid, _ = refine_mask(coarse, probs, RefineRule(restrict=False))
    assert hybrid[0, 0] == 1 and hybrid.sum() == 7


def test_threshold(one_box):
    coarse, probs = one_box
    hybrid, _ = refine_mask(coarse, probs, RefineRule(threshold=0.7))
    assert hybrid[1, 1] == 0 and hybrid.sum() == 5


def test_fallback_to_coarse_where_model_finds_nothing():
    coarse = np.zeros((4, 8), dtype=np.int64)
    coarse[:, :3] = 1  # box A: model finds 1 of 12 pixels
    coarse[:, 5:] = 1  # box B: model finds nothing
    p = np.zeros((4, 8))
    p[0, 0] = 0.9
    probs = binary_probs(p)
    hybrid, stats = refine_mask(coarse, probs, RefineRule())
    assert hybrid[:, 5:].all() and hybrid[:, :3].sum() == 1
    assert stats["components"] == 2 and stats["fallback_components"] == 1
    hybrid, stats = refine_mask(coarse, probs, RefineRule(min_found=0.1))  # 1/12 < 10%: A falls back too
    assert np.array_equal(hybrid, coarse) and stats["fallback_components"] == 2
    hybrid, _ = refine_mask(coarse, probs, RefineRule(fallback="ignore"))
    assert (hybrid[:, 5:] == IGN).all() and hybrid[0, 0] == 1 and (hybrid[:, 3:5] == 0).all()


def test_probability_confidence_marks_unsure_pixels_inside_boxes_only(one_box):
    coarse, probs = one_box
    probs[:, 4, 4] = [0.5, 0.5]  # outside the box: coarse background is trusted
    hybrid, stats = refine_mask(coarse, probs, RefineRule(confidence="probability", min_confidence=0.9))
    assert hybrid[1, 1] == IGN and hybrid[4, 4] == 0
    assert stats["uncertain"] == 1 and (hybrid == IGN).sum() == 1
    # p(background) = 0.9 at the box's other pixels: kept at 0.9, ignored at 0.95
    hybrid, _ = refine_mask(coarse, probs, RefineRule(confidence="probability", min_confidence=0.95))
    assert (hybrid == IGN).sum() == 4  # 0.6 pixel + three background pixels of the box with p_bg = 0.9


def test_conformal_singletons(one_box):
    coarse, probs = one_box
    sets = np.zeros((2, 5, 5), dtype=bool)
    sets[0] = probs[0] > 0.5
    sets[1] = probs[1] > 0.5
    sets[:, 1, 1] = True  # {0, 1}: ambiguous
    sets[:, 3, 3] = [False, True]  # singleton {1} but the label is 0 (p = 0.1)
    hybrid, stats = refine_mask(coarse, probs, RefineRule(confidence="conformal"), sets=sets)
    assert hybrid[1, 1] == IGN and hybrid[3, 3] == IGN and stats["uncertain"] == 2
    with pytest.raises(ValueError, match="sets"):
        refine_mask(coarse, probs, RefineRule(confidence="conformal"))


def test_multiclass_restricted_choice():
    coarse = np.array([[2, 2, 0], [1, 1, 0]])
    probs = np.zeros((3, 2, 3), dtype=np.float32)
    probs[:, 0, 0] = [0.1, 0.3, 0.6]  # class 2 box, p_2 = 0.6 -> 2
    probs[:, 0, 1] = [0.1, 0.8, 0.1]  # class 2 box, model says 1 -> background (not 1)
    probs[:, 1, 0] = [0.2, 0.7, 0.1]  # class 1 box -> 1
    probs[:, 1, 1] = [0.6, 0.3, 0.1]  # -> 0
    probs[:, :, 2] = [[0.1, 0.1], [0.1, 0.1], [0.8, 0.8]]  # outside: background
    assert np.array_equal(propose(coarse, probs, RefineRule()), [[2, 0, 0], [1, 0, 0]])
    assert np.array_equal(propose(coarse, probs, RefineRule(restrict=False)), [[2, 1, 2], [1, 0, 2]])
    conf = confident_pixels(np.array([[2, 0, 0], [1, 0, 0]]), probs, RefineRule(confidence="probability",
                                                                              min_confidence=0.55), None)
    assert np.array_equal(conf, [[True, False, False], [True, True, False]])


def test_ignore_and_unknown_pixels_keep_coarse(one_box):
    coarse, probs = one_box
    coarse[0, 4] = IGN
    known = np.ones((5, 5), dtype=bool)
    known[:, 3:] = False
    hybrid, stats = refine_mask(coarse, probs, RefineRule(restrict=False), known=known)
    assert hybrid[0, 4] == IGN
    assert np.array_equal(hybrid[:, 3:], coarse[:, 3:])
    assert stats["unknown"] == 10


def test_bad_input():
    coarse = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="same size"):
        refine_mask(coarse, np.zeros((2, 4, 5)), RefineRule())
    coarse[0, 0] = 3
    with pytest.raises(ValueError, match="outside 0..1"):
        refine_mask(coarse, binary_probs(np.zeros((4, 4))), RefineRule())
    for bad in (dict(threshold=1.0), dict(min_found=1.0), dict(fallback="x"), dict(confidence="x"),
                dict(min_confidence=0.2), dict(alpha=0.0)):
        with pytest.raises(ValueError, match=f"rule.{next(iter(bad))}"):
            RefineRule(**bad).validate()


def test_rule_text_names_every_setting():
    text = rule_text(RefineRule(threshold=0.6, min_found=0.05, confidence="conformal", alpha=0.2))
    assert "0.6" in text and "5%" in text and "alpha 0.2" in text and "inside the coarse region" in text
