// The Operations view: live updates of the table body, which arrives as
// server-sent events (while the stream is down the page polls it
// instead), and the selection of runs to cancel, kept across updates.
(function () {
  var table = document.querySelector("table[data-stream]");
  if (!table) return;
  var body = document.getElementById("runs");
  var form = document.getElementById("cancel-selected");
  var count = document.getElementById("selected-count");
  function selected() {
    return Array.prototype.map.call(body.querySelectorAll("input[name=ids]:checked"), function (box) { return box.value; });
  }
  function counted() {
    if (!form) return;
    var n = selected().length;
    count.textContent = n === 0 ? "Select queued or running runs to cancel them." : n + (n === 1 ? " run selected." : " runs selected.");
    form.querySelector("button").disabled = n === 0;
  }
  // swap shows new rows, with the runs selected before still selected
  // where they can still be cancelled.
  function swap(html) {
    var keep = selected();
    body.innerHTML = html;
    keep.forEach(function (id) {
      var box = body.querySelector('input[name=ids][value="' + id + '"]');
      if (box) box.checked = true;
    });
    counted();
  }
  body.addEventListener("change", counted);
  counted();
  if (!window.EventSource) return;
  var status = document.getElementById("live-status");
  var poll = null;
  function show(text, paused) {
    status.textContent = text;
    status.classList.toggle("paused", paused);
  }
  function refresh() {
    fetch(table.dataset.rows, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(swap)
      .catch(function () {});
  }
  var stream = new EventSource(table.dataset.stream);
  stream.addEventListener("rows", function (e) { swap(e.data); });
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
