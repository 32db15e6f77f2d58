"""Videos the tests make with PyAV: MPEG-4 files of given pictures, and pictures of plain-colour scenes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 40, 200)]  # three scenes


def write_video(path: Path, pictures: list, fps: int = 10) -> Path:
    """An MPEG-4 video of ``pictures`` (PIL images of one size), one frame each."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = pictures[0].size
        stream.pix_fmt = "yuv420p"
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(picture.convert("RGB")), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def scenes(size=(96, 64), seconds=2, fps=10, colours=COLOURS) -> list:
    """Pictures of one plain colour per scene, ``seconds`` long each at ``fps``."""
    return [Image.new("RGB", size, colour) for colour in colours for _ in range(seconds * fps)]
