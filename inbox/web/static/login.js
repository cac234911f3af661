// The login form posts JSON to /api/login (a cross-site form cannot), then follows ?next.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const problem = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        name: form.elements.name.value,
        password: form.elements.password.value,
      }),
    });
    if (response.ok) {
      const next = form.dataset.next || "/queue";
      window.location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/queue");
      return;
    }
    const data = await response.json().catch(() => ({}));
    problem.textContent = data.error || "could not log in";
    problem.hidden = false;
  });
});
