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
  // Attribution parameters remembered across the visit (forms/attribution.py KEYS; FormRelayOptions may add).
  var PARAMS = CONTEXT.concat("refcode", "ms", "ea.tracking.id");
  var options = win.FormRelayOptions || {};
  var script = doc.currentScript;
  var touch = {};  // {f: the first touch's parameters (a query string), l: the latest's, t: when the first came}
  var counter = 0;
  var forms = new WeakMap();  // form -> {at, min, ready}: when its time-trap token came, and its refresh
  var words = new WeakMap();  // form -> the texts its description carried in the supporter's language
  // A form's named fields hide its own properties ("action", "id", "reset", even "getAttribute"), so the
  // form's attributes and methods are always read through the prototypes.
  var E = Element.prototype, F = HTMLFormElement.prototype;
  function get(node, name) { return E.getAttribute.call(node, name); }
  function set(node, name, value) { E.setAttribute.call(node, name, value); }
  function find(node, selector) { return E.querySelector.call(node, selector); }
  function each(node, selector, fn) { Array.prototype.forEach.call(E.querySelectorAll.call(node, selector), fn); }
  function add(node, child) { return Node.prototype.appendChild.call(node, child); }
  function own(proto, name, node) { return Object.getOwnPropertyDescriptor(proto, name).get.call(node); }
  function emit(form, name, detail) { EventTarget.prototype.dispatchEvent.call(form, new CustomEvent(name, { detail: detail })); }
  function action(form) { return new URL(get(form, "action") || "", win.location.href).href; }

  // The page's own words first (attribute, FormRelayOptions), then the relay's answer, then the texts the
  // description carried in the supporter's language, then English.
  function text(host, key, said) {
    var attr = host && get(host, "data-formrelay-text-" + key.replace(/_/g, "-"));
    var given = host && words.get(host);
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
    var input = find(form, 'input[type="hidden"][name="' + name + '"]');
    if (!input) { input = el("input", { type: "hidden", name: name }); add(form, input); }
    input.value = value;
    return input;
  }

  // Relay controls: honeypot, idempotency key, time-trap token, and the page's campaign context.
  function controls(form) {
    if (!find(form, '[name="_hp"]')) {
      var trap = el("div", { "class": "formrelay-hp", "aria-hidden": "true", hidden: true });
      trap.appendChild(el("input", { type: "text", name: "_hp", tabindex: "-1", autocomplete: "off", value: "" }));
      add(form, trap);
    }
    hidden(form, "_idempotency_key", newKey());
    hidden(form, "_page_url", win.location.href.split("#")[0]);  // for attribution parameters (NGP queryString)
    var params = new URLSearchParams(win.location.search);
    CONTEXT.forEach(function (key) {
      if (params.get(key) && !own(F, "elements", form)[key]) hidden(form, key, params.get(key));
    });
  }

  function status(form) {
    var region = find(form, ".formrelay-status");
    if (!region) {
      region = el("div", { "class": "formrelay-status", role: "status", "aria-live": "polite" });
      add(form, region);
    }
    return region;
  }

  function say(form, message, kind) {
    var region = status(form);
    region.textContent = message;
    region.className = "formrelay-status formrelay-status-" + kind;
  }

  function fieldOf(form, name) {
    var found = own(F, "elements", form)[name];
    if (found && found.length && !found.tagName) found = found[0];
    return found && found.tagName ? found : null;
  }

  function clearErrors(form) {
    each(form, ".formrelay-error", function (node) {
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
    var first = find(form, '[aria-invalid="true"]');  // the first in reading order
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
    each(form, "select[multiple]", function (select) {
      if (select.name in body) body[select.name] = [].concat(body[select.name]);
    });
    return body;
  }

  function busy(form, on) {
    set(form, "aria-busy", on ? "true" : "false");
    each(form, 'button, input[type="submit"]', function (button) {
      button.disabled = on;
    });
  }

  function safeUrl(url) {
    try { var parsed = new URL(url, win.location.href); return /^https?:$/.test(parsed.protocol) ? parsed.href : null; }
    catch (e) { return null; }
  }

  function answer(form, body) {
    var kind = body && body.status;
    // What analytics hear: the form's slug and the status, never a value the person typed.
    var event = { event: "formrelay_submitted", formrelay_form: decodeURIComponent(new URL(action(form)).pathname
      .split("/").pop()), formrelay_status: kind };
    var detail = Object.assign({}, body, event);
    clearErrors(form);
    if (body && body.ok) {
      if (win.dataLayer && win.dataLayer.push) win.dataLayer.push(event);
      if (typeof win.gtag === "function" && (get(form, "data-formrelay-gtag") !== null || options.gtag)) {
        win.gtag("event", "generate_lead", { formrelay_form: event.formrelay_form, formrelay_status: kind });
      }
      var target = body.redirect && safeUrl(body.redirect);
      if (target && get(form, "data-formrelay-redirect") !== "off") { win.location.assign(target); return; }
      say(form, text(form, kind === "queued" ? "queued" : "delivered", body.message), "success");
      F.reset.call(form);
      hidden(form, "_idempotency_key", newKey());
      refresh(form);  // a time-trap token is good for one submission
      own(E, "classList", form).add("formrelay-done");
      if (body.thanks) ladder(form, body.thanks);
      emit(form, "formrelay:success", detail);
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
    emit(form, "formrelay:error", detail);
  }

  // The thank-you ladder in place of the form: the relay's message, share links, a donate link.
  function ladder(form, thanks) {
    var box = el("div", { "class": "formrelay-thanks", tabindex: "-1" });
    var note = el("p", { "class": "formrelay-status", role: "status" });
    add(box, el("p", { "class": "formrelay-message" }, thanks.message));
    if (thanks.share) {
      var label = add(box, el("p", { "class": "formrelay-share-label", id: uid("formrelay-share") }, thanks.share_label));
      var list = add(box, el("ul", { "class": "formrelay-share", "aria-labelledby": label.id }));
      thanks.share.forEach(function (link) {
        var item = el("li"), url = link.url;
        if (!/^(https?|mailto):/.test(url)) return;
        if (link.channel === "copy") {
          var field = el("input", { id: uid("formrelay-copy"), "class": "formrelay-share-copy", readonly: true, value: url });
          add(item, el("label", { "for": field.id }, link.label));
          add(item, field);
          add(item, el("button", { type: "button" }, thanks.copy)).addEventListener("click", function () {
            field.select();  // without a clipboard (a page not on https), the person copies the selection
            if (navigator.clipboard) navigator.clipboard.writeText(url).then(function () { note.textContent = thanks.copied; }, function () {});
          });
        } else {
          add(item, el("a", { href: url, "class": "formrelay-share-" + link.channel }, link.label));
        }
        add(list, item);
      });
    }
    var donate = thanks.donate && safeUrl(thanks.donate.url);
    if (donate) add(add(box, el("p")), el("a", { href: donate, "class": "formrelay-donate" }, thanks.donate.label));
    add(box, note);
    form.parentNode.insertBefore(box, form.nextSibling);
    set(form, "hidden", "");
    box.focus();
  }

  function submit(form, event) {
    event.preventDefault();
    if (get(form, "aria-busy") === "true") return;
    busy(form, true);
    say(form, text(form, "sending"), "pending");
    var state = forms.get(form) || {};
    // A person can be faster than the time-trap's minimum (autofill): wait out the rest rather than be taken
    // for a bot. The token's description is awaited first (at most 5 s).
    Promise.race([state.ready, new Promise(function (done) { setTimeout(done, 5000); })]).then(function () {
      var left = state.at ? state.min * 1000 - (Date.now() - state.at) + 100 : 0;
      return new Promise(function (done) { setTimeout(done, left > 0 ? left : 0); });
    }).then(function () { send(form); });
  }

  function send(form) {
    if (touch.f) hidden(form, "_first_touch", touch.f);
    if (touch.l) hidden(form, "_last_touch", touch.l);
    var body = collect(form);
    win.fetch(action(form), {
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

  function started(form, description) {
    words.set(form, description.texts);
    if (description.started) {
      hidden(form, "_started", description.started);
      forms.get(form).at = Date.now();
      forms.get(form).min = description.started_min || 0;
    }
  }

  function refresh(form) {
    if (get(form, "data-formrelay-started") === "off") return;
    forms.get(form).ready = describe(action(form)).then(function (d) { started(form, d); }, function () {});
  }

  function describe(url) {
    return win.fetch(url, { headers: { Accept: "application/json" }, credentials: "omit", mode: "cors" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function enhance(form, description) {
    if (forms.has(form)) return form;
    forms.set(form, {});
    set(form, "novalidate", "");
    controls(form);
    status(form);
    EventTarget.prototype.addEventListener.call(form, "submit", function (event) { submit(form, event); });
    if (description) started(form, description);
    else refresh(form);
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
    add(form, wrap);
  }

  function render(host) {
    var url = host.getAttribute("data-formrelay-form");
    return describe(url).then(function (description) {
      var form = el("form", { action: url, method: "post", "class": "formrelay-form", "data-formrelay": true });
      words.set(form, description.texts);
      // The host's options (texts, redirect, started, ...) are the rendered form's.
      Array.prototype.forEach.call(host.attributes, function (a) {
        if (/^data-formrelay-(?!form$|rendered$)/.test(a.name)) set(form, a.name, a.value);
      });
      if (host.getAttribute("data-formrelay-title") !== "off") add(form, el("h2", {}, description.title));
      description.fields.forEach(function (field) { row(field, form); });
      var actions = el("div", { "class": "formrelay-actions" });
      actions.appendChild(el("button", { type: "submit" }, text(form, "submit")));
      add(form, actions);
      while (host.firstChild) host.removeChild(host.firstChild);
      host.appendChild(form);
      return enhance(form, description);
    }, function () {
      host.textContent = text(host, "load");
    });
  }

  // Touches are kept first-party, for the visit (sessionStorage), 30 days (localStorage, after consent), or not at
  // all ("off": only the form page's own parameters are sent). Values with '@' are never kept (an address).
  function storage(mode) {
    try { return mode === "local" ? win.localStorage : mode === "off" ? null : win.sessionStorage; } catch (e) { return null; }
  }

  function remember(mode) {
    var params = new URLSearchParams(win.location.search), here = new URLSearchParams(), now = Date.now(), kept;
    PARAMS.concat(options.attributionParams || []).slice(0, 20).forEach(function (key) {
      var value = (params.get(key) || "").trim().slice(0, 200);
      if (value && value.indexOf("@") < 0) here.set(key, value);
    });
    here = here.toString();
    try { kept = touch.t ? touch : JSON.parse(storage(mode).getItem("formrelay-touch")); } catch (e) { /* none */ }
    if (mode === "off" || !kept || !(kept.t > now - 2592e6)) kept = {};  // 30 days after the first touch
    if (here) { kept.f = kept.f || here; kept.l = here; kept.t = kept.t || now; }
    ["local", "session"].forEach(function (m) {
      try { storage(m).removeItem("formrelay-touch"); } catch (e) { /* not available */ }
    });
    try { if (kept.t) storage(mode).setItem("formrelay-touch", JSON.stringify(kept)); } catch (e) { /* full or off */ }
    touch = kept;
  }

  function init(root) {
    root = root || doc;
    Array.prototype.forEach.call(root.querySelectorAll("form[data-formrelay]"), function (f) { enhance(f); });
    Array.prototype.forEach.call(root.querySelectorAll("[data-formrelay-form]"), function (h) {
      if (!h.getAttribute("data-formrelay-rendered")) { h.setAttribute("data-formrelay-rendered", "1"); render(h); }
    });
  }

  win.FormRelay = { init: init, enhance: enhance, render: render, text: TEXT, remember: remember };
  remember(options.attribution || (script && get(script, "data-formrelay-attribution")) || "session");
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
})(window, document);
