/* The evaluation report's script (core/inference/report.py writes the page and window.REPORT_DATA).
   It renders the images as cards a page at a time, sorts and filters them, keeps the view in the URL's hash
   (#sort=cider&show=hallucination&q=red+circle&page=2) so that a view can be shared, moves between cards by
   keyboard, and draws a word's attention over its picture on hover, focus or click. */
(function () {
  "use strict";
  var data = window.REPORT_DATA;
  var cards = document.getElementById("cards");
  var status = document.getElementById("status");
  var controls = document.getElementById("controls");
  var DEFAULTS = {sort: "row", show: "all", q: "", page: "1"};
  var DIM = 0.75;  // how dark the picture gets where a word puts no attention (the PNG maps leave a quarter)
  var order = {};  // image row -> index in data.images
  var decoded = {};  // "image index/run" -> {words: [Float64Array], peak}
  var wordSets = null;  // per image, per run: the caption's words, built at the first search
  var pinned = null;  // the word whose map stays when the pointer leaves
  var state = {};

  data.images.forEach(function (image, i) { order[image.row] = i; });

  function cider(image, k) { return image.runs[k].cider; }

  var SORTS = {
    row: function (a, b) { return a - b; },
    cider: function (a, b) { return cider(data.images[a], 0) - cider(data.images[b], 0) || a - b; },
    bleu: function (a, b) { return data.images[a].runs[0].bleu4 - data.images[b].runs[0].bleu4 || a - b; },
    change: function (a, b) { return spread(data.images[b]) - spread(data.images[a]) || a - b; }
  };
  var SHOWS = {
    all: function () { return true; },
    hallucination: function (image) { return image.runs.some(function (r) { return r.halluc; }); },
    errors: function (image) { return image.runs.some(function (r) { return r.marks > 0 || r.halluc; }); },
    differ: function (image) { return image.runs.some(function (r) { return r.c !== image.runs[0].c; }); }
  };

  function spread(image) {
    var scores = image.runs.map(function (r) { return r.cider; });
    return Math.max.apply(null, scores) - Math.min.apply(null, scores);
  }

  function readHash() {
    var view = Object.assign({}, DEFAULTS);
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      var at = pair.indexOf("=");
      var key = pair.slice(0, at);
      if (at > 0 && Object.prototype.hasOwnProperty.call(DEFAULTS, key)) {
        view[key] = decodeURIComponent(pair.slice(at + 1).replace(/\+/g, " "));
      }
    });
    if (!SORTS[view.sort]) view.sort = DEFAULTS.sort;
    if (!SHOWS[view.show]) view.show = DEFAULTS.show;
    view.page = String(Math.max(1, parseInt(view.page, 10) || 1));
    return view;
  }

  function go(changes) {
    var view = Object.assign({}, state, changes);
    var parts = Object.keys(DEFAULTS).filter(function (key) { return view[key] !== DEFAULTS[key]; })
      .map(function (key) { return key + "=" + encodeURIComponent(view[key]); });
    location.hash = parts.join("&");  // hashchange renders the view
  }

  function matches(i, words) {
    if (!words.length) return true;
    if (!wordSets) {
      wordSets = data.images.map(function (image) {
        return image.runs.map(function (r) { return " " + r.c.toLowerCase() + " "; });
      });
    }
    return wordSets[i].some(function (caption) {
      return words.every(function (word) { return caption.indexOf(" " + word + " ") >= 0; });
    });
  }

  function visible() {
    var words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    var show = SHOWS[state.show];
    var list = [];
    for (var i = 0; i < data.images.length; i++) {
      if (show(data.images[i]) && matches(i, words)) list.push(i);
    }
    return list.sort(SORTS[state.sort]);
  }

  function esc(text) {
    return String(text).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c];
    });
  }

  function runHtml(image, k) {
    var r = image.runs[k];
    var head = data.runs.length > 1 ? "<h3>" + esc(data.runs[k].name) + "</h3>" : "";
    var beams = "";
    if (r.beams) {
      beams = "<details class=\"beams\"><summary>" + r.beams.length + " beam hypotheses</summary><ol>" +
        r.beams.map(function (b) {
          return "<li>" + esc(b[0]) + " <small>" + b[1].toFixed(3) + "</small></li>";
        }).join("") + "</ol></details>";
    }
    return "<section class=\"run" + (r.att ? " att" : "") + "\" data-run=\"" + k + "\">" + head + r.h +
      "<p class=\"scores\">CIDEr-D <b>" + r.cider.toFixed(3) + "</b> · BLEU-4 <b>" + r.bleu4.toFixed(3) +
      "</b></p>" + beams + "</section>";
  }

  function cardHtml(i) {
    var image = data.images[i];
    var alt = esc(image.runs[0].c);
    var picture = image.src ? "<img src=\"" + esc(image.src) + "\" alt=\"" + alt + "\">" :
      "<div class=\"nopic\" role=\"img\" aria-label=\"" + alt + "\">no picture</div>";
    var refs = image.refs.map(function (ref) { return "<li>" + esc(ref) + "</li>"; }).join("");
    var runs = image.runs.map(function (r, k) { return runHtml(image, k); }).join("");
    return "<article class=\"card\" data-image=\"" + image.row + "\" tabindex=\"0\" aria-label=\"image " +
      image.row + ": " + alt + "\"><figure class=\"pic\">" + picture +
      "<canvas class=\"heat\" hidden></canvas><figcaption class=\"mapnote\"></figcaption></figure>" +
      "<div class=\"body\"><h2>image " + image.row + "</h2>" + runs +
      "<details class=\"refs\" open><summary>" + image.refs.length + " references</summary><ol>" + refs +
      "</ol></details></div></article>";
  }

  function render() {
    state = readHash();
    document.getElementById("sort").value = state.sort;
    document.getElementById("show").value = state.show;
    var search = document.getElementById("q");
    if (document.activeElement !== search) search.value = state.q;
    var list = visible();
    var pages = Math.max(1, Math.ceil(list.length / data.pageSize));
    var page = Math.min(Number(state.page), pages);
    state.page = String(page);
    var start = (page - 1) * data.pageSize;
    var shown = list.slice(start, start + data.pageSize);
    pinned = null;
    cards.innerHTML = shown.map(cardHtml).join("");
    cards.querySelectorAll(".run.att .cap .w").forEach(function (word) {
      word.tabIndex = 0;
      word.setAttribute("role", "button");
    });
    status.textContent = list.length + " of " + data.images.length + " images" + (list.length ?
      "; page " + page + " of " + pages + " (" + (start + 1) + "-" + (start + shown.length) + ")" : "");
    document.getElementById("prev").disabled = page <= 1;
    document.getElementById("next").disabled = page >= pages;
  }

  function weightsOf(i, k) {
    var key = i + "/" + k;
    if (!decoded[key]) {
      var peak = 0;
      var words = data.images[i].runs[k].att.map(function (text) {
        var bytes = atob(text);
        var view = new DataView(new ArrayBuffer(bytes.length));
        for (var b = 0; b < bytes.length; b++) view.setUint8(b, bytes.charCodeAt(b));
        var weights = new Float64Array(bytes.length / 2);
        for (var c = 0; c < weights.length; c++) {
          weights[c] = view.getUint16(2 * c, true) / 10000;
          peak = Math.max(peak, weights[c]);
        }
        return weights;
      });
      decoded[key] = {words: words, peak: peak};
    }
    return decoded[key];
  }

  function showMap(word) {
    var card = word.closest(".card");
    var run = word.closest(".run");
    var i = order[card.getAttribute("data-image")];
    var k = Number(run.getAttribute("data-run"));
    var t = Array.prototype.indexOf.call(run.querySelectorAll(".cap .w"), word);
    var att = weightsOf(i, k);
    var weights = att.words[t];
    var side = Math.round(Math.sqrt(weights.length));
    var canvas = card.querySelector("canvas.heat");
    canvas.width = canvas.height = side;
    var context = canvas.getContext("2d");
    var pixels = context.createImageData(side, side);
    for (var c = 0; c < weights.length; c++) {
      pixels.data[4 * c + 3] = Math.round(255 * DIM * (1 - weights[c] / att.peak));
    }
    context.putImageData(pixels, 0, 0);
    canvas.hidden = false;
    card.querySelector(".mapnote").textContent = "attention of \u201c" + word.textContent + "\u201d" +
      (data.runs.length > 1 ? " (" + data.runs[k].name + ")" : "");
    card.querySelectorAll(".w.on").forEach(function (w) { w.classList.remove("on"); });
    word.classList.add("on");
  }

  function hideMap(word) {
    var card = word.closest(".card");
    if (pinned && pinned.closest(".card") === card) { showMap(pinned); return; }
    card.querySelector("canvas.heat").hidden = true;
    card.querySelector(".mapnote").textContent = "";
    card.querySelectorAll(".w.on").forEach(function (w) { w.classList.remove("on"); });
  }

  function mapWord(target) {
    return target.closest && target.closest(".run.att .cap .w");
  }

  function togglePin(word) {
    var before = pinned;
    pinned = before === word ? null : word;
    if (before && before !== word) hideMap(before);
    if (pinned) showMap(word); else hideMap(word);
  }

  function moveCard(card, step) {
    var all = Array.prototype.slice.call(cards.querySelectorAll(".card"));
    var next = all[all.indexOf(card) + step];
    if (next) { next.focus(); next.scrollIntoView({block: "nearest"}); }
  }

  cards.addEventListener("mouseover", function (e) { var w = mapWord(e.target); if (w) showMap(w); });
  cards.addEventListener("mouseout", function (e) { var w = mapWord(e.target); if (w) hideMap(w); });
  cards.addEventListener("focusin", function (e) { var w = mapWord(e.target); if (w) showMap(w); });
  cards.addEventListener("focusout", function (e) { var w = mapWord(e.target); if (w) hideMap(w); });
  cards.addEventListener("click", function (e) { var w = mapWord(e.target); if (w) togglePin(w); });
  cards.addEventListener("keydown", function (e) {
    var word = mapWord(e.target);
    if (word && (e.key === "Enter" || e.key === " ")) { togglePin(word); e.preventDefault(); return; }
    var card = e.target.closest(".card");
    if (!card) return;
    if (e.key === "ArrowDown" || e.key === "j") { moveCard(card, 1); e.preventDefault(); }
    if (e.key === "ArrowUp" || e.key === "k") { moveCard(card, -1); e.preventDefault(); }
  });
  document.getElementById("sort").addEventListener("change", function (e) { go({sort: e.target.value, page: "1"}); });
  document.getElementById("show").addEventListener("change", function (e) { go({show: e.target.value, page: "1"}); });
  document.getElementById("q").addEventListener("input", function (e) { go({q: e.target.value.trim(), page: "1"}); });
  document.getElementById("prev").addEventListener("click", function () { go({page: String(Number(state.page) - 1)}); });
  document.getElementById("next").addEventListener("click", function () { go({page: String(Number(state.page) + 1)}); });
  window.addEventListener("hashchange", render);

  if (data.runs.length < 2) {
    controls.querySelectorAll("option[value=change], option[value=differ]").forEach(function (o) { o.remove(); });
  }
  controls.hidden = false;
  render();
  document.documentElement.setAttribute("data-first-render-ms", String(Math.round(performance.now())));
})();
