/* The checkout success page: polls the order status until it is final, or gives up.
 * The server rendered what the page says in every case, once each (in #status-blocks, one
 * <template> per status, for "no such checkout", and for giving up after each unsettled
 * state); this swaps in the one for the answer it gets. When the order itself changed since
 * those were rendered (its number appeared, or the page loaded before the order was known),
 * it first fetches this page again for blocks rendered anew. It formats nothing and spells no
 * status: the statuses come from the server's data.
 * Backoff: 1 s, 1.5 s, 2.25 s, ... at most 5 s apart; gives up after `timeoutSeconds` (the
 * server's LEDGER_SUCCESS_PAGE_TIMEOUT). */
'use strict';
(function () {
  const config = JSON.parse(document.getElementById('success-config').textContent);
  const region = document.getElementById('order-status');
  const blocks = document.getElementById('status-blocks');
  const connectionNote = document.getElementById('connection-note');
  const FINAL = new Set(config.finalStatuses);
  const FIRST_DELAY_MS = 1000;
  const BACKOFF = 1.5;
  const MAX_DELAY_MS = 5000;
  const REQUEST_TIMEOUT_MS = 8000;
  // A 404 is believed once it was seen twice: the server's answer and one more poll.
  const NOT_FOUND_CONFIRMATIONS = 2;

  let status = config.status;  // the order's status as last answered; null when none yet
  let notFoundSeen = config.notFound ? 1 : 0;
  let renderedFor = orderKey(config.order);  // the order the blocks were rendered from
  let shownKey = region.dataset.status + '|' + renderedFor;
  let delay = FIRST_DELAY_MS;
  let pollTimer = null;
  let inflight = null;
  let stopped = false;
  const deadline = performance.now() + config.timeoutSeconds * 1000;

  /** What the blocks are rendered from: the order without its status. */
  function orderKey(body) {
    return body ? JSON.stringify({ ...body, status: null }) : '';
  }

  function block(attribute, value) {
    const selector = value === undefined
      ? 'template[' + attribute + ']'
      : 'template[' + attribute + '="' + CSS.escape(value) + '"]';
    return blocks.querySelector(selector);
  }

  function show(template) {
    if (!template) return;
    const key = template.dataset.shows + '|' + renderedFor;
    if (key === shownKey) return;  // unchanged: nothing new to announce
    shownKey = key;
    region.replaceChildren(template.content.cloneNode(true));
    region.dataset.status = template.dataset.shows;
    region.className = template.dataset.panelClass;
    const heading = region.querySelector('h1');
    if (heading) document.title = heading.textContent;
  }

  /** Takes the blocks of this page rendered afresh; on failure the old ones stay. */
  async function refreshBlocks(signal) {
    const response = await fetch(config.pageUrl, {
      headers: { Accept: 'text/html' },
      cache: 'no-store',
      credentials: 'same-origin',
      signal,
    });
    if (response.status !== 200) return;
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    const fresh = page.getElementById('status-blocks');
    const freshConfig = page.getElementById('success-config');
    if (!fresh || !freshConfig) return;
    blocks.replaceChildren(...Array.from(fresh.childNodes, (node) => document.importNode(node, true)));
    renderedFor = orderKey(JSON.parse(freshConfig.textContent).order);
  }

  function note(text) {
    connectionNote.textContent = text || '';
    connectionNote.hidden = !text;
  }

  function stop() {
    stopped = true;
    clearTimeout(pollTimer);
    if (inflight) inflight.abort();
    // For tests and embedding storefronts: from here on the page asks nothing more.
    document.documentElement.dataset.polling = 'stopped';
  }

  function giveUp() {
    if (stopped) return;
    stop();
    note('');
    show(block('data-for-give-up-after', region.dataset.status));
  }

  function isDone() {
    return FINAL.has(status) || notFoundSeen >= NOT_FOUND_CONFIRMATIONS;
  }

  function schedule() {
    if (stopped) return;
    if (isDone()) { stop(); return; }
    const remaining = deadline - performance.now();
    if (remaining <= 0) { giveUp(); return; }
    pollTimer = setTimeout(poll, Math.min(delay, remaining));
    delay = Math.min(delay * BACKOFF, MAX_DELAY_MS);
  }

  async function poll() {
    if (stopped) return;
    inflight = new AbortController();
    const { signal } = inflight;
    const timer = setTimeout(() => inflight && inflight.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(config.statusUrl, {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
        signal,
      });
      if (stopped) return;
      if (response.status === 200) {
        const body = await response.json();
        notFoundSeen = 0;
        note('');
        if (orderKey(body) !== renderedFor) {
          // Without fresh blocks the old ones still say the right status; next poll retries.
          await refreshBlocks(signal).catch(() => undefined);
          if (stopped) return;
        }
        status = String(body.status);
        show(block('data-for-status', status));
      } else if (response.status === 404) {
        notFoundSeen += 1;
        status = null;
        note('');
        show(block('data-for-not-found'));
      } else {
        note('We are having trouble reaching the shop. Still trying…');
      }
    } catch (error) {
      if (stopped) return;
      note('We are having trouble reaching the shop. Still trying…');
    } finally {
      clearTimeout(timer);
      inflight = null;
    }
    schedule();
  }

  // The hard limit: whatever a request is doing, the page gives up on time.
  // A page the server already gave up on (no-JS refreshes ran out) stays as it is.
  if (!config.givenUp && !isDone()) {
    setTimeout(giveUp, Math.max(0, deadline - performance.now()));
    schedule();
  } else {
    stop();
  }
})();
