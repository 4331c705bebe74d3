"""One-off: write the bundled sample JPEGs from scikit-image's public-domain / CC0 sample images (see README.md).

Run from the repository root with the dev extra installed: ``.venv/bin/python samples/make_samples.py``.
Pillow's JPEG encoder at these qualities (default settings, 4:2:0 chroma for colour) makes the blocking and ringing
that ``dagn restore`` removes. The output is deterministic for a given Pillow/libjpeg version.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from skimage import data

# name -> (scikit-image loader, JPEG quality)
SAMPLES = {
    "astronaut_q10.jpg": (data.astronaut, 10),
    "chelsea_q15.jpg": (data.chelsea, 15),
    "coffee_q20.jpg": (data.coffee, 20),
    "camera_gray_q10.jpg": (data.camera, 10),
    "rocket_q25.jpg": (data.rocket, 25),
}


def main() -> None:
    folder = Path(__file__).parent
    for name, (load, quality) in SAMPLES.items():
        Image.fromarray(load()).save(folder / name, format="JPEG", quality=quality)
        print(f"{name}: {(folder / name).stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
