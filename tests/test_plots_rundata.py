"""Reading run folders for the plots, and the small pure helpers the pictures are built from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuroplastic.plots.architecture import _event_gates
from neuroplastic.plots.rundata import PlotDataError, RunData, load_run, read_jsonl
from neuroplastic.plots.style import pick_frames, stage_spans
from neuroplastic.plots.tiles import CMAP, Panel, channel_blocks, first_conv_filters, montage, plan_panels


def _lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# -- history.jsonl -------------------------------------------------------------------------------
def test_truncated_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(_lines({"epoch": 0}, "", {"epoch": 1}, '{"epoch": 2, "val_l'))
    with pytest.warns(RuntimeWarning, match=r"history.jsonl, line 4: last line is not complete JSON"):
        records = read_jsonl(path)
    assert records == [{"epoch": 0}, {"epoch": 1}]


def test_truncated_last_line_can_be_refused(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(_lines({"epoch": 0}, '{"epoch": 1'))
    with pytest.raises(PlotDataError, match=r"history.jsonl, line 2: not valid JSON"):
        read_jsonl(path, tolerate_truncated_last=False)


def test_broken_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(_lines({"epoch": 0}, '{"epoch": 1,,}', {"epoch": 2}))
    with pytest.raises(PlotDataError, match=r"history.jsonl, line 2: not valid JSON"):
        read_jsonl(path)


def test_a_line_that_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(_lines({"epoch": 0}, "[1, 2]"))
    with pytest.raises(PlotDataError, match=r"events.jsonl, line 2: expected a JSON object, got list"):
        read_jsonl(path)


def test_load_run_errors_name_what_is_missing(tmp_path):
    with pytest.raises(PlotDataError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(PlotDataError, match=r"history.jsonl does not exist"):
        load_run(tmp_path)
    (tmp_path / "history.jsonl").write_text('{"epoch": 0, "train_')
    with pytest.warns(RuntimeWarning), pytest.raises(PlotDataError, match="no complete epoch line"):
        load_run(tmp_path)


def test_load_run_reads_recipe_and_events(tmp_path):
    (tmp_path / "history.jsonl").write_text(_lines({"epoch": 0, "params": 10}))
    (tmp_path / "events.jsonl").write_text(_lines({"epoch": 0, "event": "expand", "layer": "fc1", "unit": 3}))
    (tmp_path / "recipe.yaml").write_text("name: tiny\nmethod:\n  name: npn\n  k: 7\n")
    run = load_run(tmp_path)
    assert (run.name, run.method_name) == ("tiny", "npn")
    assert run.events[0]["unit"] == 3
    (tmp_path / "recipe.yaml").write_text("- a list\n")
    with pytest.raises(PlotDataError, match=r"recipe.yaml: expected a mapping, got list"):
        load_run(tmp_path)


def test_dict_series_fills_unrecorded_layers_with_nan(tmp_path):
    history = [{"epoch": 0, "hoyer": {"a": 0.1}}, {"epoch": 1}, {"epoch": 2, "hoyer": {"a": 0.3, "b": 0.5}}]
    run = RunData(tmp_path, history)
    epochs, table = run.dict_series("hoyer", "lp")
    np.testing.assert_array_equal(epochs, [0, 2])
    np.testing.assert_array_equal(table["a"], [0.1, 0.3])
    np.testing.assert_array_equal(table["b"], [np.nan, 0.5])
    bad = RunData(tmp_path, [{"epoch": 4, "hoyer": 0.3}])
    with pytest.raises(PlotDataError, match=r"'hoyer' to map layer names to numbers; epoch 4 has 0.3"):
        bad.dict_series("hoyer", "lp")


def test_damaged_snapshot_is_named(tmp_path):
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "epoch_00003.npz").write_bytes(b"not a zip")
    run = RunData(tmp_path, [{"epoch": 3}])
    with pytest.raises(PlotDataError, match=r"epoch_00003.npz: cannot read this snapshot"):
        run.snapshots("neurons", "pi")


def test_snapshots_are_read_in_epoch_order_as_float32(tmp_path):
    (tmp_path / "snapshots").mkdir()
    for epoch in (10, 2):
        np.savez(tmp_path / "snapshots" / f"epoch_{epoch:05d}.npz", **{"pi/a": np.full(3, epoch / 20, np.float16)})
    (tmp_path / "snapshots" / "notes.txt").write_text("ignored: not a snapshot name")
    snaps = RunData(tmp_path, [{"epoch": 0}]).snapshots("neurons", "pi")
    assert [s.epoch for s in snaps] == [2, 10]
    assert snaps[0].group("pi")["a"].dtype == np.float32
    np.testing.assert_allclose(snaps[1].group("pi")["a"], 0.5)


# -- stages and frames ---------------------------------------------------------------------------
def test_stage_spans_from_history_changes(tmp_path):
    stages = ["pre", "pre", "plastic", "plastic", "plastic", "harden"]
    run = RunData(tmp_path, [{"epoch": e, "stage": s} for e, s in enumerate(stages)])
    assert stage_spans(run) == [(-0.5, 1.5, "pre"), (1.5, 4.5, "plastic"), (4.5, 5.5, "harden")]
    numbered = RunData(tmp_path, [{"epoch": 1, "stage": 0}, {"epoch": 2, "stage": 1}])
    assert stage_spans(numbered) == [(0.5, 1.5, "stage 0"), (1.5, 2.5, "stage 1")]
    npn = RunData(tmp_path, [{"epoch": 0, "stage": 1, "k": 5000.0}, {"epoch": 1, "stage": 2, "k": 7.0}])
    assert [label for _, _, label in stage_spans(npn)] == ["1: pre-train", "2: plastic"]


def test_stage_spans_from_recipe_are_clipped_to_recorded_epochs(tmp_path):
    history = [{"epoch": e} for e in range(6)]
    run = RunData(tmp_path, history, recipe={"method": {"name": "hc", "stage_epochs": [2, 50]}})
    # the third stage (from epoch 50) was never reached by this 6-epoch run
    assert stage_spans(run) == [(-0.5, 1.5, "stage 1"), (1.5, 5.5, "stage 2")]
    assert stage_spans(RunData(tmp_path, history)) == []
    npn = RunData(tmp_path, history, recipe={"method": {"name": "npn", "stages": [0, 4]}})
    assert stage_spans(npn) == [(-0.5, 3.5, "2: plastic"), (3.5, 5.5, "3: harden")]


def test_pick_frames_spreads_evenly_and_keeps_both_ends():
    assert pick_frames(10, 4) == [0, 3, 6, 9]
    assert pick_frames(3, 40) == [0, 1, 2]
    with pytest.raises(ValueError, match="max_frames must be an int >= 2, got 1"):
        pick_frames(10, 1)


# -- neuron-map pieces ---------------------------------------------------------------------------
def test_montage_lays_tiles_out_row_by_row():
    tiles = np.array([0.1, 0.2, 0.3], dtype=np.float32)[:, None, None, None] * np.ones((3, 1, 1, 3))
    image = montage(tiles, cols=2, gap=1, background=np.full(3, 9.0))
    # 2 rows x 2 cols of 1x1 tiles with one gap cell between them -> 3x3; the 4th slot is background
    expected = np.array([[0.1, 9, 0.2], [9, 9, 9], [0.3, 9, 9]])
    np.testing.assert_allclose(image[..., 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"tiles must have shape \(n, h, w, 3\)"):
        montage(np.zeros((3, 2, 2)), cols=2)


def test_closed_units_are_dark_and_open_units_bright():
    image = Panel("fc1", 2).image(np.array([0.0, 1.0]))
    closed, open_ = image[0, 0], image[0, -1]
    np.testing.assert_allclose(closed, CMAP(0.0)[:3], atol=1e-6)
    np.testing.assert_allclose(open_, CMAP(1.0)[:3], atol=1e-6)
    assert closed.sum() < 0.1 < 2.0 < open_.sum()


def test_panel_keeps_its_grid_when_a_frame_has_fewer_units():
    panel = Panel("fc1", 9)
    full, fewer, missing = panel.image(np.ones(9)), panel.image(np.ones(4)), panel.image(None)
    assert full.shape == fewer.shape == missing.shape == (3 * 5 - 1, 3 * 5 - 1, 3)
    # the 9th slot (bottom right tile) is background when only 4 units were recorded
    np.testing.assert_allclose(fewer[-1, -1], [0.93] * 3, atol=1e-6)
    np.testing.assert_allclose(full[-1, -1], CMAP(1.0)[:3], atol=1e-6)


def test_filter_panel_tints_each_filter_by_its_gate():
    filters = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])  # two 1x2 filters
    image = Panel("conv1:out", 2, filters=filters).image(np.array([1.0, 0.0]))
    # unit 0 (open): the filter's dark pixel is 0.2 of the open colour, its bright pixel the full colour
    np.testing.assert_allclose(image[0, 0], 0.2 * np.array(CMAP(1.0)[:3]), atol=1e-6)
    np.testing.assert_allclose(image[0, 1], CMAP(1.0)[:3], atol=1e-6)
    # unit 1 (closed) is black whatever its filter
    assert image[0, 3:5].max() < 0.02


def test_channel_blocks_group_flattened_conv_features():
    state = {"conv1.weight": torch.zeros(4, 1, 3, 3), "conv2.weight": torch.zeros(3, 4, 3, 3),
             "fc1.weight": torch.zeros(10, 12), "fc2.weight": torch.zeros(2, 10)}
    assert channel_blocks(state, "fc1:in", 12) == (3, 2, 2)
    assert channel_blocks(state, "fc1:out", 10) is None    # outputs of fc1 are not conv features
    assert channel_blocks(state, "fc2:in", 10) is None     # 10 inputs are not 3 square feature maps
    assert channel_blocks(state, "fc1:in", 13) is None     # size must equal fc1's inputs
    panel = Panel("fc1:in", 12, blocks=(3, 2, 2))
    pi = np.zeros(12)
    pi[4:8] = 1.0  # channel 1 open: features 4..7
    image = panel.image(pi)
    # 3 blocks of 2x2 on a 2x2 grid with one gap cell: 5x5; block 1 is the top right one
    assert image.shape == (5, 5, 3)
    np.testing.assert_allclose(image[0:2, 3:5].reshape(-1, 3), np.tile(CMAP(1.0)[:3], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(image[0:2, 0:2].reshape(-1, 3), np.tile(CMAP(0.0)[:3], (4, 1)), atol=1e-6)


def test_plan_panels_uses_the_checkpoint_where_it_helps():
    state = {"conv1.weight": torch.randn(4, 1, 3, 3), "fc1.weight": torch.zeros(5, 16)}
    panels = plan_panels({"conv1:out": 4, "fc1:in": 16, "fc1:out": 5}, state)
    assert [(p.gate, p.filters is not None, p.blocks) for p in panels] == [
        ("conv1:out", True, None), ("fc1:in", False, (4, 2, 2)), ("fc1:out", False, None)]
    assert [p.kind for p in panels] == [" filters", " (4 ch x 2x2)", ""]
    assert all(p.filters is None and p.blocks is None for p in plan_panels({"conv1:out": 4}, None))


def test_events_are_matched_to_gates_by_gate_then_layer():
    names = ["conv1:out", "fc1:in", "fc1:out", "fc2"]
    assert _event_gates({"gate": "fc1:out", "layer": "fc1"}, names) == ["fc1:out"]
    assert _event_gates({"layer": "fc2"}, names) == ["fc2"]
    assert _event_gates({"layer": "conv1"}, names) == ["conv1:out"]
    # NPN events name the layer only: a layer with two gates gets the mark on both
    assert _event_gates({"layer": "fc1"}, names) == ["fc1:in", "fc1:out"]
    assert _event_gates({"layer": "conv9"}, names) == []
    assert _event_gates({"event": "mask_update"}, names) == []


def test_first_conv_filters_found_by_name_and_scaled_per_filter():
    weight = torch.zeros(2, 2, 1, 2)
    weight[0, 0, 0] = torch.tensor([1.0, 3.0])   # channel mean of filter 0: [0.5, 1.5]
    weight[1, 1, 0] = torch.tensor([-4.0, 0.0])  # channel mean of filter 1: [-2.0, 0.0]
    state = {"body.conv1.weight": weight, "body.conv1.bias": torch.zeros(2),
             "body.conv2.weight": torch.ones(3, 2, 1, 1)}
    gate, images = first_conv_filters(state, {"fc1:in": 5, "conv1:in": 2, "conv1:out": 2})
    assert gate == "conv1:out"
    np.testing.assert_allclose(images[:, 0], [[0.0, 1.0], [0.0, 1.0]])


def test_first_conv_filters_falls_back_to_a_first_gate_of_matching_size():
    state = {"features.0.weight": torch.randn(4, 1, 3, 3)}
    assert first_conv_filters(state, {"gate_a": 4, "gate_b": 7})[0] == "gate_a"
    assert first_conv_filters(state, {"gate_a": 5}) is None
    assert first_conv_filters({"fc.weight": torch.randn(4, 3)}, {"fc": 4}) is None
