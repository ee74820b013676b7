"""The order status read model (`projections.order_status`) rebuilt from the decoded log,
set-based."""

from __future__ import annotations

from typing import Any

from ledger.domain.vocabulary import OrderStatus
from projections.base import Writer
from projections.replays.topics import AFTER_SALE, CART, ORDER


def replay_order_status(db: Writer) -> None:
    """`OrderStatusProjection.replay_in_sql`: its two tables from `{replay_events}`."""
    # Each session as it last started; its status, time and position those of the last
    # change since (by the session's own events, or by its order's once placed); its
    # amount the last one Stripe charged (or as priced); its order and payment the last
    # ones named since.
    db.execute(
        "WITH e AS (SELECT position, stream_id, topic, data,"
        "  (data->'timestamp'->>'_data_')::timestamptz AS at FROM {replay_events}"
        "  WHERE topic = ANY(%(topics)s)),"
        " started AS (SELECT DISTINCT ON (data->>'session_id') data->>'session_id'"
        "  AS session_id, stream_id AS cart_id, position, at, data FROM e"
        "  WHERE topic = %(started)s ORDER BY data->>'session_id', position DESC),"
        " placed AS (SELECT e.stream_id AS order_id, s.session_id, e.position,"
        "  e.data->>'payment_intent' AS payment_intent FROM e JOIN started s"
        "  ON s.session_id = e.data->>'checkout_session_id' AND e.position > s.position"
        "  WHERE e.topic = %(placed)s),"
        " changes AS ("
        "  SELECT s.session_id, e.position, e.at, CASE e.topic"
        "   WHEN %(awaiting)s THEN %(s_awaiting)s WHEN %(failed)s THEN %(s_failed)s"
        "   WHEN %(expired)s THEN %(s_expired)s ELSE %(s_confirmed)s END AS status,"
        "   NULL::bigint AS amount, NULL::text AS currency,"
        "   (e.data->'order_id'->>'_data_')::uuid AS order_id"
        "  FROM e JOIN started s ON s.session_id = e.data->>'session_id'"
        "   AND e.position > s.position WHERE e.topic = ANY(%(session_changes)s)"
        "  UNION ALL SELECT p.session_id, e.position, e.at, CASE e.topic"
        "   WHEN %(refund_requested)s THEN %(s_refund_pending)s"
        "   WHEN %(release_requested)s THEN %(s_released)s"
        "   WHEN %(capture_failed)s THEN %(s_failed)s"
        "   WHEN %(refund_submitted)s THEN %(s_refund_pending)s"
        "   WHEN %(refund_issued)s THEN %(s_refunded)s"
        "   WHEN %(refund_failed)s THEN %(s_refund_failed)s"
        "   ELSE e.data->>'status' END,"
        "   CASE WHEN e.topic IN (%(refund_requested)s, %(release_requested)s)"
        "    THEN (e.data->>'amount')::bigint END,"
        "   CASE WHEN e.topic IN (%(refund_requested)s, %(release_requested)s)"
        "    THEN e.data->>'currency' END, NULL"
        "  FROM e JOIN placed p ON p.order_id = e.stream_id AND e.position > p.position"
        "  WHERE e.topic = ANY(%(order_changes)s)),"
        " status AS (SELECT DISTINCT ON (session_id) * FROM changes"
        "  ORDER BY session_id, position DESC),"
        " charged AS (SELECT DISTINCT ON (session_id) * FROM changes"
        "  WHERE amount IS NOT NULL ORDER BY session_id, position DESC),"
        " named AS (SELECT DISTINCT ON (session_id) session_id, order_id FROM ("
        "  SELECT session_id, position, order_id FROM placed UNION ALL"
        "  SELECT session_id, position, order_id FROM changes WHERE order_id IS NOT NULL"
        "  ) n ORDER BY session_id, position DESC),"
        " paid AS (SELECT DISTINCT ON (session_id) session_id, payment_intent FROM ("
        "  SELECT session_id, position, payment_intent FROM placed"
        "  WHERE payment_intent IS NOT NULL UNION ALL"
        "  SELECT p.session_id, e.position, e.data->>'payment_intent' FROM e"
        "  JOIN placed p ON p.order_id = e.stream_id AND e.position > p.position"
        "  WHERE e.topic IN (%(confirmed)s, %(rejected)s)"
        "  AND e.data->>'payment_intent' <> '') i ORDER BY session_id, position DESC)"
        " INSERT INTO {order_status} (checkout_session_id, cart_id, order_id, status,"
        " amount_total, currency, items, payment_intent, updated_at, position)"
        " SELECT s.session_id, s.cart_id, n.order_id, coalesce(st.status, %(s_processing)s),"
        "  coalesce(c.amount, (s.data->>'amount_total')::bigint),"
        "  coalesce(c.currency, s.data->>'currency'),"
        "  coalesce((SELECT jsonb_agg(jsonb_build_object('sku', l->'sku', 'name',"
        "   l->'name', 'quantity', l->'quantity', 'unit_amount', l->'unit_amount')"
        "   ORDER BY i) FROM jsonb_array_elements(s.data->'lines')"
        "   WITH ORDINALITY AS x(l, i)), '[]'),"
        "  pi.payment_intent, coalesce(st.at, s.at), coalesce(st.position, s.position)"
        " FROM started s LEFT JOIN status st ON st.session_id = s.session_id"
        " LEFT JOIN charged c ON c.session_id = s.session_id"
        " LEFT JOIN named n ON n.session_id = s.session_id"
        " LEFT JOIN paid pi ON pi.session_id = s.session_id",
        _REPLAY_PARAMS,
    )
    # Each dispute with the order it was first recorded for, as it last stood.
    db.execute(
        "INSERT INTO {payment_disputes} (dispute_id, order_id, status, updated_at)"
        " SELECT f.dispute_id, f.stream_id, l.data->>'status',"
        "  (l.data->'timestamp'->>'_data_')::timestamptz"
        " FROM (SELECT DISTINCT ON (data->>'dispute_id') data->>'dispute_id' AS dispute_id,"
        "  stream_id FROM {replay_events} WHERE topic = ANY(%(disputes)s)"
        "  ORDER BY data->>'dispute_id', position) f"
        " JOIN (SELECT DISTINCT ON (data->>'dispute_id') data->>'dispute_id' AS dispute_id,"
        "  data FROM {replay_events} WHERE topic = ANY(%(disputes)s)"
        "  ORDER BY data->>'dispute_id', position DESC) l USING (dispute_id)",
        _REPLAY_PARAMS,
    )


def _replay_params() -> dict[str, Any]:
    session_changes = ["awaiting", "failed", "expired", "converted"]
    order_changes = [
        ORDER[k]
        for k in (
            "refund_requested",
            "release_requested",
            "capture_failed",
            "refund_submitted",
            "refund_issued",
            "refund_failed",
        )
    ]
    order_changes.append(AFTER_SALE["status_changed"])
    topics = [CART[k] for k in ("started", *session_changes)]
    topics += [ORDER[k] for k in ("placed", "confirmed", "rejected")] + order_changes
    return {
        **CART,
        **ORDER,
        **AFTER_SALE,
        **{f"s_{s.name.lower()}": s.value for s in OrderStatus},
        "s_failed": OrderStatus.PAYMENT_FAILED.value,
        "s_awaiting": OrderStatus.AWAITING_PAYMENT.value,
        "topics": topics,
        "session_changes": [CART[k] for k in session_changes],
        "order_changes": order_changes,
        "disputes": [ORDER["dispute_opened"], ORDER["dispute_closed"]],
    }


_REPLAY_PARAMS = _replay_params()
