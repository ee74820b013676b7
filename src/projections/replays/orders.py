"""The orders read model (`projections.orders`) rebuilt from the decoded log, set-based."""

from __future__ import annotations

from typing import Any

from ledger.domain.vocabulary import OrderStatus, RefundStatus
from projections.base import Writer
from projections.replays.topics import AFTER_SALE, CART, ORDER


def replay_orders(db: Writer) -> None:
    """`OrdersProjection.replay_in_sql`: its four tables from `{replay_events}`."""
    # Each order placed, and the first of its outcomes since (`_list`): what is in a
    # scratch table of the session's own, read by the statements below.
    db.execute("DROP TABLE IF EXISTS pg_temp.replay_orders_listed")
    db.execute(
        "CREATE TEMP TABLE replay_orders_listed AS"
        " WITH e AS (SELECT position, stream_id, topic, data FROM {replay_events}"
        "  WHERE topic = ANY(%(listing)s)),"
        " placed AS (SELECT DISTINCT ON (stream_id) stream_id, position, data FROM e"
        "  WHERE topic = %(placed)s ORDER BY stream_id, position),"
        " listing AS (SELECT DISTINCT ON (e.stream_id) e.stream_id, e.position, e.topic,"
        "  e.data FROM e JOIN placed p ON p.stream_id = e.stream_id"
        "  AND e.position > p.position WHERE e.topic IN (%(confirmed)s,"
        "  %(refund_requested)s, %(release_requested)s) ORDER BY e.stream_id, e.position),"
        " rejected AS (SELECT DISTINCT ON (e.stream_id) e.stream_id,"
        "  e.data->>'reason' AS reason FROM e JOIN placed p ON p.stream_id = e.stream_id"
        "  AND e.position > p.position LEFT JOIN listing l ON l.stream_id = e.stream_id"
        "  WHERE e.topic = %(rejected)s AND (l.position IS NULL OR e.position < l.position)"
        "  ORDER BY e.stream_id, e.position DESC)"
        " SELECT p.stream_id AS order_id, p.data AS placed, l.position AS listed_at,"
        "  l.topic AS listed_by, l.data AS listing, r.reason AS rejection_reason"
        " FROM placed p LEFT JOIN listing l ON l.stream_id = p.stream_id"
        " LEFT JOIN rejected r ON r.stream_id = p.stream_id",
        _REPLAY,
    )
    db.execute(
        "INSERT INTO {order_carts} (cart_id, user_id) SELECT DISTINCT ON (stream_id)"
        " stream_id, data->>'user_id' FROM {replay_events} WHERE topic = %(cart_created)s"
        " AND data->>'user_id' IS NOT NULL ORDER BY stream_id, position",
        _REPLAY,
    )
    db.execute(
        "INSERT INTO {order_drafts} (order_id, checkout_session_id, cart_id, amount_total,"
        " currency, items, rejection_reason)"
        " SELECT order_id, placed->>'checkout_session_id', "
        + _UUID.format("placed", "cart_id")
        + ", (placed->>'amount_total')::bigint, placed->>'currency', coalesce((SELECT"
        " jsonb_agg(" + _ITEM.format("0") + " ORDER BY n) FROM"
        " jsonb_array_elements(placed->'lines') WITH ORDINALITY AS x(i, n)), '[]'),"
        " rejection_reason FROM pg_temp.replay_orders_listed WHERE listed_at IS NULL",
        _REPLAY,
    )
    # The listed orders: as listed, then changed by the events after their listing.
    db.execute(
        "WITH e AS (SELECT e.position, e.stream_id, e.topic, e.data"
        "  FROM {replay_events} e JOIN pg_temp.replay_orders_listed l"
        "  ON l.order_id = e.stream_id AND e.position > l.listed_at"
        "  WHERE e.topic = ANY(%(after_listing)s)),"
        " status AS (SELECT DISTINCT ON (stream_id) stream_id, CASE topic"
        "  WHEN %(capture_failed)s THEN %(s_payment_failed)s"
        "  WHEN %(refund_submitted)s THEN %(s_refund_pending)s"
        "  WHEN %(refund_issued)s THEN %(s_refunded)s"
        "  WHEN %(refund_failed)s THEN %(s_refund_failed)s"
        "  ELSE data->>'status' END AS status FROM e WHERE topic = ANY(%(statuses)s)"
        "  ORDER BY stream_id, position DESC),"
        " captured AS (SELECT DISTINCT ON (stream_id) stream_id,"
        "  (data->>'amount')::bigint AS amount, data->>'currency' AS currency FROM e"
        "  WHERE topic = %(captured)s ORDER BY stream_id, position DESC),"
        " taken AS (SELECT DISTINCT ON (stream_id) stream_id, CASE WHEN topic ="
        "  %(captured)s THEN (data->>'amount')::bigint ELSE 0 END AS amount FROM e"
        "  WHERE topic IN (%(captured)s, %(capture_requested)s)"
        "  ORDER BY stream_id, position DESC),"
        " refunded AS (SELECT e.stream_id, x.l->>'sku' AS sku,"
        "  sum((x.l->>'quantity')::bigint) AS quantity FROM e,"
        "  jsonb_array_elements(e.data->'lines') AS x(l)"
        "  WHERE e.topic = %(merchant_requested)s GROUP BY 1, 2),"
        " items AS (SELECT l.order_id, jsonb_agg("
        + _ITEM.format("coalesce(r.quantity, 0)")
        + "  ORDER BY x.n) AS items FROM pg_temp.replay_orders_listed l"
        "  CROSS JOIN LATERAL jsonb_array_elements(l.placed->'lines')"
        "  WITH ORDINALITY AS x(i, n) LEFT JOIN refunded r"
        "  ON r.stream_id = l.order_id AND r.sku = x.i->>'sku' GROUP BY l.order_id),"
        " listed AS (SELECT *, CASE WHEN listed_by = %(confirmed)s"
        "  THEN (placed->>'amount_total')::bigint ELSE (listing->>'amount')::bigint END"
        "  AS amount, CASE WHEN listed_by = %(confirmed)s THEN placed->>'currency'"
        "  ELSE listing->>'currency' END AS currency"
        "  FROM pg_temp.replay_orders_listed WHERE listed_at IS NOT NULL)"
        " INSERT INTO {orders} (order_id, checkout_session_id, user_id, status, created_at,"
        " currency, amount_total, amount_captured, amount_refunded, items,"
        " rejection_reason, position)"
        " SELECT l.order_id, l.placed->>'checkout_session_id', c.user_id,"
        "  coalesce(s.status, CASE l.listed_by WHEN %(confirmed)s THEN %(s_confirmed)s"
        "  WHEN %(refund_requested)s THEN %(s_refund_pending)s ELSE %(s_released)s END),"
        "  " + _AT.format("l.listing") + ", coalesce(p.currency, l.currency),"
        "  coalesce(p.amount, l.amount), coalesce(t.amount, CASE WHEN l.listed_by ="
        "  %(release_requested)s THEN 0 ELSE l.amount END), 0, coalesce(i.items, '[]'),"
        "  l.rejection_reason, l.listed_at"
        " FROM listed l LEFT JOIN {order_carts} c ON c.cart_id = "
        + _UUID.format("l.placed", "cart_id")
        + " LEFT JOIN status s ON s.stream_id = l.order_id"
        " LEFT JOIN captured p ON p.stream_id = l.order_id"
        " LEFT JOIN taken t ON t.stream_id = l.order_id"
        " LEFT JOIN items i ON i.order_id = l.order_id",
        _REPLAY,
    )
    # Each refund as its first event recorded it (an order's own refund only once the
    # order is listed), its status the last one given since and its amount the last one
    # known; a merchant refund requested again under an id already listed changes
    # nothing.
    db.execute(
        "WITH changes AS ("
        " SELECT e.stream_id AS order_id, e.data->>'refund_id' AS refund_id, e.position,"
        "  e.data, CASE e.topic WHEN %(refund_issued)s THEN (e.data->>'amount')::bigint"
        "  END AS amount, CASE e.topic WHEN %(refund_submitted)s THEN "
        + _STRIPE_STATUS
        + "  WHEN %(refund_issued)s THEN %(r_succeeded)s ELSE %(r_failed)s END AS status,"
        "  l.rejection_reason AS reason, NULL::jsonb AS restocked, false AS merchant,"
        "  true AS makes FROM {replay_events} e JOIN pg_temp.replay_orders_listed l"
        "  ON l.order_id = e.stream_id AND e.position > l.listed_at"
        "  WHERE e.topic = ANY(%(own_refunds)s) AND e.data->>'refund_id' IS NOT NULL"
        " UNION ALL SELECT stream_id, data->>'refund_id', position, data,"
        "  (data->>'amount')::bigint, " + _STRIPE_STATUS + ", NULL, NULL, false, true"
        "  FROM {replay_events} e WHERE topic = %(outside_refund)s"
        " UNION ALL SELECT stream_id, data->>'refund_id', position, data,"
        "  (data->>'amount')::bigint, %(r_pending)s, data->>'reason',"
        "  coalesce((SELECT jsonb_agg(jsonb_build_object('sku', r->'sku', 'quantity',"
        "  r->'quantity') ORDER BY n) FROM jsonb_array_elements(data->'restocked')"
        "  WITH ORDINALITY AS x(r, n)), '[]'), true, true"
        "  FROM {replay_events} WHERE topic = %(merchant_requested)s"
        " UNION ALL SELECT stream_id, data->>'refund_id', position, data, NULL,"
        "  CASE topic WHEN %(merchant_succeeded)s THEN %(r_succeeded)s"
        "  ELSE %(r_failed)s END, NULL, NULL, false, false"
        "  FROM {replay_events} WHERE topic IN (%(merchant_succeeded)s,"
        "  %(merchant_failed)s)),"
        " made AS (SELECT DISTINCT ON (order_id, refund_id) * FROM changes WHERE makes"
        "  ORDER BY order_id, refund_id, position),"
        " since AS (SELECT c.* FROM changes c JOIN made m USING (order_id, refund_id)"
        "  WHERE c.position >= m.position AND (c.position = m.position OR NOT c.merchant)),"
        " status AS (SELECT DISTINCT ON (order_id, refund_id) order_id, refund_id, status"
        "  FROM since ORDER BY order_id, refund_id, position DESC),"
        " amount AS (SELECT DISTINCT ON (order_id, refund_id) order_id, refund_id, amount"
        "  FROM since WHERE amount IS NOT NULL ORDER BY order_id, refund_id, position DESC)"
        " INSERT INTO {order_refunds} (order_id, refund_id, amount, status, reason,"
        " restocked, merchant, created_at, position)"
        " SELECT m.order_id, m.refund_id, coalesce(a.amount, o.amount_total), s.status,"
        "  m.reason, coalesce(m.restocked, '[]'), m.merchant, "
        + _AT.format("m.data")
        + ", m.position FROM made m JOIN status s USING (order_id, refund_id)"
        " LEFT JOIN amount a USING (order_id, refund_id)"
        " LEFT JOIN {orders} o ON o.order_id = m.order_id",
        _REPLAY,
    )
    db.execute(
        "UPDATE {orders} o SET amount_refunded = r.amount FROM (SELECT order_id,"
        " sum(amount) AS amount FROM {order_refunds} WHERE status = %(r_succeeded)s"
        " GROUP BY order_id) r WHERE r.order_id = o.order_id",
        _REPLAY,
    )
    db.execute("DROP TABLE pg_temp.replay_orders_listed")


# SQL: a stored uuid value `{0}->'{1}'` (the library's typed value, or plain text).
_UUID = "coalesce({0}->'{1}'->>'_data_', {0}->>'{1}')::uuid"
_AT = "({0}->'timestamp'->>'_data_')::timestamptz"
# An order's item from a placed line `i`, with `{0}` refunded.
_ITEM = (
    "jsonb_build_object('sku', i->'sku', 'name', i->'name', 'quantity', i->'quantity',"
    " 'unit_amount', i->'unit_amount', 'quantity_refunded', {0})"
)
# `RefundStatus.of` a Stripe status in `data`.
_STRIPE_STATUS = (
    "CASE data->>'status' WHEN 'succeeded' THEN %(r_succeeded)s"
    " WHEN 'failed' THEN %(r_failed)s WHEN 'canceled' THEN %(r_failed)s"
    " ELSE %(r_pending)s END"
)


def _replay_params() -> dict[str, Any]:
    t = ORDER | AFTER_SALE
    statuses = [t[k] for k in ("capture_failed", "refund_submitted", "refund_issued")]
    statuses += [t["refund_failed"], t["status_changed"]]
    return {
        **t,
        "cart_created": CART["cart_created"],
        **{f"s_{s.name.lower()}": s.value for s in OrderStatus},
        **{f"r_{s.name.lower()}": s.value for s in RefundStatus},
        "listing": [t[k] for k in ("placed", "confirmed", "rejected")]
        + [t["refund_requested"], t["release_requested"]],
        "statuses": statuses,
        "after_listing": [
            *statuses,
            t["captured"],
            t["capture_requested"],
            t["merchant_requested"],
        ],
        "own_refunds": [t[k] for k in ("refund_submitted", "refund_issued", "refund_failed")],
    }


_REPLAY = _replay_params()
