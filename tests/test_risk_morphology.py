"""Dilation, erosion and distance maps equal scipy.ndimage on random masks, in 2D and 3D."""
import numpy as np
import pytest
import torch

from segcal.risk.morphology import border_distance, dilate, distance_to, erode

nd = pytest.importorskip("scipy.ndimage")


def _masks(spatial_dims, seed=0, density=0.08):
    g = torch.Generator().manual_seed(seed)
    shape = (3, 19, 23) if spatial_dims == 2 else (2, 9, 11, 13)
    return torch.rand(shape, generator=g) < density


def _disk(radius, spatial_dims):
    r = int(radius)
    offsets = np.indices([2 * r + 1] * spatial_dims) - r
    return (offsets ** 2).sum(0) <= radius * radius


STRUCTURES = {"square": lambda d: nd.generate_binary_structure(d, d),
              "cross": lambda d: nd.generate_binary_structure(d, 1)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("structure", ["square", "cross"])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_iterated_dilation_and_erosion_equal_scipy(spatial_dims, structure, radius):
    sparse, dense = _masks(spatial_dims), _masks(spatial_dims, seed=1, density=0.7)
    element = STRUCTURES[structure](spatial_dims)
    for i in range(sparse.shape[0]):
        expected = nd.binary_dilation(sparse[i].numpy(), element, iterations=radius)
        assert np.array_equal(dilate(sparse, radius, structure, spatial_dims)[i].numpy(), expected)
        expected = nd.binary_erosion(dense[i].numpy(), element, iterations=radius, border_value=0)
        assert np.array_equal(erode(dense, radius, structure, spatial_dims)[i].numpy(), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("radius", [1.0, 2.5, 4.0])
def test_disk_dilation_and_erosion_equal_scipy_with_a_ball(spatial_dims, radius):
    sparse, dense = _masks(spatial_dims, seed=2), _masks(spatial_dims, seed=3, density=0.8)
    ball = _disk(radius, spatial_dims)
    for i in range(sparse.shape[0]):
        assert np.array_equal(dilate(sparse, radius, "disk", spatial_dims)[i].numpy(),
                              nd.binary_dilation(sparse[i].numpy(), ball))
        assert np.array_equal(erode(dense, radius, "disk", spatial_dims)[i].numpy(),
                              nd.binary_erosion(dense[i].numpy(), ball, border_value=0))


def test_distances_equal_scipy_distance_transforms():
    mask = _masks(2, seed=4)
    for i in range(mask.shape[0]):
        background = ~mask[i].numpy()
        assert np.allclose(distance_to(mask, "disk")[i].numpy(), nd.distance_transform_edt(background))
        for structure, metric in (("square", "chessboard"), ("cross", "taxicab")):
            expected = nd.distance_transform_cdt(background, metric=metric)
            assert np.array_equal(distance_to(mask, structure)[i].numpy(), expected.astype(np.float32))


def test_edge_cases():
    empty = torch.zeros(1, 5, 6, dtype=torch.bool)
    assert torch.isinf(distance_to(empty)).all()
    assert not dilate(empty, 3).any() and not erode(empty, 0).any()
    full = torch.ones(1, 5, 6, dtype=torch.bool)
    assert torch.equal(erode(full, 0), full) and torch.equal(dilate(full, 0), full)
    assert erode(full, 1)[0, 1:-1, 1:-1].all() and not erode(full, 1)[0, 0].any()  # the border erodes
    assert torch.equal(border_distance((3, 4))[1], torch.tensor([1.0, 2, 2, 1]))
    with pytest.raises(ValueError, match="structure must be one of"):
        dilate(full, 1, "hexagon")
    with pytest.raises(ValueError, match="whole number"):
        dilate(full, 1.5, "square")
    with pytest.raises(ValueError, match="bool"):
        dilate(full.float(), 1)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        erode(full, -1)


@pytest.mark.parametrize("structure", ["square", "cross", "disk"])
def test_limited_reach_is_exact_up_to_the_reach(structure):
    mask = _masks(2, seed=5, density=0.01)
    full = distance_to(mask, structure)
    near = distance_to(mask, structure, reach=3)
    assert torch.equal(near[full <= 3], full[full <= 3]) and (near[full > 3] > 3).all()


def test_margin_needs_with_a_short_first_search_equal_the_full_search():
    from segcal.risk import losses

    g = torch.Generator().manual_seed(6)
    labels = (torch.rand(6, 40, 50, generator=g) < 0.02).long()
    labels[:3, 5:30, 5:40] = 1  # large objects: some needs exceed the first search
    pred = torch.rand(6, 40, 50, generator=g) < 0.01
    pred[:2, 10:35, 10:45] = True
    pred[2], labels[2, 30:38, 40:48] = False, 1
    pred[2, 0, 0] = True  # the truth lies ~50 px from the only predicted pixel
    pred[3, 1:39, 1:49] = True  # a deep false positive: many erosions needed
    short = losses.margin_needs(pred, labels, 1, "disk", inner=True)
    full_far = distance_to(pred, "disk")
    assert torch.equal(short["outer"], losses._needed(full_far, labels == 1))
    assert torch.equal(short["inner"], losses._needed(distance_to(~pred, "disk", outside=True), pred & (labels != 1)))
    assert (short["outer"] > losses.FIRST_REACH).any() and (short["inner"] > losses.FIRST_REACH).any()
    truth = labels == 1
    assert torch.equal(short["truth_distance"][truth], full_far[truth])
