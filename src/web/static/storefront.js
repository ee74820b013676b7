/* The demo storefront: products, a cart kept in localStorage and the address (?cart_id=),
 * and a checkout button that sends the customer to the payment page.
 * With LEDGER_STOCK_HOLD set, a checkout holds the cart's stock until `held_until` (the
 * checkout's answer and the cart both say so): the cart shows until when, in the browser's
 * local time, and looks again once that time has passed. A product nobody can take now
 * (`available` 0, held units included) shows "Sold out" and offers no add-to-cart. */
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($('storefront-config').textContent);
  const money = JSON.parse($('money-rules').textContent);
  const STORAGE_KEY = 'ledger-demo-cart-id';
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const noticeBox = $('notice');
  const productList = $('products');
  const checkoutButton = $('checkout');
  const holdNote = $('hold');
  // setTimeout's longest delay (about 24.8 days); a hold never lasts longer than 24 h.
  const MAX_TIMER_MS = 2 ** 31 - 1;

  let products = [];
  let cart = null;
  let cartId = null;
  let busy = false;
  let queue = Promise.resolve();
  let holdTimer = null;

  // ------------------------------------------------------------------ plumbing

  /** Minor units as ledger/money.py writes them, with the rules it gives the page: "$25.00"
   * for a currency that goes by its symbol, "25.00 EUR" otherwise. */
  function formatAmount(minor, currency) {
    const code = String(currency || '').toLowerCase();
    const exponent = money.exponents[code] ?? money.defaultExponent;
    const major = (Number(minor) || 0) / 10 ** exponent;
    const bySymbol = money.bySymbol.includes(code);
    const parts = new Intl.NumberFormat(money.locale, {
      style: 'currency', currency: code.toUpperCase(), currencyDisplay: bySymbol ? 'symbol' : 'code',
      // Exactly the decimals Stripe counts in, which ISO's (and so Intl's) do not always match.
      minimumFractionDigits: exponent, maximumFractionDigits: exponent,
    }).formatToParts(major);
    if (bySymbol) return parts.map((part) => part.value).join('');
    const number = parts.filter((part) => part.type !== 'currency' && part.type !== 'literal');
    return number.map((part) => part.value).join('') + ' ' + code.toUpperCase();
  }

  /** An ISO-8601 time as HH:MM on the browser's clock (24-hour), or null when it is not one.
   * Minutes are cut, never rounded up: "until 14:05" never promises more than the ledger holds. */
  function clockTime(iso) {
    const when = new Date(iso);
    if (!iso || Number.isNaN(when.getTime())) return null;
    const two = (n) => String(n).padStart(2, '0');
    return two(when.getHours()) + ':' + two(when.getMinutes());
  }

  /** The time a hold ends, when the answer names one still to come; else null. */
  function liveHold(heldUntil) {
    const when = heldUntil ? new Date(heldUntil) : null;
    return when && !Number.isNaN(when.getTime()) && when.getTime() > Date.now() ? when : null;
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

  async function api(method, path, body) {
    const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { status: 0, body: null };
    }
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    return { status: response.status, body: data };
  }

  function errorCode(result) {
    return result.body && result.body.error ? result.body.error.code : null;
  }

  function errorMessage(result) {
    if (result.status === 0) return 'The shop cannot be reached. Check your connection and try again.';
    if (result.body && result.body.error && result.body.error.message) return result.body.error.message;
    return 'Something went wrong (HTTP ' + result.status + '). Please try again.';
  }

  /** Runs cart changes one after another, so quick clicks cannot overtake each other. */
  function serially(task) {
    queue = queue.then(task, task);
    return queue;
  }

  function notice(kind, ...content) {
    noticeBox.replaceChildren(...content.flat().map(
      (c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
    noticeBox.className = 'notice notice-' + kind;
    noticeBox.dataset.kind = kind;
    noticeBox.hidden = content.length === 0;
  }

  function clearNotice() { notice('info'); }

  function productName(sku) {
    const inCart = cart && cart.items.find((i) => i.sku === sku);
    const product = products.find((p) => p.sku === sku);
    return (product && product.name) || (inCart && inCart.name) || sku;
  }

  // ------------------------------------------------------------------ cart identity

  function setCartId(id) {
    cartId = id;
    try {
      if (id) localStorage.setItem(STORAGE_KEY, id); else localStorage.removeItem(STORAGE_KEY);
    } catch (error) { /* private mode: the address still carries it */ }
    const url = new URL(window.location.href);
    if (id) url.searchParams.set('cart_id', id); else url.searchParams.delete('cart_id');
    url.searchParams.delete('checkout');
    window.history.replaceState(null, '', url);
  }

  function forgetCart() {
    setCartId(null);
    cart = null;
    renderCart();
  }

  async function newCart() {
    const result = await api('POST', '/api/carts', {});
    if (result.status !== 201) throw new Error(errorMessage(result));
    cart = result.body;
    setCartId(cart.cart_id);
    return cart;
  }

  // ------------------------------------------------------------------ loading

  async function loadProducts() {
    const result = await api('GET', '/api/products');
    $('products-loading').hidden = true;
    if (result.status !== 200) {
      notice('error', 'The products could not be loaded: ', errorMessage(result));
      return;
    }
    products = result.body.products || [];
    renderProducts();
  }

  async function loadCart() {
    if (!cartId) { renderCart(); return; }
    const result = await api('GET', '/api/carts/' + encodeURIComponent(cartId));
    if (result.status === 404) { forgetCart(); return; }
    if (result.status !== 200) {
      notice('error', 'Your cart could not be loaded: ', errorMessage(result));
      return;
    }
    if (result.body.status === config.convertedCart) {
      // That cart became an order: a fresh one starts with the next item.
      forgetCart();
      return;
    }
    cart = result.body;
    renderCart();
  }

  // ------------------------------------------------------------------ changes

  async function setQuantity(sku, quantity, retried) {
    try {
      if (!cartId) await newCart();
    } catch (error) {
      notice('error', 'A cart could not be started: ', error.message);
      return false;
    }
    const result = await api('PUT',
      '/api/carts/' + encodeURIComponent(cartId) + '/items/' + encodeURIComponent(sku),
      { quantity });
    if (result.status === 200) {
      cart = result.body;
      renderCart();
      return true;
    }
    const code = errorCode(result);
    if (!retried && (code === 'cart_closed' || code === 'unknown_cart')) {
      forgetCart();
      if (code === 'cart_closed') {
        notice('info', 'Your previous cart has already been paid for, so we started a new one.');
      }
      return setQuantity(sku, quantity, true);
    }
    if (code === 'unknown_product') {
      notice('error', productName(sku) + ' is no longer sold here.');
      await loadProducts();
    } else {
      notice('error', errorMessage(result));
    }
    renderCart();
    return false;
  }

  function addToCart(sku) {
    return serially(async () => {
      const line = cart && cart.items.find((i) => i.sku === sku);
      if (await setQuantity(sku, (line ? line.quantity : 0) + 1)) {
        notice('success', 'Added ' + productName(sku) + ' to your cart.');
      }
    });
  }

  function changeQuantity(sku, raw) {
    return serially(async () => {
      const quantity = Number(raw);
      if (!Number.isInteger(quantity) || quantity < 0 || quantity > 999) {
        notice('error', 'Please enter a whole number from 0 to 999.');
        renderCart();
        return;
      }
      if (await setQuantity(sku, quantity)) clearNotice();
    });
  }

  function fitToStock(items) {
    return serially(async () => {
      for (const item of items) {
        if (!(await setQuantity(item.sku, Math.max(0, item.available)))) return;
      }
      await loadProducts();
      notice('info', 'Your cart now holds only what is in stock. Check it and try again.');
    });
  }

  function checkout() {
    return serially(async () => {
      if (!cartId || !cart || cart.items.length === 0) return;
      busy = true;
      renderCart();
      const result = await api('POST', '/api/carts/' + encodeURIComponent(cartId) + '/checkout');
      if (result.status === 201 && result.body && result.body.url) {
        const until = liveHold(result.body.held_until);
        notice('info', 'Taking you to the payment page…',
          until ? ' The items are held for you until ' + clockTime(result.body.held_until) + '.' : '');
        window.location.assign(result.body.url);
        return;  // stays busy while the browser leaves
      }
      busy = false;
      const code = errorCode(result);
      if (code === 'out_of_stock') {
        const items = result.body.error.items || [];
        notice('error',
          el('p', {}, 'Some items are not in stock in the quantity you asked for:'),
          el('ul', { 'data-testid': 'out-of-stock-items' }, items.map((item) => el('li',
            { 'data-sku': item.sku },
            productName(item.sku) + ': you asked for ' + item.requested + ', ' +
            (item.available > 0 ? 'only ' + item.available + ' available.'
              : 'but it is sold out.')))),
          el('p', {}, el('button', { type: 'button', class: 'button', 'data-testid': 'fit-to-stock' },
            'Reduce my cart to what is in stock')));
        noticeBox.querySelector('[data-testid=fit-to-stock]')
          .addEventListener('click', () => fitToStock(items));
        await loadProducts();
      } else if (code === 'cart_closed') {
        forgetCart();
        notice('info', 'That cart has already been paid for, so we started a new, empty one.');
      } else if (code === 'unknown_cart') {
        forgetCart();
        notice('info', 'That cart no longer exists; please add your items again.');
      } else if (code === 'empty_cart') {
        notice('error', 'Your cart is empty: add something first.');
      } else {
        notice('error', 'Checkout could not start: ', errorMessage(result));
      }
      renderCart();
    });
  }

  // ------------------------------------------------------------------ rendering

  function soldOut(product) {
    return !(product.available > 0);
  }

  function availabilityText(product) {
    if (soldOut(product)) return 'Sold out';
    if (product.available <= 5) return 'Only ' + product.available + ' left';
    return product.available + ' in stock';
  }

  function renderProducts() {
    $('empty-catalog').hidden = products.length !== 0;
    productList.replaceChildren(...products.map((product) => {
      const headingId = 'product-' + product.sku;
      const gone = soldOut(product);
      let button = null;
      if (!gone) {  // nothing to add: no button rather than one that cannot work
        button = el('button', {
          type: 'button', class: 'button primary', 'data-testid': 'add-' + product.sku,
          'aria-describedby': headingId,
        }, 'Add to cart');
        button.addEventListener('click', () => addToCart(product.sku));
      }
      return el('li', {
        class: gone ? 'product sold-out' : 'product', 'data-testid': 'product-' + product.sku,
        'data-sold-out': gone,
      },
        el('h3', { id: headingId }, product.name),
        el('p', { class: 'price' }, formatAmount(product.unit_amount, product.currency)),
        el('p', {
          class: gone ? 'stock stock-out' : 'stock',
          'data-testid': 'available-' + product.sku,
        }, availabilityText(product)),
        button);
    }));
  }

  function renderCart() {
    const items = cart ? cart.items : [];
    $('cart-empty').hidden = items.length !== 0;
    $('cart-table').hidden = items.length === 0;
    $('cart-lines').replaceChildren(...items.map((item) => {
      const inputId = 'qty-' + item.sku;
      const input = el('input', {
        id: inputId, type: 'number', min: '0', max: '999', step: '1', inputmode: 'numeric',
        value: String(item.quantity), 'data-testid': inputId, class: 'qty',
      });
      input.addEventListener('change', () => changeQuantity(item.sku, input.value));
      const remove = el('button', {
        type: 'button', class: 'button link', 'data-testid': 'remove-' + item.sku,
      }, 'Remove', el('span', { class: 'visually-hidden' }, ' ' + productName(item.sku)));
      remove.addEventListener('click', () => serially(() => setQuantity(item.sku, 0)));
      return el('tr', { 'data-sku': item.sku },
        el('th', { scope: 'row' }, productName(item.sku),
          el('span', { class: 'unit' }, ' ' + formatAmount(item.unit_amount, cart.currency) + ' each')),
        el('td', {},
          el('label', { for: inputId, class: 'visually-hidden' }, 'Quantity of ' + productName(item.sku)),
          input),
        el('td', { class: 'num' }, formatAmount(item.unit_amount * item.quantity, cart.currency)),
        el('td', {}, remove));
    }));
    $('cart-total').textContent = cart && items.length
      ? formatAmount(cart.amount_total, cart.currency) : '';
    checkoutButton.disabled = busy || items.length === 0;
    checkoutButton.setAttribute('aria-busy', busy ? 'true' : 'false');
    checkoutButton.textContent = busy ? 'Starting checkout…' : 'Checkout';
    renderHold();
  }

  /** "Held for you until HH:MM" while the cart's checkout holds its stock; once that time has
   * passed, the cart and the products are loaded again (the ledger has let the units go). */
  function renderHold() {
    if (holdTimer !== null) { clearTimeout(holdTimer); holdTimer = null; }
    const until = cart && cart.items.length ? liveHold(cart.held_until) : null;
    holdNote.hidden = until === null;
    if (until === null) { holdNote.replaceChildren(); return; }
    holdNote.replaceChildren(
      el('strong', {}, 'The items you checked out are held for you until ',
        el('time', { datetime: cart.held_until, 'data-testid': 'held-until-time' },
          clockTime(cart.held_until)), '.'),
      ' Nobody else can buy them before then; pay by then to be sure of them.');
    const wait = Math.min(MAX_TIMER_MS, until.getTime() - Date.now() + 1000);
    holdTimer = setTimeout(() => {
      holdTimer = null;
      serially(() => Promise.all([loadProducts(), loadCart()]));
    }, wait);
  }

  // ------------------------------------------------------------------ start

  checkoutButton.addEventListener('click', checkout);
  // Back from the payment page, the browser may show this page as it was left ("Taking you to
  // the payment page", the button busy): look again at the cart, its hold and the stock.
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted) return;
    busy = false;
    clearNotice();
    serially(() => Promise.all([loadProducts(), loadCart()]));
  });

  const params = new URLSearchParams(window.location.search);
  const fromUrl = params.get('cart_id');
  let stored = null;
  try { stored = localStorage.getItem(STORAGE_KEY); } catch (error) { stored = null; }
  const initial = [fromUrl, stored].find((id) => id && UUID_RE.test(id)) || null;
  const cancelled = params.get('checkout') === 'cancelled';
  if (initial) setCartId(initial);

  serially(async () => {
    await Promise.all([loadProducts(), loadCart()]);
    if (cancelled) {
      notice('info', cart
        ? 'Checkout cancelled. Nothing was charged, and your cart is just as you left it.'
        : 'Checkout cancelled. Nothing was charged.');
    }
  });
})();
