// /status refreshes its rows, summary and pagers from /status.json, without reloading the page,
// asking for the page and filter it shows (its own query string).
"use strict";
(function () {
  var rows = document.getElementById("sources");
  var summary = document.getElementById("summary");
  var refreshed = document.getElementById("refreshed");
  var pagers = Array.prototype.slice.call(document.querySelectorAll(".pager"));
  var asked = new URLSearchParams(window.location.search);
  asked.set("html", "1");
  if (!rows || !summary || !refreshed) return;
  var seconds = parseInt(refreshed.getAttribute("data-interval"), 10) || 15;
  function stamp(text) { refreshed.textContent = text + "; refreshes every " + seconds + " s."; }
  function refresh() {
    if (document.hidden) return;
    fetch("/status.json?" + asked.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (report) {
        rows.innerHTML = report.html.rows;
        summary.innerHTML = report.html.summary;
        pagers.forEach(function (pager) { pager.innerHTML = report.html.pager; });
        stamp("Updated " + report.generated.replace("T", " ").replace("+00:00", " UTC"));
      })
      .catch(function (error) { stamp("Could not refresh (" + error.message + "), trying again"); });
  }
  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
