"""Regenerate examples/data/ from the photographs bundled with scikit-image, scikit-learn and
matplotlib, following examples/build_data.yaml.

    python examples/build_data.py            # writes examples/data/

The output is committed, so a fresh machine runs the examples without these packages; this script
is how it was made and how to remake it. It is deterministic for a given Pillow version: photos
are scaled to at most 512 px on the longest side and saved as JPEG (quality 85), edits and
composites are made from the scaled photos with PIL; a composite's subject is cut out of its
photo by colour (scikit-image, SciPy) and pasted into the other photo.

Layout written (paths in the JSONL files are relative to examples/data/):

    photos/<id>.jpg, photos/metadata.jsonl   text-to-image rows (a `datasets` imagefolder)
    edits/<id>.jpg, edit.jsonl               edit pairs: source photo, instruction, result
    compose/<id>.jpg, compose.jsonl          two subject photos and a composite showing both in
                                             one scene: the second's subject cut out of its
                                             photo and placed into the first
    subject.jsonl, vqa.jsonl, chat.jsonl     subject rows, understanding Q&A, text-only chats
    LICENSE.md                               origin, credit and licence of every photo
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
LONGEST_SIDE = 512
JPEG_QUALITY = 85

# Where each package keeps its sample photographs, relative to the package folder.
PACKAGE_DIRS = {
    "skimage": "data",
    "sklearn": "datasets/images",
    "matplotlib": "mpl-data/sample_data",
}


def photo_path(package: str, file: str) -> Path:
    # Found, not imported: importing scikit-learn or matplotlib costs seconds and is not needed.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed: pip install 'chatumm[examples]'")
    return Path(spec.origin).parent / PACKAGE_DIRS[package] / file


def scaled(im: Image.Image) -> Image.Image:
    im = im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB")
    factor = LONGEST_SIDE / max(im.size)
    if factor < 1:
        im = im.resize(
            (round(im.width * factor), round(im.height * factor)), Image.Resampling.LANCZOS
        )
    return im


def _rgb(im: Image.Image) -> Image.Image:
    return im.convert("RGB")


def _hue(im: Image.Image, degrees: float) -> Image.Image:
    h, s, v = _rgb(im).convert("HSV").split()
    shift = round(degrees / 360 * 256)
    h = h.point(lambda x: (x + shift) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _crop(im: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = im.size
    return im.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))


def _pixelate(im: Image.Image, block: int) -> Image.Image:
    small = im.resize((max(1, im.width // block), max(1, im.height // block)), Image.Resampling.BOX)
    return small.resize(im.size, Image.Resampling.NEAREST)


def _border(im: Image.Image, px: int, color: str) -> Image.Image:
    return ImageOps.expand(im, border=round(px * max(im.size) / LONGEST_SIDE), fill=color)


# Every edit operation: name -> function(image, *arguments from the YAML).
OPS: dict[str, Callable[..., Image.Image]] = {
    "grayscale": lambda im: im.convert("L"),
    "hflip": ImageOps.mirror,
    "rotate": lambda im, deg: im.rotate(deg, expand=True),
    "crop": _crop,
    "border": _border,
    "tint": lambda im, color, k: Image.blend(_rgb(im), Image.new("RGB", im.size, color), k),
    "hue": _hue,
    "sepia": lambda im: ImageOps.colorize(im.convert("L"), "#2e1d0c", "#f6e7c9"),
    "brightness": lambda im, k: ImageEnhance.Brightness(im).enhance(k),
    "blur": lambda im, r: im.filter(ImageFilter.GaussianBlur(r)),
    "invert": ImageOps.invert,
    "pixelate": _pixelate,
    "colorize": lambda im, dark, light: ImageOps.colorize(im.convert("L"), dark, light),
}


def _largest(mask: Any) -> Any:
    """The largest connected region of a boolean mask."""
    from skimage import measure

    labels = measure.label(mask)
    if labels.max() == 0:
        raise SystemExit("a cutout's colour range selects nothing; check build_data.yaml")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def cutout(im: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """The subject of ``im`` on a transparent background (RGBA, cropped to the subject): the
    pixels whose HSV values lie in ``spec``'s ranges (``hue``, ``saturation``, ``value``, each
    [low, high] in 0-1) inside its ``columns`` (fractions of the width), cleaned up with a
    disk of radius ``smooth`` px, the largest region kept, holes filled, the edge feathered
    by ``feather`` px."""
    from scipy import ndimage
    from skimage import color, morphology

    rgb = np.asarray(_rgb(im))
    hsv = color.rgb2hsv(rgb)
    mask = np.ones(hsv.shape[:2], dtype=bool)
    for k, channel in enumerate(("hue", "saturation", "value")):
        if channel in spec:
            low, high = spec[channel]
            mask &= (hsv[..., k] >= low) & (hsv[..., k] <= high)
    left, right = spec.get("columns", (0.0, 1.0))
    mask[:, : round(left * mask.shape[1])] = False
    mask[:, round(right * mask.shape[1]) :] = False
    disk = morphology.disk(spec.get("smooth", 2))
    mask = _largest(ndimage.binary_opening(mask, disk))
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, disk))
    alpha = Image.fromarray((mask * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(spec.get("feather", 1.0))
    )
    subject = _rgb(im).convert("RGBA")
    subject.putalpha(alpha)
    return subject.crop(alpha.getbbox())


def place(
    background: Image.Image, subject: Image.Image, x: float, bottom: float, height: float
) -> Image.Image:
    """``subject`` (a cutout) pasted into ``background``: scaled to ``height`` times the
    background's height, centred at ``x`` and standing on ``bottom`` (fractions of the
    background's width and height). A greyscale background gets a greyscale subject."""
    h = round(height * background.height)
    subject = subject.resize(
        (round(subject.width * h / subject.height), h), Image.Resampling.LANCZOS
    )
    if background.mode == "L":
        subject = Image.merge("RGBA", (*subject.convert("L").convert("RGB").split(),
                                       subject.getchannel("A")))  # fmt: skip
    canvas = _rgb(background).copy()
    left = round(x * background.width - subject.width / 2)
    top = round(bottom * background.height) - subject.height
    canvas.paste(subject, (left, top), subject)
    return canvas.convert(background.mode) if background.mode == "L" else canvas


def jpeg(im: Image.Image) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def write_images(folder: Path, images: dict[str, Image.Image]) -> None:
    """Write ``<id>.jpg`` for each image and remove any other JPEG a previous build left."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(folder.glob("*.jpg")) - {folder / f"{k}.jpg" for k in images}:
        stale.unlink()
    for key, im in images.items():
        (folder / f"{key}.jpg").write_bytes(jpeg(im))


def build(plan: dict[str, Any], out: Path) -> dict[str, int]:
    photos = {p["id"]: p for p in plan["photos"]}
    scaled_photos = {
        pid: scaled(Image.open(photo_path(p["package"], p["file"]))) for pid, p in photos.items()
    }
    write_images(out / "photos", scaled_photos)
    write_jsonl(
        out / "photos" / "metadata.jsonl",
        [
            {"file_name": f"{pid}.jpg", "id": pid, "caption": photos[pid]["caption"]}
            for pid in photos
        ],
    )

    edited = {}
    for edit in plan["edits"]:
        name, *args = edit["op"]
        edited[edit["id"]] = OPS[name](scaled_photos[edit["photo"]], *args)
    write_images(out / "edits", edited)
    write_jsonl(
        out / "edit.jsonl",
        [
            {
                "id": e["id"],
                "source_image": f"photos/{e['photo']}.jpg",
                "source_caption": photos[e["photo"]]["caption"],
                "instruction": e["instruction"],
                "target_image": f"edits/{e['id']}.jpg",
                "target_caption": e["caption"],
            }
            for e in plan["edits"]
        ],
    )
    subject_captions = {s["photo"]: s["caption"] for s in plan["subjects"]}
    cutouts = {
        name: cutout(scaled_photos[spec["photo"]], spec) for name, spec in plan["cutouts"].items()
    }
    composites = {}
    for c in plan["compositions"]:
        name, x, bottom, height = c["place"]
        assert plan["cutouts"][name]["photo"] == c["second"], c["id"]
        composites[c["id"]] = place(scaled_photos[c["first"]], cutouts[name], x, bottom, height)
    write_images(out / "compose", composites)
    write_jsonl(
        out / "compose.jsonl",
        [
            {
                "id": c["id"],
                "first_image": f"photos/{c['first']}.jpg",
                "first_caption": subject_captions[c["first"]],
                "second_image": f"photos/{c['second']}.jpg",
                "second_caption": subject_captions[c["second"]],
                "target_image": f"compose/{c['id']}.jpg",
                "target_caption": c["caption"],
            }
            for c in plan["compositions"]
        ],
    )
    write_jsonl(
        out / "subject.jsonl",
        [
            {"id": s["photo"], "image": f"photos/{s['photo']}.jpg", "caption": s["caption"]}
            for s in plan["subjects"]
        ],
    )
    asked: dict[str, int] = {}
    vqa = []
    for q in plan["vqa"]:
        asked[q["photo"]] = asked.get(q["photo"], 0) + 1
        vqa.append(
            {
                "id": f"{q['photo']}-q{asked[q['photo']]}",
                "image": f"photos/{q['photo']}.jpg",
                "question": q["question"],
                "answer": q["answer"],
            }
        )
    write_jsonl(out / "vqa.jsonl", vqa)
    write_jsonl(
        out / "chat.jsonl",
        [
            {
                "id": f"chat-{i:02d}",
                "turns": [
                    {"role": ("user", "assistant")[k % 2], "content": text.strip()}
                    for k, text in enumerate(chat)
                ],
            }
            for i, chat in enumerate(plan["chats"], start=1)
        ],
    )
    (out / "LICENSE.md").write_text(license_text(plan), "utf-8")
    return {
        "t2i": len(photos),
        "edit": len(plan["edits"]),
        "subject": len(plan["subjects"]),
        "compose": len(plan["compositions"]),
        "vqa": len(vqa),
        "chat": len(plan["chats"]),
    }


def license_text(plan: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| `photos/{p['id']}.jpg` | {p['package']}: `{PACKAGE_DIRS[p['package']]}/{p['file']}` "
        f"| {' '.join(p['credit'].split())} | {p['license']} |"
        for p in plan["photos"]
    )
    return f"""# Licences of the example data

Generated by `examples/build_data.py` from `examples/build_data.yaml`.

## Photographs

Copied from the sample data that ships inside the named Python packages, scaled to at most
{LONGEST_SIDE} px on the longest side and re-encoded as JPEG (quality {JPEG_QUALITY}). Origins and
licences are as the packages document them (scikit-image: each image's docstring in
`skimage.data`; scikit-learn: `sklearn/datasets/images/README.txt`; matplotlib: the sample data of
`matplotlib.cbook.get_sample_data`).

| File | Origin (package: file) | Credit | Licence |
|---|---|---|---|
{rows}

## Edited images

Each `edits/<id>.jpg` is a modified version of the photograph named in `edit.jsonl` (its
`source_image`), changed as its `instruction` says (recoloured, cropped, flipped, rotated, framed,
blurred, converted to greyscale, ...), and carries that photograph's licence and credit. The
edits of `china.jpg` and `flower.jpg` are adaptations under CC BY 2.0: credit as above, changes
as described by each row's instruction.

## Composites

Each `compose/<id>.jpg` puts the subjects of the two photographs named in `compose.jsonl` (its
`first_image` and `second_image`) into one scene: the subject of the second (the dahlia or the
rocket) is cut out of its photograph, scaled and placed into the first, as its `target_caption`
describes. It is an adaptation of both photographs and carries the licence and credit of each;
a composite that uses `china.jpg` or `flower.jpg` is an adaptation under CC BY 2.0 (credit as
above; changes: cut out, scaled and combined with the other photograph as described).

## Text

The captions, edit instructions, subject and composite captions, questions and answers, and chats
were written for this repository and are released under the repository's licence (Apache-2.0).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", type=Path, default=HERE / "build_data.yaml")
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()
    plan = yaml.safe_load(args.plan.read_text("utf-8"))
    counts = build(plan, args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out}: {counts}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
