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
