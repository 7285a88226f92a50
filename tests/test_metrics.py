import torch
from torch import nn

from neuroplastic.metrics import count_flops, count_weights, layer_flops


def test_weights_and_flops_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    assert count_weights(model) == 4 * 9 + 100 * 3
    per_layer = layer_flops(model, (1, 5, 5))
    assert per_layer == {"0": 2 * 4 * 25 * 9, "3": 2 * 100 * 3}
    assert count_flops(model, torch.zeros(7, 1, 5, 5)) == 2 * 4 * 25 * 9 + 600


def test_grouped_conv_counts_only_used_weights():
    model = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_flops(model, (8, 4, 4)) == 2 * 8 * 16 * 9
