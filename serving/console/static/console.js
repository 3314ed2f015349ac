// tlrec web console: one page, hash routes, plain DOM (no build step, no framework).
//
// Every figure comes from the /v1 routes, called with the key the person typed in. The key
// lives in this tab's sessionStorage and goes in the X-API-Key header, never in a URL.
// Media (images, audio) are fetched the same way and shown from blob: URLs.
// Text from the server is always set as text (textContent), never parsed as HTML.

const KEY_STORE = "tlrec.apiKey";
const ROLE_STORE = "tlrec.role";
const LIST_LENGTH = 10;

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let objectUrls = [];   // blob: URLs of the current page, revoked when it changes
let renderToken = 0;   // a newer render makes an older one's late answers stale

// ------------------------------------------------------------------ small helpers

/** An element: h("a", {href: "#/x", class: "y"}, "text", child, ...). Attributes with null/false are skipped. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A number for people: fixed decimals, "–" for null. */
function num(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toFixed(digits);
}

/** A signed number (+0.120 / -0.050). */
function signed(x, digits = 3) {
  if (x === null || x === undefined) return "–";
  return (x >= 0 ? "+" : "") + Number(x).toFixed(digits);
}

/** A p-value: scientific below 1e-4. */
function pValue(p) {
  if (p === null || p === undefined) return "–";
  if (p === 0) return "0";
  return p < 1e-4 ? Number(p).toExponential(2) : Number(p).toFixed(4);
}

/** Unix seconds as "2024-05-01 12:00" (UTC). */
function when(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16);
}

function itemHref(id) { return "#/items/" + encodeURIComponent(id); }
function userHref(id) { return "#/users/" + encodeURIComponent(id); }

function say(message) { statusLine.textContent = message; }

/** A table: headers (strings, or {text, num}) and rows of cells (strings, nodes, or {value, num}). */
function table(caption, headers, rows) {
  const head = h("tr", {}, headers.map((c) => h("th", {scope: "col", class: c.num ? "num" : null}, c.text ?? c)));
  const body = rows.map((row) => h("tr", {}, row.map((c) => {
    const isCell = c !== null && typeof c === "object" && !(c instanceof Node);
    return h("td", {class: isCell && c.num ? "num" : null}, isCell ? c.value : c);
  })));
  return h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body));
}

/** Definition list of [term, value] pairs (values may be nodes). */
function facts(pairs) {
  return h("dl", {class: "facts"}, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Call a /v1 route with the session's key; JSON back (or a Blob with {blob: true}). 401 signs out. */
async function api(path, {method = "GET", body = null, blob = false} = {}) {
  const headers = {"X-API-Key": sessionStorage.getItem(KEY_STORE) ?? ""};
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === null ? null : JSON.stringify(body)});
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) signOut("The key was refused: sign in again.");
    throw new ApiError(response.status, message);
  }
  return blob ? response.blob() : response.json();
}

/** Show a medium fetched with the key: sets el.src to a blob: URL; resolves when the element has it. */
async function loadMedia(el, url) {
  const data = await api(url, {blob: true});
  const objectUrl = URL.createObjectURL(data);
  objectUrls.push(objectUrl);
  el.src = objectUrl;
}

// ------------------------------------------------------------------ session

function signedIn() { return Boolean(sessionStorage.getItem(KEY_STORE)); }

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  sessionStorage.removeItem(ROLE_STORE);
  document.getElementById("session").hidden = true;
  if (message) say(message);
  route();
}

function showSession(session) {
  document.getElementById("who").textContent =
    `${session.role === "admin" ? "Admin key" : "User key"} · model ${session.model_version ?? "loading"}`;
  document.getElementById("session").hidden = false;
}

function renderLogin() {
  const error = h("p", {class: "error", id: "login-error", role: "alert"});
  const input = h("input", {id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true,
                            "aria-describedby": "key-help"});
  const form = h("form", {class: "inline", id: "login-form", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    try {
      const session = await api("/v1/console/session");
      sessionStorage.setItem(ROLE_STORE, session.role);
      showSession(session);
      say("Signed in.");
      if (!location.hash || location.hash === "#/" || location.hash === "#/login") location.hash = "#/catalog";
      else route();
    } catch (err) {
      sessionStorage.removeItem(KEY_STORE);
      error.textContent = err.status === 401 ? "That key is not valid." : `Could not sign in: ${err.message}`;
      input.focus();
    }
  }},
    h("label", {for: "api-key"}, "API key"), input, h("button", {type: "submit"}, "Sign in"));
  main.replaceChildren(
    h("h1", {tabindex: "-1"}, "Sign in"),
    form, error,
    h("p", {id: "key-help", class: "muted"},
      "A key from TLREC_API_KEYS (or the admin key, for reloads). It stays in this browser tab's session " +
      "storage and is sent in the X-API-Key header only."));
  input.focus();
}

// ------------------------------------------------------------------ catalog

async function renderCatalog(params, token) {
  const query = params.get("q") ?? "";
  const input = h("input", {id: "catalog-query", type: "search", name: "q", value: query});
  const results = h("div", {id: "catalog-results"}, h("p", {class: "muted"}, "Searching…"));
  main.replaceChildren(
    h("h1", {tabindex: "-1"}, "Catalog"),
    h("form", {class: "inline", role: "search", onsubmit: (event) => {
      event.preventDefault();
      location.hash = "#/catalog?q=" + encodeURIComponent(input.value);
    }}, h("label", {for: "catalog-query"}, "Search titles"), input, h("button", {type: "submit"}, "Search")),
    results);
  try {
    const found = await api("/v1/catalog/search?limit=50&q=" + encodeURIComponent(query));
    if (token !== renderToken) return;
    const media = (item) => [item.has_image ? "image" : null, item.has_audio ? "audio" : null].filter(Boolean);
    results.replaceChildren(
      h("p", {}, `${found.total} item${found.total === 1 ? "" : "s"} match` +
                 (found.total > found.items.length ? `; the first ${found.items.length} are listed.` : ".")),
      h("ul", {class: "results"}, found.items.map((item) => h("li", {"data-item-id": item.item_id},
        h("a", {href: itemHref(item.item_id)}, item.title || item.item_id), " ",
        h("span", {class: "muted"}, [item.item_id, ...media(item)].join(" · "))))));
  } catch (err) {
    results.replaceChildren(h("p", {class: "error"}, err.message));
  }
}

/** An image or audio player for an item, filled from the API (blob: URL). */
function mediaOf(item, {thumb = false} = {}) {
  const out = [];
  if (item.has_image) {
    const img = h("img", {class: thumb ? "thumb" : "item-image", alt: thumb ? "" : `Image of ${item.title}`,
                          "data-media": "image"});
    loadMedia(img, `/v1/catalog/items/${encodeURIComponent(item.item_id)}/image`).catch(() => { img.alt = "image not available"; });
    out.push(thumb ? img : h("figure", {}, img));
  }
  if (item.has_audio) {
    const audio = h("audio", {controls: true, preload: "metadata", "aria-label": `Audio of ${item.title}`,
                              "data-media": "audio"});
    loadMedia(audio, `/v1/catalog/items/${encodeURIComponent(item.item_id)}/audio`).catch(() => {});
    out.push(audio);
  }
  return out;
}

async function renderItem(itemId, token) {
  main.replaceChildren(h("h1", {tabindex: "-1"}, itemId), h("p", {class: "muted"}, "Loading…"));
  let item;
  try {
    item = await api("/v1/catalog/items/" + encodeURIComponent(itemId));
  } catch (err) {
    main.replaceChildren(h("h1", {tabindex: "-1"}, itemId), h("p", {class: "error"}, err.message));
    return;
  }
  if (token !== renderToken) return;
  const similar = h("div", {id: "similar"}, h("p", {class: "muted"}, "Loading…"));
  const metadata = Object.entries(item.metadata);
  main.replaceChildren(
    h("h1", {tabindex: "-1"}, item.title || item.item_id),
    h("p", {class: "muted"}, `Item ${item.item_id}` + (item.known_to_model ? "" : " · not known to the served model")),
    h("h2", {}, "Description"),
    h("p", {id: "item-description"}, item.description || "(no description)"),
    ...(item.has_image || item.has_audio ? [h("h2", {}, "Media"), ...mediaOf(item)] : []),
    h("h2", {}, "Details"),
    facts([
      ["Training interactions", item.training_interactions === null ? "–" : num(item.training_interactions, 0)],
      ...metadata.map(([k, v]) => [k, v]),
    ]),
    h("h2", {}, "Where its content vector comes from"),
    item.vectors.length
      ? table("Pre-trained encoders (model cards) behind this item's vector",
              ["modality", "encoder", "dim", "version", "weights from"],
              item.vectors.map((v) => [v.modality, v.encoder ?? "–", {value: v.dim ?? "–", num: true},
                                       v.version ?? "–", v.source ?? "–"]))
      : h("p", {class: "muted"}, item.vectors_note ?? "No pre-trained vectors for this item."),
    h("h2", {}, "Similar items"),
    similar);
  try {
    const answer = await api(`/v1/items/${encodeURIComponent(itemId)}/similar?k=${LIST_LENGTH}`);
    if (token !== renderToken) return;
    const details = await Promise.all(answer.items.map((s) =>
      api("/v1/catalog/items/" + encodeURIComponent(s.item_id)).catch(() => null)));
    if (token !== renderToken) return;
    similar.replaceChildren(
      h("p", {class: "muted"}, answer.source === "model" ? "Nearest in the model's item space."
        : `Popular items (${answer.fallback_reason}).`),
      h("ol", {class: "cards", id: "similar-list"}, answer.items.map((s, i) => h("li", {"data-item-id": s.item_id},
        h("a", {href: itemHref(s.item_id)}, `${i + 1}. ${s.title || s.item_id}`),
        h("div", {class: "muted"}, `score ${num(s.score)}`),
        details[i] ? mediaOf(details[i], {thumb: true}) : []))));
  } catch (err) {
    similar.replaceChildren(h("p", {class: "error"}, err.message));
  }
}

// ------------------------------------------------------------------ user

/** The "why" of one recommended item: score split, content vs learned id, top history items. */
function explanationOf(item) {
  const e = item.explanation;
  if (!e) return null;
  const history = e.contributions.reduce((s, c) => s + c.contribution, 0) + e.other_contributions;
  const scale = Math.abs(e.content) + Math.abs(e.learned_id);
  const contentShare = scale > 0 ? Math.abs(e.content) / scale : 0;
  return h("details", {class: "why"},
    h("summary", {}, "Why this item"),
    h("p", {}, `score ${num(e.score)} = baseline ${num(e.baseline)} + history ${signed(history)} + head ${signed(e.head)}`),
    h("p", {}, h("span", {class: "legend-content"}, `pre-trained content ${signed(e.content)}`), " · ",
      h("span", {class: "legend-learned"}, `learned id ${signed(e.learned_id)}`)),
    h("div", {class: "split", role: "img",
              "aria-label": `${Math.round(100 * contentShare)}% of the content and id parts from pre-trained content`},
      h("span", {class: "content", style: null}), h("span", {class: "learned"})),
    h("p", {class: "muted"}, `Top history items (of ${e.history_items}):`),
    h("ol", {class: "contributions"}, e.contributions.map((c) => h("li", {},
      h("a", {href: itemHref(c.item_id)}, c.title || c.item_id), ` ${signed(c.contribution)}`,
      h("span", {class: "muted"}, ` (content ${signed(c.content)})`)))),
    e.other_contributions ? h("p", {class: "muted"}, `other history items ${signed(e.other_contributions)}`) : null);
}

/** Size the content/learned bar of each explanation (widths set from script: the page allows no inline styles). */
function sizeBars(root) {
  for (const bar of root.querySelectorAll(".split")) {
    const share = Number((bar.getAttribute("aria-label").match(/^(\d+)%/) || [0, 0])[1]);
    bar.querySelector(".content").style.width = `${share}%`;
    bar.querySelector(".learned").style.width = `${100 - share}%`;
  }
}

function answerNote(answer) {
  const parts = [`source ${answer.source}`, `model ${answer.model_version}`];
  if (answer.fallback_reason) parts.push(`fallback: ${answer.fallback_reason}`);
  if (answer.experiment) parts.push(`experiment ${answer.experiment} / ${answer.variant}`);
  if (answer.explanation_unavailable) parts.push(`no explanation: ${answer.explanation_unavailable}`);
  return parts.join(" · ");
}

/** One ranked list (recommendations or next items) with event buttons and explanations. */
function rankedList(id, answer, onEvent) {
  const list = h("ol", {class: "ranked", id}, answer.items.map((item) => {
    const name = item.title || item.item_id;
    return h("li", {"data-item-id": item.item_id},
      h("div", {class: "item-line"}, h("a", {href: itemHref(item.item_id)}, name),
        h("span", {class: "muted"}, `${item.item_id} · score ${num(item.score)}`)),
      h("div", {class: "actions"}, ["view", "click", "purchase"].map((event) =>
        h("button", {type: "button", class: "secondary", "data-event": event,
                     "aria-label": `Send ${event} on ${name}`, onclick: () => onEvent(item, event)},
          event[0].toUpperCase() + event.slice(1)))),
      explanationOf(item));
  }));
  sizeBars(list);
  return list;
}

async function renderUser(userId, token) {
  const input = h("input", {id: "user-id", type: "text", name: "user", value: userId ?? "", required: true});
  const form = h("form", {class: "inline", onsubmit: (event) => {
    event.preventDefault();
    if (input.value.trim()) location.hash = userHref(input.value.trim());
  }}, h("label", {for: "user-id"}, "User id"), input, h("button", {type: "submit"}, "Open"));
  if (!userId) {
    main.replaceChildren(h("h1", {tabindex: "-1"}, "User"), form,
      h("p", {class: "muted"}, "Open a user to see their history, recommendations and next-item predictions."));
    return;
  }
  const history = h("section", {"aria-labelledby": "h-history"}, h("h2", {id: "h-history"}, "History"));
  const recs = h("section", {"aria-labelledby": "h-recs"}, h("h2", {id: "h-recs", tabindex: "-1"}, "Recommendations"));
  const next = h("section", {"aria-labelledby": "h-next"}, h("h2", {id: "h-next"}, "Next-item predictions"),
    h("p", {class: "muted"}, "A next-item model (tlrec train --task next-item) reads the events in order, with " +
      "their types; any other model answers from the same events as a history, so both lists then agree."));
  main.replaceChildren(h("h1", {tabindex: "-1"}, `User ${userId}`), form,
                       h("div", {class: "columns"}, recs, next), history);

  const path = encodeURIComponent(userId);
  const send = async (item, event) => {
    try {
      await api("/v1/events", {method: "POST", body: {events: [{user_id: userId, item_id: item.item_id, event}]}});
      say(`Sent ${event} on ${item.title || item.item_id}; updating the lists.`);
      await refresh();
      say(`Sent ${event} on ${item.title || item.item_id}; lists updated.`);
      document.getElementById("h-recs")?.focus();  // the pressed button is gone: keep the keyboard near it
    } catch (err) {
      say(`Could not send the ${event}: ${err.message}`);
    }
  };
  const refresh = async () => {
    const [hist, rec, nxt] = await Promise.all([
      api(`/v1/users/${path}/history?limit=200`),
      api(`/v1/users/${path}/recommendations?k=${LIST_LENGTH}&explain=true`),
      api(`/v1/users/${path}/next?k=${LIST_LENGTH}&explain=true`),
    ]);
    if (token !== renderToken) return;
    history.replaceChildren(history.firstChild,
      h("p", {class: "muted"}, `${hist.total} event${hist.total === 1 ? "" : "s"}` +
        (hist.total > hist.events.length ? ` (the newest ${hist.events.length} shown)` : "") +
        `, oldest first; ${hist.known_user ? "" : "a user the model does not know; "}from ${hist.source}.`),
      table(`Events of ${userId}`, ["#", "item", "event", "time (UTC)", "origin"],
            hist.events.map((e, i) => [{value: hist.total - hist.events.length + i + 1, num: true},
              h("a", {href: itemHref(e.item_id)}, e.title || e.item_id), e.event ?? "–", when(e.timestamp), e.origin])));
    recs.replaceChildren(recs.firstChild, h("p", {class: "muted"}, answerNote(rec)), rankedList("recommendations", rec, send));
    next.replaceChildren(next.firstChild, next.children[1], h("p", {class: "muted"}, answerNote(nxt)),
                         rankedList("next-items", nxt, send));
    main.dataset.loaded = String(Date.now());
  };
  try {
    await refresh();
  } catch (err) {
    if (token === renderToken) main.append(h("p", {class: "error"}, err.message));
  }
}

// ------------------------------------------------------------------ experiments

function interval(m) { return `${num(m.mean, 4)} [${num(m.ci_low, 4)}, ${num(m.ci_high, 4)}]`; }

function analysisOf(exp) {
  const a = exp.analysis;
  if (!a) return [h("p", {class: "muted"}, `No analysis: ${exp.analysis_note}`)];
  const metrics = a.variants.length ? Object.keys(a.variants[0].metrics) : [];
  const plotNames = {"effects.png": "difference to control with intervals", "variants.png": "mean per variant",
                     "sequential.png": "always-valid p-value per look"};
  return [
    h("p", {class: a.srm_alert ? "alert" : "ok", "data-srm": a.srm_alert ? "alert" : "ok"},
      `Sample-ratio check: chi² ${num(a.srm_chi2, 2)}, p ${pValue(a.srm_p_value)} → ` +
      (a.srm_alert ? "ALERT: the split does not match the weights; do not trust the effects" : "ok")),
    table(`Variants of ${exp.name} (means with ${Math.round(100 * (1 - a.alpha))}% intervals)`,
          ["variant", {text: "users", num: true}, {text: "share", num: true}, ...metrics],
          a.variants.map((v) => [v.variant, {value: v.users, num: true}, {value: num(v.share, 4), num: true},
                                 ...metrics.map((m) => interval(v.metrics[m]))])),
    table(`Difference to control (${a.control})`,
          ["variant", "metric", {text: "diff", num: true}, "interval", {text: "relative", num: true},
           {text: "p-value", num: true}, {text: "always-valid p", num: true}],
          a.effects.map((e) => [e.variant, e.metric, {value: signed(e.diff, 4), num: true},
            `[${num(e.ci_low, 4)}, ${num(e.ci_high, 4)}]`,
            {value: e.rel_diff === null ? "–" : `${signed(100 * e.rel_diff, 2)}%`, num: true},
            {value: pValue(e.p_value), num: true}, {value: pValue(e.sequential_p_value), num: true}])),
    ...Object.entries(exp.plots).map(([name, png]) => h("figure", {},
      h("img", {class: "plot", src: `data:image/png;base64,${png}`, alt: `${exp.name}: ${plotNames[name] ?? name}`}),
      h("figcaption", {class: "muted"}, plotNames[name] ?? name))),
  ];
}

async function renderExperiments(token) {
  main.replaceChildren(h("h1", {tabindex: "-1"}, "Experiments"), h("p", {class: "muted"}, "Loading…"));
  let answer;
  try {
    answer = await api("/v1/console/experiments");
  } catch (err) {
    main.replaceChildren(h("h1", {tabindex: "-1"}, "Experiments"), h("p", {class: "error"}, err.message));
    return;
  }
  if (token !== renderToken) return;
  main.replaceChildren(h("h1", {tabindex: "-1"}, "Experiments"),
    ...(answer.experiments.length ? [] : [h("p", {}, "No experiment is served (tlrec serve --experiment FILE).")]),
    ...answer.experiments.map((exp) => h("section", {"aria-labelledby": `exp-${exp.name}`, "data-experiment": exp.name},
      h("h2", {id: `exp-${exp.name}`}, exp.name),
      exp.description ? h("p", {}, exp.description) : null,
      facts([["traffic", `${num(100 * exp.traffic, 1)}% of users`], ["control", exp.control],
             ["active", exp.active ? "yes" : "no"],
             ["window (UTC)", exp.start === null && exp.stop === null ? "open"
               : `${when(exp.start)} to ${when(exp.stop)}`],
             ["file", exp.file]]),
      table(`Variants served by ${exp.name}`, ["variant", {text: "weight", num: true}, "model version",
                                               {text: "users exposed", num: true}],
            exp.variants.map((v) => [v.name, {value: num(v.weight, 2), num: true}, v.model_version,
                                     {value: v.exposures, num: true}])),
      h("h3", {}, "Analysis"),
      ...analysisOf(exp))));
}

// ------------------------------------------------------------------ models

function reportSection(title, section, render) {
  const out = [h("h2", {}, title)];
  if (!section.data) return [...out, h("p", {class: "muted"}, section.note ?? "Not available.")];
  out.push(...render(section.data));
  if (section.png) {
    out.push(h("figure", {}, h("img", {class: "plot", src: `data:image/png;base64,${section.png}`, alt: `${title} plot`}),
                           h("figcaption", {class: "muted"}, `From ${section.source}`)));
  } else {
    out.push(h("p", {class: "muted"}, `From ${section.source}`));
  }
  return out;
}

function transferTables(data) {
  return [table("Gains (paired, bootstrap 95% interval over users)",
    ["variant", "vs", "group", "metric", {text: "diff", num: true}, "95% interval", "verdict"],
    (data.gains ?? []).map((g) => [g.variant, g.reference, g.group, g.metric, {value: signed(g.diff, 4), num: true},
      `[${signed(g.ci_low, 4)}, ${signed(g.ci_high, 4)}]`, g.verdict])),
    h("p", {}, `Modalities kept by --modalities auto: ${(data.keep ?? []).join(", ") || "none"}.`)];
}

function encoderTables(data) {
  return [table(`Encoders on this catalog: cold-item Recall@${data.k} and NDCG@${data.k}, speed, size`,
    ["encoder", "modality", {text: "dim", num: true}, {text: "recall", num: true}, {text: "ndcg", num: true},
     {text: "items/s", num: true}, {text: "size MB", num: true}],
    (data.results ?? []).map((r) => [r.encoder, r.modality, {value: r.dim, num: true}, {value: num(r.recall, 4), num: true},
      {value: num(r.ndcg, 4), num: true}, {value: num(r.items_per_s, 1), num: true}, {value: num(r.size_mb, 1), num: true}])),
    h("p", {class: "muted"}, `Random ranking of the cold items: Recall@${data.k} ${num(data.random_recall, 4)}.`)];
}

async function renderModels(token) {
  main.replaceChildren(h("h1", {tabindex: "-1"}, "Models"), h("p", {class: "muted"}, "Loading…"));
  let report;
  try {
    report = await api("/v1/console/model");
  } catch (err) {
    main.replaceChildren(h("h1", {tabindex: "-1"}, "Models"), h("p", {class: "error"}, err.message));
    return;
  }
  if (token !== renderToken) return;
  const m = report.manifest;
  const admin = sessionStorage.getItem(ROLE_STORE) === "admin";
  const result = h("p", {id: "reload-result", role: "status"});
  const reload = h("button", {type: "button", id: "reload", disabled: !admin, "aria-describedby": "reload-help",
    onclick: async () => {
      reload.disabled = true;
      result.textContent = "Reloading…";
      try {
        const r = await api("/v1/admin/reload", {method: "POST"});
        result.textContent = r.changed ? `Now serving ${r.model_version} (was ${r.previous_version}).`
          : `Unchanged: still serving ${r.model_version}.`;
      } catch (err) {
        result.textContent = `Reload refused: ${err.message}`;
      } finally {
        reload.disabled = false;
      }
    }}, "Reload the model");
  const cards = Object.entries(m.encoders ?? {});
  main.replaceChildren(
    h("h1", {tabindex: "-1"}, `Model ${report.version}`),
    facts([["model", report.model], ["task", report.task], ["created", m.created_at ?? "–"],
           ["users / items", `${m.n_users ?? "–"} / ${m.n_items ?? "–"}`],
           ["training interactions", m.n_interactions ?? "–"], ["fit seconds", num(m.fit_seconds, 1)]]),
    h("h2", {}, "Reload"),
    h("p", {id: "reload-help", class: "muted"}, admin
      ? "Loads the version ARTIFACTS/current names now (and the experiment files), verified before the swap."
      : "Reloading needs the admin key (TLREC_ADMIN_KEY): sign in with it to use this button."),
    reload, result,
    h("h2", {}, "Validation"),
    report.validation.length
      ? table("Candidates compared on the validation split (NDCG@10)",
              ["model", {text: "validation NDCG@10", num: true}, {text: "fit s", num: true}, "note", "served"],
              report.validation.map((r) => [r.name, {value: num(r.validation_ndcg, 4), num: true},
                                            {value: num(r.fit_seconds, 1), num: true}, r.note, r.served ? "yes" : ""]))
      : h("p", {class: "muted"}, report.validation_note),
    ...(m.selection?.validation?.reason ? [h("p", {class: "muted"}, `Validation split: ${m.selection.validation.reason}.`)] : []),
    ...(m.selection?.notes?.length ? [h("ul", {}, m.selection.notes.map((n) => h("li", {}, n)))] : []),
    ...reportSection("Transfer report", report.transfer, transferTables),
    ...reportSection("Encoder comparison", report.encoders, encoderTables),
    h("h2", {}, "Encoders of the item vectors"),
    cards.length
      ? table("Model cards", ["modality", "encoder", {text: "dim", num: true}, {text: "params", num: true}, "weights from"],
              cards.map(([mod, c]) => [mod, c.name ?? "–", {value: c.dim ?? "–", num: true},
                                       {value: c.params ?? "–", num: true}, c.source ?? "–"]))
      : h("p", {class: "muted"}, "This version uses no pre-trained vectors."),
    h("h2", {}, "Manifest"),
    h("details", {}, h("summary", {}, "manifest.json"),
      h("pre", {class: "json", tabindex: "0", "aria-label": "manifest.json"}, JSON.stringify(m, null, 2))));
}

// ------------------------------------------------------------------ router

function markCurrent(page) {
  for (const link of document.querySelectorAll(".top nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Render the page the hash names: #/catalog?q=, #/items/ID, #/users/ID, #/experiments, #/models.
 * After a navigation the new page's heading takes the focus (not on the first load: Tab then starts
 * at the skip link). */
async function route({first = false} = {}) {
  const token = ++renderToken;
  if (!first) say("");
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
  const hash = location.hash.startsWith("#/") ? location.hash.slice(2) : "catalog";
  const [path, query] = hash.split("?");
  const [page, ...rest] = path.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  main.dataset.route = path;  // which page main shows (for scripts and tests)
  markCurrent(page === "items" ? "catalog" : page);
  if (!signedIn()) {
    renderLogin();
    return;
  }
  const pages = {
    catalog: () => renderCatalog(new URLSearchParams(query ?? ""), token),
    items: () => renderItem(arg, token),
    users: () => renderUser(arg, token),
    experiments: () => renderExperiments(token),
    models: () => renderModels(token),
  };
  const render = pages[page] ?? pages.catalog;
  const done = render();
  const heading = main.querySelector("h1");
  if (heading && !first) heading.focus({preventScroll: true});
  await done;
  if (token === renderToken) {
    const title = main.querySelector("h1");
    document.title = `${title ? title.textContent : "tlrec"} · tlrec console`;
  }
}

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", () => route());

if (signedIn()) {
  api("/v1/console/session").then(showSession).catch(() => {});
}
route({first: true});
