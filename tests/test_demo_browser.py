"""``python -m train demo`` driven in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through Selenium), on a checkpoint ``torchrun -m train`` wrote on the bundled
data: draw, refer to a drawn image, upload and edit, undo, two tabs and the queue, save and read
back with ``datasets``; and the page shown when the checkpoint cannot be read.

Every request the page makes must stay on 127.0.0.1 (Chromium's network log), and the server
process must resolve or connect to no other host (a ``sitecustomize`` hook records any attempt).
``CHATUMM_DEMO_SCREENSHOT=docs/demo.png`` also writes the README's screenshot.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no Chromium here: `apt-get install chromium chromium-driver` (Debian) runs the "
        "demo's browser test",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("gradio") is None or importlib.util.find_spec("selenium") is None,
        reason='the demo needs Gradio and the test Selenium: pip install -e ".[demo,dev]"',
    ),
]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1360,960",
)  # fmt: skip
# Imported first by the demo's Python: notes every name resolved and every address connected
# to that is not this machine, before the request leaves.
CONNECT_HOOK = """
import os, socket
_log = os.environ["CHATUMM_TEST_NETWORK_LOG"]
_local = {None, "127.0.0.1", "::1", "localhost", "0.0.0.0", ""}
def _note(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
_note("hooked")
_connect, _connect_ex, _resolve = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _local:
        _note(f"connect {address[0]}")
def connect(self, address):
    _check(self, address)
    return _connect(self, address)
def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)
def getaddrinfo(host, *args, **kwargs):
    if (host.decode() if isinstance(host, bytes) else host) not in _local:
        _note(f"resolve {host}")
    return _resolve(host, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


@dataclass
class Demo:
    url: str
    save_dir: Path
    network_log: Path
    output: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(CONNECT_HOOK)
    return folder


@contextmanager
def _serve(checkpoint: Path, tmp: Path, hook_dir: Path) -> Iterator[Demo]:
    """``python -m train demo`` on a free port, until the URL is printed; stopped afterwards."""
    port = _free_port()
    demo = Demo(f"http://127.0.0.1:{port}/", tmp / "saved", tmp / "network.log", tmp / "out.log")
    env = {
        **os.environ,
        "PYTHONPATH": f"{hook_dir}{os.pathsep}{ROOT}",
        "OMP_NUM_THREADS": "1",
        "CHATUMM_TEST_NETWORK_LOG": str(demo.network_log),
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
    }
    command = [
        sys.executable, "-m", "train", "demo", "--checkpoint", str(checkpoint),
        "--port", str(port), "--save-dir", str(demo.save_dir),
    ]  # fmt: skip
    with demo.output.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        deadline = time.monotonic() + 180
        while "Running on local URL" not in demo.output.read_text():
            assert server.poll() is None, demo.output.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not start in 180 s"
            time.sleep(0.2)
        yield demo
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def demo(tiny_run_dir: Path, tmp_path_factory: pytest.TempPathFactory, hook_dir: Path):
    with _serve(tiny_run_dir, tmp_path_factory.mktemp("demo"), hook_dir) as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# --- driving the page ---------------------------------------------------------------------------
def _wait(driver, condition, timeout: float = 120, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, what)


def _css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: _css(d, "#message textarea"), what="the page")


def _set(driver, name: str, value: object) -> None:
    from selenium.webdriver.common.keys import Keys

    (field,) = _wait(driver, lambda d: _css(d, f"#setting-{name} input"), 30, f"the {name} field")
    field.clear()
    field.send_keys(str(value), Keys.TAB)


def _choose(driver, group: str, label: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//*[@id='{group}']//label[contains(., '{label}')]").click()


def _images(driver) -> list:
    return _css(driver, "#chat img")


def _send(driver, text: str, files: tuple[Path, ...] = (), images_after: int = 0) -> None:
    """Type ``text`` (after what the box holds), attach ``files``, press Enter; wait until the
    chat shows ``images_after`` images and the box is free again."""
    from selenium.webdriver.common.keys import Keys

    for path in files:
        _css(driver, "#message input[type=file]")[0].send_keys(str(path))
    if files:
        _wait(driver, lambda d: len(_css(d, "#message img")) == len(files), what="the upload")
    box = _css(driver, "#message textarea")[0]
    box.send_keys(text, Keys.ENTER)
    _wait(
        driver,
        lambda d: len(_images(d)) == images_after and _css(d, "#message textarea")[0].is_enabled(),
        what=f"{images_after} images in the chat",
    )


def _box_text(driver) -> str:
    return _css(driver, "#message textarea")[0].get_attribute("value")


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def _photo(path: Path) -> Path:
    gradient = Image.linear_gradient("L").resize((48, 32))
    Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient)
    ).save(path)
    return path


def _screenshot(driver, tmp: Path) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    shot = tmp / "demo.png"
    driver.save_screenshot(str(shot))
    target = os.environ.get("CHATUMM_DEMO_SCREENSHOT")
    if target:  # the README's: palette colours keep it small
        with Image.open(shot) as image:
            image.convert("RGB").quantize(colors=96).save(target, optimize=True)


# --- the tests ----------------------------------------------------------------------------------
def test_draw_refer_upload_undo_queue_and_save(demo: Demo, browser, tmp_path: Path) -> None:
    import datasets

    from synth.shards import iter_samples

    driver = browser
    _open(driver, demo.url)
    _css(driver, "#settings button.label-wrap")[0].click()
    for name, value in (("steps", 3), ("max_tokens", 4), ("max_parts", 1)):
        _set(driver, name, value)
    _choose(driver, "mode", "draw")

    # a text in, an image out
    _send(driver, "a red fox in the snow", images_after=1)
    assert "a red fox in the snow" in driver.find_element("id", "chat").text

    # "edit this": clicking the drawn image puts a reference into the next message
    _images(driver)[0].click()
    _wait(driver, lambda d: _box_text(d).strip() == "[image 1]", what="the reference")
    _send(driver, "make it night", images_after=3)  # the image shown again, and the new one

    # an upload, edited
    photo = _photo(tmp_path / "my photo.png")
    _send(driver, "paint my photo in watercolours", files=(photo,), images_after=5)

    # undo gives the message back, the upload included; sent again, the same turn comes back
    drawn = _images(driver)[-1].get_attribute("src")
    driver.find_element("id", "undo").click()
    _wait(driver, lambda d: len(_images(d)) == 3, what="the undo")
    _wait(driver, lambda d: _box_text(d) == "paint my photo in watercolours", what="the text")
    assert len(_css(driver, "#message img")) == 1
    _send(driver, "", images_after=5)
    assert _images(driver)[-1].get_attribute("src").rsplit("/", 1)[1] == drawn.rsplit("/", 1)[1]

    # a second tab has its own conversation, and waits its turn for the model
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    _open(driver, demo.url)
    assert not _images(driver) and "Say something" in driver.find_element("id", "chat").text
    _css(driver, "#settings button.label-wrap")[0].click()
    _set(driver, "steps", 800)  # long enough to be seen working
    _choose(driver, "mode", "draw")
    second = driver.current_window_handle
    _css(driver, "#message textarea")[0].send_keys("a slow, careful drawing\n")
    _wait(driver, lambda d: "drawing: step" in d.find_element("id", "chat").text, what="steps")
    driver.switch_to.window(first)
    _css(driver, "#message textarea")[0].send_keys("and another\n")
    _wait(driver, lambda d: re.search(r"queue: \d+/\d+", d.find_element("id", "chat").text), 60)
    driver.switch_to.window(second)
    _wait(driver, lambda d: len(_images(d)) == 1, what="the slow drawing")
    driver.close()
    driver.switch_to.window(first)
    _wait(driver, lambda d: len(_images(d)) == 6 and _css(d, "#message textarea")[0].is_enabled())
    driver.find_element("id", "undo").click()
    _wait(driver, lambda d: len(_images(d)) == 5, what="the undo")

    # save: the last request depends on the first drawing, two rounds back
    _choose(driver, "depends", "turn 2 (assistant): image 1")
    driver.find_element("id", "save").click()
    _wait(driver, lambda d: "saved" in d.find_element("id", "saved").text, what="the save")
    note = driver.find_element("id", "saved").text
    _css(driver, "#settings button.label-wrap")[0].click()  # closed, for the screenshot
    _screenshot(driver, tmp_path)
    table = datasets.load_dataset("parquet", data_dir=str(demo.save_dir), split="train")
    assert table.num_rows == 1
    row = table[0]
    assert row["sample_id"] in note and row["task"] in note
    assert (row["task"], row["stage"]) == ("ti_i_i1_n", "b")  # one part per answer: an image
    assert row["provenance"]["depends_on"] == [1] and row["provenance"]["distractor_turns"] == [
        2,
        3,
    ]
    roles = [turn["role"] for turn in row["turns"]]
    assert roles == ["user", "assistant"] * 3
    texts = [part["text"] for turn in row["turns"] for part in turn["parts"] if part["text"]]
    assert texts[0] == "a red fox in the snow" and "make it night" in texts
    assert "paint my photo in watercolours" in texts
    # the upload, decoded by the datasets Image feature, is the file the browser sent
    final_user = row["turns"][4]["parts"]
    upload = row["images"][final_user[0]["image"]]
    assert upload["source"] == "user"
    assert np.array_equal(np.asarray(upload["image"].convert("RGB")), np.asarray(Image.open(photo)))
    assert row["turns"][2]["parts"][0]["image"] == row["turns"][1]["parts"][0]["image"]
    (sample,) = iter_samples(demo.save_dir)  # every invariant of the contract holds
    assert sample.sample_id == row["sample_id"]

    # a new conversation starts empty, and the next answer follows no history
    driver.find_element("id", "new").click()
    _wait(driver, lambda d: not _images(d) and "Say something" in d.find_element("id", "chat").text)
    _send(driver, "a blue bird", images_after=1)

    # nothing left this machine: not the page's requests, not the server's
    hosts = {urlparse(url).hostname for url in _requests(driver) if url.startswith(("http", "ws"))}
    assert hosts == {"127.0.0.1"}, hosts
    assert demo.network_log.read_text() == "hooked\n", demo.network_log.read_text()


def test_a_checkpoint_that_cannot_be_read_gets_an_error_page(
    browser, tmp_path: Path, hook_dir: Path
) -> None:
    missing = tmp_path / "no-such-run"
    with _serve(missing, tmp_path, hook_dir) as demo:
        browser.get(demo.url)
        _wait(browser, lambda d: _css(d, "#error"), what="the error page")
        text = browser.find_element("id", "error").text
        assert "The checkpoint cannot be read" in text and str(missing) in text
        assert "does not exist" in text and "--checkpoint" in text
        assert f"error: cannot read {missing}" in demo.output.read_text()
