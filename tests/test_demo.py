import json

import pytest
from PIL import Image

from neuroplastic.cli import main


def test_demo_writes_results_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs-scale", "0.02", "--frame-every", "10"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["mode"] for r in results] == ["sparse", "expand"]
    for r in results:
        for key in ("recipe", "mode", "seed", "epochs", "test_accuracy", "params", "params_dense", "arch",
                    "wall_seconds"):
            assert key in r, key
        assert 0 <= r["test_accuracy"] <= 1 and r["params_dense"] == 8160 and r["epochs"] == 40
        assert len(r["arch"]) == 2
        gif = Image.open(out / f"boundary-{r['mode']}.gif")
        assert gif.n_frames >= 4  # every 10 epochs plus the stage ends
        png = Image.open(out / f"boundary-{r['mode']}.png")
        assert png.size[0] > 3 * png.size[1] // 2  # the three stage ends side by side
        # gates on the 100 inputs and the 80 hidden units: live weights are inputs x hidden + hidden x 2
        inputs, hidden = r["arch"]
        assert r["params"] == inputs * hidden + hidden * 2
    assert results[1]["arch"][0] > 3 and results[1]["arch"][1] > 3  # the expand run grew from init_active [3, 3]
    table = capsys.readouterr().out
    assert "sparse" in table and "paper" in table
    # a finished demo is not overwritten silently
    assert main(["demo", "--out", str(out), "--epochs-scale", "0.02", "--modes", "sparse"]) == 2
    # one process after the other computes what the side-by-side worker processes computed
    seq = tmp_path / "sequential"
    assert main(["demo", "--out", str(seq), "--epochs-scale", "0.02", "--frame-every", "10", "--jobs", "1"]) == 0
    same = ("test_accuracy", "params", "arch", "val_loss")
    assert [{k: r[k] for k in same} for r in json.loads((seq / "results.json").read_text())] == [
        {k: r[k] for k in same} for r in results]


def test_demo_rejects_bad_options(tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--frame-every", "x"])
    assert main(["demo", "--out", str(tmp_path), "--modes", "grow"]) == 2
    assert main(["demo", "--out", str(tmp_path), "--jobs", "0"]) == 2
