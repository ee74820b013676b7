/* Shared helpers for the ledger's pages: money formatting and safe DOM building. */
'use strict';
(function () {
  const ZERO_DECIMAL = new Set(
    'bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf'.split(' '));
  const THREE_DECIMAL = new Set('bhd jod kwd omr tnd'.split(' '));
  const SYMBOLS = { usd: '$' };

  /** Minor units as a person reads them: "$25.00" for usd, "25.00 EUR" otherwise. */
  function formatAmount(minor, currency) {
    const cur = String(currency || '').toLowerCase();
    const exponent = ZERO_DECIMAL.has(cur) ? 0 : THREE_DECIMAL.has(cur) ? 3 : 2;
    const value = Math.trunc(Number(minor) || 0);
    const sign = value < 0 ? '-' : '';
    const digits = String(Math.abs(value)).padStart(exponent + 1, '0');
    const major = exponent
      ? digits.slice(0, -exponent) + '.' + digits.slice(-exponent)
      : digits;
    if (SYMBOLS[cur]) return sign + SYMBOLS[cur] + major;
    return (sign + major + ' ' + cur.toUpperCase()).trim();
  }

  /** An element with attributes and children (strings become text nodes, never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value === null || value === undefined) continue;
      node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Nodes for `text` with {placeholders} replaced by the given nodes or strings. */
  function fill(text, values) {
    const out = [];
    const pattern = /\{(\w+)\}/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      out.push(text.slice(last, match.index));
      const value = values[match[1]];
      out.push(value === undefined ? match[0] : value);
      last = pattern.lastIndex;
    }
    out.push(text.slice(last));
    return out;
  }

  window.LedgerPages = { formatAmount, el, fill };
})();
