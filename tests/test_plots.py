"""Each picture renders from a tiny recorded run folder into an image of the expected size and frames."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.axes import Axes
from PIL import Image

from neuroplastic.plots import (
    PlotDataError,
    load_run,
    plot_architecture,
    plot_compare,
    plot_lp_hoyer,
    plot_lp_weights,
    plot_mask_density,
    plot_neuron_map,
    plot_run,
    plot_tradeoff,
    tradeoff_points,
)
from neuroplastic.plots.cli import main

EPOCHS = 10
# named as NPN names its gate sites: "<layer>:<side>"
NPN_GATES = {"conv1:out": 6, "conv2:out": 10, "fc1:in": 30}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _common(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "train_acc": 0.5 + epoch / 40,
            "val_loss": 1.1 / (epoch + 1), "val_acc": 0.5 + epoch / 50, "lr": [1e-3], "seconds": 0.1}


def _snapshot(run: Path, epoch: int, arrays: dict[str, np.ndarray]) -> None:
    folder = run / "snapshots"
    folder.mkdir(exist_ok=True)
    np.savez(folder / f"epoch_{epoch:05d}.npz", **{k: v.astype(np.float16) for k, v in arrays.items()})


def make_npn_run(root: Path, *, checkpoint: bool = True) -> Path:
    """A conv NPN run: 3 stages, units closing in conv2/fc1, one expansion of fc1, a snapshot each epoch."""
    run = root / "npn"
    run.mkdir()
    recipe = {"name": "npn-tiny", "method": {"name": "npn", "stages": [3, 8]}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    gen = np.random.default_rng(0)
    history = []
    for epoch in range(EPOCHS):
        stage = 1 if epoch < 3 else (2 if epoch < 8 else 3)
        arch = [6, 10 - max(0, epoch - 3), 30 - 2 * max(0, epoch - 3) + (epoch >= 4)]
        params = 25 * arch[0] + 25 * arch[0] * arch[1] + arch[2] * 10
        history.append({**_common(epoch), "k": 5000.0 if stage != 2 else 7.0, "stage": stage, "arch": arch,
                         "layers": list(NPN_GATES), "params": params, "expected_l0": float(sum(arch))})
        pis = {}
        for (name, size), n_open in zip(NPN_GATES.items(), arch, strict=True):
            pi = np.zeros(size)
            pi[:n_open] = gen.uniform(0.55, 1.0, n_open)
            pis[f"pi/{name}"] = pi
        _snapshot(run, epoch, pis)
    _write_jsonl(run / "history.jsonl", history)
    _write_jsonl(run / "events.jsonl", [{"epoch": 4, "step": 40, "event": "expand", "layer": "fc1", "units": [24]}])
    if checkpoint:
        state = {"conv1.weight": torch.randn(6, 1, 5, 5), "conv1.bias": torch.zeros(6),
                 "conv2.weight": torch.randn(10, 6, 5, 5), "fc1.weight": torch.randn(30, 40)}
        torch.save({"model": state, "epoch": EPOCHS - 1}, run / "checkpoint.pt")
    return run


def make_mask_run(root: Path) -> Path:
    """A RigL-like run: three layers with fixed densities and a growing exploration rate."""
    run = root / "mask"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "rigl-tiny", "method": {"name": "rigl"}}))
    history = [{**_common(e), "density": 0.1, "layer_density": {"fc1": 0.05, "fc2": 0.2, "fc3": 0.8},
                "exploration_rate": 0.1 + 0.02 * e} for e in range(EPOCHS)]
    _write_jsonl(run / "history.jsonl", history)
    for epoch in range(0, EPOCHS, 3):
        _snapshot(run, epoch, {"density/fc1": np.full(4, 0.05)})
    return run


def make_lpss_run(root: Path) -> Path:
    """An LpSS run: p shrinking from 2 to 1, weight magnitudes concentrating near zero."""
    run = root / "lpss"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "lpss-tiny", "method": {"name": "lpss"}}))
    gen = np.random.default_rng(1)
    history = []
    for epoch in range(EPOCHS):
        p = 2.0 - epoch / (EPOCHS - 1)
        hoyer = {"fc1": 0.2 + 0.06 * epoch, "fc2": 0.1 + 0.05 * epoch}
        history.append({**_common(epoch), "mask_sparsity": 0.05 * epoch, "hoyer": hoyer,
                        "hoyer_net": 0.15 + 0.055 * epoch})
        arrays = {}
        for layer in hoyer:
            arrays[f"absw/{layer}"] = np.abs(gen.standard_normal(500)) ** (1 + 2 * (2 - p))
            arrays[f"p/{layer}"] = np.array([p])
        _snapshot(run, epoch, arrays)
    _write_jsonl(run / "history.jsonl", history)
    return run


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        # a non-empty picture: far more than one colour
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20
        return image.size


def test_architecture_png_has_requested_size(tmp_path):
    run = load_run(make_npn_run(tmp_path))
    out = plot_architecture(run, tmp_path / "a.png", width_px=900, height_px=600)
    assert _png_size(out) == (900, 600)


def test_architecture_of_a_run_with_params_only(tmp_path):
    run = make_mask_run(tmp_path)
    _write_jsonl(run / "history.jsonl", [{**_common(e), "params": 1000 - 50 * e} for e in range(EPOCHS)])
    assert _png_size(plot_architecture(load_run(run), tmp_path / "a.png")) == (960, 620)


def test_neuron_map_gif_has_one_frame_per_snapshot(tmp_path):
    run = load_run(make_npn_run(tmp_path))
    out = plot_neuron_map(run, tmp_path / "n.gif")
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        # 3 gated layers in one row, 800 px wide: height = 266.7 * 0.92 + 70 + 80 = 395.3 -> 396 (even)
        assert gif.size == (800, 396)
        assert gif.n_frames == EPOCHS
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    # 3 frames per second (GIF stores centiseconds: 330 ms), the last frame held for about 2 s
    assert durations[:-1] == [330] * (EPOCHS - 1) and durations[-1] >= 1900
    assert out.stat().st_size < 3 * 2**20


def test_neuron_map_subsamples_frames(tmp_path):
    run = load_run(make_npn_run(tmp_path))
    out = plot_neuron_map(run, tmp_path / "n.gif", max_frames=4, width_px=600)
    with Image.open(out) as gif:
        assert gif.n_frames == 4
        assert gif.size[0] == 600


def test_neuron_map_without_checkpoint_warns_and_still_renders(tmp_path):
    run = load_run(make_npn_run(tmp_path, checkpoint=False))
    with pytest.warns(RuntimeWarning, match="checkpoint.pt"):
        out = plot_neuron_map(run, tmp_path / "n.gif", max_frames=2)
    with Image.open(out) as gif:
        assert gif.n_frames == 2


def test_neuron_map_can_ignore_the_checkpoint_without_a_warning(tmp_path):
    run = load_run(make_npn_run(tmp_path, checkpoint=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_neuron_map(run, tmp_path / "n.gif", max_frames=2, use_checkpoint=False)
    with Image.open(out) as gif:
        assert gif.n_frames == 2


def test_damaged_checkpoint_is_named(tmp_path):
    run = make_npn_run(tmp_path)
    (run / "checkpoint.pt").write_bytes(b"cut short")
    with pytest.raises(PlotDataError, match=r"'neurons' plot cannot read .*checkpoint.pt"):
        plot_neuron_map(load_run(run), tmp_path / "n.gif")


def test_neuron_map_needs_pi_snapshots(tmp_path):
    with pytest.raises(PlotDataError, match=r"'neurons' plot needs .*pi/"):
        plot_neuron_map(load_run(make_mask_run(tmp_path)), tmp_path / "n.gif")


def test_neuron_map_without_snapshots_folder_names_it(tmp_path):
    run = make_npn_run(tmp_path)
    for path in (run / "snapshots").iterdir():
        path.unlink()
    (run / "snapshots").rmdir()
    with pytest.raises(PlotDataError, match=r"'neurons' plot needs .*snapshots"):
        plot_neuron_map(load_run(run), tmp_path / "n.gif")


def test_mask_density_png(tmp_path):
    assert _png_size(plot_mask_density(load_run(make_mask_run(tmp_path)), tmp_path / "m.png")) == (960, 620)


def test_mask_density_needs_a_density_field(tmp_path):
    with pytest.raises(PlotDataError, match=r"'masks' plot needs .*'layer_density'.*history.jsonl"):
        plot_mask_density(load_run(make_npn_run(tmp_path)), tmp_path / "m.png")


def test_lp_pictures(tmp_path):
    run = load_run(make_lpss_run(tmp_path))
    # two layers -> one row of two panels, 250 px each plus 90 px of title
    assert _png_size(plot_lp_weights(run, tmp_path / "w.png")) == (960, 340)
    assert _png_size(plot_lp_hoyer(run, tmp_path / "h.png")) == (960, 560)


def test_lp_hoyer_needs_hoyer(tmp_path):
    with pytest.raises(PlotDataError, match=r"'lp' plot needs any of 'hoyer', 'hoyer_net'"):
        plot_lp_hoyer(load_run(make_mask_run(tmp_path)), tmp_path / "h.png")


@pytest.mark.parametrize(
    ("maker", "files"),
    [
        (make_npn_run, {"architecture.png", "neuron_map.gif"}),
        (make_mask_run, {"mask_density.png"}),
        (make_lpss_run, {"lp_weights.png", "lp_hoyer.png"}),
    ],
)
def test_plot_run_makes_what_the_run_recorded(tmp_path, maker, files):
    run = maker(tmp_path)
    written, errors = plot_run(run)
    assert errors == []
    assert {p.name for p in written} == files
    assert all(p.parent == run / "plots" and p.stat().st_size > 0 for p in written)


def test_cli_writes_to_out_and_prints_paths(tmp_path, capsys):
    run = make_mask_run(tmp_path)
    assert main([str(run), "--out", str(tmp_path / "pics"), "--what", "masks"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "pics" / "mask_density.png")


def test_cli_reports_missing_data_and_still_draws_the_rest(tmp_path, capsys):
    run = make_mask_run(tmp_path)
    assert main([str(run), "--what", "masks,neurons"]) == 1
    captured = capsys.readouterr()
    assert "'neurons' plot needs" in captured.err
    assert (run / "plots" / "mask_density.png").is_file()


def test_cli_rejects_unknown_plot_names(tmp_path, capsys):
    assert main([str(make_mask_run(tmp_path)), "--what", "arch,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cli_missing_run_folder_is_bad_input(tmp_path, capsys):
    assert main([str(tmp_path / "no-such-run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = make_mask_run(tmp_path)
    assert main([str(run), str(tmp_path / "typo"), "--out", str(tmp_path / "pics")]) == 2


def test_cli_missing_history_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "history.jsonl does not exist" in capsys.readouterr().err


def test_cli_on_a_run_with_nothing_to_draw(tmp_path, capsys):
    run = tmp_path / "dense"
    run.mkdir()
    _write_jsonl(run / "history.jsonl", [_common(0)])
    assert main([str(run)]) == 1
    assert "nothing to plot" in capsys.readouterr().err


def test_plot_run_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="what must name plots among arch, neurons, masks, lp"):
        plot_run(make_mask_run(tmp_path), what=["density"])


def test_many_gated_layers_get_a_compact_grid(tmp_path):
    run = tmp_path / "deep"
    run.mkdir()
    names = [f"block{i}.conv:out" for i in range(12)]
    _write_jsonl(run / "history.jsonl", [{**_common(e), "stage": 2, "k": 7.0, "arch": [8 - e] * 12,
                                          "layers": names, "params": 1000 - 100 * e} for e in range(3)])
    for epoch in range(3):
        _snapshot(run, epoch, {f"pi/{n}": np.linspace(0, 1, 8) for n in names})
    loaded = load_run(run)
    with pytest.warns(RuntimeWarning, match="checkpoint.pt"):
        gif = plot_neuron_map(loaded, tmp_path / "n.gif")
    with Image.open(gif) as image:
        # 12 panels -> 4 columns x 3 rows of 200 px: 3 * 200 * 0.92 + 70 + 80 = 702
        assert (image.size, image.n_frames) == ((800, 702), 3)
    assert _png_size(plot_architecture(loaded, tmp_path / "a.png")) == (960, 620)


def _result_run(root: Path, folder: str, recipe: str, test_accuracy: float, params: int, val_shift: float,
                params_dense: int = 266_000) -> Path:
    run = root / folder
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": recipe}))
    _write_jsonl(run / "history.jsonl", [{**_common(e), "val_acc": 0.5 + e / 50 + val_shift} for e in range(4)])
    result = {"test_accuracy": test_accuracy, "params": params, "params_dense": params_dense}
    (run / "results.json").write_text(json.dumps([result]))
    return run


def _spy_on_plot(monkeypatch) -> list[tuple[str | None, tuple]]:
    """Record every ``Axes.plot`` call from now on as ``(label, positional args)``; the lines are still drawn."""
    calls = []
    original = Axes.plot

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("label"), args))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    return calls


def test_compare_groups_runs_by_recipe_and_states_their_results(tmp_path, monkeypatch):
    runs = [
        _result_run(tmp_path, "a1", "lpss-a", 0.90, 100, 0.0),
        _result_run(tmp_path, "a2", "lpss-a", 0.92, 100, 0.01),
        _result_run(tmp_path, "s1", "static", 0.88, 101, -0.01),
    ]
    calls = _spy_on_plot(monkeypatch)
    out = plot_compare([load_run(r) for r in runs], tmp_path / "pics" / "compare.png", width_px=800, height_px=400)
    labels = [label for label, _ in calls]
    assert Image.open(out).size == (800, 400)
    # one legend entry per recipe: run count, mean test accuracy, live params; the other lines unlabelled
    assert [label for label in labels if label] == [
        "lpss-a (2 runs, test 91.00% mean, 100 params)",
        "static (1 run, test 88.00%, 101 params)",
    ]
    assert len(labels) == 6  # validation accuracy and training loss of each run


def test_compare_keeps_runs_of_one_recipe_with_other_settings_apart(tmp_path, monkeypatch):
    """Seeds of one setting share an entry; a run started with an override, or one whose recipe.yaml does not
    say how it was resolved but whose settings differ, gets its own entry named by what differs."""
    def run(folder: str, seed: int, density: float, source: str | None) -> Path:
        path = _result_run(tmp_path, folder, "ad", 0.9, 100, 0.0)
        recipe = yaml.safe_dump({"name": "ad", "seed": seed, "method": {"name": "lpss", "final_density": density}})
        header = f"# resolved from: {source}\n# (overrides and epochs_scale already applied)\n" if source else ""
        (path / "recipe.yaml").write_text(header + recipe)
        return path

    runs = [run("s1", 1, 0.1, "ad seed=1"), run("s2", 2, 0.1, "ad seed=2"),
            run("d2", 1, 0.2, "ad method.final_density=0.2 seed=1"), run("d5", 1, 0.5, None)]
    assert load_run(runs[2]).overrides == ["method.final_density=0.2"]
    calls = _spy_on_plot(monkeypatch)
    plot_compare([load_run(r) for r in runs], tmp_path / "compare.png")
    labels = [label for label, _ in calls]
    assert [label.split(" (")[0] for label in labels if label] == [
        "ad method.final_density=0.1", "ad method.final_density=0.2", "ad method.final_density=0.5"]
    assert [label for label in labels if label][0].endswith("(2 runs, test 90.00% mean, 100 params)")


def test_compare_needs_val_acc_and_two_runs(tmp_path):
    good = _result_run(tmp_path, "a", "x", 0.9, 1, 0.0)
    bare = tmp_path / "bare"
    bare.mkdir()
    _write_jsonl(bare / "history.jsonl", [{"epoch": 0, "train_loss": 1.0}])
    with pytest.raises(PlotDataError, match="val_acc"):
        plot_compare([load_run(good), load_run(bare)], tmp_path / "c.png")
    with pytest.raises(ValueError, match="at least 2 runs"):
        plot_compare([load_run(good)], tmp_path / "c.png")


def test_cli_compares_several_runs_into_out(tmp_path, capsys):
    a = _result_run(tmp_path, "a", "x", 0.9, 1, 0.0)
    b = _result_run(tmp_path, "b", "y", 0.8, 1, 0.0)
    assert main([str(a), str(b), "--out", str(tmp_path / "pics")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "pics" / "compare.png")
    assert main([str(a), str(b)]) == 2  # where to write must be given
    assert "needs --out DIR" in capsys.readouterr().err


def test_a_run_too_short_for_a_plastic_epoch_says_so_and_has_whole_epoch_ticks(tmp_path):
    from neuroplastic.plots.architecture import architecture_title
    from neuroplastic.plots.style import epoch_axis, new_figure, stage_spans

    run = tmp_path / "short"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "short", "method": {"name": "npn", "stages": [1, 1]}}))
    _write_jsonl(run / "history.jsonl", [{**_common(e), "stage": s, "k": 5000.0, "arch": [4], "params": 40}
                                         for e, s in ((0, 1), (1, 3))])
    data = load_run(run)
    assert architecture_title(data, stage_spans(data)) == (
        "short: architecture over training (npn): no plastic epoch, so the gates could not change")
    full = load_run(make_npn_run(tmp_path))
    assert architecture_title(full, stage_spans(full)) == "npn-tiny: architecture over training (npn)"
    ax = new_figure().subplots()
    ax.plot([0, 1], [0, 1])
    epoch_axis(ax)
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 1]
    assert ticks == [0.0, 1.0] and ax.get_xlabel() == "epoch"
    assert plot_architecture(data, tmp_path / "a.png").exists()


def _sweep(root: Path) -> dict[str, list[Path]]:
    """Two series of finished runs: 'adaptive' at density 0.1 (two seeds; the controller landed one weight
    short in one) and 0.2, 'static' at 0.1."""
    return {
        "adaptive": [_result_run(root, "a90s1", "ad", 0.93, 26_599, 0.0),
                     _result_run(root, "a90s2", "ad", 0.94, 26_600, 0.0),
                     _result_run(root, "a80", "ad", 0.95, 53_200, 0.0)],
        "static": [_result_run(root, "s90", "st", 0.92, 26_600, 0.0)],
    }


def test_tradeoff_points_average_the_runs_at_one_density(tmp_path):
    a90s1, a90s2, a80 = _sweep(tmp_path)["adaptive"]
    points = tradeoff_points([a80, a90s1, a90s2])  # any order in, by density out
    assert [p.accuracies for p in points] == [(0.93, 0.94), (0.95,)]
    assert [p.mean for p in points] == pytest.approx([0.935, 0.95])
    assert [p.density for p in points] == pytest.approx([(26_599 + 26_600) / 2 / 266_000, 0.2])


def test_tradeoff_draws_one_line_per_series_through_the_means(tmp_path, monkeypatch):
    calls = _spy_on_plot(monkeypatch)
    out = plot_tradeoff(_sweep(tmp_path), tmp_path / "pics" / "tradeoff.png",
                        reference={"paper": {0.2: 0.96, 0.1: 0.9}}, title="sweep", width_px=800, height_px=400)
    assert Image.open(out).size == (800, 400)
    lines = [(label, list(args[0]), list(args[1])) for label, args in calls]
    assert [label for label, _, _ in lines] == ["adaptive (3 runs)", "static (1 run)", "paper"]
    assert lines[0][2] == pytest.approx([93.5, 95.0]) and lines[1][2] == pytest.approx([92.0])
    assert lines[2][1:] == ([0.1, 0.2], [90.0, 96.0])  # published points sorted by density, in percent


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"series": {}}, ValueError, "at least one series"),
        ({"series": {"a": "runs/a"}}, ValueError, "non-empty list of runs"),
        ({"reference": {"paper": {0.1: 93.29}}}, ValueError, "fraction in \\[0, 1\\]"),
        ({"reference": {"paper": {0.0: 0.9}}}, ValueError, "density must be in \\(0, 1\\]"),
        ({"reference": {"paper": {0.1: "93.3%"}}}, ValueError, "must be numbers"),
        ({"reference": {"paper": {}}}, ValueError, "has no points"),
    ],
)
def test_tradeoff_bad_input(tmp_path, change, error, match):
    kwargs = {"series": _sweep(tmp_path), "reference": None, **change}
    with pytest.raises(error, match=match):
        plot_tradeoff(kwargs.pop("series"), tmp_path / "t.png", **kwargs)


def test_tradeoff_needs_finished_runs(tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    _write_jsonl(unfinished / "history.jsonl", [_common(0)])
    with pytest.raises(PlotDataError, match="no results.json"):
        tradeoff_points([unfinished])
    (unfinished / "results.json").write_text(json.dumps([{"test_accuracy": 0.9, "params": 10}]))
    with pytest.raises(PlotDataError, match="missing or bad: params_dense"):
        tradeoff_points([unfinished])
