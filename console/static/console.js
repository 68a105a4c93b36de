// Live updates of the Operations view: the table body arrives as
// server-sent events; while the stream is down the page polls it instead.
(function () {
  var table = document.querySelector("table[data-stream]");
  if (!table || !window.EventSource) return;
  var body = document.getElementById("runs");
  var status = document.getElementById("live-status");
  var poll = null;
  function show(text, paused) {
    status.textContent = text;
    status.classList.toggle("paused", paused);
  }
  function refresh() {
    fetch(table.dataset.rows, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { body.innerHTML = html; })
      .catch(function () {});
  }
  var stream = new EventSource(table.dataset.stream);
  stream.addEventListener("rows", function (e) { body.innerHTML = e.data; });
  stream.onopen = function () {
    if (poll) { clearInterval(poll); poll = null; }
    show("Live: updates appear without reloading.", false);
  };
  stream.onerror = function () {
    if (!poll) { poll = setInterval(refresh, 5000); }
    show("Live updates paused; refreshing every 5 seconds until they resume.", true);
  };
})();
