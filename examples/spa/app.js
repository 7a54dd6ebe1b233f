// The example SPA: plain JavaScript against the Billing API, no build step.
//
// * The bearer token lives in this tab's sessionStorage (never localStorage, never the URL):
//   it survives the round trip to Stripe Checkout and back in the same tab, and is gone when
//   the tab closes.
// * Operations come from /operations.graphql (validated against schema.graphql by the tests);
//   each request sends one named operation with the fragments it uses.
// * Every error code of the contract gets a readable message (see `describe`).
// * Cancelling and changing plan take a step in the page first (a confirmation; the charge
//   previewed), and the subscription Stripe answers with is shown at once.
"use strict";

const API = String((window.SPA_CONFIG && window.SPA_CONFIG.apiUrl) || "http://127.0.0.1:8000")
  .replace(/\/+$/, "");
const TOKEN_KEY = "billing-spa:token";
const PORTAL_KEY = "billing-spa:from-portal";

const $ = (id) => document.getElementById(id);

// `preview`: the plan change shown for confirmation (previewPlanChange's answer), if any;
// `confirmingCancel`: the cancellation's confirmation step is shown.
const state = {
  token: null,
  me: null,
  plans: [],
  operations: null,
  preview: null,
  confirmingCancel: false,
};

// ---------------------------------------------------------------- token (sessionStorage)

function loadToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch (e) {
    return null; // storage disabled: memory only, lost on reload
  }
}

function saveToken(token) {
  state.token = token;
  try {
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) {
    /* memory only */
  }
}

// ---------------------------------------------------------------- operations.graphql

// Splits a GraphQL document into its top-level definitions, skipping comments and strings.
function splitDefinitions(source) {
  const definitions = [];
  let depth = 0;
  let start = -1;
  for (let i = 0; i < source.length; i++) {
    const ch = source[i];
    if (ch === "#") {
      while (i < source.length && source[i] !== "\n") i++;
      continue;
    }
    if (ch === '"') {
      const block = source.startsWith('"""', i);
      const end = block ? source.indexOf('"""', i + 3) : source.indexOf('"', i + 1);
      i = end < 0 ? source.length : end + (block ? 2 : 0);
      continue;
    }
    if (start < 0 && /[A-Za-z{]/.test(ch)) start = i;
    if (ch === "{") depth++;
    if (ch === "}" && --depth === 0) {
      definitions.push(source.slice(start, i + 1));
      start = -1;
    }
  }
  const byName = { operations: {}, fragments: {} };
  for (const text of definitions) {
    let m = /^fragment\s+([_A-Za-z]\w*)/.exec(text);
    if (m) {
      byName.fragments[m[1]] = text;
      continue;
    }
    m = /^(?:query|mutation|subscription)\s+([_A-Za-z]\w*)/.exec(text);
    if (m) byName.operations[m[1]] = text;
  }
  return byName;
}

// The named operation followed by every fragment it uses, transitively.
function documentFor(name) {
  const { operations, fragments } = state.operations;
  if (!operations[name]) throw new Error(`operations.graphql has no operation ${name}`);
  const parts = [operations[name]];
  const seen = new Set();
  for (let i = 0; i < parts.length; i++) {
    for (const m of parts[i].matchAll(/\.\.\.\s*([_A-Za-z]\w*)/g)) {
      const fragment = m[1];
      if (fragment !== "on" && !seen.has(fragment) && fragments[fragment]) {
        seen.add(fragment);
        parts.push(fragments[fragment]);
      }
    }
  }
  return parts.join("\n\n");
}

async function loadOperations() {
  const response = await fetch("/operations.graphql", { cache: "no-cache" });
  if (!response.ok) throw new Error(`operations.graphql: HTTP ${response.status}`);
  state.operations = splitDefinitions(await response.text());
}

// ---------------------------------------------------------------- talking to the API

class ApiError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.code = code;
    this.requestId = extra.requestId || null;
    this.status = extra.status || null;
  }
}

function networkError() {
  return new ApiError(
    "NETWORK",
    `Could not reach the API at ${API}. Is it running (make run), and does it allow this ` +
      `page's origin (${window.location.origin}) in CORS_ORIGINS / APP_URL?`
  );
}

async function errorFromResponse(response) {
  const requestId = response.headers.get("x-request-id");
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    /* not JSON */
  }
  const first = body && Array.isArray(body.errors) && body.errors[0];
  if (first) {
    const ext = first.extensions || {};
    return new ApiError(ext.code || "INTERNAL_SERVER_ERROR", first.message, {
      requestId: ext.requestId || requestId,
      status: response.status,
    });
  }
  const code = response.status === 401 ? "UNAUTHENTICATED" : response.status === 429 ? "RATE_LIMITED" : "HTTP_ERROR";
  return new ApiError(code, `The API answered HTTP ${response.status}.`, {
    requestId,
    status: response.status,
  });
}

// Runs one operation of operations.graphql; resolves to `data`, rejects with an ApiError.
async function graphql(name, variables = {}, { auth = true } = {}) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (auth && state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(`${API}/graphql`, {
      method: "POST",
      headers,
      body: JSON.stringify({ query: documentFor(name), operationName: name, variables }),
    });
  } catch (e) {
    throw networkError();
  }
  if (!response.ok) throw await errorFromResponse(response);
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const ext = first.extensions || {};
    throw new ApiError(ext.code || "INTERNAL_SERVER_ERROR", first.message, {
      requestId: ext.requestId || response.headers.get("x-request-id"),
    });
  }
  return body.data;
}

// ---------------------------------------------------------------- messages

const MESSAGES = {
  UNAUTHENTICATED: () =>
    "You are not signed in, or your token is invalid or has expired. Paste a fresh token to sign in again.",
  BAD_USER_INPUT: (e) => `Please check what you entered: ${e.message}`,
  EMAIL_NOT_VERIFIED: () =>
    "Verify your email address with your identity provider before subscribing.",
  NOT_FOUND: () =>
    "There is no billing account yet: subscribe to a plan first, then you can manage billing.",
  ALREADY_SUBSCRIBED: () =>
    "You already have an active subscription. Use “Manage billing” to change or cancel it.",
  STRIPE_NOT_CONFIGURED: () =>
    "Payments are not set up on this server yet (no Stripe key). Everything else works.",
  PAYMENT_PROVIDER_ERROR: (e) => `The payment provider could not complete this. ${e.message}`,
  RATE_LIMITED: () => "Too many attempts in a short time. Wait a minute and try again.",
  INTERNAL_SERVER_ERROR: (e) =>
    "Something went wrong on our side. Please try again." +
    (e.requestId ? ` If it keeps happening, quote reference ${e.requestId}.` : ""),
  GRAPHQL_VALIDATION_FAILED: (e) => `This app and the API disagree about the schema: ${e.message}`,
  GRAPHQL_PARSE_FAILED: (e) => `This app sent a malformed query: ${e.message}`,
  NETWORK: (e) => e.message,
  HTTP_ERROR: (e) => e.message,
};

function describe(error) {
  if (error instanceof ApiError) {
    const text = (MESSAGES[error.code] || ((e) => e.message || "Unexpected error."))(error);
    return { code: error.code, text };
  }
  return { code: "APP_ERROR", text: String((error && error.message) || error) };
}

function say(kind, text, code) {
  const box = document.createElement("div");
  box.className = `message ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  if (code) {
    const badge = document.createElement("code");
    badge.className = "code";
    badge.textContent = code;
    box.append(badge, " ");
  }
  box.append(text);
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => box.remove());
  box.append(close);
  $("messages").prepend(box);
  while ($("messages").children.length > 4) $("messages").lastElementChild.remove();
  return box;
}

function clearMessages() {
  $("messages").replaceChildren();
}

function fail(error) {
  const { code, text } = describe(error);
  say("error", text, code);
  if (code === "UNAUTHENTICATED") signOut({ quiet: true });
}

// Disables a button while its action runs; errors become messages.
async function busy(button, action) {
  button.disabled = true;
  button.classList.add("busy");
  try {
    return await action();
  } catch (error) {
    fail(error);
    return undefined;
  } finally {
    button.disabled = false;
    button.classList.remove("busy");
  }
}

// ---------------------------------------------------------------- rendering

function show(signedIn) {
  $("signin").hidden = signedIn;
  $("account").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
}

function planName(planId) {
  if (planId === "custom") return "Custom plan";
  const plan = state.plans.find((p) => p.id === planId);
  return plan ? plan.name : planId;
}

function day(iso) {
  return new Date(iso).toLocaleDateString();
}

// A subscription in these states is over (Stripe keeps it, nothing can be changed on it).
const ENDED = ["CANCELED", "INCOMPLETE_EXPIRED"];

// "ends on …" when a cancellation is scheduled (from the SPA, the portal or the Dashboard),
// else "renews on …"; a trial says when it ends.
function timeline(sub) {
  const parts = [];
  if (sub.trialEnd && sub.status === "TRIALING") parts.push(`trial until ${day(sub.trialEnd)}`);
  if (sub.cancelAt) parts.push(`ends on ${day(sub.cancelAt)}`);
  else if (sub.currentPeriodEnd && !ENDED.includes(sub.status)) {
    parts.push(`renews on ${day(sub.currentPeriodEnd)}`);
  }
  return parts;
}

// Stripe's amounts are integers in the currency's smallest unit: a hundredth for most, the
// whole unit for its zero-decimal currencies (1500 JPY is ¥1,500) and a thousandth for its
// three-decimal ones.
const ZERO_DECIMAL = new Set(
  "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split(" ")
);
const THREE_DECIMAL = new Set("BHD JOD KWD OMR TND".split(" "));

function formatAmount(amount, currency) {
  const code = currency.toUpperCase();
  const divisor = ZERO_DECIMAL.has(code) ? 1 : THREE_DECIMAL.has(code) ? 1000 : 100;
  return new Intl.NumberFormat(undefined, { style: "currency", currency: code }).format(
    amount / divisor
  );
}

function money(plan) {
  if (plan.amount == null || !plan.currency) return "";
  const amount = formatAmount(plan.amount, plan.currency);
  return plan.interval ? `${amount} / ${plan.interval}` : amount;
}

// The subscription the app can cancel, resume or move to another plan (one at Stripe that
// has not ended), if any.
function liveSubscription() {
  const sub = state.me && state.me.subscription;
  return sub && sub.stripeSubscriptionId && !ENDED.includes(sub.status) ? sub : null;
}

// A link opening in a new tab; null unless `href` is an http(s) address (Stripe's pages).
function link(href, text) {
  if (!href || !/^https?:\/\//i.test(href)) return null;
  const a = document.createElement("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener";
  a.textContent = text;
  return a;
}

function renderAccount() {
  const me = state.me;
  if (!me) return;
  $("profile-id").textContent = me.id;
  $("profile-email").textContent = me.email || "(no email)";
  $("profile-verified").textContent = me.emailVerified ? "verified" : "not verified";
  $("profile-verified").className = `badge ${me.emailVerified ? "ok" : "warn"}`;
  $("first-name").value = me.firstName || "";
  $("last-name").value = me.lastName || "";
  $("phone").value = me.phone || "";

  const sub = me.subscription;
  const planId = sub ? sub.planId : "free";
  $("plan-name").textContent = planName(planId);
  const details = [];
  const plan = state.plans.find((p) => p.id === planId);
  if (plan && money(plan)) details.push(money(plan));
  if (sub) details.push(...timeline(sub));
  if (!sub) details.push("no billing account yet");
  $("plan-detail").textContent = details.join(" · ");
  const status = sub ? sub.status : "FREE";
  $("subscription-status").textContent = status;
  const tone = { ACTIVE: "ok", TRIALING: "ok", PAST_DUE: "warn", UNPAID: "warn", INCOMPLETE: "warn" };
  $("subscription-status").className = `badge ${tone[status] || "neutral"}`;
  const subscribed = sub && ["ACTIVE", "TRIALING", "PAST_DUE"].includes(sub.status);
  const live = liveSubscription();
  const pro = state.plans.find((p) => p.id === "PRO");
  $("checkout").hidden = Boolean(subscribed);
  $("checkout").textContent = pro && money(pro) ? `Upgrade to ${pro.name} (${money(pro)})` : "Upgrade to Pro";
  $("portal").hidden = !me.customer;

  // Every subscription of the customer, the one that matters first (the API's order).
  const subs = $("subscriptions");
  subs.replaceChildren();
  for (const one of me.subscriptions) {
    const item = document.createElement("li");
    item.dataset.subscription = one.stripeSubscriptionId || "";
    const badge = document.createElement("span");
    badge.className = `badge ${tone[one.status] || "neutral"}`;
    badge.textContent = one.status;
    const text = document.createElement("span");
    text.textContent = [planName(one.planId), ...timeline(one)].join(" · ");
    item.append(text, " ", badge);
    subs.append(item);
  }
  subs.hidden = !me.subscriptions.length;

  renderEntitlements();
  renderPlanManagement(live);
  renderInvoices();

  const list = $("notifications");
  list.replaceChildren();
  if (!me.notifications.length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "Nothing yet.";
    list.append(empty);
  }
  for (const n of me.notifications) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    when.dateTime = n.createdAt;
    when.textContent = new Date(n.createdAt).toLocaleString();
    const kind = document.createElement("span");
    kind.className = "badge neutral";
    kind.textContent = n.kind;
    const text = document.createElement("span");
    text.textContent = n.message;
    item.append(kind, " ", text, " ", when);
    const action = link(n.url, NOTIFICATION_LINKS[n.kind] || "Open");
    if (action) item.append(" ", action);
    list.append(item);
  }
}

const NOTIFICATION_LINKS = { payment_failed: "Pay the invoice" };

function renderEntitlements() {
  const list = $("entitlements");
  list.replaceChildren();
  for (const key of state.me.entitlements) {
    const item = document.createElement("li");
    item.textContent = key;
    list.append(item);
  }
  if (!state.me.entitlements.length) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = "None";
    list.append(none);
  }
}

// Cancel / resume, the other plans, and whichever confirmation step is open.
function renderPlanManagement(live) {
  if (!live) {
    state.preview = null;
    state.confirmingCancel = false;
  }
  const scheduled = Boolean(live && live.cancelAt);
  if (scheduled) state.confirmingCancel = false;
  const confirming = Boolean(state.preview || state.confirmingCancel);
  $("cancel-subscription").hidden = !live || scheduled || confirming;
  $("resume-subscription").hidden = !scheduled || confirming;

  const choices = $("plan-choices");
  choices.replaceChildren();
  const others = live
    ? state.plans.filter((p) => p.priceId && p.id !== "free" && p.id !== live.planId)
    : [];
  for (const plan of others) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "choice-name";
    name.textContent = plan.name;
    const price = document.createElement("span");
    price.className = "muted small";
    price.textContent = money(plan);
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.plan = plan.id;
    button.textContent = `Switch to ${plan.name}`;
    button.addEventListener("click", () => previewPlanChange(button, plan.id));
    item.append(name, price, button);
    choices.append(item);
  }
  $("plan-options").hidden = !others.length || confirming;

  const preview = state.preview;
  $("plan-change").hidden = !preview;
  if (preview) {
    const plan = state.plans.find((p) => p.id === preview.planId);
    $("plan-change-amount").textContent =
      preview.amountDue > 0
        ? `You will be charged ${formatAmount(preview.amountDue, preview.currency)} now`
        : "You will not be charged anything now";
    const then = plan && money(plan) ? `, then ${money(plan)}` : "";
    $("plan-change-detail").textContent =
      `to move to ${planName(preview.planId)} for the rest of this period${then}. ` +
      "Nothing changes until you confirm.";
  }

  $("cancel-confirm").hidden = !state.confirmingCancel;
  if (state.confirmingCancel && live) {
    $("cancel-confirm-title").textContent = `Cancel your ${planName(live.planId)} subscription?`;
    const until = live.currentPeriodEnd
      ? `It stays active until ${day(live.currentPeriodEnd)}, then ends.`
      : "It stays active until the end of the current period, then ends.";
    $("cancel-confirm-detail").textContent = `${until} You can resume it until then.`;
  }
}

const INVOICE_TONE = { PAID: "ok", OPEN: "warn", UNCOLLECTIBLE: "warn" };

function renderInvoices() {
  const invoices = state.me.invoices;
  const body = $("invoices").querySelector("tbody");
  body.replaceChildren();
  for (const invoice of invoices) {
    const row = document.createElement("tr");
    row.dataset.invoice = invoice.id;
    const cell = (...content) => {
      const td = document.createElement("td");
      td.append(...content);
      row.append(td);
      return td;
    };
    cell(invoice.number || "—");
    const when = document.createElement("time");
    when.dateTime = invoice.createdAt;
    when.textContent = day(invoice.createdAt);
    cell(when);
    cell(formatAmount(invoice.amountDue, invoice.currency)).className = "amount";
    const badge = document.createElement("span");
    badge.className = `badge ${INVOICE_TONE[invoice.status] || "neutral"}`;
    badge.textContent = invoice.status;
    cell(badge);
    const links = [link(invoice.hostedInvoiceUrl, "View"), link(invoice.invoicePdf, "PDF")]
      .filter(Boolean);
    cell(...links.flatMap((a, i) => (i ? [" · ", a] : [a]))).className = "links";
    body.append(row);
  }
  $("invoices").hidden = !invoices.length;
  $("invoices-empty").hidden = invoices.length > 0;
}

// ---------------------------------------------------------------- actions

async function loadPlans() {
  try {
    state.plans = (await graphql("Plans", {}, { auth: false })).plans;
  } catch (error) {
    fail(error);
  }
}

async function loadMe() {
  const data = await graphql("Me");
  state.me = data.me;
  show(true);
  renderAccount();
}

function signOut({ quiet = false } = {}) {
  saveToken(null);
  state.me = null;
  show(false);
  if (!quiet) {
    clearMessages();
    say("info", "Signed out. The token was removed from this tab.");
  }
}

async function signIn(event) {
  event.preventDefault();
  const raw = $("token").value.trim().replace(/^Bearer\s+/i, "");
  if (!raw) return;
  clearMessages();
  saveToken(raw);
  await busy($("signin-button"), async () => {
    await loadMe();
    $("token").value = "";
    say("success", `Signed in as ${state.me.email || state.me.id}.`);
    await afterReturn();
  });
}

async function saveProfile(event) {
  event.preventDefault();
  const value = (id) => $(id).value.trim() || null; // empty clears
  const input = { firstName: value("first-name"), lastName: value("last-name"), phone: value("phone") };
  await busy($("save-profile"), async () => {
    state.me = { ...state.me, ...(await graphql("UpdateProfile", { input })).updateProfile };
    renderAccount();
    say("success", "Profile saved.");
  });
}

async function startCheckout() {
  await busy($("checkout"), async () => {
    const session = (await graphql("StartCheckout", { planId: "PRO" })).createCheckoutSession;
    say("info", "Opening Stripe Checkout…");
    window.location.assign(session.url);
  });
}

async function openPortal() {
  await busy($("portal"), async () => {
    const session = (await graphql("OpenBillingPortal")).createPortalSession;
    try {
      window.sessionStorage.setItem(PORTAL_KEY, "1");
    } catch (e) {
      /* fine */
    }
    window.location.assign(session.url);
  });
}

async function sync({ announce = true } = {}) {
  const subscription = (await graphql("SyncSubscription")).syncSubscription;
  if (state.me) state.me.subscription = subscription;
  await loadMe();
  if (announce) {
    say(
      "success",
      subscription
        ? `Your plan: ${planName(subscription.planId)} (${subscription.status}).`
        : "No billing account yet: you are on the free plan."
    );
  }
  return subscription;
}

// Back from Checkout (APP_URL/billing?checkout=success&session_id=…) or the portal.
async function afterReturn() {
  const params = new URLSearchParams(window.location.search);
  const checkout = params.get("checkout");
  let fromPortal = false;
  try {
    fromPortal = window.sessionStorage.getItem(PORTAL_KEY) === "1";
    window.sessionStorage.removeItem(PORTAL_KEY);
  } catch (e) {
    /* fine */
  }
  if (checkout) window.history.replaceState(null, "", window.location.pathname);
  if (checkout === "success") {
    const pending = say("info", "Payment received. Checking your subscription…");
    let subscription;
    try {
      subscription = await sync({ announce: false });
    } finally {
      pending.remove();
    }
    say(
      "success",
      subscription
        ? `Thank you! Your plan is now ${planName(subscription.planId)} (${subscription.status}).`
        : "Thank you! Your subscription will show here in a moment."
    );
  } else if (checkout === "canceled") {
    say("info", "Checkout canceled: nothing was charged.");
  } else if (fromPortal) {
    await sync({ announce: false });
    say("info", "Back from the billing portal: your plan is up to date.");
  }
}

// A mutation's answer shown at once: the subscription it returned replaces ours.
function applySubscription(subscription) {
  const me = state.me;
  me.subscription = subscription;
  me.subscriptions = me.subscriptions.map((one) =>
    one.stripeSubscriptionId === subscription.stripeSubscriptionId ? subscription : one
  );
  renderAccount();
}

// Runs a change to the subscription; when it fails, the message says why and the page shows
// the subscription as it now is.
async function manage(button, action) {
  let failed = false;
  await busy(button, async () => {
    try {
      await action();
    } catch (error) {
      failed = true;
      throw error;
    }
  });
  if (failed && state.token) {
    state.preview = null;
    state.confirmingCancel = false;
    renderAccount();
    try {
      await loadMe();
    } catch (error) {
      fail(error);
    }
  }
}

function askToCancel() {
  state.confirmingCancel = true;
  state.preview = null;
  renderAccount();
  $("cancel-back").focus();
}

function keepSubscription() {
  state.confirmingCancel = false;
  renderAccount();
}

async function cancelSubscription() {
  await manage($("cancel-confirm-button"), async () => {
    const subscription = (await graphql("CancelSubscription")).cancelSubscription;
    state.confirmingCancel = false;
    applySubscription(subscription);
    const yours = `Your ${planName(subscription.planId)} subscription`;
    say(
      "success",
      subscription.cancelAt
        ? `${yours} ends on ${day(subscription.cancelAt)}.`
        : `${yours} is ${subscription.status}.`
    );
  });
}

async function resumeSubscription() {
  await manage($("resume-subscription"), async () => {
    const subscription = (await graphql("ResumeSubscription")).resumeSubscription;
    applySubscription(subscription);
    const renews = subscription.currentPeriodEnd;
    say(
      "success",
      `Your ${planName(subscription.planId)} subscription continues` +
        (renews ? `: it renews on ${day(renews)}.` : ".")
    );
  });
}

async function previewPlanChange(button, planId) {
  await manage(button, async () => {
    const preview = (await graphql("PreviewPlanChange", { planId })).previewPlanChange;
    state.preview = preview;
    state.confirmingCancel = false;
    renderAccount();
    $("plan-change-back").focus();
  });
}

function closePreview() {
  state.preview = null;
  renderAccount();
}

async function confirmPlanChange() {
  const preview = state.preview;
  if (!preview) return;
  await manage($("plan-change-confirm"), async () => {
    const variables = { planId: preview.planId, prorationDate: preview.prorationDate };
    const subscription = (await graphql("ChangePlan", variables)).changePlan;
    state.preview = null;
    applySubscription(subscription);
    say(
      "success",
      `You are now on the ${planName(subscription.planId)} plan` +
        (preview.amountDue > 0
          ? `: ${formatAmount(preview.amountDue, preview.currency)} was charged.`
          : ".")
    );
    await loadMe(); // the new plan's features
  });
}

function filenameFrom(response, fallback) {
  const header = response.headers.get("content-disposition") || "";
  const m = /filename="([^"]+)"/.exec(header);
  return m ? m[1] : fallback;
}

async function downloadExport() {
  await busy($("export"), async () => {
    let response;
    try {
      response = await fetch(`${API}/account/export`, {
        headers: { Authorization: `Bearer ${state.token}` },
      });
    } catch (e) {
      throw networkError();
    }
    if (!response.ok) throw await errorFromResponse(response);
    const text = await response.text();
    const name = filenameFrom(response, `customer-data-${state.me ? state.me.id : "me"}.json`);
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    let partial = null;
    try {
      const body = JSON.parse(text);
      partial = body.errors && body.errors.length ? body.errors[0] : null;
    } catch (e) {
      /* still saved */
    }
    if (partial) {
      const { text: why } = describe(
        new ApiError((partial.extensions || {}).code || "INTERNAL_SERVER_ERROR", partial.message)
      );
      say("warn", `Saved ${name}, without the Stripe part: ${why} You can download again later.`);
    } else {
      say("success", `Saved ${name}.`);
    }
  });
}

function openDeleteDialog() {
  $("delete-confirm").value = "";
  $("delete-from-stripe").checked = false;
  $("delete-confirm-button").disabled = true;
  $("delete-dialog").showModal();
}

async function confirmDelete() {
  if ($("delete-dialog").returnValue !== "delete") return;
  if ($("delete-confirm").value.trim() !== "DELETE") return;
  const deleteFromStripe = $("delete-from-stripe").checked;
  await busy($("delete"), async () => {
    const result = (await graphql("DeleteAccount", { deleteFromStripe })).deleteAccount;
    if (!result.success) {
      say("error", result.message);
      return;
    }
    signOut({ quiet: true });
    clearMessages();
    say("success", `Your account was deleted. ${result.message}`);
  });
}

// ---------------------------------------------------------------- start

async function start() {
  $("api-url").textContent = API;
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("profile-form").addEventListener("submit", saveProfile);
  $("checkout").addEventListener("click", startCheckout);
  $("portal").addEventListener("click", openPortal);
  $("sync").addEventListener("click", () => busy($("sync"), () => sync()));
  $("cancel-subscription").addEventListener("click", askToCancel);
  $("cancel-back").addEventListener("click", keepSubscription);
  $("cancel-confirm-button").addEventListener("click", cancelSubscription);
  $("resume-subscription").addEventListener("click", resumeSubscription);
  $("plan-change-back").addEventListener("click", closePreview);
  $("plan-change-confirm").addEventListener("click", confirmPlanChange);
  $("export").addEventListener("click", downloadExport);
  $("delete").addEventListener("click", openDeleteDialog);
  $("delete-confirm").addEventListener("input", () => {
    $("delete-confirm-button").disabled = $("delete-confirm").value.trim() !== "DELETE";
  });
  $("delete-dialog").addEventListener("close", confirmDelete);

  try {
    await loadOperations();
  } catch (error) {
    fail(error);
    return;
  }
  await loadPlans();
  state.token = loadToken();
  if (!state.token) {
    show(false);
    const checkout = new URLSearchParams(window.location.search).get("checkout");
    if (checkout) say("info", "Sign in again to see your subscription.");
    return;
  }
  try {
    await loadMe();
    await afterReturn();
  } catch (error) {
    show(false);
    fail(error);
  }
}

start();
