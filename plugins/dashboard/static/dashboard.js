// tickkit dashboard: times in the viewer's zone, confirmations, and live updates by polling
// the page itself (the server answers X-Tickkit-Live with the page body only).
(function () {
  "use strict";
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZoneName: "short"
  });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) { return; }
      if (el.classList.contains("local")) { el.textContent = fmt.format(d); }
      else { el.title = "your time: " + fmt.format(d); }
    });
  }
  function wire(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
    localTimes(root);
  }
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var every = parseFloat(document.body.getAttribute("data-refresh") || "5") * 1000;
  function busy() {
    var a = document.activeElement;
    return (a && main.contains(a) && a !== document.body) ||
      main.querySelector("details[open]") !== null;
  }
  // the next poll waits the refresh interval, and at least 4 times what the last one took (a
  // big store's counts take long: the dashboard never spends more than a fifth of its time on
  // polling)
  function later(ms) { window.setTimeout(poll, Math.max(every, ms * 4)); }
  function poll() {
    if (document.hidden || busy()) { later(0); return; }
    var started = Date.now();
    fetch(window.location.href, { headers: { "X-Tickkit-Live": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok && r.status !== 404) { throw new Error(r.status); }
        return r.text().then(function (text) {
          return { text: text, digest: r.headers.get("X-Tickkit-Digest") };
        });
      })
      .then(function (got) {
        live.classList.remove("off");
        live.textContent = "live";
        // replace the page only when it changed (a button under the pointer stays put)
        if (busy() || got.digest === main.getAttribute("data-digest")) { return; }
        main.innerHTML = got.text;
        main.setAttribute("data-digest", got.digest || "");
        wire(main);
      })
      .catch(function () { live.classList.add("off"); live.textContent = "offline"; })
      .then(function () { later(Date.now() - started); });
  }
  if (main) {
    wire(document);
    if (every > 0) { later(0); }
  }
})();
