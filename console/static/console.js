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

// A run's page while the run is queued or running: it waits on the run (a
// long poll the server answers when the run's status changes, or with 204
// after 25 seconds) and swaps in the run as it is then, until it ends;
// while the wait fails it tries again every 5 seconds.
(function () {
  var live = document.querySelector("p[data-wait]");
  if (!live || !window.fetch) return;
  function show(text, paused) {
    live.textContent = text;
    live.classList.toggle("paused", paused);
  }
  function active(status) { return status === "queued" || status === "running"; }
  function wait() {
    var run = document.getElementById("run");
    var status = run.dataset.status;
    var url = live.dataset.wait + "?status=" + encodeURIComponent(status) + "&wait_ms=25000";
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 204) return null;
        if (r.status === 401) return Promise.reject("signed out");
        return r.ok ? r.text() : Promise.reject(r.status);
      })
      .then(function (html) {
        if (html !== null) {
          var t = document.createElement("template");
          t.innerHTML = html;
          var next = t.content.getElementById("run");
          if (!next) return Promise.reject("no run");
          run.replaceWith(next);
          status = next.dataset.status;
        }
        if (!active(status)) {
          show("Updated: the run ended (" + status + ").", false);
          return;
        }
        show("Live: the run is " + status + "; this page changes by itself when it ends.", false);
        wait();
      })
      .catch(function (why) {
        if (why === "signed out") {
          show("Signed out: reload the page to sign in again.", true);
          return;
        }
        show("Live updates paused; trying again in 5 seconds.", true);
        setTimeout(wait, 5000);
      });
  }
  wait();
})();
