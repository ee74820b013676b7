/* The checkout success page: polls the order status until it is final, or gives up.
 * The server already rendered the status as it was when the page loaded; this keeps it
 * current. Backoff: 1 s, 1.5 s, 2.25 s, ... at most 5 s apart; gives up after
 * `timeoutSeconds` (the server's LEDGER_SUCCESS_PAGE_TIMEOUT). */
'use strict';
(function () {
  const { formatAmount, el, fill } = window.LedgerPages;
  const config = JSON.parse(document.getElementById('success-config').textContent);
  const region = document.getElementById('order-status');
  const connectionNote = document.getElementById('connection-note');
  const FINAL = new Set(config.finalStatuses);
  const WITH_LINES = new Set(config.withLines);
  const DONE = new Set(config.doneStatuses);
  const FIRST_DELAY_MS = 1000;
  const BACKOFF = 1.5;
  const MAX_DELAY_MS = 5000;
  const REQUEST_TIMEOUT_MS = 8000;
  // A 404 is believed once it was seen twice: the server's answer and one more poll.
  const UNKNOWN_CONFIRMATIONS = 2;

  let status = config.status;
  let order = config.order;
  let unknownSeen = status === 'unknown' ? 1 : 0;
  let delay = FIRST_DELAY_MS;
  let pollTimer = null;
  let inflight = null;
  let stopped = false;
  const deadline = performance.now() + config.timeoutSeconds * 1000;

  function amountOf(body) {
    if (!body || typeof body.amount_total !== 'number' || !body.currency) return null;
    return formatAmount(body.amount_total, body.currency);
  }

  function linesTable(body) {
    const rows = (body.items || []).map((item) => {
      const quantity = Number(item.quantity) || 0;
      const unit = Number(item.unit_amount) || 0;
      const lineTotal = typeof item.amount_total === 'number' ? item.amount_total : unit * quantity;
      return el('tr', {},
        el('th', { scope: 'row' }, String(item.name || item.sku || 'Item')),
        el('td', { class: 'num' }, String(quantity)),
        el('td', { class: 'num' }, formatAmount(unit, body.currency)),
        el('td', { class: 'num' }, formatAmount(lineTotal, body.currency)));
    });
    return el('table', { class: 'lines' },
      el('caption', {}, 'Your order'),
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Item'),
        el('th', { scope: 'col', class: 'num' }, 'Quantity'),
        el('th', { scope: 'col', class: 'num' }, 'Unit price'),
        el('th', { scope: 'col', class: 'num' }, 'Amount'))),
      el('tbody', {}, rows),
      el('tfoot', {}, el('tr', {},
        el('th', { scope: 'row', colspan: '3' }, 'Total'),
        el('td', { class: 'num', 'data-testid': 'order-total' },
          formatAmount(body.amount_total || 0, body.currency)))));
  }

  /** Mirrors render_status() in web/routes/pages.py. */
  function render(shown, body, last) {
    const [headline, message] = config.texts[shown];
    const amount = amountOf(body);
    const values = {
      amount: amount || 'amount',
      reference: el('code', {}, config.sessionId),
      seconds: String(config.timeoutSeconds),
      last: config.lastKnown[last] || '',
    };
    const parts = [
      el('h1', { id: 'status-heading' }, headline),
      el('p', { class: 'lead' }, fill(message, values)),
    ];
    if (body && WITH_LINES.has(shown) && body.items && body.items.length) {
      parts.push(linesTable(body));
    }
    if (body && body.order_id && shown !== 'unknown' && shown !== 'timeout') {
      parts.push(el('p', { class: 'order-id' }, 'Order number: ',
        el('code', { 'data-testid': 'order-id' }, String(body.order_id))));
    }
    if (shown === 'timeout') {
      parts.push(el('p', { class: 'actions' },
        el('a', { class: 'button', href: config.checkAgainUrl, 'data-testid': 'check-again' },
          'Check again')));
    } else if (DONE.has(shown)) {
      parts.push(el('p', { class: 'actions' }, el('a', { href: '/' }, 'Continue shopping')));
    } else if (shown === 'payment_failed' || shown === 'expired' || shown === 'unknown') {
      parts.push(el('p', { class: 'actions' },
        el('a', { class: 'button', href: '/' }, 'Back to the shop')));
    }
    region.replaceChildren(...parts);
    region.dataset.status = shown;
    region.className = 'status status-' + shown;
    document.title = headline;
  }

  function show(nextStatus, body) {
    const changed = nextStatus !== status || JSON.stringify(body) !== JSON.stringify(order);
    status = nextStatus;
    order = body;
    if (changed) render(status, order, status);
  }

  function note(text) {
    connectionNote.textContent = text || '';
    connectionNote.hidden = !text;
  }

  function stop() {
    stopped = true;
    clearTimeout(pollTimer);
    if (inflight) inflight.abort();
  }

  function giveUp() {
    if (stopped) return;
    stop();
    note('');
    render('timeout', order, status);
  }

  function isDone() {
    return FINAL.has(status) || (status === 'unknown' && unknownSeen >= UNKNOWN_CONFIRMATIONS);
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
    const timer = setTimeout(() => inflight && inflight.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(config.statusUrl, {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
        signal: inflight.signal,
      });
      if (stopped) return;
      if (response.status === 200) {
        const body = await response.json();
        unknownSeen = 0;
        note('');
        show(String(body.status), body);
      } else if (response.status === 404) {
        unknownSeen += 1;
        note('');
        show('unknown', null);
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
  if (config.shown !== 'timeout' && !isDone()) {
    setTimeout(giveUp, Math.max(0, deadline - performance.now()));
    schedule();
  }
})();
