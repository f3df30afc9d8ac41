// durable run browser: the little JavaScript the pages need on top of htmx 2 and its ws extension.
// Everything here is progressive: without it, pages still render, links and forms still work.
(function () {
  "use strict";

  // -- colour theme: prefers-color-scheme unless the user picked one (remembered in localStorage) ----
  function effectiveTheme() {
    var chosen = document.documentElement.dataset.theme;
    if (chosen === "dark" || chosen === "light") return chosen;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function labelThemeButtons() {
    var next = effectiveTheme() === "dark" ? "light" : "dark";
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.setAttribute("aria-label", "Switch to " + next + " theme");
      button.title = "Switch to " + next + " theme";
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-theme-toggle]");
    if (!button) return;
    var next = effectiveTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("durable-theme", next); } catch (e) { /* private mode */ }
    labelThemeButtons();
  });

  // -- htmx settings ---------------------------------------------------------------------------------
  // 400 (a filter the server cannot apply) and 409 (a control that does not apply to the run's status)
  // carry a fragment that explains why: swap them like a success.
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "40[09]", swap: true, error: false },
    { code: "[45]..", swap: false, error: true },
  ];
  // A history-cache miss must fetch the full page, not the partial an htmx request gets.
  htmx.config.historyRestoreAsHxRequest = false;

  function toast(text) {
    var box = document.getElementById("toast");
    if (!box) {
      box = document.createElement("div");
      box.id = "toast";
      box.className = "toast notice notice-error";
      box.setAttribute("role", "alert");
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.hidden = false;
    clearTimeout(box._timer);
    box._timer = setTimeout(function () { box.hidden = true; }, 6000);
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    var reasons = { 403: "You are not allowed to do that.", 404: "Not found.", 405: "Not allowed here." };
    toast(reasons[status] || "The server could not do that (HTTP " + status + "). Try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("The server did not answer. Check your connection and try again.");
  });

  // -- live updates ----------------------------------------------------------------------------------
  // The server resumes from what this page already shows: the last event number for a run page, the
  // rows on screen for the list. Computed at every (re)connect, so a reconnect misses nothing.
  htmx.createWebSocket = function (url) {
    var target = new URL(url, window.location.href);
    var cursor = document.getElementById("live-cursor");
    if (cursor) target.searchParams.set("after", cursor.dataset.seq || "0");
    var rows = document.getElementById("run-rows");
    if (rows) {
      var ids = Array.prototype.map.call(rows.querySelectorAll("tr[data-run-id]"), function (row) {
        return row.dataset.runId;
      });
      target.searchParams.set("ids", ids.slice(0, 200).join(","));
    }
    var socket = new WebSocket(target.toString(), []);
    socket.binaryType = htmx.config.wsBinaryType;
    return socket;
  };

  // Fragments marked data-upsert="<swap>:<container>" replace the element with the same id when the
  // page has it, and are inserted into the container otherwise. Replays are therefore harmless.
  htmx.defineExtension("durable-live", {
    transformResponse: function (text, xhr) {
      if (xhr) return text; // only websocket messages
      var template = document.createElement("template");
      template.innerHTML = text;
      var out = [];
      Array.prototype.forEach.call(template.content.children, function (element) {
        var spec = element.getAttribute("data-upsert");
        if (!spec) { out.push(element.outerHTML); return; }
        element.removeAttribute("data-upsert");
        var existing = element.id ? document.getElementById(element.id) : null;
        if (existing) {
          keepOpen(existing, element);
          element.setAttribute("hx-swap-oob", "outerHTML");
          out.push(element.outerHTML);
        } else {
          var wrapper = element.tagName === "TR" ? "tbody" : "div";
          out.push("<" + wrapper + ' hx-swap-oob="' + spec + '">' + element.outerHTML + "</" + wrapper + ">");
        }
      });
      return out.join("");
    },
  });

  // A step the user opened stays open when the server sends a newer version of it.
  function keepOpen(existing, incoming) {
    var open = existing.querySelector("details[open]");
    var details = incoming.querySelector("details");
    if (open && details) details.setAttribute("open", "");
  }

  function setLiveState(socketElement, state, label) {
    var badge = socketElement.querySelector("[data-live-state]");
    if (!badge) return;
    badge.dataset.state = state;
    badge.querySelector(".label").textContent = label;
  }
  document.addEventListener("htmx:wsOpen", function (event) {
    setLiveState(event.target, "live", "live");
  });
  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail.event.code;
    var element = event.target;
    if (code === 4403) return setLiveState(element, "off", "no permission for live updates");
    if (code === 4404) return setLiveState(element, "off", "run not found");
    if (code >= 4000) return setLiveState(element, "off", "live updates stopped");
    setLiveState(element, "wait", "reconnecting…");
    // htmx reconnects by itself after 1006/1011/1012/1013; a clean close (server restart, daphne's
    // websocket timeout) would otherwise leave the page silently stale.
    if ([1000, 1001, 1005].indexOf(code) >= 0 && document.body.contains(element)) {
      var wrapper = event.detail.socketWrapper;
      setTimeout(function () {
        if (document.body.contains(element)) wrapper.reconnect();
      }, 1000 + Math.random() * 2000);
    }
  });

  // -- durations that keep running -------------------------------------------------------------------
  var serverSkew = 0; // server clock minus this browser's clock
  function formatMs(ms) {
    if (ms < 1000) return Math.max(0, Math.round(ms)) + " ms";
    var seconds = ms / 1000;
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }
  function tick() {
    var now = Date.now() + serverSkew;
    document.querySelectorAll("[data-elapsed-since]").forEach(function (element) {
      var since = Date.parse(element.dataset.elapsedSince);
      if (!isNaN(since)) element.textContent = formatMs(now - since);
    });
  }

  // -- steps load their input and output when opened ---------------------------------------------------
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.open || !details.dataset.src) return;
    if (details.dataset.loaded) return;
    var body = details.querySelector("[data-step-body]");
    if (!body) return;
    details.dataset.loaded = "1";
    htmx.ajax("GET", details.dataset.src, { target: body, swap: "innerHTML" });
  }, true);

  // -- dropdowns (<details data-dropdown>) close on a click elsewhere or Escape ----------------------
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (dropdown) {
      if (!dropdown.contains(event.target)) dropdown.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (dropdown) {
      dropdown.open = false;
      dropdown.querySelector("summary").focus();
    });
  });

  // -- start form: the selected workflow's input example ---------------------------------------------
  function exampleFor(name) {
    var card = document.querySelector('.wf-card[data-workflow="' + CSS.escape(name) + '"] [data-example]');
    return card ? card.textContent : null;
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-use-example]");
    if (!button) return;
    var select = document.querySelector("[data-workflow-select]");
    var input = document.querySelector("[data-input-json]");
    if (select) select.value = button.dataset.useExample;
    if (input) { input.value = exampleFor(button.dataset.useExample) || "{}"; input.focus(); }
  });
  document.addEventListener("change", function (event) {
    if (!event.target.matches("[data-workflow-select]")) return;
    var input = document.querySelector("[data-input-json]");
    if (!input) return;
    var current = input.value.trim();
    var isExample = Array.prototype.some.call(document.querySelectorAll("[data-example]"), function (pre) {
      return pre.textContent.trim() === current;
    });
    // Replace only an untouched field: empty, {} or another workflow's example.
    if (current === "" || current === "{}" || isExample) input.value = exampleFor(event.target.value) || "{}";
  });

  document.addEventListener("DOMContentLoaded", function () {
    var serverNow = Date.parse(document.body.dataset.serverNow || "");
    if (!isNaN(serverNow)) serverSkew = serverNow - Date.now();
    labelThemeButtons();
    tick();
    setInterval(tick, 1000);
  });
})();
