// durable approval inbox: keyboard, selection, expiry countdowns, refusal fragments, live socket
// parameters. Progressive: without it the inbox and the detail still work as plain forms and links.
(function () {
  "use strict";

  // -- the live socket resumes from what the page shows ---------------------------------------------
  // /ws/approvals/ gets the newest audit record the page reflects and the cards on screen, computed
  // at every (re)connect, so a reconnect replays what it missed and nothing twice.
  var createSocket = htmx.createWebSocket;
  htmx.createWebSocket = function (url) {
    var target = new URL(url, window.location.href);
    if (target.pathname.indexOf("/ws/approvals/") === 0) {
      var cursor = document.getElementById("inbox-cursor");
      if (cursor) target.searchParams.set("audit", cursor.dataset.audit || "0");
      var cards = document.getElementById("inbox-cards");
      if (cards) {
        var ids = Array.prototype.map.call(cards.querySelectorAll(".approval-card:not(.is-gone)"), function (card) {
          return card.dataset.approvalId;
        });
        target.searchParams.set("ids", ids.slice(0, 500).join(","));
        target.searchParams.set("more", document.getElementById("inbox-more") ? "1" : "0");
      }
      url = target.toString();
    }
    return createSocket(url);
  };

  // A refusal (403 four-eyes or group, 409 already decided) comes back as a fragment that says why:
  // swap it like a success instead of the generic error toast.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("X-Durable-Approval") && xhr.status >= 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // -- cards that left the inbox fade out ------------------------------------------------------------
  var GONE_MS = 6000;
  function sweepGone() {
    document.querySelectorAll(".approval-card.is-gone:not([data-leaving])").forEach(function (card) {
      card.dataset.leaving = "1";
      setTimeout(function () {
        var wasCurrent = card === current();
        var next = wasCurrent ? neighbour(card, 1) || neighbour(card, -1) : null;
        card.remove();
        if (next) setCurrent(next, true);
        updateSelectAll();
      }, GONE_MS);
    });
  }
  document.addEventListener("htmx:afterSettle", sweepGone);
  document.addEventListener("htmx:wsAfterMessage", sweepGone);

  // -- keyboard --------------------------------------------------------------------------------------
  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll("#inbox-cards .approval-card:not(.is-gone)"));
  }
  function current() {
    return document.querySelector("#inbox-cards .approval-card.is-current");
  }
  function neighbour(card, step) {
    var list = cards();
    var index = list.indexOf(card);
    if (index < 0) return list[0] || null;
    return list[index + step] || null;
  }
  function setCurrent(card, keepFocus) {
    var previous = current();
    if (previous) previous.classList.remove("is-current");
    if (!card) return;
    card.classList.add("is-current");
    if (!keepFocus || !card.contains(document.activeElement)) card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest" });
  }
  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']") !== null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") {
        var box = event.target.closest("details[data-reject]");
        if (box) { box.open = false; var card = box.closest(".approval-card"); if (card) card.focus(); }
      }
      return;
    }
    var detail = document.querySelector("[data-approval-page]");
    if (detail) return detailKeys(event, detail);
    if (!document.getElementById("inbox-cards")) return;
    var here = current() || (document.activeElement && document.activeElement.closest(".approval-card:not(.is-gone)"));
    switch (event.key) {
      case "j": setCurrent(here ? neighbour(here, 1) || here : cards()[0]); break;
      case "k": setCurrent(here ? neighbour(here, -1) || here : cards()[0]); break;
      case "a": {
        var approve = here && here.querySelector("[data-action='approve']");
        if (!approve) return;
        approve.click();
        break;
      }
      case "r": {
        var reject = here && here.querySelector("details[data-reject]");
        if (!reject) return;
        reject.open = true;
        reject.querySelector("[data-reason]").focus();
        break;
      }
      case "x": {
        var box = here && here.querySelector("[data-select]");
        if (!box) return;
        box.checked = !box.checked;
        updateSelectAll();
        break;
      }
      case "o": case "Enter": {
        var link = here && here.querySelector("[data-open]");
        if (!link || event.target.closest("a, button, summary")) return;
        link.click();
        break;
      }
      default: return;
    }
    event.preventDefault();
  });

  function detailKeys(event, page) {
    if (event.key === "a") {
      var approve = page.querySelector("#decide-form [data-action='approve']");
      if (!approve) return;
      approve.click();
    } else if (event.key === "r") {
      var reason = page.querySelector("#decide-form [data-reason]");
      if (!reason) return;
      reason.focus();
    } else {
      return;
    }
    event.preventDefault();
  }

  // The card a click or focus lands in becomes the current one.
  document.addEventListener("focusin", function (event) {
    var card = event.target.closest && event.target.closest("#inbox-cards .approval-card:not(.is-gone)");
    if (card && card !== current()) {
      var previous = current();
      if (previous) previous.classList.remove("is-current");
      card.classList.add("is-current");
    }
  });

  // -- selection for bulk decisions -----------------------------------------------------------------
  function updateSelectAll() {
    var all = document.querySelector("[data-select-all]");
    if (!all) return;
    var boxes = document.querySelectorAll("#inbox-cards .approval-card:not(.is-gone) [data-select]");
    var checked = Array.prototype.filter.call(boxes, function (box) { return box.checked; }).length;
    all.checked = boxes.length > 0 && checked === boxes.length;
    all.indeterminate = checked > 0 && checked < boxes.length;
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-select-all]")) {
      document.querySelectorAll("#inbox-cards .approval-card:not(.is-gone) [data-select]").forEach(function (box) {
        box.checked = event.target.checked;
      });
    } else if (event.target.matches("[data-select]")) {
      updateSelectAll();
    }
  });

  // -- time left before expiry -------------------------------------------------------------------------
  function formatLeft(ms) {
    if (ms <= 0) return "now";
    var seconds = Math.floor(ms / 1000);
    if (seconds < 120) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 120) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }
  var skew = 0;
  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-countdown-to]").forEach(function (element) {
      var until = Date.parse(element.dataset.countdownTo);
      if (!isNaN(until)) element.textContent = formatLeft(until - now);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var serverNow = Date.parse(document.body.dataset.serverNow || "");
    if (!isNaN(serverNow)) skew = serverNow - Date.now();
    tick();
    setInterval(tick, 1000);
    sweepGone();
  });
})();
