"""Decision boundaries of a 2-D problem embedded in a higher-dimensional input (the moons demo).

Training records small :class:`BoundaryFrame` objects (a probability grid and a caption); pictures are
rendered afterwards, so recording costs one forward pass over a grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

EXTENT = (-2.0, 2.0, -1.6, 1.6)


@dataclass
class BoundaryFrame:
    """The class-1 probability on a grid over the plane, and a caption for the picture."""

    prob: np.ndarray  # (resolution, resolution), rows = y, columns = x
    caption: str


@torch.no_grad()
def boundary_frame(
    model: torch.nn.Module,
    embed: Callable[[torch.Tensor], torch.Tensor],
    caption: str,
    resolution: int = 90,
    extent: Sequence[float] = EXTENT,
) -> BoundaryFrame:
    """Evaluate ``model`` (eval mode, restored afterwards) on a grid of plane points embedded by ``embed``."""
    x0, x1, y0, y1 = extent
    xs, ys = torch.linspace(x0, x1, resolution), torch.linspace(y0, y1, resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        logits = model(embed(grid.to(param.device, param.dtype)))
    finally:
        model.train(was_training)
    prob = torch.softmax(logits.float(), -1)[:, 1].reshape(resolution, resolution)
    return BoundaryFrame(prob.cpu().numpy().astype(np.float16), caption)


def _contour(ax, frame: BoundaryFrame, extent: Sequence[float]):
    return ax.contour(np.linspace(extent[0], extent[1], frame.prob.shape[1]),
                      np.linspace(extent[2], extent[3], frame.prob.shape[0]),
                      frame.prob.astype(np.float32), levels=[0.5], colors="k", linewidths=1.5)


def _draw(ax, frame: BoundaryFrame, points: np.ndarray, labels: np.ndarray, extent: Sequence[float]):
    """Draw one frame on ``ax``; returns the (image, contour) artists a later frame updates."""
    ax.clear()
    image = ax.imshow(frame.prob.astype(np.float32), origin="lower", extent=extent, cmap="RdBu_r", vmin=0,
                      vmax=1, alpha=0.55, aspect="auto")
    contour = _contour(ax, frame, extent)
    ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="RdBu_r", s=7, edgecolors="none", vmin=0, vmax=1)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(frame.caption, fontsize=9)
    return image, contour


def save_boundary_png(
    path: str | Path, frames: Sequence[BoundaryFrame], points: np.ndarray, labels: np.ndarray,
    extent: Sequence[float] = EXTENT,
) -> Path:
    """One PNG with the given frames side by side (e.g. the end of each stage)."""
    if not frames:
        raise ValueError("save_boundary_png needs at least one frame")
    fig, axes = plt.subplots(1, len(frames), figsize=(3.4 * len(frames), 3.2), squeeze=False)
    for ax, frame in zip(axes[0], frames, strict=True):
        _draw(ax, frame, points, labels, extent)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_boundary_gif(
    path: str | Path, frames: Sequence[BoundaryFrame], points: np.ndarray, labels: np.ndarray,
    extent: Sequence[float] = EXTENT, fps: int = 8,
) -> Path:
    """An animated GIF, one frame per recorded :class:`BoundaryFrame`.

    The points and axes are drawn once; each frame only replaces the probability image, the boundary
    contour and the caption, and the rendered pixels go straight to Pillow.
    """
    if not frames:
        raise ValueError("save_boundary_gif needs at least one frame")
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=80)
    image, contour = _draw(ax, frames[0], points, labels, extent)
    pictures = []
    for i, frame in enumerate(frames):
        if i:
            image.set_data(frame.prob.astype(np.float32))
            contour.remove()
            contour = _contour(ax, frame, extent)
            ax.set_title(frame.caption, fontsize=9)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        pictures.append(Image.fromarray(rgb).quantize(colors=128, method=Image.Quantize.FASTOCTREE))
    plt.close(fig)
    path = Path(path)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    return path
