"""The evaluation report in a real browser: headless Chromium opens it from file://, and after its scripts ran the
DOM holds a card per image of the first page, the hallucination filter and the word search leave exactly the cards
the page's data says, nothing went wrong on the console, and a screenshot is not blank. Skipped, with the reason,
only where Chromium is not installed (.ci/run installs Debian's chromium package)."""
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_report import find_chromium, first_render_ms, run_chromium, synthetic_report
from core.inference.report import PAGE_SIZE, decode_attention, read_report_data

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; "
                                                         ".ci/run installs it): the report's browser test is skipped")
NUM_IMAGES = 70  # more than a page


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A synthetic report of two runs side by side, its index.html and the data its page reads."""
    index = synthetic_report(tmp_path_factory.mktemp("browser") / "report", NUM_IMAGES, num_runs=2)
    return index, read_report_data(index.parent)


def open_page(index, view=""):
    """The DOM after the page's scripts ran, opened at ``#view``, and the rows of its cards; nothing may have gone
    wrong on the console or in the page's error hook."""
    dom, console = run_chromium(CHROMIUM, index.as_uri() + (f"#{view}" if view else ""), "--dump-dom")
    errors = re.findall(r'data-errors="[^"]*"', dom)  # what the page's error hook caught
    assert console == [] and errors == [], (console, errors)
    assert first_render_ms(dom) is not None  # the script ran to its end
    return dom, [int(row) for row in re.findall(r'<article class="card" data-image="(\d+)"', dom)]


def test_first_page_holds_a_card_per_image(report):
    index, data = report
    dom, rows = open_page(index)
    assert rows == [image["row"] for image in data["images"]][:PAGE_SIZE]
    assert f"{NUM_IMAGES} of {NUM_IMAGES} images; page 1 of 2" in dom
    _, rows = open_page(index, "page=2")
    assert rows == [image["row"] for image in data["images"]][PAGE_SIZE:]


def test_filters_and_search_leave_the_cards_the_data_says(report):
    index, data = report
    hallucinated = [image["row"] for image in data["images"] if any(run["halluc"] for run in image["runs"])]
    assert 0 < len(hallucinated) < PAGE_SIZE  # the filter has something to keep and something to drop
    _, rows = open_page(index, "show=hallucination")
    assert rows == hallucinated
    _, rows = open_page(index, "sort=cider&q=red%20circle")
    expected = [image for image in data["images"]  # every word of the search, anywhere in one run's caption
                if any({"red", "circle"} <= set(run["c"].split()) for run in image["runs"])]
    expected.sort(key=lambda image: (image["runs"][0]["cider"], image["row"]))
    assert rows == [image["row"] for image in expected][:PAGE_SIZE] and rows


def test_screenshot_is_not_blank(report, tmp_path):
    index, _ = report
    shot = tmp_path / "shot.png"
    run_chromium(CHROMIUM, index.as_uri(), f"--screenshot={shot}", "--window-size=1000,900", "--hide-scrollbars")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)  # (H, W, 3)
    assert pixels.shape == (900, 1000, 3)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, tables and pictures


def test_the_error_checks_catch_a_missing_picture_and_a_script_error(report, tmp_path):
    index, _ = report
    broken = tmp_path / "broken"
    shutil.copytree(index.parent, broken)
    page_data = broken / "report-data.js"
    page_data.write_text(re.sub(r'"src":"data:[^"]*"', '"src":"images/missing.jpg"', page_data.read_text(), count=1))
    with open(broken / "report.js", "a") as script:
        script.write("\nundefinedFunction();\n")
    dom, console = run_chromium(CHROMIUM, (broken / index.name).as_uri(), "--dump-dom")
    errors = re.findall(r'data-errors="([^"]*)"', dom)
    # A file:// script's own error reaches the hook masked ("Script error."); the console line names it.
    caught = errors[0].split(" | ") if errors else []
    assert len(caught) == 2 and caught[1].startswith("cannot load") and caught[1].endswith("/images/missing.jpg")
    assert caught[0] in ("Script error.", "Uncaught ReferenceError: undefinedFunction is not defined")
    assert any("undefinedFunction" in line for line in console)


PROBE = """<script>
var cards = document.querySelectorAll(".card"), word = cards[0].querySelector(".run.att .cap .w");
word.click();
var canvas = cards[0].querySelector("canvas.heat"), alpha = [];
var pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
for (var i = 3; i < pixels.length; i += 4) alpha.push(pixels[i]);
cards[0].focus();
cards[0].dispatchEvent(new KeyboardEvent("keydown", {key: "j", bubbles: true}));
document.body.setAttribute("data-probe", [canvas.hidden, canvas.width, Math.min.apply(null, alpha),
  Math.max.apply(null, alpha), cards[0].querySelector(".mapnote").textContent,
  document.activeElement.getAttribute("data-image")].join("|"));
</script>"""


def test_a_clicked_word_shows_its_map_and_keys_move_between_cards(report, tmp_path):
    index, data = report
    probed = tmp_path / "probed"
    shutil.copytree(index.parent, probed)
    page = probed / index.name
    page.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom, _ = open_page(page)
    hidden, side, low, high, note, focused = re.search(r'data-probe="([^"]*)"', dom).group(1).split("|")
    first = data["images"][0]["runs"][0]
    caption = decode_attention(first["att"])  # (T, R)
    assert (hidden, side) == ("false", "8") and note.startswith(f"attention of \u201c{first['c'].split()[0]}\u201d")
    # Dimmed by 0.75 where the first word put no attention, not at all where a word of the caption put the most.
    dimming = np.round(255 * 0.75 * (1 - caption[0] / caption.max()))
    assert (int(low), int(high)) == (dimming.min(), dimming.max()) and dimming.min() < dimming.max()
    assert focused == str(data["images"][1]["row"])
