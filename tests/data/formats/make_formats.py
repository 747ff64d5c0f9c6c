"""Writes the tiny public-layout datasets in this folder (run from the repository root:
``python tests/data/formats/make_formats.py``). The output is committed; this script says how
it was made and remakes it byte for byte. Each folder copies one public release's layout: file
names, folder structure, column names and types, as its dataset card or loader describes it
(the gallery files in ``examples/sources/`` cite them). The pictures are small drawings, the
texts describe them."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
COLORS = {
    "red": (210, 40, 40), "blue": (40, 80, 210), "green": (40, 160, 70), "yellow": (235, 200, 40),
    "white": (245, 245, 245), "black": (20, 20, 20), "orange": (240, 140, 30),
    "purple": (130, 60, 170), "gray": (128, 128, 128), "sky": (150, 200, 240),
}  # fmt: skip


def drawing(
    size: tuple[int, int], background: str, shapes: list[tuple[str, str, tuple[int, ...]]]
) -> Image.Image:
    image = Image.new("RGB", size, COLORS[background])
    pen = ImageDraw.Draw(image)
    for shape, color, box in shapes:
        if shape == "circle":
            pen.ellipse(box, fill=COLORS[color])
        elif shape == "square":
            pen.rectangle(box, fill=COLORS[color])
        else:
            pen.polygon(
                [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])],
                fill=COLORS[color],
            )
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=80)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---------------------------------------------------------------------------------------------


def llava() -> None:
    """LLaVA-1.5 mix: one JSON array, images under the --image_folder (playground/data)."""
    root = HERE / "llava" / "playground" / "data"
    pictures = {
        "coco/train2017/000000033471.jpg": drawing((96, 72), "sky", [("square", "red", (10, 30, 80, 60))]),
        "gqa/images/2354786.jpg": drawing((96, 72), "black", [("circle", "white", (60, 6, 84, 30))]),
        "textvqa/train_images/0054c91397f2fe05.jpg": drawing((96, 72), "white", [("triangle", "green", (20, 10, 76, 66))]),
    }  # fmt: skip
    for name, image in pictures.items():
        write(root / name, encode(image, "JPEG"))
    rows = [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the long shape in the picture?"},
            {"from": "gpt", "value": "The long rectangle in the picture is red."},
            {"from": "human", "value": "What is behind it?"},
            {"from": "gpt", "value": "A plain light-blue background, like a clear sky."},
        ]},
        {"id": "2354786", "image": "gqa/images/2354786.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs the background dark?\nAnswer the question using a single word or phrase."},
            {"from": "gpt", "value": "Yes"},
            {"from": "human", "value": "Where is the white circle?\nAnswer the question using a single word or phrase."},
            {"from": "gpt", "value": "Top right"},
        ]},
        {"id": "0054c91397f2fe05", "image": "textvqa/train_images/0054c91397f2fe05.jpg", "conversations": [
            {"from": "human", "value": "What shape is drawn here?\n<image>"},
            {"from": "gpt", "value": "A green triangle on a white background."},
        ]},
    ]  # fmt: skip
    write(root / "llava_v1_5_mix665k.json", json.dumps(rows, indent=1))


def sharegpt() -> None:
    """ShareGPT (Vicuna's cleaned split): one JSON array of {id, conversations[from, value]}."""
    rows = [
        {"id": "QWJhYvA_0", "conversations": [
            {"from": "human", "value": "Summarize the rules of chess in two sentences."},
            {"from": "gpt", "value": "Each player moves one piece per turn, and each kind of piece moves in its own way. The goal is to checkmate the opponent's king."},
        ]},
        {"id": "i6IyJda_0", "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "What is a good name for a grey cat?"},
            {"from": "chatgpt", "value": "Smokey, Ash or Pebble all suit a grey cat."},
            {"from": "human", "value": "One more, please."},
            {"from": "bing", "value": "How about Graphite?"},
        ]},
        {"id": "i6IyJda_1", "conversations": [
            {"from": "gpt", "value": "(continued) Graphite also works for a dark grey cat."},
            {"from": "human", "value": "How do I boil an egg?"},
            {"from": "gpt", "value": "Lower it into boiling water for about nine minutes, then cool it in cold water."},
            {"from": "human", "value": "Thanks!"},
        ]},
        {"id": "2SBcKQp_0", "conversations": [
            {"from": "human", "value": "请用一句话介绍长城。"},
            {"from": "gpt", "value": "长城是中国古代修建的军事防御工程，绵延上万里。"},
        ]},
    ]  # fmt: skip
    write(
        HERE / "sharegpt" / "ShareGPT_V3_unfiltered_cleaned_split.json",
        json.dumps(rows, ensure_ascii=False, indent=1),
    )


def openai_messages() -> None:
    """OpenAI chat fine-tuning JSONL: {"messages": [...]} per line, content as text or parts,
    tool calls and tool results."""
    rows = [
        {"messages": [
            {"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
            {"role": "user", "content": "What's the capital of France?"},
            {"role": "assistant", "content": "Paris, as if everyone doesn't know that already."},
        ]},
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "Give me a synonym for"}, {"type": "text", "text": "\"happy\"."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Cheerful."}]},
        ]},
        {"messages": [
            {"role": "user", "content": "What is the weather like in Paris today?"},
            {"role": "assistant", "tool_calls": [{"id": "call_id", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Paris, France\", \"format\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_id", "content": "{\"temperature\": 18, \"sky\": \"cloudy\"}"},
            {"role": "assistant", "content": "It is 18 °C and cloudy in Paris today."},
        ]},
        {"messages": [
            {"role": "user", "content": "How many legs does a spider have?"},
            {"role": "assistant", "content": "Eight.", "weight": 1},
            {"role": "user", "content": "And an ant?"},
            {"role": "assistant", "content": "Six."},
        ]},
    ]  # fmt: skip
    write(HERE / "openai_messages" / "train.jsonl", jsonl(rows))


def magicbrush() -> None:
    """osunlp/MagicBrush as the Hub holds it: README card, data/{train,dev}-*.parquet with
    Image columns, one row per edit turn, sessions by img_id + turn_index."""
    import datasets

    def session(
        start: Image.Image, edits: list[tuple[str, tuple[str, str, tuple[int, ...]]]]
    ) -> list[tuple[bytes, str, bytes]]:
        out, current = [], start
        for instruction, shape in edits:
            after = current.copy()
            pen = ImageDraw.Draw(after)
            kind, color, box = shape
            if kind == "circle":
                pen.ellipse(box, fill=COLORS[color])
            else:
                pen.rectangle(box, fill=COLORS[color])
            out.append((encode(current, "PNG"), instruction, encode(after, "PNG")))
            current = after
        return out

    mask = encode(Image.new("RGB", (64, 64), COLORS["white"]), "PNG")
    splits = {
        "train": {
            "242679": session(drawing((64, 64), "sky", []), [
                ("put a red square in the middle", ("square", "red", (20, 20, 44, 44))),
                ("add a yellow sun in the corner", ("circle", "yellow", (46, 2, 62, 18))),
                ("make the ground green", ("square", "green", (0, 52, 64, 64))),
            ]),
            "327726": session(drawing((64, 64), "white", [("circle", "blue", (16, 16, 48, 48))]), [
                ("make the ball orange", ("circle", "orange", (16, 16, 48, 48))),
            ]),
            "93841": session(drawing((64, 64), "gray", []), [
                ("draw a black box at the bottom", ("square", "black", (8, 40, 56, 60))),
                ("let there be a purple ball on the box", ("circle", "purple", (24, 24, 40, 40))),
            ]),
        },
        "dev": {
            "1007": session(drawing((64, 64), "white", []), [
                ("add a green tree", ("square", "green", (28, 20, 36, 60))),
                ("give the tree a round crown", ("circle", "green", (18, 6, 46, 30))),
            ]),
        },
    }  # fmt: skip
    features = datasets.Features({
        "img_id": datasets.Value("string"), "turn_index": datasets.Value("int32"),
        "source_img": datasets.Image(), "mask_img": datasets.Image(),
        "instruction": datasets.Value("string"), "target_img": datasets.Image(),
    })  # fmt: skip
    root = HERE / "magicbrush"
    for split, sessions in splits.items():
        rows: dict[str, list[object]] = {k: [] for k in features}
        for img_id, turns in sessions.items():
            for turn, (source, instruction, target) in enumerate(turns, start=1):
                rows["img_id"].append(img_id)
                rows["turn_index"].append(turn)
                rows["source_img"].append({"bytes": source, "path": None})
                rows["mask_img"].append({"bytes": mask, "path": None})
                rows["instruction"].append(instruction)
                rows["target_img"].append({"bytes": target, "path": None})
        n = len(rows["img_id"])
        out = (
            root
            / "data"
            / f"{split}-00000-of-00001-{'a1b2c3d4' if split == 'train' else 'e5f6a7b8'}.parquet"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(out))
        print(f"magicbrush {split}: {n} rows")
    write(root / "README.md", MAGICBRUSH_CARD)
    write(root / ".gitattributes", GITATTRIBUTES)


MAGICBRUSH_CARD = """---
license: cc-by-4.0
dataset_info:
  features:
  - name: img_id
    dtype: string
  - name: turn_index
    dtype: int32
  - name: source_img
    dtype: image
  - name: mask_img
    dtype: image
  - name: instruction
    dtype: string
  - name: target_img
    dtype: image
  splits:
  - name: train
    num_examples: 6
  - name: dev
    num_examples: 2
task_categories:
- text-to-image
- image-to-image
language:
- en
pretty_name: MagicBrush
---

# MagicBrush (tiny copy of the layout, for chatumm's tests)

The files, columns and splits of osunlp/MagicBrush on the Hugging Face Hub, with small drawings
instead of the COCO photos. `img_id` + `turn_index` name one turn of an editing session; the
source image of turn k is the target image of turn k-1.
"""


# The Hub's .gitattributes sends *.parquet through git-lfs; this copy marks them binary instead, so
# the project's own repository stores the bytes as they are.
GITATTRIBUTES = "*.parquet binary\n"


def coco() -> None:
    """COCO 2017 captions: annotations/captions_train2017.json (images + annotations) beside
    the train2017/ image folder."""
    root = HERE / "coco"
    images = [
        (397133, "000000397133.jpg", drawing((96, 72), "sky", [("circle", "yellow", (8, 8, 30, 30)), ("square", "green", (0, 56, 96, 72))])),
        (37777, "000000037777.jpg", drawing((96, 72), "white", [("square", "blue", (30, 20, 66, 56))])),
        (252219, "000000252219.jpg", drawing((96, 72), "gray", [("triangle", "orange", (20, 8, 76, 64))])),
    ]  # fmt: skip
    entries = []
    for image_id, file_name, image in images:
        write(root / "train2017" / file_name, encode(image, "JPEG"))
        entries.append({
            "license": 4, "file_name": file_name,
            "coco_url": f"http://images.cocodataset.org/train2017/{file_name}",
            "height": 72, "width": 96, "date_captured": "2013-11-14 17:02:52",
            "flickr_url": "http://farm7.staticflickr.com/6116/6255196340_da26cf2c9e_z.jpg",
            "id": image_id,
        })  # fmt: skip
    annotations = [
        {"image_id": 397133, "id": 38, "caption": "A yellow sun above a strip of green grass."},
        {"image_id": 37777, "id": 49, "caption": "A blue square in the middle of a white page."},
        {"image_id": 397133, "id": 58, "caption": "A drawing of a sunny sky over a meadow."},
        {"image_id": 252219, "id": 74, "caption": "An orange triangle on a grey background."},
        {"image_id": 37777, "id": 92, "caption": "A plain blue box drawn on white."},
    ]
    data = {
        "info": {"description": "COCO 2017 Dataset (layout copy)", "url": "http://cocodataset.org", "version": "1.0", "year": 2017, "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}],
        "images": entries,
        "annotations": annotations,
    }  # fmt: skip
    write(root / "annotations" / "captions_train2017.json", json.dumps(data))


def webdataset() -> None:
    """img2dataset's webdataset output (LAION, DataComp): 00000.tar with key.jpg, key.txt and
    key.json per sample, plus the 00000.parquet and 00000_stats.json sidecars."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = HERE / "webdataset"
    samples = [
        (
            "a red apple on a white table",
            drawing((64, 48), "white", [("circle", "red", (20, 10, 44, 34))]),
        ),
        (
            "a green triangle road sign",
            drawing((64, 48), "gray", [("triangle", "green", (16, 4, 48, 44))]),
        ),
        (None, None),  # failed to download: in the parquet, not in the tar
        (
            "a blue square window at night",
            drawing((64, 48), "black", [("square", "blue", (20, 12, 44, 36))]),
        ),
        (
            "an orange sun setting over the sea",
            drawing((64, 48), "blue", [("circle", "orange", (22, 4, 42, 24))]),
        ),
    ]
    meta: dict[str, list[object]] = {
        k: []
        for k in (
            "url",
            "caption",
            "key",
            "status",
            "error_message",
            "width",
            "height",
            "original_width",
            "original_height",
            "exif",
            "sha256",
        )
    }
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "00000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (caption, image) in enumerate(samples):
            key = f"00000{i:04d}"
            ok = image is not None
            meta["url"].append(f"https://example.com/images/{i}.jpg")
            meta["caption"].append(caption or "a photo that could not be downloaded")
            meta["key"].append(key)
            meta["status"].append("success" if ok else "failed_to_download")
            meta["error_message"].append(None if ok else "HTTP Error 404: Not Found")
            for name in ("width", "height", "original_width", "original_height"):
                meta[name].append((64 if "width" in name else 48) if ok else None)
            meta["exif"].append("{}" if ok else None)
            meta["sha256"].append(None)
            if not ok:
                continue
            assert image is not None and caption is not None
            record = {k: meta[k][-1] for k in meta}
            for ext, data in (
                ("jpg", encode(image, "JPEG")),
                ("txt", caption.encode()),
                ("json", json.dumps(record).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
                tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table(meta), root / "00000.parquet")
    write(
        root / "00000_stats.json",
        json.dumps(
            {
                "count": 5,
                "successes": 4,
                "failed_to_download": 1,
                "failed_to_resize": 0,
                "status_dict": {"success": 4, "HTTP Error 404: Not Found": 1},
            },
            indent=4,
        ),
    )


def subjects200k() -> None:
    """Yuanshi/Subjects200K as the Hub holds it: card with configs, data/train-*.parquet, one
    1056x528 composite per row (two 512x512 views, 8 px border, 16 px between), description
    struct, quality_assessment struct."""
    import datasets

    def composite(color: str, left_bg: str, right_bg: str, shape: str) -> bytes:
        image = Image.new("RGB", (1056, 528), COLORS["white"])
        for x0, bg in ((8, left_bg), (528, right_bg)):
            view = drawing((512, 512), bg, [(shape, color, (156, 156, 356, 356))])
            image.paste(view, (x0, 8))
        return encode(image, "JPEG")

    rows = [
        ("a red ceramic teapot", "Furniture", "sky", "green", "circle", "red"),
        ("a blue backpack", "Bags", "white", "gray", "square", "blue"),
        ("an orange traffic cone", "Tools", "gray", "sky", "triangle", "orange"),
    ]
    data: dict[str, list[object]] = {
        "image": [],
        "collection": [],
        "quality_assessment": [],
        "description": [],
    }
    for item, category, left_bg, right_bg, shape, color in rows:
        data["image"].append({"bytes": composite(color, left_bg, right_bg, shape), "path": None})
        data["collection"].append("collection_2")
        data["quality_assessment"].append(
            {"compositeStructure": 5, "objectConsistency": 5, "imageQuality": 5}
        )
        data["description"].append({
            "item": item,
            "description_0": f"{item.capitalize()} stands alone on a {left_bg if left_bg != 'sky' else 'light blue'} backdrop.",
            "description_1": f"{item.capitalize()} placed against a {right_bg if right_bg != 'sky' else 'light blue'} wall.",
            "category": category,
            "description_valid": True,
        })  # fmt: skip
    features = datasets.Features({
        "image": datasets.Image(), "collection": datasets.Value("string"),
        "quality_assessment": {k: datasets.Value("int64") for k in ("compositeStructure", "objectConsistency", "imageQuality")},
        "description": {"item": datasets.Value("string"), "description_0": datasets.Value("string"), "description_1": datasets.Value("string"), "category": datasets.Value("string"), "description_valid": datasets.Value("bool")},
    })  # fmt: skip
    root = HERE / "subjects200k"
    (root / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(data, features=features).to_parquet(
        str(root / "data" / "train-00000-of-00001.parquet")
    )
    write(root / "README.md", SUBJECTS_CARD)
    write(root / ".gitattributes", GITATTRIBUTES)


SUBJECTS_CARD = """---
license: apache-2.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
dataset_info:
  features:
  - name: image
    dtype: image
  - name: collection
    dtype: string
  - name: quality_assessment
    struct:
    - name: compositeStructure
      dtype: int64
    - name: objectConsistency
      dtype: int64
    - name: imageQuality
      dtype: int64
  - name: description
    struct:
    - name: item
      dtype: string
    - name: description_0
      dtype: string
    - name: description_1
      dtype: string
    - name: category
      dtype: string
    - name: description_valid
      dtype: bool
  splits:
  - name: train
    num_examples: 3
---

# Subjects200K (tiny copy of the layout, for chatumm's tests)

The files and columns of Yuanshi/Subjects200K, with drawings instead of generated photos: each
`image` is a 1056x528 composite of two 512x512 views of one subject (8 px border, 16 px
between them), described by `description.description_0` (left) and `description_1` (right).
"""


def omnigen_x2i() -> None:
    """OmniGen's X2I / fine-tuning format: JSONL of {task_type, instruction, input_images,
    output_image}, image paths relative to --image_path, <img><|image_k|></img> placeholders."""
    root = HERE / "omnigen_x2i"
    pictures = [
        ("edit_source_1.png", drawing((64, 64), "white", [("circle", "blue", (10, 10, 40, 40))]),
         "edit_target_1.png", drawing((64, 64), "white", [("circle", "red", (10, 10, 40, 40))]),
         "<img><|image_1|></img> The umbrella should be red."),
        ("edit_source_2.png", drawing((64, 64), "sky", [("square", "gray", (16, 30, 48, 64))]),
         "edit_target_2.png", drawing((64, 64), "black", [("square", "gray", (16, 30, 48, 64))]),
         "Turn the daytime sky in <img><|image_1|></img> into night."),
        ("edit_source_3.png", drawing((64, 64), "white", [("triangle", "green", (8, 8, 56, 56))]),
         "edit_target_3.png", drawing((64, 64), "white", [("triangle", "green", (8, 8, 56, 56)), ("circle", "yellow", (26, 30, 38, 42))]),
         "Find the tree in the picture <img><|image_1|></img> and hang a yellow lantern on it."),
    ]  # fmt: skip
    rows = []
    for source, source_image, target, target_image, instruction in pictures:
        write(root / "images" / source, encode(source_image, "PNG"))
        write(root / "images" / target, encode(target_image, "PNG"))
        rows.append(
            {
                "task_type": "image_edit",
                "instruction": instruction,
                "input_images": [source],
                "output_image": target,
            }
        )
    write(root / "toy_data.jsonl", jsonl(rows))


def imagefolder() -> None:
    """The `datasets` imagefolder layout with split folders: train/ and test/, each with
    metadata.jsonl (file_name + text)."""
    root = HERE / "imagefolder"
    splits = {
        "train": [
            ("0001.png", "a yellow star-like triangle on blue", drawing((48, 48), "blue", [("triangle", "yellow", (8, 8, 40, 40))])),
            ("0002.png", "a red ball on grass", drawing((48, 48), "green", [("circle", "red", (14, 14, 34, 34))])),
            ("0003.png", "a black square on white paper", drawing((48, 48), "white", [("square", "black", (12, 12, 36, 36))])),
        ],
        "test": [
            ("0004.png", "a purple circle on grey", drawing((48, 48), "gray", [("circle", "purple", (10, 10, 38, 38))])),
        ],
    }  # fmt: skip
    for split, items in splits.items():
        for name, _, image in items:
            write(root / split / name, encode(image, "PNG"))
        write(
            root / split / "metadata.jsonl",
            jsonl([{"file_name": n, "text": t} for n, t, _ in items]),
        )


def main() -> None:
    for folder in (
        "llava",
        "sharegpt",
        "openai_messages",
        "magicbrush",
        "coco",
        "webdataset",
        "subjects200k",
        "omnigen_x2i",
        "imagefolder",
    ):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    llava()
    sharegpt()
    openai_messages()
    magicbrush()
    coco()
    webdataset()
    subjects200k()
    omnigen_x2i()
    imagefolder()


if __name__ == "__main__":
    main()
