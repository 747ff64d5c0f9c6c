"""``python -m train chat`` (interactive) and ``python -m train generate`` (batch).

    python -m train chat --checkpoint runs/tiny [--out chat-out] [--think] [--steps 50]
    python -m train generate --checkpoint runs/tiny --in out/stage-c --out gen [--seed 0]

``--checkpoint``: a training run directory (its newest checkpoint), a checkpoint, or a directory
in BAGEL's layout (exported, or BAGEL-7B-MoT). ``generate`` reads a shard directory or a Parquet
file in the data contract's shape and writes what ``train.infer.batch`` describes (resumable,
reproducible for a ``--seed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from train.infer.options import ImageOptions, RenormType, TextOptions

Checkpoint = Annotated[
    Path, typer.Option(help="run directory, checkpoint, or BAGEL-layout directory")
]
Seed = Annotated[int, typer.Option(help="seed of noise and sampling (outputs are reproducible)")]
Think = Annotated[bool, typer.Option(help="BAGEL's think mode: plan in text before drawing")]
Mode = Annotated[str, typer.Option(help="auto (the model decides), image or text")]
MaxTokens = Annotated[int, typer.Option(help="tokens per text part at most")]
Temperature = Annotated[float, typer.Option(help="0 = greedy")]
TopP = Annotated[float, typer.Option(help="nucleus sampling mass")]
Steps = Annotated[int | None, typer.Option(help="timestep schedule points (default 50)")]
CfgText = Annotated[float | None, typer.Option(help="text guidance scale (default 4)")]
CfgImg = Annotated[float | None, typer.Option(help="image guidance scale (default 1, editing 2)")]
Renorm = Annotated[RenormType | None, typer.Option(help="global | channel | text_channel")]
Size = Annotated[str | None, typer.Option(help="image size WIDTHxHEIGHT (default: the last image)")]
Extra = Annotated[
    list[str] | None,
    typer.Option("--image-option", help="any other image option, KEY=VALUE (repeatable)"),
]
Device = Annotated[str | None, typer.Option(help="cuda or cpu (default: cuda if available)")]
Ema = Annotated[bool, typer.Option(help="the EMA weights of a training checkpoint")]


def _chat_options(
    max_tokens: int,
    temperature: float,
    top_p: float,
    steps: int | None,
    cfg_text_scale: float | None,
    cfg_img_scale: float | None,
    cfg_renorm_type: str | None,
    size: str | None,
    extra: list[str] | None,
) -> dict[str, Any]:
    """The ``Chat`` keyword arguments the shared command-line options stand for."""
    overrides: dict[str, Any] = {}
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--image-option")
        overrides[key] = _parse_value(key, value)
    named = {
        "steps": steps,
        "cfg_text_scale": cfg_text_scale,
        "cfg_img_scale": cfg_img_scale,
        "cfg_renorm_type": cfg_renorm_type,
        "size": _parse_size(size) if size else None,
    }
    overrides.update({k: v for k, v in named.items() if v is not None})
    try:
        ImageOptions().with_overrides(overrides)
        text = TextOptions(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    except (ValueError, TypeError) as err:
        raise typer.BadParameter(str(err)) from None
    return {"text": text, "image_overrides": overrides}


def _parse_size(size: str) -> tuple[int, int]:
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise typer.BadParameter(
            f"{size!r} is not WIDTHxHEIGHT, e.g. 1024x768", param_hint="--size"
        )
    return int(width), int(height)


def _parse_value(key: str, value: str) -> Any:
    if key == "cfg_interval":
        lo, _, hi = value.partition(",")
        return float(lo), float(hi)
    if key == "size":
        return _parse_size(value)
    if key == "cfg_renorm_type":
        return value
    if key == "steps":
        return int(value)
    return float(value)


def _mode(mode: str) -> Any:
    if mode not in ("auto", "image", "text"):
        raise typer.BadParameter(f"{mode!r}: use auto, image or text", param_hint="--mode")
    return mode


# --- generate ------------------------------------------------------------------------------------
generate_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Write the assistant turn that follows each sample's history.",
)


@generate_app.command()
def generate(
    checkpoint: Checkpoint,
    in_path: Annotated[
        Path, typer.Option("--in", help="shard directory or Parquet file of dialogue samples")
    ],
    out: Annotated[Path, typer.Option(help="output directory (turns.jsonl, images/)")],
    seed: Seed = 0,
    limit: Annotated[int | None, typer.Option(help="samples at most")] = None,
    mode: Mode = "auto",
    think: Think = False,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    steps: Steps = None,
    cfg_text_scale: CfgText = None,
    cfg_img_scale: CfgImg = None,
    cfg_renorm_type: Renorm = None,
    size: Size = None,
    image_option: Extra = None,
    device: Device = None,
    ema: Ema = False,
) -> None:
    """Generate the final assistant turn of every sample (resumable, reproducible)."""
    from train.infer.batch import generate_turns, input_files, read_samples
    from train.infer.load import load_assets

    options = _chat_options(
        max_tokens, temperature, top_p, steps, cfg_text_scale, cfg_img_scale,
        cfg_renorm_type, size, image_option,
    )  # fmt: skip
    run_mode = _mode(mode)
    try:
        files = input_files(in_path)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--in") from None
    assets = load_assets(checkpoint, device=device, ema=ema)
    summary = generate_turns(
        assets, read_samples(files), out, seed=seed, limit=limit, mode=run_mode,
        chat_options={**options, "think": think}, progress=typer.echo,
    )  # fmt: skip
    typer.echo(
        f"wrote {summary.written} turn(s) to {out / 'turns.jsonl'} ({summary.skipped} already "
        f"there, {summary.rejected} rejected)"
    )


# --- chat ----------------------------------------------------------------------------------------
chat_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Talk to a trained model in the terminal.",
)

HELP = """commands:
  /image PATH [PATH ...]   attach images to your next message
  /draw MESSAGE            send MESSAGE and make the model answer with an image first
  /talk MESSAGE            send MESSAGE and make the model answer in text first
  /reset                   start a new conversation
  /quit                    leave (or end of input)
anything else is sent as your message; the model decides whether to draw or talk"""


@chat_app.command()
def chat(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Option(help="directory for the images of the conversation")] = Path(
        "chat-out"
    ),
    seed: Seed = 0,
    think: Think = False,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    steps: Steps = None,
    cfg_text_scale: CfgText = None,
    cfg_img_scale: CfgImg = None,
    cfg_renorm_type: Renorm = None,
    size: Size = None,
    image_option: Extra = None,
    device: Device = None,
    ema: Ema = False,
) -> None:
    """An interactive conversation; images are written as PNG files and their paths printed."""
    from train.infer.batch import save_png
    from train.infer.load import load_assets
    from train.infer.session import Chat

    options = _chat_options(
        max_tokens, temperature, top_p, steps, cfg_text_scale, cfg_img_scale,
        cfg_renorm_type, size, image_option,
    )  # fmt: skip
    assets = load_assets(checkpoint, device=device, ema=ema)
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"loaded {assets.source} on {assets.device}; /help for commands")
    session = Chat(assets, seed=seed, think=think, **options)
    attached: list[Path] = []
    conversation = 0
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):  # end of input, or Ctrl-C at the prompt
            typer.echo("")
            return
        command, _, rest = line.partition(" ")
        if not line:
            continue
        if command in ("/quit", "/exit"):
            return
        if command == "/help":
            typer.echo(HELP)
            continue
        if command == "/reset":
            session, attached = Chat(assets, seed=seed, think=think, **options), []
            conversation += 1
            typer.echo("(new conversation)")
            continue
        if command == "/image":
            paths = [Path(p) for p in rest.split()]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing or not paths:
                typer.echo(f"no such image file(s): {missing or 'give a path'}")
                continue
            attached.extend(paths)
            typer.echo(f"(attached {len(attached)} image(s) to your next message)")
            continue
        mode, message = {"/draw": ("image", rest), "/talk": ("text", rest)}.get(
            command, ("auto", line)
        )
        try:
            reply = session.send(message or None, images=list(attached), mode=mode)  # type: ignore[arg-type]
        except (ValueError, OSError) as err:
            typer.echo(f"error: {err}")
            continue
        attached = []
        turn = len(session.turns) - 1
        drawn = iter(reply.images)
        for k, part in enumerate(reply.turn.parts):
            if part.type == "text":
                typer.echo(f"assistant> {part.text}")
                continue
            path = out / f"chat{conversation}-turn{turn:02d}-{k}.png"
            save_png(next(drawn), path)
            typer.echo(f"assistant> [image] {path}")
