// passito-jobs dashboard: keeps the overview and the job page live. The pages work without it.
// A live region names its event stream (data-live) and its fragment (data-fragment). Server-sent
// events bring the fragment's new HTML (rendered and escaped by the server); when the stream is
// refused or the browser has no EventSource, the fragment is fetched every 2 seconds instead.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region) return;
  var polling = null;

  function apply(html) {
    if (html === region.innerHTML) return;
    // Keep keyboard focus and a half-typed form: never replace while the user is in a form.
    if (region.contains(document.activeElement) && document.activeElement.tagName !== "BODY" &&
        document.activeElement.tagName !== "A" && document.activeElement.tagName !== "BUTTON") return;
    region.innerHTML = html;
    region.setAttribute("data-updated", String(Date.now()));
  }

  function poll() {
    fetch(region.getAttribute("data-fragment"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) apply(html); })
      .catch(function () { /* the next tick tries again */ });
  }

  function startPolling() {
    if (polling === null) polling = window.setInterval(poll, 2000);
  }

  if (!window.EventSource) { startPolling(); return; }
  var source = new EventSource(region.getAttribute("data-live"));
  source.addEventListener("update", function (e) { apply(e.data); });
  source.onerror = function () {
    // CONNECTING: the browser retries by itself. CLOSED: the server refused; poll instead.
    if (source.readyState === EventSource.CLOSED) startPolling();
  };
})();
