"""``python -m train demo``: serve the chat page for a checkpoint.

    python -m train demo --checkpoint runs/tiny [--port 7860] [--host 127.0.0.1] [--save-dir DIR]

Binds to 127.0.0.1 unless ``--host`` says otherwise (with a warning: the page has no login).
Gradio's analytics, version check and share links stay off, and the Hugging Face Hub is not
contacted: the demo runs on a machine without internet.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Set before gradio is imported: it reads them at import and at Blocks creation.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
}


def host_warning(host: str) -> str | None:
    """What to print when the page is served beyond this machine."""
    if host in LOOPBACK:
        return None
    return (
        f"warning: --host {host} serves the demo beyond this machine; the page has no login, "
        "so anyone who reaches the port can use the model and see every conversation's images"
    )


demo_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Chat with a trained model in the browser (needs the `demo` extra).",
)


@demo_app.command()
def demo(
    checkpoint: Annotated[
        Path, typer.Option(help="run directory, checkpoint, or BAGEL-layout directory")
    ],
    port: Annotated[int, typer.Option(help="TCP port of the page")] = 7860,
    host: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 serves every network of this machine")
    ] = "127.0.0.1",
    save_dir: Annotated[
        Path, typer.Option(help="shard directory that saved conversations are added to")
    ] = Path("demo-conversations"),
    device: Annotated[str | None, typer.Option(help="cuda or cpu (default: cuda if any)")] = None,
    ema: Annotated[bool, typer.Option(help="the EMA weights of a training checkpoint")] = False,
) -> None:
    """Serve the chat page until interrupted."""
    os.environ.update(OFFLINE_ENV)
    try:
        import gradio as gr
    except ImportError:
        typer.echo('error: the demo needs Gradio: pip install -e ".[demo]"', err=True)
        raise typer.Exit(2) from None
    from train.demo.app import CSS, build_app, error_app
    from train.infer import load_assets

    warning = host_warning(host)
    if warning:
        typer.echo(warning, err=True)
    with tempfile.TemporaryDirectory(prefix="chatumm-demo-") as images:
        try:
            assets = load_assets(checkpoint, device=device, ema=ema)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            typer.echo(f"error: cannot read {checkpoint}: {err}", err=True)
            app = error_app(checkpoint, f"{type(err).__name__}: {err}")
        else:
            typer.echo(f"loaded {assets.source} on {assets.device}")
            app = build_app(assets, save_dir, Path(images))
        app.queue(default_concurrency_limit=1).launch(
            server_name=host, server_port=port, share=False, show_error=True,
            footer_links=[], mcp_server=False, ssr_mode=False, pwa=False,
            enable_monitoring=False, run_history=False, allowed_paths=[images],
            theme=gr.themes.Default(), css=CSS,
        )  # fmt: skip
