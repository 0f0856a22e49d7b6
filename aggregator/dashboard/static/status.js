// /status refreshes its rows and summary from /status.json, without reloading the page.
"use strict";
(function () {
  var rows = document.getElementById("sources");
  var summary = document.getElementById("summary");
  var refreshed = document.getElementById("refreshed");
  if (!rows || !summary || !refreshed) return;
  var seconds = parseInt(refreshed.getAttribute("data-interval"), 10) || 15;
  function stamp(text) { refreshed.textContent = text + "; refreshes every " + seconds + " s."; }
  function refresh() {
    if (document.hidden) return;
    fetch("/status.json?html=1", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (report) {
        rows.innerHTML = report.html.rows;
        summary.innerHTML = report.html.summary;
        stamp("Updated " + report.generated.replace("T", " ").replace("+00:00", " UTC"));
      })
      .catch(function (error) { stamp("Could not refresh (" + error.message + "), trying again"); });
  }
  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
