// Bananas dashboard: live overview, confirmations, selection and the theme switch. No dependencies.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("bananas-theme"); } catch (e) {}
  if (saved) root.setAttribute("data-theme", saved);

  function relative(iso) {
    var s = (Date.parse(iso) - Date.now()) / 1000, a = Math.abs(s), t;
    if (a < 60) t = Math.round(a) + "s"; else if (a < 3600) t = Math.round(a / 60) + "m";
    else if (a < 86400) t = (a / 3600).toFixed(1) + "h"; else t = (a / 86400).toFixed(1) + "d";
    return s > 0 ? "in " + t : t + " ago";
  }
  function decorateTimes(scope) {
    scope.querySelectorAll("time.rel").forEach(function (el) {
      if (!el.dataset.abs) el.dataset.abs = el.textContent;
      el.title = el.dataset.abs;
      el.textContent = el.dataset.abs + " (" + relative(el.getAttribute("datetime")) + ")";
    });
  }

  function live(box) {
    var url = box.dataset.refresh, every = parseInt(box.dataset.every, 10) || 2000;
    var badge = document.querySelector(".live");
    function tick() {
      if (document.hidden) return setTimeout(tick, every);
      fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) { box.innerHTML = html; decorateTimes(box); if (badge) badge.classList.remove("stale"); })
        .catch(function () { if (badge) badge.classList.add("stale"); })
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    decorateTimes(document);
    var box = document.getElementById("live");
    if (box) live(box);

    var toggle = document.querySelector("[data-theme-toggle]");
    if (toggle) toggle.addEventListener("click", function () {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (!root.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { localStorage.setItem("bananas-theme", next); } catch (e) {}
    });

    // "/" focuses the job search, as on many sites.
    document.addEventListener("keydown", function (ev) {
      var t = ev.target.tagName;
      if (ev.key === "/" && t !== "INPUT" && t !== "TEXTAREA") {
        var box = document.querySelector(".search input");
        if (box) { ev.preventDefault(); box.focus(); }
      }
    });

    var all = document.querySelector("[data-select-all]");
    var boxes = document.querySelectorAll("input[name=ids]");
    var needs = document.querySelectorAll("[data-needs-selection]");
    function sync() {
      var any = Array.prototype.some.call(boxes, function (b) { return b.checked; });
      needs.forEach(function (b) { b.disabled = !any; });
    }
    if (all) all.addEventListener("change", function () { boxes.forEach(function (b) { b.checked = all.checked; }); sync(); });
    boxes.forEach(function (b) { b.addEventListener("change", sync); });
    sync();

    // Every mutation asks first: the submit button (or the form) carries data-confirm.
    document.addEventListener("submit", function (ev) {
      var button = ev.submitter, form = ev.target;
      var text = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
      if (text && !window.confirm(text)) ev.preventDefault();
    });
  });
})();
