"""The HTML of an evaluation report (``core.inference.report``): the page itself, readable without JavaScript for
its summary and every caption, and each caption marked by its grounding findings.

A caption is a run of ``<span class="w">`` words, each wrong claim's words carrying ``m-<kind>`` classes and its
note as a title, followed by a list of the notes and the objects missed: colour is never the only sign.
"""
import math
from html import escape

import numpy as np

from core.data.layout import REPORT_DATA, REPORT_SCRIPT, REPORT_STYLE
from core.evaluation.relation_probe import wilson_interval

GENERATOR = "image-captioning evaluation report"
MARK_KINDS = ("hallucination", "count", "size", "relation")
# Grounding proportions and the claims counted under each: their 95% Wilson interval is shown.
PROPORTIONS = {"object_precision": "n_object_mentions", "object_recall": "n_scene_pairs",
               "hallucination_rate": "n_captions", "count_accuracy": "n_count_claims",
               "relation_accuracy": "n_relation_claims", "size_accuracy": "n_size_claims",
               "forced_relation_accuracy": "n_forced_relation_claims"}
# Records every script error and failed load in the page's root element, where a test (or a reader) finds them.
ERROR_HOOK = ("window.REPORT_ERRORS=[];function reportError(m){REPORT_ERRORS.push(String(m));"
              "document.documentElement.setAttribute('data-errors',REPORT_ERRORS.join(' | '));}"
              "addEventListener('error',function(e){var t=e.target;reportError(e.message||('cannot load '+"
              "(t&&(t.src||t.href))));},true);addEventListener('unhandledrejection',function(e){reportError(e.reason);});"
              "var consoleError=console.error;console.error=function(){reportError([].join.call(arguments,' '));"
              "consoleError.apply(console,arguments);};")


def caption_html(caption, findings):
    """``caption`` as HTML words marked by its grounding ``findings`` (``core.evaluation.grounding.caption_findings``;
    None off the shapes world), then the notes of its marks and the objects it misses."""
    words = caption.split()
    kinds, notes = [set() for _ in words], [[] for _ in words]
    for mark in (findings or {}).get("marks", ()):
        for position in range(*mark["words"]):
            kinds[position].add(mark["kind"])
            notes[position].append(mark["note"])
    spans = []
    for word, marked, said in zip(words, kinds, notes):
        classes = " ".join(["w"] + [f"m-{kind}" for kind in MARK_KINDS if kind in marked])
        title = f' title="{escape("; ".join(said))}"' if said else ""
        spans.append(f'<span class="{classes}"{title}>{escape(word)}</span>')
    items = [f'<li class="m-{mark["kind"]}">{mark["kind"]}: {escape(mark["note"])}</li>'
             for mark in (findings or {}).get("marks", ())]
    items += [f'<li class="missed">missed: {escape(pair)}</li>' for pair in (findings or {}).get("missed", ())]
    notes_html = f'<ul class="notes">{"".join(items)}</ul>' if items else ""
    return f'<p class="cap">{" ".join(spans)}</p>{notes_html}'


def summary_figures(result, per_image_cider=None):
    """The figures ``inference.py --evaluate`` prints, in groups: [(group, [(name, value, 95% interval or "")])].
    Caption metrics x100 (CIDEr-D's interval from its per-image scores; the others are corpus figures without
    one), then grounding, relation probe and attention figures, proportions with their Wilson interval."""
    metrics = []
    for name, value in result["metrics"].items():
        interval = ""
        if name == "CIDEr" and per_image_cider is not None and len(per_image_cider) > 1:
            scores = np.asarray(per_image_cider)
            half = 1.96 * scores.std(ddof=1) / math.sqrt(len(scores))
            interval = f"[{100 * (scores.mean() - half):.2f}, {100 * (scores.mean() + half):.2f}]"
        metrics.append((f"{name} (x100)", f"{100 * value:.2f}", interval))
    groups = [("caption metrics", metrics)]
    for group in ("grounding", "relation_probe", "attention"):
        figures = result.get(group) or {}
        rows = [(name, f"{value:.4f}" if isinstance(value, float) else str(value), _interval(name, figures))
                for name, value in figures.items() if not name.endswith(("_low", "_high"))]  # intervals: below
        if rows:
            groups.append((group.replace("_", " "), rows))
    return groups


def _interval(name, figures):
    """The 95% interval of a figure: the record's own ``<name>_low``/``_high``, else Wilson's for a proportion."""
    low, high = figures.get(f"{name}_low"), figures.get(f"{name}_high")
    if low is None and name in PROPORTIONS and figures.get(PROPORTIONS[name]) and np.isfinite(figures[name]):
        total = figures[PROPORTIONS[name]]
        low, high = wilson_interval(round(figures[name] * total), total)
    return "" if low is None else f"[{max(low, 0.0):.4f}, {min(high, 1.0):.4f}]"


def _summary(runs):
    """The summary: a table per group of figures (the runs' details first), a column per run, each figure with
    its interval."""
    columns = []
    for run in runs:
        cider = [entry["CIDEr"] for entry in run.result["per_image"].values()]
        groups = [("run", [(label, str(text), "") for label, text in run.details.items()])]
        columns.append(groups + summary_figures(run.result, cider))
    tables = []
    for group in dict.fromkeys(name for column in columns for name, _ in column):
        cells = [dict((name, (value, interval)) for name, value, interval in dict(column).get(group, ()))
                 for column in columns]
        head = "".join(f'<th scope="col">{escape(run.name)}</th>' for run in runs)
        body = "".join(f'<tr><th scope="row">{escape(name)}</th>' + "".join(
            f'<td>{escape(c.get(name, ("", ""))[0])} <small>{c.get(name, ("", ""))[1]}</small></td>' for c in cells)
            + "</tr>" for name in dict.fromkeys(name for c in cells for name in c))
        tables.append(f'<table class="summary"><caption>{escape(group)}</caption><thead><tr><td></td>{head}</tr>'
                      f'</thead><tbody>{body}</tbody></table>')
    return (f'<details class="summary" open><summary>Summary: every figure of the evaluation, 95% intervals in '
            f'brackets</summary><div class="summaries">{"".join(tables)}</div></details>')


def _static_list(data):
    """Every image and its captions as plain HTML, for readers without JavaScript (with the pictures that are
    files; those in the page's data are left to the script)."""
    items = []
    for image in data["images"]:
        alt = escape(image["runs"][0]["c"])
        picture = f'<img src="{escape(image["src"])}" alt="{alt}" loading="lazy">' \
            if image["src"] and not image["src"].startswith("data:") else ""
        runs = "".join(f'<div class="run"><h3>{escape(run["name"])}</h3>{entry["h"]}<p class="scores">CIDEr-D '
                       f'{entry["cider"]:.3f} · BLEU-4 {entry["bleu4"]:.3f}</p></div>'
                       for run, entry in zip(data["runs"], image["runs"]))
        refs = "".join(f"<li>{escape(ref)}</li>" for ref in image["refs"])
        items.append(f'<li class="card" id="image-{image["row"]}"><figure class="pic">{picture}</figure>'
                     f'<div class="body"><h2>image {image["row"]}</h2>{runs}<ol class="refs">{refs}</ol></div></li>')
    return f'<ol class="static">{"".join(items)}</ol>'


LEGEND = ('<p class="legend">Marks: <span class="w m-hallucination">hallucinated object</span> '
          '<span class="w m-count">wrong count</span> <span class="w m-size">wrong size</span> '
          '<span class="w m-relation">wrong relation</span>; objects of the scene no phrase names are listed as '
          'missed. Attention models: hover, focus or click a word to see where the model looked (click pins it). '
          'Keys: j / k or the arrow keys move between cards.</p>')

CONTROLS = '''<nav id="controls" hidden aria-label="Sort, filter and pages">
<label>Sort <select id="sort"><option value="row">image order</option><option value="cider">worst CIDEr-D first</option>
<option value="bleu">worst BLEU-4 first</option><option value="change">largest CIDEr-D change between runs</option>
</select></label>
<label>Show <select id="show"><option value="all">all captions</option>
<option value="hallucination">only captions with a hallucination</option>
<option value="errors">only captions with a grounding error</option>
<option value="differ">only images whose captions differ between runs</option></select></label>
<label>Words <input id="q" type="search" placeholder="e.g. red circle" aria-describedby="status"></label>
<button type="button" id="prev">previous page</button> <button type="button" id="next">next page</button>
</nav><p id="status" role="status" aria-live="polite"></p>'''


def index_html(data, runs):
    """The report's ``index.html`` for the page's ``data`` (``core.inference.report.page_data``) of ``runs``."""
    title = escape(data["title"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{GENERATOR}"><title>{title}</title>'
            f'<link rel="stylesheet" href="{REPORT_STYLE}"><script>{ERROR_HOOK}</script></head>\n'
            f'<body><header><h1>{title}</h1>{_summary(runs)}{LEGEND}</header>\n{CONTROLS}\n'
            f'<main id="cards" aria-label="Evaluated images"></main>\n'
            f'<noscript>{_static_list(data)}</noscript>\n'
            f'<script src="{REPORT_DATA}"></script><script src="{REPORT_SCRIPT}"></script></body></html>\n')
