/*! formrelay.js: enhance or render forms that post to a formrelay relay. No dependencies, no cookies. */
(function (win, doc) {
  "use strict";

  var TEXT = {
    sending: "Sending\u2026",
    delivered: "Thank you! Your submission was received.",
    queued: "Thank you! We have your submission and will pass it on shortly.",
    invalid: "Please correct the highlighted fields.",
    rate_limited: "Too many attempts. Please wait a moment and try again.",
    unavailable: "We could not send this just now. Please try again in a few minutes.",
    rejected: "Your submission could not be accepted.",
    network: "We could not reach the server. Please check your connection and try again.",
    error: "Something went wrong. Please try again.",
    submit: "Send",
    choose: "Choose\u2026",
    load: "This form could not be loaded.",
    required: "required"
  };
  var CONTEXT = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "source", "referrer"];
  var options = win.FormRelayOptions || {};
  var counter = 0;

  // The page's own words first (attribute, FormRelayOptions), then the relay's answer, then the texts the
  // description carried in the supporter's language, then English.
  function text(host, key, said) {
    var attr = host && host.getAttribute("data-formrelay-text-" + key.replace(/_/g, "-"));
    var given = host && host.formrelayTexts;
    return attr || (options.text && options.text[key]) || said || (given && given[key]) || TEXT[key];
  }

  function el(tag, attrs, content) {
    var node = doc.createElement(tag);
    for (var name in attrs || {}) {
      if (attrs[name] === true) node.setAttribute(name, "");
      else if (attrs[name] != null && attrs[name] !== false) node.setAttribute(name, attrs[name]);
    }
    if (content != null) node.textContent = content;
    return node;
  }

  function uid(prefix) { counter += 1; return prefix + "-" + counter; }

  function newKey() {
    var c = win.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var bytes = new Uint8Array(16);
    c.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function hidden(form, name, value) {
    var input = form.querySelector('input[type="hidden"][name="' + name + '"]');
    if (!input) { input = el("input", { type: "hidden", name: name }); form.appendChild(input); }
    input.value = value;
    return input;
  }

  // Relay controls: honeypot, idempotency key, time-trap token, and the page's campaign context.
  function controls(form, started) {
    if (!form.querySelector('[name="_hp"]')) {
      var trap = el("div", { "class": "formrelay-hp", "aria-hidden": "true", hidden: true });
      trap.appendChild(el("input", { type: "text", name: "_hp", tabindex: "-1", autocomplete: "off", value: "" }));
      form.appendChild(trap);
    }
    hidden(form, "_idempotency_key", newKey());
    if (started) hidden(form, "_started", started);
    hidden(form, "_page_url", win.location.href.split("#")[0]);  // for attribution parameters (NGP queryString)
    var params = new URLSearchParams(win.location.search);
    CONTEXT.forEach(function (key) {
      if (params.get(key) && !form.elements[key]) hidden(form, key, params.get(key));
    });
  }

  function status(form) {
    var region = form.querySelector(".formrelay-status");
    if (!region) {
      region = el("div", { "class": "formrelay-status", role: "status", "aria-live": "polite" });
      form.appendChild(region);
    }
    return region;
  }

  function say(form, message, kind) {
    var region = status(form);
    region.textContent = message;
    region.className = "formrelay-status formrelay-status-" + kind;
  }

  function fieldOf(form, name) {
    var found = form.elements[name];
    if (found && found.length && !found.tagName) found = found[0];
    return found && found.tagName ? found : null;
  }

  function clearErrors(form) {
    Array.prototype.forEach.call(form.querySelectorAll(".formrelay-error"), function (node) {
      var field = doc.querySelector('[aria-describedby~="' + node.id + '"]');
      if (field) {
        var rest = field.getAttribute("aria-describedby").split(" ").filter(function (id) { return id !== node.id; });
        if (rest.length) field.setAttribute("aria-describedby", rest.join(" "));
        else field.removeAttribute("aria-describedby");
        field.removeAttribute("aria-invalid");
      }
      node.parentNode.removeChild(node);
    });
  }

  function showErrors(form, errors) {
    var orphans = [];
    Object.keys(errors || {}).forEach(function (name) {
      var field = fieldOf(form, name), message = [].concat(errors[name]).join(" ");
      if (!field) { orphans.push(message); return; }
      var note = el("p", { "class": "formrelay-error", id: uid("formrelay-error") }, message);
      var anchor = field.closest("fieldset") || field.closest("label") || field;
      anchor.parentNode.insertBefore(note, anchor.nextSibling);
      field.setAttribute("aria-invalid", "true");
      var described = field.getAttribute("aria-describedby");
      field.setAttribute("aria-describedby", described ? described + " " + note.id : note.id);
    });
    var first = form.querySelector('[aria-invalid="true"]');  // the first in reading order
    if (first) first.focus();
    return orphans;
  }

  function collect(form) {
    var body = {};
    new FormData(form).forEach(function (value, key) {
      if (typeof value !== "string") return;
      if (key in body) body[key] = [].concat(body[key], value);
      else body[key] = value;
    });
    Array.prototype.forEach.call(form.querySelectorAll("select[multiple]"), function (select) {
      if (select.name in body) body[select.name] = [].concat(body[select.name]);
    });
    return body;
  }

  function busy(form, on) {
    form.setAttribute("aria-busy", on ? "true" : "false");
    Array.prototype.forEach.call(form.querySelectorAll('button, input[type="submit"]'), function (button) {
      button.disabled = on;
    });
  }

  function safeUrl(url) {
    try { var parsed = new URL(url, win.location.href); return /^https?:$/.test(parsed.protocol) ? parsed.href : null; }
    catch (e) { return null; }
  }

  function answer(form, body) {
    var kind = body && body.status;
    clearErrors(form);
    if (body && body.ok) {
      var target = body.redirect && safeUrl(body.redirect);
      if (target && form.getAttribute("data-formrelay-redirect") !== "off") { win.location.assign(target); return; }
      say(form, text(form, kind === "queued" ? "queued" : "delivered", body.message), "success");
      form.reset();
      hidden(form, "_idempotency_key", newKey());
      form.classList.add("formrelay-done");
      form.dispatchEvent(new CustomEvent("formrelay:success", { detail: body }));
      return;
    }
    if (kind === "invalid") {
      // the relay refused a key reused for changed details: the next send is a new submission
      if (body.errors && body.errors._idempotency_key) hidden(form, "_idempotency_key", newKey());
      var orphans = showErrors(form, body.errors);
      say(form, [text(form, "invalid")].concat(orphans).join(" "), "error");
    } else if (kind === "rejected") {
      say(form, text(form, "rejected", body.message), "error");
    } else {
      say(form, text(form, TEXT[kind] ? kind : "error"), "error");
    }
    form.dispatchEvent(new CustomEvent("formrelay:error", { detail: body }));
  }

  function submit(form, event) {
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    var body = collect(form);
    busy(form, true);
    say(form, text(form, "sending"), "pending");
    win.fetch(form.action, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 "Idempotency-Key": body._idempotency_key || "" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return { ok: false, status: "error" }; });
    }).then(function (result) {
      busy(form, false);
      answer(form, result);
    }, function () {
      // Same idempotency key on the next try: a retry can never deliver twice.
      busy(form, false);
      say(form, text(form, "network"), "error");
    });
  }

  function describe(url) {
    return win.fetch(url, { headers: { Accept: "application/json" }, credentials: "omit", mode: "cors" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function enhance(form, description) {
    if (form.formrelay) return form;
    form.formrelay = true;
    form.setAttribute("novalidate", "");
    controls(form, description && description.started);
    status(form);
    form.addEventListener("submit", function (event) { submit(form, event); });
    if (!description && form.getAttribute("data-formrelay-started") !== "off") {
      describe(form.action).then(function (d) {
        form.formrelayTexts = d.texts;
        if (d.started) hidden(form, "_started", d.started);
      }, function () {});
    }
    return form;
  }

  function input(field, id, form) {
    var attrs = { id: id, name: field.name, required: field.required, maxlength: field.max_length,
                  min: field.min, max: field.max };
    if (field.type === "textarea") return el("textarea", attrs);
    if (field.options && field.type !== "radio" && field.type !== "checkbox") {
      attrs.multiple = field.multiple;
      var select = el("select", attrs);
      if (!field.multiple) select.appendChild(el("option", { value: "" }, text(form, "choose")));
      field.options.forEach(function (o) { select.appendChild(el("option", { value: o.value }, o.label)); });
      return select;
    }
    attrs.type = { email: "email", tel: "tel", number: "number", date: "date" }[field.type] || "text";
    if (field.type === "email") attrs.autocomplete = "email";
    if (field.type === "tel") attrs.autocomplete = "tel";
    return el("input", attrs);
  }

  function row(field, form) {
    var id = uid("formrelay-field"), wrap = el("div", { "class": "formrelay-field formrelay-" + field.type });
    var marker = field.required ? el("span", { "class": "formrelay-required", "aria-hidden": "true",
                                               title: text(form, "required") }, " *") : null;
    if (field.options && (field.type === "radio" || field.type === "checkbox")) {
      var set = el("fieldset", { "class": "formrelay-choices" }), legend = el("legend", {}, field.label);
      if (marker) legend.appendChild(marker);
      set.appendChild(legend);
      field.options.forEach(function (o, i) {
        var box = el("input", { type: field.type, id: id + "-" + i, name: field.name, value: o.value,
                                required: field.required && field.type === "radio" });
        var label = el("label", { "for": box.id }, o.label);
        set.appendChild(box);
        set.appendChild(label);
      });
      wrap.appendChild(set);
    } else if (field.type === "checkbox") {
      var tick = el("input", { type: "checkbox", id: id, name: field.name, value: "on", required: field.required });
      var tickLabel = el("label", { "for": id }, field.label);
      if (marker) tickLabel.appendChild(marker);
      wrap.appendChild(tick);
      wrap.appendChild(tickLabel);
    } else {
      var label = el("label", { "for": id }, field.label);
      if (marker) label.appendChild(marker);
      wrap.appendChild(label);
      wrap.appendChild(input(field, id, form));
    }
    if (field.help) wrap.appendChild(el("p", { "class": "formrelay-help" }, field.help));
    form.appendChild(wrap);
  }

  function render(host) {
    var url = host.getAttribute("data-formrelay-form");
    return describe(url).then(function (description) {
      var form = el("form", { action: url, method: "post", "class": "formrelay-form", "data-formrelay": true });
      form.formrelayTexts = description.texts;
      Array.prototype.forEach.call(host.attributes, function (a) {
        if (a.name.indexOf("data-formrelay-text-") === 0) form.setAttribute(a.name, a.value);
      });
      if (host.getAttribute("data-formrelay-title") !== "off") form.appendChild(el("h2", {}, description.title));
      description.fields.forEach(function (field) { row(field, form); });
      var actions = el("div", { "class": "formrelay-actions" });
      actions.appendChild(el("button", { type: "submit" }, text(form, "submit")));
      form.appendChild(actions);
      while (host.firstChild) host.removeChild(host.firstChild);
      host.appendChild(form);
      return enhance(form, description);
    }, function () {
      host.textContent = text(host, "load");
    });
  }

  function init(root) {
    root = root || doc;
    Array.prototype.forEach.call(root.querySelectorAll("form[data-formrelay]"), function (f) { enhance(f); });
    Array.prototype.forEach.call(root.querySelectorAll("[data-formrelay-form]"), function (h) {
      if (!h.getAttribute("data-formrelay-rendered")) { h.setAttribute("data-formrelay-rendered", "1"); render(h); }
    });
  }

  win.FormRelay = { init: init, enhance: enhance, render: render, text: TEXT };
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
})(window, document);
