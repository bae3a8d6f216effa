// Live interests on the home page: while the server is still extracting the visitor's interests,
// poll /api/state and redraw the interests and the recommendations in place (no reload).
// Every string from the server (item titles, LLM phrases, notices) goes in via textContent,
// never as HTML.
"use strict";

(function () {
  const live = document.getElementById("live");
  if (!live) return;

  const POLL_MS = 700;
  const GIVE_UP_MS = 180000;
  let lastDrawn = "";
  let polling = false;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function thumb(card) {
    const box = el("span", "thumb");
    box.setAttribute("aria-hidden", "true");
    box.style.setProperty("--hue", String(Number(card.hue) || 0));
    box.appendChild(el("span", "thumb-letter", (card.brand || card.title || "?").slice(0, 1).toUpperCase()));
    box.appendChild(el("span", "thumb-cat", card.category));
    return box;
  }

  function card(rec, rank) {
    const li = el("li", "card");
    li.dataset.id = rec.id;
    const link = el("a", "card-link");
    link.href = "/item/" + encodeURIComponent(rec.id);
    link.appendChild(thumb(rec));
    link.appendChild(el("span", "card-title", rec.title));
    li.appendChild(link);
    const meta = el("span", "card-meta");
    meta.appendChild(el("span", "rank", "#" + rank));
    meta.appendChild(el("span", "card-brand", rec.brand));
    li.appendChild(meta);
    return li;
  }

  function drawInterests(state) {
    const status = document.getElementById("interest-status");
    status.dataset.status = state.status;
    status.replaceChildren();
    if (state.status === "pending") {
      const spin = el("span", "spinner");
      spin.setAttribute("aria-hidden", "true");
      status.append(spin, "Working out your interests…");
    } else if (state.status === "idle" && state.history.length === 0) {
      status.textContent = "Buy something and we will work out what you are into.";
    }
    const recent = document.getElementById("recent");
    recent.hidden = state.history.length === 0;
    document.getElementById("recent-list").replaceChildren(
      ...state.history.slice(-3).reverse().map((h) => {
        const a = el("a", null, h.title);
        a.href = "/item/" + encodeURIComponent(h.id);
        return a;
      }),
    );
    const list = document.getElementById("interest-list");
    list.replaceChildren(...state.interests.map((p) => el("li", "chip", p)));
    list.classList.toggle("stale", !state.interests_current);
    const notice = document.getElementById("interest-notice");
    notice.textContent = state.notice || "";
    notice.hidden = !state.notice;
    document.getElementById("backend-label").textContent = state.backend;
    document.getElementById("history-count").textContent = String(state.history.length);
  }

  function drawRecommendations(state) {
    const title = document.getElementById("recs-title");
    title.textContent = state.source === "popular" ? "Popular" : "Recommended for you";
    const basis = document.getElementById("recs-basis");
    const n = state.history.length;
    const purchases = "From your " + n + (n === 1 ? " purchase" : " purchases");
    if (state.source === "popular") {
      basis.dataset.basis = "popular";
      basis.textContent = "Most bought in the shop";
    } else if (state.interests_used.length) {
      basis.dataset.basis = "history+interests";
      basis.textContent = purchases + " and interests";
    } else {
      basis.dataset.basis = "history";
      basis.textContent = purchases;
    }
    const list = document.getElementById("rec-list");
    list.replaceChildren(...state.recommendations.map((r, i) => card(r, i + 1)));
  }

  function draw(state) {
    const key = JSON.stringify([state.version, state.status, state.interests, state.notice,
      state.recommendations.map((r) => r.id)]);
    if (key === lastDrawn) return;
    lastDrawn = key;
    drawInterests(state);
    drawRecommendations(state);
    live.dataset.status = state.status;
    live.dataset.version = String(state.version);
    live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
  }

  async function poll() {
    if (polling) return;
    polling = true;
    const started = Date.now();
    try {
      while (Date.now() - started < GIVE_UP_MS) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        let state;
        try {
          const response = await fetch("/api/state", {
            headers: { Accept: "application/json" },
            credentials: "same-origin",
            cache: "no-store",
          });
          if (!response.ok) continue;
          state = await response.json();
        } catch (err) {
          continue; // server restarting or offline: try again on the next tick
        }
        draw(state);
        if (state.status !== "pending") return;
      }
    } finally {
      polling = false;
    }
  }

  if (live.dataset.status === "pending") poll();
  // Back/forward cache restores a frozen page: catch up with what happened meanwhile.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) poll();
  });
})();
