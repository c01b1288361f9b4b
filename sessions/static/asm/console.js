/*
 * asm operator console: the live part of a session's admin change page.
 *
 * - Timeline: the session's events over the WebSocket
 *   `/ws/sessions/{id}/events?after=N` (authenticated by the admin's login cookie). The
 *   server sends `{"type": "event", "event": {id, session_id, run_id, sequence_number, type,
 *   data, metadata, provider, timestamp}}`, in order, each once; on a reconnect the console
 *   resumes after the last sequence it showed (and drops any it already has).
 *   `message_streamed` chunks of a run are assembled into one growing text block, which
 *   `message_received` then completes; a tool call's start and end share one row.
 * - Buttons call the public API (`/api/v1/...`) with the login cookie and the page's CSRF
 *   token (DRF SessionAuthentication enforces CSRF): submit a run, cancel a run, complete
 *   or fail the session. Errors show the API's `{"error": {code, message}}`.
 *
 * Plain JavaScript, no build step, no third-party code; every value from the server is
 * inserted as text (never as HTML).
 */
(function () {
  "use strict";

  var TERMINAL = { completed: 1, failed: 1, cancelled: 1, timeout: 1 };
  var RUN_END = {
    run_completed: "completed",
    run_failed: "failed",
    run_cancelled: "cancelled",
    run_timeout: "timeout",
  };
  var SESSION_STATUS = {
    session_created: "pending",
    session_started: "active",
    session_paused: "paused",
    session_resumed: "active",
    session_completed: "completed",
    session_failed: "failed",
    session_cancelled: "cancelled",
  };
  var SESSION_TERMINAL = { completed: 1, failed: 1, cancelled: 1 };
  var FINAL_CLOSE = {
    4400: "the event stream refused its parameters",
    4401: "not authenticated: log in again and reload",
    4403: "this session belongs to another owner",
    4404: "no such session",
  };

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    for (key in attrs || {}) {
      if (!Object.prototype.hasOwnProperty.call(attrs, key) || attrs[key] == null) continue;
      if (key === "text") node.textContent = String(attrs[key]);
      else if (key === "className") node.className = attrs[key];
      else if (key.indexOf("data-") === 0 || key === "title" || key === "type") {
        node.setAttribute(key, String(attrs[key]));
      } else node[key] = attrs[key];
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child == null || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function short(id) {
    return id ? String(id).slice(0, 8) : "";
  }

  function json(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (e) {
      return String(value);
    }
  }

  function isNumber(v) {
    return typeof v === "number" && isFinite(v);
  }

  function clock(iso) {
    var d = new Date(iso);
    return isNaN(d.getTime()) ? "" : d.toISOString().slice(11, 23);
  }

  function formatDuration(ms) {
    if (ms == null || !isFinite(ms)) return "-";
    var s = Math.max(0, ms) / 1000;
    if (s < 60) return s.toFixed(2) + " s";
    var whole = Math.floor(s);
    var h = Math.floor(whole / 3600);
    var m = Math.floor((whole % 3600) / 60);
    var sec = whole % 60;
    var pad = function (n) {
      return (n < 10 ? "0" : "") + n;
    };
    return h ? h + "h " + pad(m) + "m " + pad(sec) + "s" : m + "m " + pad(sec) + "s";
  }

  function totalTokens(usage) {
    if (!usage || typeof usage !== "object") return null;
    if (isNumber(usage.total_tokens)) return usage.total_tokens;
    var parts = [usage.input_tokens, usage.output_tokens].filter(isNumber);
    return parts.length ? parts.reduce(function (a, b) { return a + b; }, 0) : null;
  }

  function mergeUsage(old, add) {
    var merged = Object.assign({}, old || {});
    Object.keys(add || {}).forEach(function (k) {
      var v = add[k];
      merged[k] = isNumber(merged[k]) && isNumber(v) ? merged[k] + v : v;
    });
    return merged;
  }

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return "console-" + window.crypto.randomUUID();
    }
    return "console-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function category(type) {
    if (/^session_/.test(type) || type === "events_pruned") return "session";
    if (/^run_/.test(type)) return "run";
    if (/^message_/.test(type)) return "message";
    if (/^tool_/.test(type)) return "tool";
    if (/^error_/.test(type)) return "error";
    if (type === "token_usage_updated" || type === "turn_completed") return "usage";
    if (/^workspace_/.test(type)) return "workspace";
    if (type === "policy_violation") return "policy";
    return "other";
  }

  function rank(status) {
    if (status === "pending") return 0;
    if (status === "running") return 1;
    return TERMINAL[status] ? 2 : 0;
  }

  // ------------------------------------------------------------------ the console
  function Console(root, cfg) {
    this.root = root;
    this.cfg = cfg;
    this.csrf = root.getAttribute("data-csrf-token") || this.cookie("csrftoken");
    this.q = function (role) {
      return root.querySelector('[data-role="' + role + '"]');
    };
    this.timeline = this.q("timeline");
    this.runsBody = this.q("runs").querySelector("tbody");
    this.runs = {};
    this.runOrder = [];
    this.streams = {};
    this.tools = {};
    this.retry = 0;
    this.ws = null;
    this.closedForGood = false;
    this.pendingKey = null;
    this.sessionStatus = cfg.status;
    var start = Math.max(0, (cfg.last_sequence || 0) - (cfg.history || 1000));
    this.lastSeq = start;
    if (start > 0) {
      var note = this.q("history-note");
      note.textContent =
        "Showing events after #" + start + "; older ones are in the table below the form " +
        "and in the Events admin.";
      note.hidden = false;
    }
    (cfg.runs || []).forEach(this.upsertRun.bind(this));
    this.renderRuns();
    this.setSessionStatus(cfg.status);
    this.bind();
    this.connect();
    this.loadProviders();
    var self = this;
    window.setInterval(function () {
      if (self.runOrder.some(function (id) { return self.runs[id].status === "running"; })) {
        self.renderRuns();
      }
    }, 1000);
  }

  Console.prototype.cookie = function (name) {
    var found = document.cookie.split("; ").filter(function (c) {
      return c.indexOf(name + "=") === 0;
    })[0];
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  };

  // ------------------------------------------------------------------ notices
  Console.prototype.notice = function (message, kind) {
    var box = this.q("notice");
    box.textContent = message;
    box.setAttribute("data-kind", kind || "info");
    box.hidden = false;
    window.clearTimeout(this.noticeTimer);
    if (kind !== "error") {
      this.noticeTimer = window.setTimeout(function () {
        box.hidden = true;
      }, 8000);
    }
  };

  // ------------------------------------------------------------------ API calls
  Console.prototype.api = function (method, path, body, headers) {
    var h = { Accept: "application/json", "X-CSRFToken": this.csrf };
    if (body !== undefined) h["Content-Type"] = "application/json";
    Object.assign(h, headers || {});
    return fetch(this.cfg.api_base + path, {
      method: method,
      credentials: "same-origin",
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (e) {
          data = null;
        }
        if (!resp.ok) {
          var err = data && data.error;
          var detail = err ? err.code + ": " + err.message : "HTTP " + resp.status;
          throw new ApiError(resp.status, detail);
        }
        return data;
      });
    });
  };

  Console.prototype.fail = function (what) {
    var self = this;
    return function (err) {
      var msg = err instanceof ApiError ? err.message : "network error (" + err + ")";
      self.notice(what + " failed: " + msg, "error");
    };
  };

  Console.prototype.bind = function () {
    var self = this;
    var form = this.q("submit-form");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      self.submit(form);
    });
    form.elements.prompt.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        self.submit(form);
      }
    });
    this.root.querySelector('[data-action="complete"]').addEventListener("click", function () {
      if (window.confirm("Complete this session? It then takes no new runs.")) self.finish("complete");
    });
    this.root.querySelector('[data-action="fail"]').addEventListener("click", function () {
      if (window.confirm("Mark this session failed? It then takes no new runs.")) self.finish("fail");
    });
    this.runsBody.addEventListener("click", function (e) {
      var button = e.target.closest('button[data-action="cancel-run"]');
      if (button) self.cancelRun(button.getAttribute("data-run-id"), button);
    });
    // Follow the newest event until the operator scrolls up; scrolling back down resumes.
    this.timeline.addEventListener("wheel", function (e) {
      if (e.deltaY < 0) self.q("follow").checked = false;
    });
    this.timeline.addEventListener("scroll", function () {
      var t = self.timeline;
      if (t.scrollHeight - t.scrollTop - t.clientHeight < 30) self.q("follow").checked = true;
    });
  };

  Console.prototype.submit = function (form) {
    var self = this;
    var prompt = form.elements.prompt.value.trim();
    if (!prompt) {
      this.notice("Write a prompt first.", "error");
      return;
    }
    var body = { input: { prompt: prompt } };
    var provider = form.elements.provider.value.trim();
    if (provider) body.provider = provider;
    var raw = form.elements.options.value.trim();
    if (raw) {
      var options;
      try {
        options = JSON.parse(raw);
      } catch (e) {
        this.notice("Options are not valid JSON: " + e.message, "error");
        return;
      }
      if (!options || typeof options !== "object" || Array.isArray(options)) {
        this.notice('Options must be a JSON object, e.g. {"timeout_ms": 60000}.', "error");
        return;
      }
      body.options = options;
    }
    // One key per intended run: a retry after a network error cannot queue it twice.
    this.pendingKey = this.pendingKey || newKey();
    var button = form.querySelector('[data-action="submit"]');
    button.disabled = true;
    this.api("POST", "sessions/" + this.cfg.session_id + "/runs", body, {
      "Idempotency-Key": this.pendingKey,
    })
      .then(function (run) {
        self.pendingKey = null;
        form.elements.prompt.value = "";
        if (run && run.id) {
          self.upsertRun(run);
          self.renderRuns();
          self.notice("Run " + short(run.id) + " queued (" + (run.status || "pending") + ").");
        }
      })
      .catch(function (err) {
        if (err instanceof ApiError) self.pendingKey = null;
        self.fail("Submit")(err);
      })
      .then(function () {
        button.disabled = false;
      });
  };

  Console.prototype.cancelRun = function (runId, button) {
    var self = this;
    if (button) {
      button.disabled = true;
      button.setAttribute("data-busy", "1");
    }
    this.api("POST", "runs/" + runId + "/cancel", {})
      .then(function (run) {
        if (run && run.id) self.upsertRun(run, true);
        if (self.runs[runId] && self.runs[runId].status === "running") {
          self.runs[runId].cancel_requested_at =
            self.runs[runId].cancel_requested_at || new Date().toISOString();
        }
        self.renderRuns();
        self.notice("Cancel sent for run " + short(runId) + ".");
      })
      .catch(function (err) {
        if (button) {
          button.disabled = false;
          button.removeAttribute("data-busy");
        }
        self.fail("Cancel")(err);
      });
  };

  Console.prototype.finish = function (action) {
    var self = this;
    var body = {};
    if (action === "fail") {
      var reason = this.q("fail-reason").value.trim();
      if (reason) body.error_message = reason;
    }
    this.api("POST", "sessions/" + this.cfg.session_id + "/" + action, body)
      .then(function (session) {
        if (session && session.status) self.setSessionStatus(session.status);
        self.notice("Session " + (session && session.status ? session.status : action) + ".");
      })
      .catch(this.fail(action === "fail" ? "Fail session" : "Complete session"));
  };

  Console.prototype.loadProviders = function () {
    var list = document.getElementById("asm-providers");
    if (!list) return;
    this.api("GET", "providers")
      .then(function (data) {
        var items = Array.isArray(data) ? data : (data && (data.results || data.providers)) || [];
        items.forEach(function (p) {
          var name = typeof p === "string" ? p : p && p.name;
          if (name) list.appendChild(el("option", { value: name }));
        });
      })
      .catch(function () {
        /* the list is a convenience; typing a name works without it */
      });
  };

  Console.prototype.refreshRuns = function () {
    var self = this;
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(function () {
      self.api("GET", "sessions/" + self.cfg.session_id + "/runs")
        .then(function (data) {
          var items = Array.isArray(data) ? data : (data && data.results) || [];
          items.forEach(function (r) {
            self.upsertRun(r);
          });
          self.renderRuns();
        })
        .catch(function () {
          /* the timeline already moved the runs along; this only adds cost and totals */
        });
    }, 300);
  };

  // ------------------------------------------------------------------ session and runs state
  Console.prototype.setSessionStatus = function (status) {
    if (!status) return;
    this.sessionStatus = status;
    var pill = this.q("session-status");
    pill.textContent = status;
    pill.setAttribute("data-status", status);
    var done = !!SESSION_TERMINAL[status];
    this.root.querySelector('[data-action="complete"]').disabled = done;
    this.root.querySelector('[data-action="fail"]').disabled = done;
    this.root.querySelector('[data-action="submit"]').disabled = done;
  };

  Console.prototype.run = function (id) {
    if (!this.runs[id]) {
      this.runs[id] = { id: id, status: "pending", token_usage: {} };
      this.runOrder.push(id);
    }
    return this.runs[id];
  };

  // API data: never moves a run backwards (an older answer can arrive after a newer event).
  Console.prototype.upsertRun = function (data, force) {
    if (!data || !data.id) return;
    var run = this.run(String(data.id));
    var kept = totalTokens(run.token_usage) == null ? null : run.token_usage;
    var fields = [
      "provider",
      "routed_provider",
      "token_usage",
      "cost_usd",
      "error",
      "created_at",
      "started_at",
      "ended_at",
      "cancel_requested_at",
    ];
    fields.forEach(function (k) {
      if (data[k] !== undefined && data[k] !== null) run[k] = data[k];
    });
    // Usage the timeline already showed stays when the stored run has none recorded.
    if (data.token_usage && totalTokens(data.token_usage) == null && kept != null) {
      run.token_usage = kept;
    }
    if (data.status && (force || rank(data.status) >= rank(run.status))) run.status = data.status;
  };

  // Rows are kept per run and updated in place (a button under the pointer is never replaced
  // by the once-a-second duration refresh).
  Console.prototype.renderRuns = function () {
    var self = this;
    var body = this.runsBody;
    this.rows = this.rows || {};
    var empty = body.querySelector("tr.asm-empty");
    if (!this.runOrder.length) {
      if (!empty) {
        body.appendChild(
          el("tr", { className: "asm-empty" }, el("td", { colSpan: 7, className: "asm-hint", text: "no runs yet" }))
        );
      }
      return;
    }
    if (empty) body.removeChild(empty);
    this.runOrder.forEach(function (id) {
      var r = self.runs[id];
      var row = self.rows[id];
      if (!row) {
        row = { tr: el("tr", { "data-run-id": id }), cells: [] };
        for (var i = 0; i < 7; i++) row.cells.push(row.tr.appendChild(el("td")));
        row.cells[0].appendChild(el("code", { title: id, text: short(id) }));
        row.pill = row.cells[1].appendChild(el("span", { className: "asm-pill" }));
        row.cells[1].className = "asm-run-status";
        row.cancel = el("button", {
          type: "button",
          className: "button",
          "data-action": "cancel-run",
          "data-run-id": id,
          text: "Cancel",
        });
        self.rows[id] = row;
        body.appendChild(row.tr);
      }
      var started = r.started_at ? Date.parse(r.started_at) : NaN;
      var ended = r.ended_at ? Date.parse(r.ended_at) : TERMINAL[r.status] ? NaN : Date.now();
      var tokens = totalTokens(r.token_usage);
      var provider = r.routed_provider && r.routed_provider !== r.provider
        ? (r.provider || "?") + " -> " + r.routed_provider
        : r.provider || "-";
      row.tr.setAttribute("data-status", r.status);
      row.pill.textContent = r.status;
      row.pill.setAttribute("data-status", r.status);
      row.pill.title = r.error && r.error.code ? r.error.code + ": " + (r.error.message || "") : "";
      setText(row.cells[2], provider);
      setText(row.cells[3], formatDuration(isNaN(started) || isNaN(ended) ? null : ended - started));
      setText(row.cells[4], tokens == null ? "-" : tokens.toLocaleString("en-US"));
      setText(
        row.cells[5],
        r.cost_usd == null || r.cost_usd === "" ? "-" : "$" + Number(r.cost_usd).toFixed(4)
      );
      if (TERMINAL[r.status]) {
        if (row.cancel.parentNode) row.cells[6].removeChild(row.cancel);
      } else {
        var cancelling = !!(r.status === "running" && r.cancel_requested_at);
        row.cancel.disabled = cancelling || row.cancel.getAttribute("data-busy") === "1";
        setText(row.cancel, cancelling ? "cancelling…" : "Cancel");
        if (!row.cancel.parentNode) row.cells[6].appendChild(row.cancel);
      }
    });
  };

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // ------------------------------------------------------------------ WebSocket
  Console.prototype.setConnection = function (state, label) {
    var node = this.q("connection");
    node.setAttribute("data-state", state);
    node.textContent = label;
  };

  Console.prototype.connect = function () {
    var self = this;
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + window.location.host + this.cfg.ws_path + "?after=" + this.lastSeq;
    var ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.setConnection("closed", "cannot open the event stream: " + e);
      return;
    }
    this.ws = ws;
    ws.onopen = function () {
      self.retry = 0;
      self.setConnection("live", "live");
    };
    ws.onmessage = function (message) {
      var msg;
      try {
        msg = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (msg && msg.type === "event" && msg.event) self.handle(msg.event);
      else if (msg && msg.type === "error") {
        var err = msg.error || msg;
        self.notice("Event stream: " + (err.code || "") + " " + (err.message || ""), "error");
      }
    };
    ws.onclose = function (e) {
      if (self.ws !== ws) return;
      if (FINAL_CLOSE[e.code]) {
        self.closedForGood = true;
        self.setConnection("closed", "closed (" + e.code + ")");
        self.notice("Event stream closed: " + FINAL_CLOSE[e.code] + ".", "error");
        return;
      }
      var delay = Math.min(5000, 250 * Math.pow(2, self.retry));
      self.retry += 1;
      self.setConnection("reconnecting", "reconnecting… (after #" + self.lastSeq + ")");
      window.setTimeout(function () {
        self.connect();
      }, delay);
    };
  };

  // ------------------------------------------------------------------ events
  Console.prototype.handle = function (ev) {
    var seq = ev.sequence_number;
    if (isNumber(seq)) {
      if (seq <= this.lastSeq) return; // already shown (replay after a reconnect)
      this.lastSeq = seq;
      this.q("last-seq").textContent = "#" + seq;
    }
    var data = ev.data && typeof ev.data === "object" ? ev.data : {};
    if (SESSION_STATUS[ev.type]) this.setSessionStatus(SESSION_STATUS[ev.type]);
    if (ev.run_id) this.trackRun(ev, data);
    this.render(ev, data);
    this.scroll();
  };

  Console.prototype.trackRun = function (ev, data) {
    var run = this.run(String(ev.run_id));
    if (ev.provider && !run.provider) run.provider = ev.provider;
    if (data.routed_provider) run.routed_provider = data.routed_provider;
    var changed = true;
    if (RUN_END[ev.type]) {
      run.status = RUN_END[ev.type];
      run.ended_at = ev.timestamp;
      if (data.token_usage && typeof data.token_usage === "object") {
        run.token_usage = Object.assign({}, data.token_usage);
      }
      this.refreshRuns();
    } else if (ev.type === "run_requeued") {
      run.status = "pending";
      run.started_at = null;
    } else if (ev.type === "token_usage_updated") {
      run.token_usage = mergeUsage(run.token_usage, data);
      if (run.status === "pending") run.status = "running";
    } else if (!TERMINAL[run.status] && run.status !== "running") {
      run.status = "running";
      run.started_at = run.started_at || ev.timestamp;
    } else {
      changed = false;
    }
    if (run.status === "running" && !run.started_at) run.started_at = ev.timestamp;
    if (changed) this.renderRuns();
  };

  Console.prototype.row = function (ev, label) {
    var li = el("li", {
      className: "asm-ev",
      "data-seq": ev.sequence_number,
      "data-type": ev.type,
      "data-category": category(ev.type),
      "data-run-id": ev.run_id || null,
    });
    var meta = el(
      "div",
      { className: "asm-ev-meta" },
      el("span", { className: "asm-ev-seq", text: "#" + ev.sequence_number }),
      el("time", { title: ev.timestamp + " (UTC)", text: clock(ev.timestamp) }),
      el("span", { className: "asm-ev-type", text: label || ev.type }),
      ev.run_id ? el("span", { title: "run " + ev.run_id, text: "run " + short(ev.run_id) }) : null,
      ev.provider ? el("span", { text: ev.provider }) : null
    );
    li.appendChild(meta);
    li.meta = meta;
    this.timeline.appendChild(li);
    return li;
  };

  function body(text) {
    return el("div", { className: "asm-ev-body", text: text });
  }

  function pre(value) {
    return el("pre", { text: typeof value === "string" ? value : json(value) });
  }

  function tag(text, kind) {
    return el("span", { className: "asm-tag" + (kind ? " asm-" + kind : ""), text: text });
  }

  Console.prototype.render = function (ev, data) {
    var key = ev.run_id || "session";
    var li;
    switch (ev.type) {
      case "message_streamed": {
        var s = this.streams[key];
        if (!s) {
          li = this.row(ev, "assistant (streaming)");
          li.setAttribute("data-role", "assistant");
          li.setAttribute("data-state", "streaming");
          var text = document.createTextNode("");
          li.appendChild(el("div", { className: "asm-ev-body" }, el("span", { className: "asm-text" }, text)));
          s = { li: li, text: text, first: ev.sequence_number, chunks: 0 };
          this.streams[key] = s;
        }
        s.text.appendData(typeof data.delta === "string" ? data.delta : String(data.content || ""));
        s.chunks += 1;
        s.li.querySelector(".asm-ev-seq").textContent = "#" + s.first + "–#" + ev.sequence_number;
        s.li.setAttribute("data-last-seq", ev.sequence_number);
        return;
      }
      case "message_received": {
        var open = this.streams[key];
        var content = typeof data.content === "string" ? data.content : json(data.content);
        if (open) {
          delete this.streams[key];
          open.text.data = content; // the complete message is the authority
          open.li.setAttribute("data-state", "complete");
          open.li.querySelector(".asm-ev-type").textContent = "assistant";
          open.li.querySelector(".asm-ev-seq").textContent = "#" + open.first + "–#" + ev.sequence_number;
          open.li.meta.appendChild(tag(open.chunks + " chunks"));
          return;
        }
        li = this.row(ev, data.role || "assistant");
        li.setAttribute("data-role", data.role || "assistant");
        li.setAttribute("data-state", "complete");
        li.appendChild(el("div", { className: "asm-ev-body" }, el("span", { className: "asm-text", text: content })));
        return;
      }
      case "message_sent": {
        li = this.row(ev, data.role || "message");
        li.setAttribute("data-role", data.role || "user");
        li.appendChild(body(typeof data.content === "string" ? data.content : json(data.content)));
        return;
      }
      case "tool_call_started": {
        li = this.row(ev, "tool " + (data.tool_name || "?"));
        li.appendChild(el("div", { className: "asm-ev-body" }, tag("running"), " input:"));
        li.appendChild(pre(data.tool_input));
        this.tools[key + ":" + data.tool_call_id] = li;
        return;
      }
      case "tool_call_completed":
      case "tool_call_failed": {
        var failed = ev.type === "tool_call_failed";
        var started = this.tools[key + ":" + data.tool_call_id];
        li = started || this.row(ev, "tool " + (data.tool_name || "?"));
        if (started) {
          delete this.tools[key + ":" + data.tool_call_id];
          li.setAttribute("data-type", ev.type);
          var t = li.querySelector(".asm-tag");
          if (t) t.parentNode.removeChild(t);
          li.meta.appendChild(el("span", { text: "→ #" + ev.sequence_number }));
        }
        var result = failed ? (data.error != null ? data.error : data.tool_output) : data.tool_output;
        li.appendChild(
          el("div", { className: "asm-ev-body" }, tag(failed ? "failed" : "ok", failed ? "bad" : "good"), failed ? " error:" : " output:")
        );
        li.appendChild(pre(result));
        return;
      }
      case "token_usage_updated": {
        li = this.row(ev, "usage");
        var parts = [];
        [
          ["input_tokens", "in"],
          ["output_tokens", "out"],
          ["cache_read_input_tokens", "cache read"],
          ["cache_creation_input_tokens", "cache write"],
          ["total_tokens", "total"],
        ].forEach(function (pair) {
          if (isNumber(data[pair[0]])) parts.push(pair[1] + " " + data[pair[0]].toLocaleString("en-US"));
        });
        var run = ev.run_id && this.runs[ev.run_id];
        var sum = run ? totalTokens(run.token_usage) : null;
        if (sum != null) parts.push("run so far " + sum.toLocaleString("en-US"));
        li.appendChild(body(parts.join(" · ") || json(data)));
        return;
      }
      case "policy_violation": {
        li = this.row(ev, "policy violation");
        li.appendChild(
          el(
            "div",
            { className: "asm-ev-body" },
            tag("VIOLATION", "bad"),
            " policy " + (data.policy || "?") + ": " + (data.kind || "?") + " → " + (data.action || "?")
          )
        );
        if (data.details && Object.keys(data.details).length) li.appendChild(pre(data.details));
        return;
      }
      case "run_started":
        li = this.row(ev);
        li.appendChild(body(["started", data.model && "model " + data.model].filter(Boolean).join(" · ")));
        return;
      case "run_completed": {
        li = this.row(ev);
        var total = totalTokens(data.token_usage);
        li.appendChild(
          el(
            "div",
            { className: "asm-ev-body" },
            tag("completed", "good"),
            [data.stop_reason && " stop " + data.stop_reason, total != null && " · " + total.toLocaleString("en-US") + " tokens"]
              .filter(Boolean)
              .join("")
          )
        );
        return;
      }
      case "run_failed":
      case "error_occurred":
      case "session_failed":
        li = this.row(ev);
        li.appendChild(el("div", { className: "asm-ev-body" }, tag(data.error_code || "error", "bad"), " " + (data.error_message || "")));
        return;
      case "run_cancelled":
        li = this.row(ev);
        li.appendChild(body("cancelled" + (data.reason ? ": " + data.reason : "")));
        return;
      case "run_timeout":
        li = this.row(ev);
        li.appendChild(body("timed out" + (isNumber(data.timeout_ms) ? " after " + data.timeout_ms + " ms" : "")));
        return;
      case "run_requeued":
        li = this.row(ev);
        li.appendChild(body("requeued after attempt " + data.attempt + (data.reason ? ": " + data.reason : "")));
        return;
      default:
        li = this.row(ev);
        if (Object.keys(data).length) li.appendChild(pre(data));
    }
  };

  Console.prototype.scroll = function () {
    if (!this.q("follow").checked || this.scrollQueued) return;
    var self = this;
    this.scrollQueued = true;
    window.requestAnimationFrame(function () {
      self.scrollQueued = false;
      self.timeline.scrollTop = self.timeline.scrollHeight;
    });
  };

  function start() {
    var root = document.getElementById("asm-console");
    var data = document.getElementById("asm-console-config");
    if (!root || !data) return;
    window.asmConsole = new Console(root, JSON.parse(data.textContent));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
