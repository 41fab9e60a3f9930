-- A set-based podium_apply_scores (issue 10): the same inputs, outputs and rules as
-- 003, without the per-row PL/pgSQL loop that cost ~0.45 ms per write.
--
-- A batch is applied in rounds. A round holds at most one write of each user (and of
-- each event id), so inside it no write depends on another, and one statement judges
-- all of its writes, inserts their events and upserts their board rows. Round r holds
-- each user's r-th write of the batch, so a user's writes apply in batch order, each
-- against the state the previous one left (a refused write changes nothing, exactly as
-- in the loop: a running sum over a window function could not know which writes a
-- later check refuses). With 64 writers a batch is one round.

-- One row of the result, collected over the rounds and returned in batch order.
CREATE TYPE podium_batch_row AS (
    idx int, status text, seq bigint, value_before bigint, value_after bigint,
    response jsonb, b_games text[], b_periods text[], b_starts date[], b_values bigint[],
    b_reached bigint[], b_last bigint[]
);

-- A board's value after one write, by the game's operator (inlined by the planner).
CREATE FUNCTION podium_next_value(op text, descending boolean, old bigint, v bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE op
        WHEN 'best' THEN CASE WHEN old IS NULL THEN v
                              WHEN descending THEN greatest(old, v)
                              ELSE least(old, v) END
        WHEN 'sum' THEN coalesce(old, 0) + v
        WHEN 'last' THEN v
        ELSE coalesce(old, 0) - v END
$$;

-- Apply a batch of writes in order, in the caller's transaction.
-- Statuses: ok, duplicate, conflict, no_game, no_user, voided, no_action,
-- out_of_bounds, overflow, suspicious. Only `ok` inserts an event; b_* list the
-- board rows it changed (their new state), in order, for the Redis apply.
-- Operators: best keeps the better value per the order, sum adds, last replaces,
-- decr subtracts; on a period board over that period's writes only.
CREATE OR REPLACE FUNCTION podium_apply_scores(
    p_event_ids uuid[], p_users bigint[], p_games text[], p_kinds text[],
    p_inputs bigint[], p_actions text[], p_hashes text[], p_created timestamptz[],
    p_days date[], p_weeks date[], p_months date[], p_addrs text[], p_creds text[]
) RETURNS TABLE (
    idx int, status text, seq bigint, value_before bigint, value_after bigint,
    response jsonb, b_games text[], b_periods text[], b_starts date[], b_values bigint[],
    b_reached bigint[], b_last bigint[]
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n int := coalesce(array_length(p_event_ids, 1), 0);
    rnd int[];
    rounds int;
    distinct_ids boolean;
    part podium_batch_row[];
    acc podium_batch_row[] := '{}';
    -- Seqs are taken in batch order here, so the insert states them.
    seq_name regclass := pg_get_serial_sequence('score_events', 'seq')::regclass;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Every row of a user (its game rows and its global rows) is written under this
    -- lock, taken in user order so two batches never deadlock: a row's last_seq then
    -- grows in commit order, which is what the version-guarded Redis apply needs.
    PERFORM pg_advisory_xact_lock(hashtextextended('podium:user:' || s.u::text, 0))
       FROM (SELECT DISTINCT x AS u FROM unnest(p_users) AS x ORDER BY 1) AS s;

    -- Round of each write: its rank among its user's writes. The same event id twice
    -- in one batch (rare: the writer keeps them apart) falls back to one write a round,
    -- so the later one sees the earlier one's event, as in the loop.
    SELECT array_agg(t.rn ORDER BY t.i), max(t.rn), count(DISTINCT t.e) = count(*)
      INTO rnd, rounds, distinct_ids
      FROM (SELECT w.i, w.e, row_number() OVER (PARTITION BY w.u ORDER BY w.i)::int AS rn
              FROM unnest(p_users, p_event_ids) WITH ORDINALITY AS w(u, e, i)) AS t;
    IF NOT distinct_ids THEN
        rnd := ARRAY(SELECT generate_series(1, n));
        rounds := n;
    END IF;

    FOR r IN 1..rounds LOOP
        WITH w AS (
            SELECT t.i::int AS i, t.event_id, t.user_id, t.game_id, t.kind, t.input,
                   t.action, t.hash, t.created_at, t.addr, t.cred,
                   ARRAY['1970-01-01'::date, t.d, t.wk, t.mo] AS starts
              FROM unnest(p_event_ids, p_users, p_games, p_kinds, p_inputs, p_actions,
                          p_hashes, p_created, p_days, p_weeks, p_months, p_addrs, p_creds)
                   WITH ORDINALITY AS t(event_id, user_id, game_id, kind, input, action,
                                        hash, created_at, d, wk, mo, addr, cred, i)
             WHERE rnd[t.i] = r
        ),
        -- The checks that need no board row, in the loop's order: replay, game, user,
        -- action, bounds.
        j AS (
            SELECT w.*, g.operator AS op, g.sort_order = 'desc' AS descending,
                   g.max_delta, g.delta_window_s, g.min_score, g.max_score,
                   prev.seq AS prev_seq, prev.value_before AS prev_before,
                   prev.value_after AS prev_after,
                   CASE WHEN prev.seq IS NOT NULL THEN
                       prev.response || coalesce((SELECT jsonb_build_object(
                           'rank', sr.rank, 'previous_rank', sr.previous_rank)
                           FROM score_ranks sr WHERE sr.seq = prev.seq), '{}')
                   END AS prev_response,
                   CASE WHEN w.kind = 'action' THEN a.points ELSE w.input END AS v,
                   CASE
                       WHEN prev.seq IS NOT NULL THEN
                           CASE WHEN prev.payload_hash = w.hash THEN 'duplicate'
                                ELSE 'conflict' END
                       WHEN g.id IS NULL THEN 'no_game'
                       WHEN u.id IS NULL THEN 'no_user'
                       WHEN u.voided_at IS NOT NULL THEN 'voided'
                       WHEN w.kind = 'action' AND a.points IS NULL THEN 'no_action'
                   END AS early
              FROM w
              LEFT JOIN score_events prev ON prev.event_id = w.event_id
              LEFT JOIN games g ON g.id = w.game_id
              LEFT JOIN users u ON u.id = w.user_id
              LEFT JOIN game_actions a
                     ON w.kind = 'action' AND a.game_id = w.game_id AND a.action = w.action
        ),
        b AS (
            SELECT j.*, coalesce(j.early, CASE
                       WHEN (j.min_score IS NOT NULL AND j.v < j.min_score)
                         OR (j.max_score IS NOT NULL AND j.v > j.max_score)
                         OR abs(j.v) > 9007199254740991  -- 2^53 - 1: exact in a double
                       THEN 'out_of_bounds' END) AS refused
              FROM j
        ),
        -- The user's current rows: the game's four periods, and the global board's
        -- (which sums a user's values over desc games, period by period).
        o AS (
            SELECT b.*,
                   o1.value AS o1, o2.value AS o2, o3.value AS o3, o4.value AS o4,
                   q1.value AS q1, q2.value AS q2, q3.value AS q3, q4.value AS q4,
                   q1.reached_seq AS qr1, q2.reached_seq AS qr2,
                   q3.reached_seq AS qr3, q4.reached_seq AS qr4
              FROM b
              LEFT JOIN board_values o1 ON b.refused IS NULL AND o1.game_id = b.game_id
                   AND o1.period = 'all' AND o1.period_start = b.starts[1]
                   AND o1.user_id = b.user_id
              LEFT JOIN board_values o2 ON b.refused IS NULL AND o2.game_id = b.game_id
                   AND o2.period = 'day' AND o2.period_start = b.starts[2]
                   AND o2.user_id = b.user_id
              LEFT JOIN board_values o3 ON b.refused IS NULL AND o3.game_id = b.game_id
                   AND o3.period = 'week' AND o3.period_start = b.starts[3]
                   AND o3.user_id = b.user_id
              LEFT JOIN board_values o4 ON b.refused IS NULL AND o4.game_id = b.game_id
                   AND o4.period = 'month' AND o4.period_start = b.starts[4]
                   AND o4.user_id = b.user_id
              LEFT JOIN board_values q1 ON b.refused IS NULL AND b.descending
                   AND q1.game_id = 'global' AND q1.period = 'all'
                   AND q1.period_start = b.starts[1] AND q1.user_id = b.user_id
              LEFT JOIN board_values q2 ON b.refused IS NULL AND b.descending
                   AND q2.game_id = 'global' AND q2.period = 'day'
                   AND q2.period_start = b.starts[2] AND q2.user_id = b.user_id
              LEFT JOIN board_values q3 ON b.refused IS NULL AND b.descending
                   AND q3.game_id = 'global' AND q3.period = 'week'
                   AND q3.period_start = b.starts[3] AND q3.user_id = b.user_id
              LEFT JOIN board_values q4 ON b.refused IS NULL AND b.descending
                   AND q4.game_id = 'global' AND q4.period = 'month'
                   AND q4.period_start = b.starts[4] AND q4.user_id = b.user_id
        ),
        -- MATERIALIZED: inlined, every use of a derived column (n1, gn1, overflow, the
        -- window sum) would repeat its whole expression, subqueries included.
        c AS MATERIALIZED (
            SELECT o.*,
                   CASE WHEN o.refused IS NULL THEN podium_next_value(o.op, o.descending, o.o1, o.v) END AS n1,
                   CASE WHEN o.refused IS NULL THEN podium_next_value(o.op, o.descending, o.o2, o.v) END AS n2,
                   CASE WHEN o.refused IS NULL THEN podium_next_value(o.op, o.descending, o.o3, o.v) END AS n3,
                   CASE WHEN o.refused IS NULL THEN podium_next_value(o.op, o.descending, o.o4, o.v) END AS n4,
                   CASE WHEN o.descending THEN 1 ELSE -1 END AS sgn,
                   -- A user's first write improves from the worst value a first write
                   -- can make (see 003 and docs/design.md, "Suspicious jumps").
                   CASE WHEN o.descending AND o.op = 'decr' THEN coalesce(-o.max_score, 0)
                        WHEN o.descending THEN coalesce(o.min_score, 0)
                        WHEN o.op = 'decr' THEN -o.min_score
                        ELSE o.max_score END AS baseline
              FROM o
        ),
        d AS (
            SELECT c.*,
                   CASE WHEN c.descending AND c.o1 IS DISTINCT FROM c.n1
                        THEN coalesce(c.q1, 0) + c.n1 - coalesce(c.o1, 0) END AS gn1,
                   CASE WHEN c.descending AND c.o2 IS DISTINCT FROM c.n2
                        THEN coalesce(c.q2, 0) + c.n2 - coalesce(c.o2, 0) END AS gn2,
                   CASE WHEN c.descending AND c.o3 IS DISTINCT FROM c.n3
                        THEN coalesce(c.q3, 0) + c.n3 - coalesce(c.o3, 0) END AS gn3,
                   CASE WHEN c.descending AND c.o4 IS DISTINCT FROM c.n4
                        THEN coalesce(c.q4, 0) + c.n4 - coalesce(c.o4, 0) END AS gn4,
                   (c.n1 - coalesce(c.o1, c.baseline)) * c.sgn AS improvement
              FROM c
        ),
        e AS MATERIALIZED (
            SELECT d.*,
                   greatest(abs(d.n1), abs(d.n2), abs(d.n3), abs(d.n4), abs(d.gn1),
                            abs(d.gn2), abs(d.gn3), abs(d.gn4)) > 9007199254740991 AS overflow
              FROM d
        ),
        f AS MATERIALIZED (
            SELECT e.*,
                   CASE WHEN e.refused IS NULL AND NOT e.overflow AND e.max_delta IS NOT NULL
                             AND e.improvement > 0 THEN
                       -- The same rule over the window's earlier events (a NULL gain is
                       -- none); earlier rounds' events are visible here.
                       (SELECT coalesce(sum(x.gain), 0) FROM (
                           SELECT (se.value_after - coalesce(se.value_before, e.baseline))
                                  * e.sgn AS gain
                             FROM score_events se
                            WHERE se.user_id = e.user_id AND se.game_id = e.game_id
                              AND se.voided_at IS NULL
                              AND se.created_at > e.created_at
                                  - make_interval(secs => e.delta_window_s)) AS x
                         WHERE x.gain > 0)
                   END AS window_sum
              FROM e
        ),
        judged AS (
            SELECT f.*,
                   coalesce(f.refused, CASE
                       WHEN f.overflow THEN 'overflow'
                       WHEN f.window_sum + f.improvement > f.max_delta THEN 'suspicious'
                   END, 'ok') AS st,
                   jsonb_build_object(
                       'game', f.game_id, 'user_id', f.user_id, 'score', f.n1,
                       'delta', f.n1 - coalesce(f.o1, 0),
                       'rank', NULL, 'previous_rank', NULL, 'duplicate', false) AS resp
              FROM f
        ),
        -- Seqs follow batch order (nextval runs after the sort). Taken here rather than
        -- from the insert's RETURNING, so no step below joins rows to the insert's.
        s AS (
            SELECT judged.*,
                   CASE WHEN judged.st = 'ok' THEN nextval(seq_name) END AS new_seq
              FROM judged ORDER BY judged.i
        ),
        flagged AS (
            INSERT INTO score_flags (event_id, user_id, game_id, kind, input, action,
                delta, window_sum, reason, created_at, client_addr, credential)
            SELECT s.event_id, s.user_id, s.game_id, s.kind, s.v, s.action,
                   s.n1 - coalesce(s.o1, 0), s.window_sum, 'max_delta', s.created_at,
                   s.addr, s.cred
              FROM s WHERE s.st = 'suspicious' ORDER BY s.i
        ),
        -- An event id another transaction committed meanwhile is skipped here and
        -- answered below.
        ins AS (
            INSERT INTO score_events AS se (seq, event_id, user_id, game_id, kind, input,
                action, delta, value_before, value_after, created_at, client_addr,
                credential, payload_hash, response)
            OVERRIDING SYSTEM VALUE
            SELECT s.new_seq, s.event_id, s.user_id, s.game_id, s.kind, s.v, s.action,
                   s.n1 - coalesce(s.o1, 0), s.o1, s.n1, s.created_at, s.addr, s.cred,
                   s.hash, s.resp
              FROM s WHERE s.st = 'ok' ORDER BY s.i
            ON CONFLICT (event_id) DO NOTHING
            RETURNING se.seq
        ),
        -- The rows each applied write changes: per period where the game's value moved,
        -- the game's row, then (desc games) the global row.
        changed AS (
            SELECT s.i, p.k, p.kind, s.new_seq AS seq, s.user_id, s.created_at,
                   CASE WHEN p.kind = 0 THEN s.game_id ELSE 'global' END AS game_id,
                   (ARRAY['all', 'day', 'week', 'month'])[p.k] AS period,
                   s.starts[p.k] AS period_start, p.val,
                   CASE WHEN p.kind = 1 AND p.val = p.qold THEN p.qreached
                        ELSE s.new_seq END AS reached
              FROM s
             CROSS JOIN LATERAL (VALUES
                   (1, 0, s.o1, s.n1, NULL::bigint, NULL::bigint),
                   (1, 1, s.o1, s.gn1, s.q1, s.qr1),
                   (2, 0, s.o2, s.n2, NULL, NULL), (2, 1, s.o2, s.gn2, s.q2, s.qr2),
                   (3, 0, s.o3, s.n3, NULL, NULL), (3, 1, s.o3, s.gn3, s.q3, s.qr3),
                   (4, 0, s.o4, s.n4, NULL, NULL), (4, 1, s.o4, s.gn4, s.q4, s.qr4)
             ) AS p(k, kind, old, val, qold, qreached)
             WHERE s.st = 'ok' AND s.new_seq IN (SELECT ins.seq FROM ins)  -- hashed
               AND (p.kind = 0 OR s.descending)
               AND p.old IS DISTINCT FROM (ARRAY[s.n1, s.n2, s.n3, s.n4])[p.k]
        ),
        -- reached_seq moves only when the value changes: ties keep the earlier.
        upserted AS (
            INSERT INTO board_values AS bv (game_id, period, period_start, user_id, value,
                reached_seq, reached_at, last_seq)
            SELECT ch.game_id, ch.period, ch.period_start, ch.user_id, ch.val, ch.seq,
                   ch.created_at, ch.seq
              FROM changed ch
            ON CONFLICT (game_id, period, period_start, user_id) DO UPDATE
                SET value = EXCLUDED.value,
                    reached_seq = CASE WHEN EXCLUDED.value = bv.value THEN bv.reached_seq
                                       ELSE EXCLUDED.reached_seq END,
                    reached_at = CASE WHEN EXCLUDED.value = bv.value THEN bv.reached_at
                                      ELSE EXCLUDED.reached_at END,
                    last_seq = EXCLUDED.last_seq
        ),
        rows_of AS (
            SELECT ch.i, array_agg(ch.game_id ORDER BY ch.k, ch.kind) AS games,
                   array_agg(ch.period ORDER BY ch.k, ch.kind) AS periods,
                   array_agg(ch.period_start ORDER BY ch.k, ch.kind) AS starts,
                   array_agg(ch.val ORDER BY ch.k, ch.kind) AS vals,
                   array_agg(ch.reached ORDER BY ch.k, ch.kind) AS reached,
                   array_agg(ch.seq ORDER BY ch.k, ch.kind) AS lasts
              FROM changed ch GROUP BY ch.i
        )
        SELECT array_agg(ROW(
                   s.i,
                   CASE WHEN s.st <> 'ok' THEN s.st
                        WHEN s.new_seq IN (SELECT ins.seq FROM ins) THEN 'ok'
                        ELSE 'race' END,
                   CASE WHEN s.st = 'ok' THEN s.new_seq ELSE s.prev_seq END,
                   CASE WHEN s.st = 'ok' THEN s.o1 ELSE s.prev_before END,
                   CASE WHEN s.st = 'ok' THEN s.n1 ELSE s.prev_after END,
                   CASE WHEN s.st = 'ok' THEN s.resp ELSE s.prev_response END,
                   coalesce(ro.games, '{}'), coalesce(ro.periods, '{}'),
                   coalesce(ro.starts, '{}'), coalesce(ro.vals, '{}'),
                   coalesce(ro.reached, '{}'), coalesce(ro.lasts, '{}')
               )::podium_batch_row)
          INTO part
          FROM s
          LEFT JOIN rows_of ro ON ro.i = s.i;

        -- A write whose event id another transaction committed while this one waited on
        -- it: now that it is visible, answer it as a replay.
        IF EXISTS (SELECT 1 FROM unnest(part) AS x WHERE x.status = 'race') THEN
            part := ARRAY(
                SELECT CASE WHEN x.status <> 'race' THEN x ELSE ROW(
                           x.idx,
                           CASE WHEN prev.payload_hash = p_hashes[x.idx] THEN 'duplicate'
                                ELSE 'conflict' END,
                           prev.seq, prev.value_before, prev.value_after,
                           prev.response || coalesce((SELECT jsonb_build_object(
                               'rank', sr.rank, 'previous_rank', sr.previous_rank)
                               FROM score_ranks sr WHERE sr.seq = prev.seq), '{}'),
                           '{}'::text[], '{}'::text[], '{}'::date[], '{}'::bigint[],
                           '{}'::bigint[], '{}'::bigint[])::podium_batch_row END
                  FROM unnest(part) AS x
                  LEFT JOIN score_events prev
                         ON x.status = 'race' AND prev.event_id = p_event_ids[x.idx]);
        END IF;
        acc := acc || part;
    END LOOP;

    RETURN QUERY SELECT * FROM unnest(acc) AS x ORDER BY x.idx;
END $$;
