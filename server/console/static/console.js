// The console's little JavaScript: the business prompt's length meter.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("textarea[data-cap]").forEach(function (area) {
    var meter = document.getElementById(area.dataset.meter);
    var cap = Number(area.dataset.cap);
    var template = meter.dataset.template;
    function update() {
      // Code points, as the server counts them (a string's length counts UTF-16 units).
      var count = Array.from(area.value.replace(/\r\n/g, "\n")).length;
      meter.textContent = template.replace("{count}", count).replace("{cap}", cap);
      meter.classList.toggle("over", count > cap);
      meter.dataset.count = String(count);
      var warning = document.getElementById(area.dataset.overWarning);
      if (warning) { warning.hidden = count <= cap; }
    }
    area.addEventListener("input", update);
    update();
  });
});

// The prompt preview follows the settings form as it is edited (unsaved), from the server's own builder.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("business-form");
  var state = document.getElementById("preview-state");
  if (!form || !form.dataset.preview || !state) { return; }
  var timer = null;
  var asked = 0;
  function show(previews) {
    Object.keys(previews).forEach(function (direction) {
      var preview = previews[direction];
      Object.keys(preview.layers).forEach(function (name) {
        var pre = document.querySelector('pre[data-layer="' + direction + "-" + name + '"]');
        var chars = document.querySelector('[data-chars="' + direction + "-" + name + '"]');
        if (pre) { pre.textContent = preview.layers[name].text; }
        if (chars) { chars.textContent = String(preview.layers[name].chars); }
      });
      var total = document.querySelector('[data-chars="' + direction + '-instructions"]');
      if (total) { total.textContent = String(preview.instructions.chars); }
      var list = document.querySelector('[data-warnings="' + direction + '"]');
      if (list) {
        list.replaceChildren.apply(list, preview.warnings.map(function (w) {
          var item = document.createElement("li");
          item.className = "ltr";
          item.textContent = w;
          return item;
        }));
        list.hidden = preview.warnings.length === 0;
      }
    });
  }
  function refresh() {
    var mine = ++asked;
    fetch(form.dataset.preview, {method: "POST", body: new FormData(form), credentials: "same-origin"})
      .then(function (answer) {
        if (mine !== asked) { return null; }
        if (!answer.ok) { state.textContent = state.dataset.invalid; return null; }
        return answer.json();
      })
      .then(function (previews) {
        if (!previews || mine !== asked) { return; }
        show(previews);
        state.textContent = state.dataset.draft;
      })
      .catch(function () { state.textContent = state.dataset.invalid; });
  }
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
});
