// The text filter of the newest posts: every word typed must appear in a post's title,
// source, categories or author (case-insensitive). No request is made.
"use strict";
(function () {
  var input = document.getElementById("filter");
  var count = document.getElementById("filter-count");
  var posts = Array.prototype.slice.call(document.querySelectorAll("#posts .post"));
  if (!input || !count) return;
  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    posts.forEach(function (post) {
      var text = post.getAttribute("data-text") || "";
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      post.hidden = !match;
      if (match) shown += 1;
    });
    count.textContent = words.length ? shown + " of " + posts.length + " posts" : posts.length + " posts";
  }
  input.addEventListener("input", apply);
  var asked = new URLSearchParams(window.location.search).get("q");
  if (asked) { input.value = asked; }
  apply();
})();
