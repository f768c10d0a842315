"""The report page opens in headless Chromium without console errors, every chart drawn.

Skipped where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.analysis.analyze import analyze_log
from streams.analysis.report import write_report
from tests.unit.test_analysis_report import EVENTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# Appended to a copy of the page (the report itself has no script): counts the images
# the browser actually decoded and writes the result where --dump-dom shows it.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-probe", ok + "/" + imgs.length);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import orjson

    out = tmp_path_factory.mktemp("report")
    log = out / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))
    return write_report(analyze_log(log), out)["html"]


def test_the_page_loads_without_console_errors_and_draws_every_chart(page: Path):
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    run = chromium("--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert "What users do" in run.stdout
    drawn = re.search(r'data-probe="(\d+)/(\d+)"', run.stdout)
    assert drawn, "the probe did not run"
    assert drawn.group(1) == drawn.group(2) and int(drawn.group(2)) >= 6, drawn.group(0)


def test_a_screenshot_is_taken(page: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    run = chromium("--hide-scrollbars", "--window-size=1100,1400", f"--screenshot={shot}",
                   page.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
