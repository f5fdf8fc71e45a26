/* threadsvc console: a little plain JavaScript. Every page works without it.
 *
 * - times are shown in the reader's time zone, named (the page says UTC); a list's times
 *   relative ("3 min ago"), the moment in their tooltip;
 * - a form marked data-once cannot be sent twice by a double click;
 * - a thread page follows its thread live through the Server-Sent Events of the services
 *   (GET .../threads/{id}/events, docs/api.md#events): `status` events carry the <thread> XML, `log`
 *   events one <event>. The stream ends after the final status.
 */
(function () {
  "use strict";

  var MAX_LOG_LINES = 2000;

  function pad(n, width) {
    var s = String(n);
    while (s.length < (width || 2)) s = "0" + s;
    return s;
  }

  function localise(el) {
    var iso = el.getAttribute("datetime");
    var d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return;
    el.title = iso;
    var format = el.getAttribute("data-format");
    if (format === "clock") {
      el.textContent = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" +
        pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
    } else if (format === "relative") {
      el.title = absolute(d);
      el.textContent = ago(d);
    } else {
      el.textContent = absolute(d);
    }
  }

  // -- times in the reader's zone, and relative times in lists ------------------------------
  // Without the script the page shows each time in UTC, saying so.
  function absolute(d) {
    return d.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
  }

  function ago(d) {
    var seconds = Math.round((Date.now() - d.getTime()) / 1000);
    if (seconds < 0) return absolute(d); // a clock ahead of this one: say when, not "in 2 s"
    if (seconds < 45) return "just now";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    var hours = Math.round(minutes / 60);
    if (hours < 24) return hours + " h ago";
    var days = Math.round(hours / 24);
    return days + (days === 1 ? " day ago" : " days ago");
  }

  function keepRelative() {
    var relative = document.querySelectorAll("time[data-format='relative']");
    if (!relative.length) return;
    window.setInterval(function () {
      Array.prototype.forEach.call(relative, localise);
    }, 30000);
  }

  function timeElement(iso, format) {
    var t = document.createElement("time");
    t.setAttribute("datetime", iso);
    if (format) t.setAttribute("data-format", format);
    t.textContent = iso;
    localise(t);
    return t;
  }

  function onceForms() {
    var forms = document.querySelectorAll("form[data-once]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function () {
        var buttons = form.querySelectorAll("button[type=submit]");
        Array.prototype.forEach.call(buttons, function (b) {
          // after this submit has gone: disabling first would drop the button's value
          window.setTimeout(function () { b.disabled = true; b.textContent = "Starting…"; }, 0);
        });
      });
    });
  }

  function parseXml(text) {
    var doc = new DOMParser().parseFromString(text, "application/xml");
    if (doc.getElementsByTagName("parsererror").length) return null;
    return doc.documentElement;
  }

  function follow(root) {
    if (!window.EventSource || root.getAttribute("data-final") === "true") return;
    var field = function (name) { return root.querySelector("[data-field='" + name + "']"); };
    var live = root.querySelector("[data-live]");
    var liveText = live && live.querySelector(".live-text");
    var log = root.querySelector("#log");
    var lastSeq = parseInt(root.getAttribute("data-last-seq") || "0", 10);
    var name = root.getAttribute("data-name") || document.title;
    var finished = false;

    function setLive(state, text) {
      if (!live) return;
      live.hidden = false;
      live.className = "live " + state;
      liveText.textContent = text;
    }

    function setTime(el, iso) {
      if (!el || !iso) return;
      el.textContent = "";
      el.appendChild(timeElement(iso));
    }

    function setStatus(thread) {
      var status = thread.getAttribute("status");
      var badge = field("status");
      if (badge && badge.textContent !== status) {
        badge.textContent = status;
        badge.className = "badge s-" + status;
      }
      var messageEl = thread.getElementsByTagName("message")[0];
      var message = field("message");
      if (message) {
        message.textContent = messageEl ? messageEl.textContent : "";
        message.hidden = !messageEl;
      }
      var bar = root.querySelector("#progress-wrap progress");
      var progressEl = thread.getElementsByTagName("progress")[0];
      var final = status === "completed" || status === "failed" || status === "cancelled";
      if (bar) {
        bar.className = "s-" + status;
        var total = progressEl && parseInt(progressEl.getAttribute("total") || "0", 10);
        var current = progressEl ? parseInt(progressEl.getAttribute("current") || "0", 10) : 0;
        var percentAttr = progressEl && progressEl.getAttribute("percent");
        if (total > 0) {
          bar.max = total;
          bar.value = current;
          bar.textContent = percentAttr + " %";
          field("percent").textContent = percentAttr + " %";
          field("counts").textContent = current + " of " + total;
          document.title = percentAttr + " % · " + name + " · threadsvc";
        } else if (final) {
          bar.max = 1;
          bar.value = status === "completed" ? 1 : 0;
        }
      }
      setTime(field("started"), thread.getAttribute("started"));
      setTime(field("ended"), thread.getAttribute("ended"));
      ["warnings", "errors"].forEach(function (key) {
        var el = field(key);
        var value = thread.getAttribute(key);
        if (el && value !== null) {
          el.textContent = value;
          el.classList.toggle(key === "warnings" ? "warn" : "err", value !== "0");
        }
      });
      if (final) {
        finished = true;
        document.title = name + " · " + status + " · threadsvc";
        var cancel = root.querySelector("#cancel-form");
        if (cancel) cancel.remove();
        var result = thread.getElementsByTagName("result")[0];
        var box = root.querySelector("#result");
        if (result && box) {
          var meta = field("result-meta");
          if (meta) {
            meta.textContent = result.getAttribute("media-type") + ", " +
              result.getAttribute("size") + " bytes; kept until ";
            meta.appendChild(timeElement(result.getAttribute("deletion")));
          }
          box.hidden = false;
        }
        root.setAttribute("data-final", "true");
      }
      details(root, thread, status, final);
    }

    function addLog(event) {
      if (!log) return; // this role may not read the log: show none of it
      if (log.getAttribute("data-follow") !== "true") return; // a page, a search: not the tail
      var seq = parseInt(event.getAttribute("seq"), 10);
      if (seq <= lastSeq) return; // already on the page
      lastSeq = seq;
      if (!logPause.held(event)) appendLog(event); // paused: shown when the reader follows
    }

    function appendLog(event) {
      var seq = parseInt(event.getAttribute("seq"), 10);
      var level = event.getAttribute("level");
      var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      var li = document.createElement("li");
      li.className = "l-" + level + " new";
      li.id = "e-" + seq;
      li.setAttribute("data-seq", String(seq));
      var link = document.createElement("a");
      link.className = "seq";
      link.href = log.getAttribute("data-href") + "?at=" + seq + "#e-" + seq;
      link.title = "Link to event " + seq;
      link.textContent = String(seq);
      li.appendChild(link);
      li.appendChild(timeElement(event.getAttribute("datetime"), "clock"));
      var levelEl = document.createElement("span");
      levelEl.className = "level";
      levelEl.textContent = level;
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = event.textContent;
      li.appendChild(levelEl);
      li.appendChild(text);
      log.appendChild(li);
      while (log.children.length > MAX_LOG_LINES) log.removeChild(log.firstChild);
      var total = field("log-total");
      if (total) total.textContent = String(Math.max(seq, parseInt(total.textContent, 10) || 0));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }

    var logPause = pauser(root, appendLog);
    setLive("", "connecting…");
    var source = new EventSource(root.getAttribute("data-events"));
    source.addEventListener("open", function () { setLive("on", "live"); });
    source.addEventListener("status", function (e) {
      var thread = parseXml(e.data);
      if (thread) setStatus(thread);
      if (finished) {
        source.close(); // the server ends the stream; do not let EventSource reconnect
        setLive("", "finished");
      }
    });
    source.addEventListener("log", function (e) {
      var event = parseXml(e.data);
      if (event) addLog(event);
    });
    source.addEventListener("error", function () {
      if (finished) return;
      if (source.readyState === EventSource.CLOSED) {
        setLive("off", "disconnected: reload the page");
      } else {
        setLive("off", "reconnecting…");
      }
    });
    if (log && log.getAttribute("data-follow") === "true") log.scrollTop = log.scrollHeight;
  }

  /* Reading the log (templates/log.html): Pause holds the live events back, so that the lines
   * being read stay put; Follow shows those held and goes on live. */
  function pauser(root, show) {
    var button = root.querySelector("#log-follow");
    var paused = false;
    var held = [];
    if (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        paused = !paused;
        if (!paused) {
          var waiting = held;
          held = [];
          waiting.forEach(show);
          var log = root.querySelector("#log");
          if (log) log.scrollTop = log.scrollHeight;
        }
        label();
      });
    }
    function label() {
      if (!button) return;
      button.textContent = paused ? "Follow (" + held.length + " new)" : "Pause";
    }
    return {
      // whether this event is held back (and not shown now)
      held: function (event) {
        if (!paused) return false;
        held.push(event);
        label();
        return true;
      }
    };
  }

  /* A link to one event (…?at=SEQ#e-SEQ) opens the page with it marked: bring it into the
   * middle of the log's box, which the browser's own scroll to the fragment may leave at an
   * edge. */
  function showTarget() {
    var target = document.querySelector("#log li.target");
    if (target && target.scrollIntoView) target.scrollIntoView({ block: "center" });
  }

  // -- the thread page's durations and timeline, kept up with its status events ------------
  function duration(ms) {
    if (ms < 1000) return Math.max(ms, 0) + " ms";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60); s %= 60;
    if (m < 60) return m + " min" + (s ? " " + s + " s" : "");
    var h = Math.floor(m / 60); m %= 60;
    if (h < 24) return h + " h" + (m ? " " + m + " min" : "");
    var d = Math.floor(h / 24); h %= 24;
    return d + " d" + (h ? " " + h + " h" : "");
  }

  function details(root, thread, status, final) {
    var field = function (name) { return root.querySelector("[data-field='" + name + "']"); };
    var created = Date.parse(root.querySelector(".details time").getAttribute("datetime"));
    var started = thread.getAttribute("started"), ended = thread.getAttribute("ended");
    var queued = field("queued"), ran = field("ran"), list = field("timeline");
    if (started && queued) queued.textContent = duration(Date.parse(started) - created);
    if (started && ended && ran) ran.textContent = duration(Date.parse(ended) - Date.parse(started));
    if (!list) return;
    function step(name, iso, note) {
      var li = list.querySelector("[data-step='" + name + "']");
      if (li) return;
      li = document.createElement("li");
      li.setAttribute("data-step", name);
      var badge = document.createElement("span");
      badge.className = "badge s-" + name;
      badge.textContent = name;
      li.appendChild(badge);
      if (iso) { li.appendChild(document.createTextNode(" ")); li.appendChild(timeElement(iso)); }
      if (note) {
        var muted = document.createElement("span");
        muted.className = "muted";
        muted.textContent = " " + note;
        li.appendChild(muted);
      }
      list.appendChild(li);
    }
    Array.prototype.forEach.call(list.querySelectorAll("[data-step='warning'],[data-step='error']"),
      function (li) { if (li.getAttribute("data-step") !== status || final) li.remove(); });
    if (started) step("inprogress", started);
    if (status === "warning" || status === "error") step(status, null, "now");
    if (final) step(status, ended, started ? "" : "before it started");
    var note = field("timeline-note"); // "waiting for…" or "running for…" as of the load
    if (note && (final || (started && note.hasAttribute("data-waiting")))) note.remove();
  }

  /* -- list pages: rows that stay live, and "select all" (web/console/live.py, find.html) --
   * One EventSource per list (table[data-live]): each `row` event carries one thread's state as
   * JSON and updates its row in place; `done` says every followed thread has ended. */
  function followList(table) {
    if (!window.EventSource) return;
    var indicator = document.querySelector("[data-list-live]");
    var text = indicator && indicator.querySelector(".live-text");
    function setLive(state, label) {
      if (!indicator) return;
      indicator.hidden = false;
      indicator.className = "live " + state;
      text.textContent = label;
    }
    function update(row, s) {
      var cell = function (name) { return row.querySelector("[data-field='" + name + "']"); };
      var badge = cell("status");
      if (badge) { badge.textContent = s.status; badge.className = "badge s-" + s.status; }
      var message = cell("message");
      if (message) message.textContent = s.message;
      var bar = row.querySelector("[data-field='bar'] progress");
      var pct = row.querySelector("[data-field='bar'] .pct");
      if (bar) {
        bar.className = "s-" + s.status;
        if (s.total) {
          bar.max = s.total; bar.value = s.current || 0;
          if (pct) pct.textContent = s.percent + " %";
        } else if (s.final) {
          bar.max = 1; bar.value = s.status === "completed" ? 1 : 0;
        }
      }
      var ended = cell("ended");
      if (ended && s.ended && !ended.firstChild) ended.appendChild(timeElement(s.ended));
      var counts = cell("counts");
      if (counts) {
        counts.textContent = "";
        [["warnings", "warning", "warn"], ["errors", "error", "err"]].forEach(function (k) {
          var n = s[k[0]];
          if (!n) return;
          counts.appendChild(document.createTextNode(" · "));
          var span = document.createElement("span");
          span.className = "count " + k[2];
          span.textContent = n + " " + k[1] + (n !== 1 ? "s" : "");
          counts.appendChild(span);
        });
      }
      row.classList.add("changed");
      window.setTimeout(function () { row.classList.remove("changed"); }, 1200);
    }
    setLive("", "connecting…");
    var source = new EventSource(table.getAttribute("data-live"));
    var done = false;
    source.addEventListener("open", function () { setLive("on", "live"); });
    source.addEventListener("row", function (e) {
      var s;
      try { s = JSON.parse(e.data); } catch (err) { return; }
      var row = table.querySelector("tr[data-thread='" + s.id + "']");
      if (row) update(row, s);
    });
    source.addEventListener("done", function () {
      done = true;
      source.close();
      setLive("", "every thread here has ended");
    });
    source.addEventListener("error", function () {
      if (done) return;
      setLive("off", source.readyState === EventSource.CLOSED ?
        "not live: reload the page" : "reconnecting…");
    });
  }

  function pickAll() {
    Array.prototype.forEach.call(document.querySelectorAll("input.pick-all"), function (all) {
      var table = all.closest("table");
      var boxes = table.querySelectorAll("tbody input[type=checkbox][name=id]");
      all.hidden = false;
      all.addEventListener("change", function () {
        Array.prototype.forEach.call(boxes, function (b) { b.checked = all.checked; });
      });
    });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), localise);
    keepRelative();
    onceForms();
    var root = document.querySelector("[data-events]");
    if (root) follow(root);
    showTarget();
    window.addEventListener("load", showTarget); // after the browser's own scroll to it
    var list = document.querySelector("table[data-live]");
    if (list) followList(list);
    pickAll();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
