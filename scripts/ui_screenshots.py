"""Screenshots of the Dagster UI for docs/img/: the asset lineage and a training stage's page.

Point it at a UI over a materialized instance (`make demo`, then `make dev` in another terminal):

    python scripts/ui_screenshots.py                          # http://127.0.0.1:3000 -> docs/img/
    python scripts/ui_screenshots.py --port 3344 --out /tmp/shots

Headless Chromium takes them (`apt-get install chromium`), each from a fresh profile; the PNGs are
saved with a 256-colour palette to stay small. The UI test (tests/test_dagster_cli.py) uses the same
functions to read the rendered pages.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The lineage upstream of training_report: every asset but naics_embeddings and the unused global index,
# drawn one by one (the global Lineage page folds each group into one box).
PAGES = {"lineage.png": "/assets/training_report?view=lineage&lineageScope=upstream&lineageDepth=12",
         "stage.png": "/assets/stage_3"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = (1440, 1300)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, action: list[str], budget_ms: int, timeout: float) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise SystemExit("ui_screenshots: chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="naics-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--virtual-time-budget={budget_ms}",
                               *action, url], check=True, timeout=timeout, capture_output=True, text=True)


def screenshot(url: str, out: Path, budget_ms: int = 15000, timeout: float = 120) -> Path:
    """`url` rendered by headless Chromium, saved as a palette PNG at `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(url, [f"--screenshot={out}"], budget_ms, timeout)
    _shrink(out)
    return out


def page_text(url: str, budget_ms: int = 15000, timeout: float = 120) -> str:
    """The visible text of `url` once its scripts have run (no script or style contents)."""
    return _visible_text(_chromium(url, ["--dump-dom"], budget_ms, timeout).stdout)


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def _visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return "\n".join(parser.parts)


def _shrink(png: Path) -> None:
    try:
        from PIL import Image  # matplotlib's dependency
    except ImportError:
        return
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def take(base_url: str, out_dir: Path) -> list[Path]:
    return [screenshot(base_url.rstrip("/") + page, out_dir / name) for name, page in PAGES.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1 (make dev: 3000)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    for path in take(f"http://127.0.0.1:{args.port}", args.out):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
