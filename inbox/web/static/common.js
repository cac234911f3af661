// Shared by every signed-in page: the CSRF token, JSON calls to the API, log out.
"use strict";
const Parity = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  async function api(method, path, body) {
    const options = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(data.error || `${response.status} ${response.statusText}`);
    }
    return data;
  }
  // Shortcuts never fire while the agent types.
  function typing(event) {
    const t = event.target;
    return t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName);
  }
  function onKeys(map) {
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
      const action = map[event.key];
      if (action) {
        event.preventDefault();
        action();
      }
    });
  }
  async function claimNext(show) {
    try {
      const data = await api("POST", "/api/queue/claim-next");
      if (data.case) {
        window.location.assign(`/cases/${encodeURIComponent(data.case.reference)}`);
      } else {
        show(data.message || "no unclaimed open case");
      }
    } catch (error) {
      show(error.message);
    }
  }
  // Times in the agent's own zone (issue 22): the server writes ISO UTC in datetime=;
  // within a day it reads better relative ("5 min ago", "in 2 h"), further off as a date.
  // The exact local time is always on hover.
  const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
  function when(date, now) {
    const seconds = Math.round((date - now) / 1000);
    const size = Math.abs(seconds);
    if (size < 45) return relative.format(0, "second");
    if (size < 3600) return relative.format(Math.round(seconds / 60), "minute");
    if (size < 86400) return relative.format(Math.round(seconds / 3600), "hour");
    return absolute.format(date);
  }
  function localTimes(root = document) {
    const now = Date.now();
    root.querySelectorAll("time[datetime]").forEach((node) => {
      const date = new Date(node.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) return;
      node.textContent = when(date, now);
      node.title = `${absolute.format(date)} (${Intl.DateTimeFormat().resolvedOptions().timeZone})`;
    });
  }
  document.addEventListener("DOMContentLoaded", () => {
    // "/" focuses the search box on every page (issue 22); the search page's own field first.
    document.addEventListener("keydown", (event) => {
      if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
      if (typing(event)) return;
      const box = document.getElementById("search-q") || document.getElementById("search-box");
      if (!box) return;
      event.preventDefault();
      box.focus();
      box.select();
    });
    localTimes();
    // Relative times age: refresh them each minute.
    setInterval(localTimes, 60000);
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async () => {
        await api("POST", "/api/logout").catch(() => null);
        window.location.assign("/login");
      });
    }
  });
  // A datetime-local value (the agent's own zone) as an ISO time with its zone, or null.
  function localTime(value) {
    return value ? new Date(value).toISOString() : null;
  }
  // The case page's scripts (case.js, labels.js) share these: the case's reference, its
  // API path, the error line under the title, and a reload after a change.
  function casePage() {
    const reference = document.getElementById("case").dataset.reference;
    const problem = document.getElementById("case-error");
    return {
      reference,
      base: `/api/cases/${encodeURIComponent(reference)}`,
      problem,
      fail(error) {
        problem.textContent = error.message;
        problem.hidden = false;
      },
      reload() {
        window.location.reload();
      },
    };
  }
  return { api, onKeys, claimNext, localTime, localTimes, casePage };
})();
