/* The site's search from the built folder opened from disk (file://), with no network.
 *
 * Material's search runs in a Web Worker, and Chromium refuses `new Worker(...)` for file:// pages. Over
 * http(s) this script does nothing. From disk it replaces Worker with a hidden same-origin frame that runs the
 * worker's script: the page's postMessage becomes a "message" event in the frame, and the frame's postMessage
 * calls the page's listeners. Material's offline plugin inlines the search index (search/search_index.js) for
 * file:// pages, and would load a shim for this from a CDN; the file name contains "iframe-worker" so that the
 * plugin takes this one instead (mkdocs.yml, extra.polyfills). Written for formrelay's docs.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") {
    return;
  }

  function FrameWorker(url) {
    var self = this;
    var listeners = [];
    var waiting = [];
    var ready = false;
    var frame = document.createElement("iframe");
    frame.hidden = true;
    frame.setAttribute("aria-hidden", "true");
    frame.setAttribute("tabindex", "-1");
    (document.body || document.documentElement).appendChild(frame);
    var inner = frame.contentWindow;

    function deliver(data) {
      var event = { data: data, type: "message", target: self };
      if (typeof self.onmessage === "function") {
        self.onmessage(event);
      }
      listeners.slice().forEach(function (listener) { listener.call(self, event); });
    }

    self.onmessage = null;
    self.onerror = null;
    self.addEventListener = function (type, listener) {
      if (type === "message") {
        listeners.push(listener);
      }
    };
    self.removeEventListener = function (type, listener) {
      listeners = listeners.filter(function (item) { return item !== listener; });
    };
    self.postMessage = function (data) {
      if (!ready) {
        waiting.push(data);
        return;
      }
      inner.dispatchEvent(new inner.MessageEvent("message", { data: data }));
    };
    self.terminate = function () {
      frame.remove();
    };

    // Inside the frame the worker's script finds the globals a worker has.
    inner.postMessage = function (data) {
      setTimeout(function () { deliver(data); }, 0);
    };
    inner.importScripts = function () {
      throw new Error("importScripts is not available to the search from disk (other languages than English)");
    };
    var script = inner.document.createElement("script");
    script.src = new URL(url, location.href).href;
    script.onload = function () {
      ready = true;
      waiting.splice(0).forEach(function (data) { self.postMessage(data); });
    };
    script.onerror = function () {
      if (typeof self.onerror === "function") {
        self.onerror(new Error("the search worker did not load: " + url));
      }
    };
    inner.document.head.appendChild(script);
  }

  window.Worker = FrameWorker;
}());
